package process

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/process/processtest"
)

func TestIdentityOfSelf(t *testing.T) {
	id, err := ReadIdentity(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if id.Exe != exe || id.StartTicks == 0 || len(id.Cmdline) == 0 || id.Cmdline[0] != os.Args[0] {
		t.Fatalf("identity %+v (exe %s, args %q)", id, exe, os.Args)
	}
	again, _ := ReadIdentity(os.Getpid())
	if d := id.Mismatch(again); d != "" {
		t.Fatal(d)
	}
}

func TestStartTicksParsesOddNames(t *testing.T) {
	stat := []byte("42 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 1234 20\n")
	if v, err := startTicks(stat); err != nil || v != 1234 {
		t.Fatalf("got %d, %v", v, err)
	}
	if _, err := startTicks([]byte("42 (x) S 1")); err == nil {
		t.Fatal("short stat accepted")
	}
}

// A pid is adopted only if it is the process described; a victim named by
// a liar is never signalled.
func TestAdoptChecksIdentity(t *testing.T) {
	victim, done := processtest.Sleep(t)
	pid := victim.Process.Pid
	real, err := ReadIdentity(pid)
	if err != nil {
		t.Fatal(err)
	}
	for name, lie := range map[string]Identity{
		"other start time": {Exe: real.Exe, StartTicks: real.StartTicks + 1, Cmdline: real.Cmdline},
		"other executable": {Exe: "/usr/local/bin/scene", StartTicks: real.StartTicks, Cmdline: real.Cmdline},
		"other arguments":  {Exe: real.Exe, StartTicks: real.StartTicks, Cmdline: []string{"scene", "--process", "forest"}},
	} {
		if h, err := Adopt(pid, lie); !errors.Is(err, ErrNotOurs) || h != nil {
			t.Errorf("%s: adopted (%v)", name, err)
		}
	}
	if !Alive(pid) {
		t.Fatal("victim died")
	}
	h, err := Adopt(pid, real)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.Exited() {
		t.Fatal("live process reported exited")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if !h.Exited() {
		t.Fatal("killed process not reported exited")
	}
}

func TestChildHandle(t *testing.T) {
	cmd, done := processtest.Sleep(t)
	h := Child(cmd.Process, done)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	// Reaped: signalling again must not reach whoever gets the pid next.
	if err := h.Signal(9); err == nil {
		t.Fatal("signal after exit succeeded")
	}
	h.Close()
}

// The manager may release an adopted handle while a kill of it still waits
// for the process to go: the wait ends at once (a closed handle counts as
// gone: Exited), and nothing races (run with -race).
func TestCloseWhileWaitGone(t *testing.T) {
	victim, _ := processtest.Sleep(t)
	id, err := ReadIdentity(victim.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Adopt(victim.Process.Pid, id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- h.WaitGone(ctx) }()
	h.Close()
	select {
	case err := <-waited:
		if err != nil && !strings.Contains(err.Error(), "handle closed") {
			t.Fatalf("WaitGone after Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("WaitGone did not notice the handle was closed")
	}
}
