package shmlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cross-process tests re-exec the test binary as a child running
// TestHelperChild; the env vars tell it what to do.
const (
	envChildMode = "SHMLOG_TEST_CHILD"
	envChildPath = "SHMLOG_TEST_PATH"
)

func childCmd(ctx context.Context, mode, path string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChildMode+"="+mode, envChildPath+"="+path)
	cmd.Stderr = os.Stderr
	return cmd
}

// TestHelperChild is not a test: it is the child side of the cross-process
// tests and skips unless started by one.
func TestHelperChild(t *testing.T) {
	mode := os.Getenv(envChildMode)
	if mode == "" {
		t.Skip("child helper for cross-process tests")
	}
	path := os.Getenv(envChildPath)
	switch mode {
	case "open":
		s, err := Open(path, small)
		switch {
		case errors.Is(err, ErrLocked):
			fmt.Println("RESULT locked")
		case err != nil:
			fmt.Println("RESULT error:", err)
		default:
			s.Close()
			fmt.Println("RESULT ok")
		}
	case "append":
		childAppendForever(path)
	default:
		fmt.Println("RESULT error: unknown mode", mode)
	}
}

// childAppendForever appends events (snapshotting when the half is full)
// until it is killed, reporting its progress on stdout.
func childAppendForever(path string) {
	s, err := Open(path, small)
	if err != nil {
		fmt.Println("RESULT error:", err)
		return
	}
	sl, ok := s.Get("crash")
	if !ok {
		if sl, err = s.Create("crash"); err != nil {
			fmt.Println("RESULT error:", err)
			return
		}
	}
	for {
		seq := sl.Stats().LastSeq + 1
		_, err := sl.Append([]byte(ev(seq)))
		if errors.Is(err, ErrSlotFull) {
			err = sl.Snapshot(fmt.Appendf(nil, "state@%d", seq-1))
			if err == nil {
				_, err = sl.Append([]byte(ev(seq)))
			}
		}
		if err != nil {
			fmt.Println("RESULT error:", err)
			return
		}
		if seq%250 == 0 {
			fmt.Println("PROGRESS", seq)
		}
	}
}

func runChild(t *testing.T, mode, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := childCmd(ctx, mode, path).Output()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", mode, err, out)
	}
	for line := range strings.Lines(string(out)) {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			return strings.TrimSpace(r)
		}
	}
	t.Fatalf("child %s reported nothing:\n%s", mode, out)
	return ""
}

func TestLockCrossProcess(t *testing.T) {
	path := tempPath(t)
	s := openT(t, path, small)
	if got := runChild(t, "open", path); got != "locked" {
		t.Fatalf("child Open while parent holds the file: %q, want locked", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := runChild(t, "open", path); got != "ok" {
		t.Fatalf("child Open after parent closed: %q, want ok", got)
	}
}

// TestKill9 kills a child with SIGKILL while it appends and snapshots as fast
// as it can, several times over, and checks that every incarnation finds an
// exact log: the last snapshot, then consecutive events, nothing lost that the
// child reported as appended.
func TestKill9(t *testing.T) {
	path := tempPath(t)
	var reported uint64
	for round := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := childCmd(ctx, "append", path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill at a different point each round, after real progress.
		target := reported + 2000 + uint64(round)*137
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "RESULT") {
				t.Fatalf("child: %s", line)
			}
			if n, ok := strings.CutPrefix(line, "PROGRESS "); ok {
				if reported, _ = strconv.ParseUint(n, 10, 64); reported >= target {
					break
				}
			}
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait() // reaped: its descriptor, and so its flock, is gone
		cancel()
		if reported < target {
			t.Fatalf("round %d: child stopped at %d before reaching %d", round, reported, target)
		}

		s := openT(t, path, small)
		sl := mustGet(t, s, "crash")
		got := replayAll(t, sl)
		snap := got[0]
		if snap.Kind != KindSnapshot || (snap.Seq > 0 && snap.Payload != fmt.Sprintf("state@%d", snap.Seq)) {
			t.Fatalf("round %d: snapshot %+v", round, snap)
		}
		for i, r := range got[1:] {
			if want := snap.Seq + uint64(i) + 1; r.Kind != KindEvent || r.Seq != want || r.Payload != ev(want) {
				t.Fatalf("round %d: record %d = %+v, want event %d", round, i+1, r, want)
			}
		}
		last := got[len(got)-1].Seq
		if last < reported {
			t.Fatalf("round %d: log ends at %d, child had reported %d", round, last, reported)
		}
		t.Logf("round %d: killed after >= %d events; log has snapshot@%d + %d events, last %d",
			round, reported, snap.Seq, len(got)-1, last)
		reported = last
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
