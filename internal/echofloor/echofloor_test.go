package echofloor

import (
	"bufio"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/process"
)

// serverEnv makes the test binary the echo server, listening on its value.
const serverEnv = "RESPAWN_ECHOFLOOR_SERVER"

func TestMain(m *testing.M) {
	if isServer, err := serverMode(); isServer {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve echoes every frame back on its connection until killed.
func serve(addr string) error {
	return acceptEach(addr, func(nc net.Conn) {
		out := make(chan []byte, 64)
		go func() {
			for b := range out {
				if _, err := nc.Write(b); err != nil {
					return
				}
			}
		}()
		defer close(out)
		r := gwproto.NewReader(nc, 1<<20)
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			out <- gwproto.AppendFrame(nil, gwproto.Frame{Type: gwproto.TypeReply, ID: f.ID, Body: f.Body})
		}
	})
}

// acceptEach listens on addr and serves each connection on its own
// goroutine with handle, closing it after, until the listener fails.
func acceptEach(addr string, handle func(nc net.Conn)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer nc.Close()
			handle(nc)
		}()
	}
}

func duration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RESPAWN_BENCH_DURATION")); err == nil && d > 0 {
		return d
	}
	return 8 * time.Second
}

// BenchmarkEchoFloor: N clients, one request in flight each (a move's
// body), against the echo server in its own process.
func BenchmarkEchoFloor(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				echoRun(b, n, duration())
			}
		})
	}
}

func echoRun(b *testing.B, n int, d time.Duration) {
	addr := freeAddr(b)
	srv := startServer(b, serverEnv+"="+addr, addr)
	closedLoop(b, n, d, addr, map[string]int{"server": srv.Process.Pid})
}

// closedLoop runs n clients against addr, one request in flight each,
// for d after a second's warm-up, and reports round trips/s and the CPU
// per round trip of the clients (this process) and of each server in pids.
func closedLoop(b *testing.B, n int, d time.Duration, addr string, pids map[string]int) {
	var count atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	body := []byte(`{"op":"move","x":12,"y":34}`)
	errs := make(chan error, n)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
		wg.Wait()
	}()
	for i := range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, nc)
		wg.Go(func() {
			r := gwproto.NewReader(bufio.NewReader(nc), 1<<20)
			// The client's index in the ID's high half: a relay routes
			// the reply back by it.
			req := gwproto.AppendFrame(nil, gwproto.Frame{Type: gwproto.TypeRequest, ID: uint64(i) << 32, Body: body})
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := nc.Write(req); err != nil {
					errs <- err
					return
				}
				if _, err := r.Next(); err != nil {
					errs <- err
					return
				}
				count.Add(1)
			}
		})
	}
	// Warm up, then measure round trips and every process's CPU.
	time.Sleep(time.Second)
	cpu := func() map[string]time.Duration {
		out := map[string]time.Duration{"clients": cpuOf(b, os.Getpid())}
		for name, pid := range pids {
			out[name] = cpuOf(b, pid)
		}
		return out
	}
	c0, u0 := count.Load(), cpu()
	t0 := time.Now()
	time.Sleep(d)
	c1, u1 := count.Load(), cpu()
	el := time.Since(t0)
	close(stop)
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	rts := float64(c1 - c0)
	b.ReportMetric(rts/el.Seconds(), "rps")
	names := slices.Sorted(maps.Keys(u0))
	var line strings.Builder
	for _, name := range names {
		us := float64((u1[name] - u0[name]).Microseconds()) / rts
		b.ReportMetric(us, name+"_cpu_us/rt")
		fmt.Fprintf(&line, ", %s %.1f µs", name, us)
	}
	fmt.Fprintf(os.Stderr, "%s: %d clients, %.0f round trips/s, CPU per round trip%s\n", b.Name(), n, rts/el.Seconds(), line.String())
}

func cpuOf(b *testing.B, pid int) time.Duration {
	d, err := process.CPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}
