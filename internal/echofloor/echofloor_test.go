package echofloor

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
)

// serverEnv makes the test binary the echo server, listening on its value.
const serverEnv = "RESPAWN_ECHOFLOOR_SERVER"

func TestMain(m *testing.M) {
	if addr := os.Getenv(serverEnv); addr != "" {
		if err := serve(addr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve echoes every frame back on its connection until killed.
func serve(addr string) error {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := exec.Command(os.Args[0], "-test.run=^$")
	srv.Env = append(os.Environ(), serverEnv+"="+addr)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	poll.Until(b, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	var count atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	body := []byte(`{"op":"move","x":12,"y":34}`)
	errs := make(chan error, n)
	for i := range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		wg.Go(func() {
			r := gwproto.NewReader(bufio.NewReader(nc), 1<<20)
			req := gwproto.AppendFrame(nil, gwproto.Frame{Type: gwproto.TypeRequest, ID: uint64(i), Body: body})
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
	// Warm up, then measure round trips and both processes' CPU.
	time.Sleep(time.Second)
	c0, s0, m0 := count.Load(), cpuOf(b, srv.Process.Pid), cpuOf(b, os.Getpid())
	t0 := time.Now()
	time.Sleep(d)
	c1, s1, m1 := count.Load(), cpuOf(b, srv.Process.Pid), cpuOf(b, os.Getpid())
	el := time.Since(t0)
	close(stop)
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	rts := float64(c1 - c0)
	b.ReportMetric(rts/el.Seconds(), "rps")
	b.ReportMetric(float64((s1-s0).Microseconds())/rts, "server_cpu_us/rt")
	b.ReportMetric(float64((m1-m0).Microseconds())/rts, "client_cpu_us/rt")
	fmt.Fprintf(os.Stderr, "%s: %d clients, %.0f round trips/s, CPU per round trip: server %.1f µs, clients %.1f µs\n",
		b.Name(), n, rts/el.Seconds(), float64((s1-s0).Microseconds())/rts, float64((m1-m0).Microseconds())/rts)
	_ = srv.Process.Kill()
	wg.Wait()
}

func cpuOf(b *testing.B, pid int) time.Duration {
	d, err := process.CPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}
