package scene

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/player"
)

// A standby follows the primary's live log, events keep coming after its
// last catch-up, and a snapshot moves the log under it; when the primary
// goes, the standby takes its copy over with only the tail read, and ends
// in exactly the state a full replay of the log builds.
func TestStandbyCopyEqualsAFullReplay(t *testing.T) {
	dir := t.TempDir()
	h := testHost(t, dir)
	forest, _ := h.loop("forest")
	ctx := context.Background()
	submit := func(ev game.Event) {
		t.Helper()
		if _, err := forest.submit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		submit(game.Enter{Player: player.Data{ID: "p" + string(rune('a'+i)), Name: "P", Gold: 10}, Version: 1})
	}
	seqs := map[string]uint64{}
	move := func(n int) {
		for i := range n {
			p := "p" + string(rune('a'+i%20))
			seqs[p]++
			submit(game.Request{Session: "s-" + p, Player: p, Seq: seqs[p], Op: game.Move{X: 1 + i%50, Y: 1 + i%30}})
		}
	}
	move(200)

	sb := newHost(h.cfg, h.log, 2)
	fol, err := sb.newFollower(LogPath(dir, "forest"), []string{"forest"})
	if err != nil {
		t.Fatalf("follow the live log: %v", err)
	}
	fol.catchUp()
	move(100)
	// A snapshot, on the loop's goroutine (reads run there): the
	// generation moves under the follower.
	var snapErr error
	if err := forest.read(ctx, func(*game.Scene) { snapErr = forest.snapshot() }); err != nil || snapErr != nil {
		t.Fatal(err, snapErr)
	}
	move(50)
	fol.catchUp()
	move(30) // the tail the takeover reads itself
	// The primary goes without a snapshot: the log alone carries the state.
	for _, l := range h.sortedLoops() {
		l.stop()
	}
	want := forest.st.Hash()
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}

	if err := sb.open(t.Context(), LogPath(dir, "forest"), true); err != nil {
		t.Fatal(err)
	}
	defer sb.store.Close()
	fol.closeStore()
	sb.follow = fol
	slot, _ := sb.store.Get("forest")
	st, n, tail, ok := fol.finish("forest", slot)
	if !ok {
		t.Fatal("the standby's copy was not usable")
	}
	// Ticks are logged too: at least the moves.
	if tail < 30 || n < 80 || n-tail < 50 {
		t.Fatalf("took over with %d events since the snapshot, %d of them read at the takeover; want at least 80 and 30, and the 50 before the catch-up already applied", n, tail)
	}
	if st.Hash() != want {
		t.Fatal("the standby's copy differs from the primary's state")
	}
	full, _, err := Replay(slot, st.Def())
	if err != nil {
		t.Fatal(err)
	}
	if full.Hash() != want {
		t.Fatal("a full replay differs from the primary's state")
	}
}

// A spare tells the manager it follows the live log and caught up: one
// line on the descriptor ctlproto.ReadyFDEnv names, with how far it got,
// and the descriptor is closed after it (the manager's read ends).
func TestStandbySignalsReadyOnItsPipe(t *testing.T) {
	dir := t.TempDir()
	h := testHost(t, dir)
	forest, _ := h.loop("forest")
	for i := range 5 {
		if _, err := forest.submit(t.Context(), game.Enter{Player: player.Data{ID: "p" + string(rune('a'+i)), Name: "P"}, Version: 1}); err != nil {
			t.Fatal(err)
		}
	}
	sb := newHost(h.cfg, h.log, 2)
	fol, err := sb.newFollower(LogPath(dir, "forest"), []string{"forest"})
	if err != nil {
		t.Fatal(err)
	}
	defer fol.closeStore()
	fol.catchUp()

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The spare closes what it is given: give it its own descriptor.
	fd, err := syscall.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Setenv(ctlproto.ReadyFDEnv, strconv.Itoa(fd))
	p := &Process{log: h.log, spec: config.Process{Name: "forest", Scenes: []string{"forest"}}, start: time.Now()}
	p.signalReady(fol)
	got, err := io.ReadAll(r) // EOF: the spare closed its end
	if err != nil {
		t.Fatal(err)
	}
	line := string(got)
	if !strings.HasPrefix(line, ctlproto.ReadyPrefix+" following 1 of 1 scenes, caught up at ") || !strings.HasSuffix(line, "\n") {
		t.Fatalf("ready line %q", line)
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimPrefix(line, ctlproto.ReadyPrefix+" following 1 of 1 scenes, caught up at "), "%d", &n); err != nil || n < 5 {
		t.Fatalf("ready line %q: want at least the 5 entries applied (%v)", line, err)
	}

	// A bad descriptor is said in the log, not a panic, and nothing else
	// is closed.
	t.Setenv(ctlproto.ReadyFDEnv, "1")
	p.signalReady(fol)
}
