package replica

import (
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/poll"
)

// A reader that starts before any owner (worldmgr before its scenes) gets
// NATS's empty "no responders" answer to its snapshot request: not an
// undecodable message, and the owner's later publications still arrive.
func TestReaderBeforeOwnerIsNotAnError(t *testing.T) {
	each(t, func(t *testing.T, tg target) {
		nc := connect(t, tg.url)
		m := testModule(Immediate, 0)
		opts := ReaderOptions{Prefix: prefix()}
		r := newReader(t, nc, m, opts)
		if err := r.WaitSynced(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if st := r.Stats(); st.Errors != 0 {
			t.Fatalf("reader counted %d errors with no owner up", st.Errors)
		}
		w := newWriter(t, connect(t, tg.url), m, WriterOptions{Prefix: opts.Prefix})
		if err := w.Put("k", rec{N: 1}); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 5*time.Second, func() error { return sameAs(r, map[string]rec{"k": {N: 1}}) })
		if st := r.Stats(); st.Errors != 0 {
			t.Fatalf("reader counted %d errors", st.Errors)
		}
	})
}
