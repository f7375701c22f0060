package gateway

import (
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/gwproto"
)

// A stopping gateway (an upgrade) tells its clients where to move: CLOSE
// shutting_down carries another gateway's address.
func TestShutdownTellsClientsWhereToMove(t *testing.T) {
	g := startGateway(t, nil)
	nc := handshake(t, g.Addr())
	// Set before Shutdown starts: its close path is what reads it.
	g.opt.MoveTo = "127.0.0.1:7102"
	go g.Shutdown()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := gwproto.NewReader(nc, 1<<20)
	for {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("no CLOSE: %v", err)
		}
		if f.Type != gwproto.TypeClose {
			continue
		}
		var e gwproto.ErrorBody
		if err := gwproto.DecodeBody(f, &e); err != nil {
			t.Fatal(err)
		}
		if f.Code != gwproto.CodeShuttingDown || e.MoveTo != "127.0.0.1:7102" {
			t.Fatalf("CLOSE %s %+v, want shutting_down moving to 127.0.0.1:7102", f.Code, e)
		}
		return
	}
}
