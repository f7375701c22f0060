package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/replica"
)

// hangingListener accepts connections and never answers: a scene process
// being torn down by the kernel, whose listening socket still completes
// TCP handshakes.
func hangingListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return ln.Addr().String()
}

// A link call waiting for a dial to a process that is going stops waiting
// as soon as the table names its successor (or no running process), rather
// than for the dial's timeout.
func TestLinkStopsWaitingForADyingProcess(t *testing.T) {
	g := startGateway(t, nil)
	w, err := replica.NewWriter[modules.SceneRow](t.Context(), g.opt.NATS, modules.SceneTable, replica.RoleWorldMgr,
		replica.WriterOptions{Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	put := func(row modules.SceneRow) {
		t.Helper()
		if err := w.Put(row.ID, row); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 5*time.Second, func() error {
			if got, ok := g.rt.table.Get(row.ID); !ok || got != row {
				return fmt.Errorf("the gateway's table shows %+v, want %+v", got, row)
			}
			return nil
		})
	}
	for _, next := range []struct {
		name string
		row  modules.SceneRow
		want string
	}{
		{"successor running", modules.SceneRow{ID: "town", Process: "town", Epoch: 2, State: modules.SceneRunning, Link: "127.0.0.1:1"}, "epoch 2"},
		{"no process running", modules.SceneRow{ID: "town", Process: "town", Epoch: 2, State: modules.SceneStarting}, "no running scene process"},
	} {
		t.Run(next.name, func(t *testing.T) {
			put(modules.SceneRow{ID: "town", Process: "town", Epoch: 1, State: modules.SceneRunning, Link: hangingListener(t)})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got := make(chan error, 1)
			go func() {
				_, err := g.rt.link(ctx, "town")
				got <- err
			}()
			select {
			case err := <-got:
				t.Fatalf("link returned while its dial hangs: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
			changed := time.Now()
			put(next.row)
			select {
			case err := <-got:
				if err == nil || !strings.Contains(err.Error(), next.want) || errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("link: %v, want an error naming %q", err, next.want)
				}
				if d := time.Since(changed); d > time.Second {
					t.Fatalf("link waited %s after the table changed", d)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("link still waits for the dying process's dial after the table changed")
			}
		})
	}
}
