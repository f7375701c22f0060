package replica

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/respawn-dev/respawn/internal/freeport"
)

// embedded is an in-process NATS server that can be stopped and started
// again on the same port and store directory.
type embedded struct {
	t    testing.TB
	srv  *server.Server
	port int
	dir  string
}

func startEmbedded(t testing.TB) *embedded {
	t.Helper()
	// A reserved port, not -1: the server is restarted on the same port,
	// and a port the kernel picked could be handed to someone else between
	// a stop and the next start.
	_, port, _ := net.SplitHostPort(freeport.Addr(t))
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	e := &embedded{t: t, port: p, dir: t.TempDir()}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *embedded) start() {
	e.t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: e.port, JetStream: true, StoreDir: e.dir, NoSigs: true, NoLog: true,
	})
	if err != nil {
		e.t.Fatalf("nats server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		e.t.Fatalf("nats server not ready")
	}
	e.srv = srv
}

func (e *embedded) stop() {
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		e.srv = nil
	}
}

func (e *embedded) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", e.port) }

// target is a NATS server a test runs against.
type target struct {
	name string
	url  string
	emb  *embedded // nil for the external server
}

// targets returns the embedded server and, when RESPAWN_TEST_NATS_URL is
// set, the external one.
func targets(t *testing.T) []target {
	out := []target{{name: "embedded"}}
	if u := os.Getenv("RESPAWN_TEST_NATS_URL"); u != "" {
		out = append(out, target{name: "external", url: u})
	}
	return out
}

// each runs fn against every target, starting the embedded server lazily.
func each(t *testing.T, fn func(t *testing.T, tg target)) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			if tg.url == "" {
				tg.emb = startEmbedded(t)
				tg.url = tg.emb.url()
			}
			fn(t, tg)
		})
	}
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.Name(t.Name()),
	)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// prefix gives each test its own subjects on a shared server.
func prefix() string { return "rtest." + nuid.Next() }

type rec struct {
	N int    `json:"n"`
	S string `json:"s"`
}

func testModule(mode Mode, iv time.Duration) Module {
	return Module{Name: "m", Owner: RoleScene, Subscribers: []Role{RoleGateway, RoleCLI}, Mode: mode, Interval: iv}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return c
}

func newWriter(t testing.TB, nc *nats.Conn, m Module, opts WriterOptions) *Writer[rec] {
	t.Helper()
	w, err := NewWriter[rec](ctx(t), nc, m, m.Owner, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func newReader(t testing.TB, nc *nats.Conn, m Module, opts ReaderOptions) *Reader[rec] {
	t.Helper()
	r, err := NewReader[rec](ctx(t), nc, m, RoleGateway, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// sameAs reports how r differs from want (nil when equal).
func sameAs(r *Reader[rec], want map[string]rec) error {
	all := r.All()
	if len(all) != len(want) {
		return fmt.Errorf("reader has %d keys, want %d", len(all), len(want))
	}
	for _, e := range all {
		if w, ok := want[e.Key]; !ok || w != e.Value {
			return fmt.Errorf("key %q = %+v, want %+v (present %v)", e.Key, e.Value, w, ok)
		}
	}
	return nil
}
