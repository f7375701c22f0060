package process

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/poll"
)

// leaderExitsEnv makes the test binary, started again as a child, end only
// its main thread: the leader turns zombie while the runtime's other
// threads run on, the state a killed process is in while its threads exit.
const leaderExitsEnv = "PROCESS_TEST_LEADER_EXITS"

func init() {
	if os.Getenv(leaderExitsEnv) != "1" {
		return
	}
	// init runs on the main goroutine, which runtime.main runs on the
	// main thread; locked, the raw exit ends that thread only.
	runtime.LockOSThread()
	syscall.RawSyscall(syscall.SYS_EXIT, 0, 0, 0)
}

// stateOf returns the state letter of pid from /proc.
func stateOf(pid int) (byte, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0, fmt.Errorf("pid %d: short stat %q", pid, stat)
	}
	return stat[i+2], nil
}

// A zombie leader whose other threads still run holds the process's files
// and locks: it is alive until the last thread is gone, and only then dead
// even though nobody reaped it yet.
func TestZombieLeaderWithLiveThreadsIsAlive(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), leaderExitsEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	poll.Until(t, 10*time.Second, func() error {
		st, err := stateOf(pid)
		if err != nil {
			return poll.Stop(err)
		}
		if st != 'Z' {
			return fmt.Errorf("pid %d leader still %c", pid, st)
		}
		return nil
	})
	if !Alive(pid) {
		t.Fatalf("pid %d: zombie leader with live threads reported dead", pid)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := WaitGone(short, pid); err == nil {
		t.Fatalf("pid %d: WaitGone returned while its threads run", pid)
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := WaitGone(ctx, pid); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie with no thread left counts as dead.
	if st, err := stateOf(pid); err != nil || st != 'Z' {
		t.Fatalf("pid %d after the kill: state %c, %v; want an unreaped zombie", pid, st, err)
	}
	reaped = true
	_ = cmd.Wait()
	if Alive(pid) {
		t.Fatalf("pid %d alive after it was reaped", pid)
	}
}

func TestCPUGrowsWithWork(t *testing.T) {
	before, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel has charged at least two clock ticks.
	x := 0
	deadline := time.Now().Add(10 * time.Second)
	for {
		for i := range 1 << 20 {
			x += i
		}
		after, err := CPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after >= before+20*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU stayed at %v after 10 s of spinning (from %v)", after, before)
		}
	}
	_ = x
	if _, err := CPU(-1); err == nil {
		t.Fatal("CPU of pid -1: no error")
	}
}
