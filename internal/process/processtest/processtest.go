// Package processtest provides processes for tests of code that signals
// and watches them: a harmless child the test owns, to adopt, kill, or name
// as the victim a forger would like killed.
package processtest

import (
	"os/exec"
	"testing"
)

// Sleep starts `sleep 300` and returns it with a channel closed once it
// has exited and been reaped. It is killed and waited for when the test
// ends.
func Sleep(t testing.TB) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return cmd, done
}
