package freeport

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestReservedPortsAreDistinctAndBindable(t *testing.T) {
	const n = 200
	var mu sync.Mutex
	seen := map[int]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	ports := make(chan *Port, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := Reserve()
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			dup := seen[p.Num]
			seen[p.Num] = true
			mu.Unlock()
			if dup {
				errs <- fmt.Errorf("port %d handed out twice", p.Num)
			}
			if p.Num < Low || p.Num > High || p.Addr != "127.0.0.1:"+strconv.Itoa(p.Num) {
				errs <- fmt.Errorf("port %d (%s) outside the band", p.Num, p.Addr)
			}
			ports <- p
		}()
	}
	wg.Wait()
	close(errs)
	close(ports)
	for err := range errs {
		t.Error(err)
	}
	for p := range ports {
		ln, err := net.Listen("tcp", p.Addr)
		if err != nil {
			t.Errorf("reserved %s cannot be bound: %v", p.Addr, err)
		} else {
			ln.Close()
		}
		if err := p.Release(); err != nil {
			t.Error(err)
		}
		if err := p.Release(); err != nil {
			t.Errorf("second release: %v", err)
		}
	}
}

// TestHolder is not a test: TestOtherProcessesPortsAreSkipped runs the test
// binary again with FREEPORT_HOLD=n to hold n ports in another process.
func TestHolder(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("FREEPORT_HOLD"))
	if n == 0 {
		t.Skip("helper process only")
	}
	for range n {
		p, err := Reserve()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("held", p.Num)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // hold until the parent closes stdin
}

func TestOtherProcessesPortsAreSkipped(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHolder$", "-test.v")
	cmd.Env = append(os.Environ(), "FREEPORT_HOLD=300")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	theirs := map[int]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			break
		}
		if num, ok := strings.CutPrefix(line, "held "); ok {
			p, _ := strconv.Atoi(num)
			theirs[p] = true
		}
	}
	if len(theirs) != 300 {
		t.Fatalf("helper process held %d ports, want 300", len(theirs))
	}
	var mine []*Port
	defer func() {
		for _, p := range mine {
			p.Release()
		}
	}()
	for range 300 {
		p, err := Reserve()
		if err != nil {
			t.Fatal(err)
		}
		if theirs[p.Num] {
			t.Fatalf("port %d is held by pid %d and was handed out again", p.Num, cmd.Process.Pid)
		}
		mine = append(mine, p)
	}
	// Once the holder exits, the kernel drops its locks: its ports can be
	// reserved again (checked on one lock file directly).
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	for num := range theirs {
		f, err := os.OpenFile(lockPath(num), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = flock(f)
		f.Close()
		if err != nil {
			t.Fatalf("port %d still locked after its holder exited: %v", num, err)
		}
		break
	}
}

type fakeTB struct {
	cleanups []func()
	failed   string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Fatalf(format string, a ...any) { f.failed = fmt.Sprintf(format, a...) }
func (f *fakeTB) Cleanup(fn func())              { f.cleanups = append(f.cleanups, fn) }

func TestAddrReleasesAtCleanup(t *testing.T) {
	var tb fakeTB
	addr := Addr(&tb)
	_, port, _ := net.SplitHostPort(addr)
	num, _ := strconv.Atoi(port)
	f, err := os.OpenFile(lockPath(num), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flock(f); err == nil {
		t.Fatalf("%s not locked while the test runs", addr)
	}
	for _, fn := range tb.cleanups {
		fn()
	}
	if err := flock(f); err != nil {
		t.Fatalf("%s still locked after cleanup: %v", addr, err)
	}
	if tb.failed != "" {
		t.Fatal(tb.failed)
	}
}
