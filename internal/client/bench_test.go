package client

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// echoGatewayEnv makes the test binary a scripted echo gateway (see
// TestEchoGatewayProcess).
const echoGatewayEnv = "RESPAWN_CLIENT_ECHO_GATEWAY"

// TestEchoGatewayProcess is BenchmarkClosedLoop's gateway, in a process
// of its own so the benchmark's CPU figure is the client's alone: it
// prints its address and answers every request until stdin closes.
func TestEchoGatewayProcess(t *testing.T) {
	if os.Getenv(echoGatewayEnv) == "" {
		t.Skip("run by BenchmarkClosedLoop")
	}
	srv := newServer(t)
	fmt.Println(srv.ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startEchoGateway starts TestEchoGatewayProcess and returns its address.
func startEchoGateway(b *testing.B) string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestEchoGatewayProcess$")
	cmd.Env = append(os.Environ(), echoGatewayEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("echo gateway: %v", err)
	}
	return strings.TrimSpace(addr)
}

// BenchmarkClosedLoop: n players, each with one request in flight, through
// a scripted echo gateway in another process, driven either by a goroutine
// per player blocked in Request or by chained GoFunc callbacks. Reports
// this process's CPU per round trip: the client's.
//
//	go test -run='^$' -bench=ClosedLoop -benchtime=100000x -count=5 ./internal/client
func BenchmarkClosedLoop(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, mode := range []string{"request", "gofunc"} {
			b.Run(mode+"/"+strconv.Itoa(n), func(b *testing.B) {
				addr := startEchoGateway(b)
				clients := make([]*Client, n)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				for i := range clients {
					c, err := Dial(ctx, Options{Gateways: []string{addr}, Token: "t", DiscardPushes: true})
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					clients[i] = c
				}
				op := []byte(`{"op":"move","x":1,"y":2}`)
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				cpu0 := cpuTime()
				b.ResetTimer()
				for _, c := range clients {
					wg.Add(1)
					if mode == "request" {
						go func() {
							defer wg.Done()
							for left.Add(-1) >= 0 {
								if _, err := c.Request(ctx, op); err != nil {
									b.Error(err)
									return
								}
							}
						}()
						continue
					}
					var next func(Reply, error)
					next = func(_ Reply, err error) {
						if err != nil {
							b.Error(err)
						}
						if err != nil || left.Add(-1) < 0 {
							wg.Done()
							return
						}
						if err := c.GoFunc(op, next); err != nil {
							b.Error(err)
							wg.Done()
						}
					}
					next(Reply{}, nil)
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu_us/rt")
			})
		}
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
