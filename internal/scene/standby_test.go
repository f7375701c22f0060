package scene

import (
	"context"
	"testing"

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
