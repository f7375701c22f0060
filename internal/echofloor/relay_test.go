package echofloor

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/poll"
)

// relayEnv makes the test binary the relay ("listen,backend"); backendEnv
// the backend behind it (its listen address).
const (
	relayEnv   = "RESPAWN_ECHOFLOOR_RELAY"
	backendEnv = "RESPAWN_ECHOFLOOR_BACKEND"
	// relayLinks is the relay's connections to the backend (the gateway's
	// link_conns default).
	relayLinks = 2
)

// batcher is one connection's writer that turns everything queued since its
// last write into one write: the shape of a scene link's two ends, where
// many players' frames share a connection.
type batcher struct {
	nc   net.Conn
	mu   sync.Mutex
	buf  []byte
	wake chan struct{}
}

func newBatcher(nc net.Conn) *batcher {
	b := &batcher{nc: nc, wake: make(chan struct{}, 1)}
	go b.run()
	return b
}

func (b *batcher) queue(frame []byte) {
	b.mu.Lock()
	b.buf = append(b.buf, frame...)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *batcher) run() {
	var out []byte
	for range b.wake {
		b.mu.Lock()
		out, b.buf = b.buf, out[:0]
		b.mu.Unlock()
		if len(out) == 0 {
			continue
		}
		if _, err := b.nc.Write(out); err != nil {
			return
		}
	}
}

// serveBackend echoes every frame on its connection, batching the replies:
// a scene process without a scene.
func serveBackend(addr string) error {
	return acceptEach(addr, func(nc net.Conn) {
		w := newBatcher(nc)
		r := gwproto.NewReader(nc, 1<<20)
		var reply []byte
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			reply = gwproto.AppendFrame(reply[:0], gwproto.Frame{Type: gwproto.TypeReply, ID: f.ID, Body: f.Body})
			w.queue(reply)
		}
	})
}

// serveRelay relays clients' frames to the backend over relayLinks
// connections and the replies back: a gateway without sessions, routing,
// limits or pushes. A client's frames carry its index in their IDs' high
// half; per client connection a reader goroutine and a writer goroutine fed
// by a channel, as the gateway has.
func serveRelay(addr, backend string) error {
	links := make([]*batcher, relayLinks)
	var mu sync.Mutex
	clients := map[uint32]chan []byte{}
	for i := range links {
		nc, err := net.Dial("tcp", backend)
		if err != nil {
			return err
		}
		links[i] = newBatcher(nc)
		go func() {
			r := gwproto.NewReader(nc, 1<<20)
			for {
				f, err := r.Next()
				if err != nil {
					os.Exit(1)
				}
				mu.Lock()
				out := clients[uint32(f.ID>>32)]
				mu.Unlock()
				if out != nil {
					out <- gwproto.AppendFrame(nil, gwproto.Frame{Type: f.Type, ID: f.ID, Body: f.Body})
				}
			}
		}()
	}
	return acceptEach(addr, func(nc net.Conn) {
		out := make(chan []byte, 64)
		var idx uint32
		registered := false
		defer func() {
			if registered {
				mu.Lock()
				delete(clients, idx)
				mu.Unlock()
			}
		}()
		go func() {
			for b := range out {
				if _, err := nc.Write(b); err != nil {
					return
				}
			}
		}()
		r := gwproto.NewReader(nc, 1<<20)
		var frame []byte
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			if !registered {
				idx, registered = uint32(f.ID>>32), true
				mu.Lock()
				clients[idx] = out
				mu.Unlock()
			}
			frame = gwproto.AppendFrame(frame[:0], f)
			links[idx%relayLinks].queue(frame)
		}
	})
}

// BenchmarkRelayFloor: as BenchmarkEchoFloor, but through a relay process
// to a backend process: the floor of a two-hop design (client -> gateway
// -> scene) on this machine, with no logic or log at either hop.
func BenchmarkRelayFloor(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				relayRun(b, n, duration())
			}
		})
	}
}

func relayRun(b *testing.B, n int, d time.Duration) {
	backendAddr, relayAddr := freeAddr(b), freeAddr(b)
	backend := startServer(b, backendEnv+"="+backendAddr, backendAddr)
	relay := startServer(b, relayEnv+"="+relayAddr+","+backendAddr, relayAddr)
	closedLoop(b, n, d, relayAddr, map[string]int{"relay": relay.Process.Pid, "backend": backend.Process.Pid})
}

func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer runs this test binary as a server (env selects which) and
// waits until addr accepts; the server is killed, by its pid, and waited
// for when the benchmark ends, whether or not it came up.
func startServer(b *testing.B, env, addr string) *exec.Cmd {
	srv := exec.Command(os.Args[0], "-test.run=^$")
	srv.Env = append(os.Environ(), env)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	})
	poll.Until(b, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return srv
}

// serverMode runs the server a test binary was started as, if any.
func serverMode() (bool, error) {
	if addr := os.Getenv(serverEnv); addr != "" {
		return true, serve(addr)
	}
	if addr := os.Getenv(backendEnv); addr != "" {
		return true, serveBackend(addr)
	}
	if v := os.Getenv(relayEnv); v != "" {
		listen, backend, _ := strings.Cut(v, ",")
		return true, serveRelay(listen, backend)
	}
	return false, nil
}
