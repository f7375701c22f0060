package scene

import (
	"errors"
	"testing"

	"go.uber.org/zap"
)

// The acknowledgement of a save can arrive before the submitter of the
// event that queued it knows the save's version (a leave's final save
// acknowledged within a millisecond while the loop hands the effects
// back): a waiter registered before the submit still gets it. Before,
// the waiter was registered afterwards and waited until its deadline
// (56 of 1000 logouts in a 10-minute chaos run).
func TestSaveAckBeforeAwaitIsNotMissed(t *testing.T) {
	d := newDataLink(nil, 1, zap.NewNop())
	w := d.expect("p")
	d.resolve("p", 7, nil) // acknowledged before the submitter looks
	select {
	case err := <-d.await("p", w, 7):
		if err != nil {
			t.Fatalf("outcome %v, want nil", err)
		}
	default:
		t.Fatal("an acknowledgement heard before await was missed")
	}
	if n := len(d.waiters); n != 0 {
		t.Fatalf("%d players still have waiters after delivery", n)
	}
}

func TestSaveWaiterNeedsItsVersionOrNewer(t *testing.T) {
	d := newDataLink(nil, 1, zap.NewNop())
	w := d.expect("p")
	d.resolve("p", 3, nil)   // an older save's answer
	d.resolve("q", 9, nil)   // another player's
	ch := d.await("p", w, 5) // the version this event saved
	select {
	case err := <-ch:
		t.Fatalf("delivered %v for an older version", err)
	default:
	}
	refused := errors.New("stale epoch")
	d.resolve("p", 6, refused)
	select {
	case err := <-ch:
		if !errors.Is(err, refused) {
			t.Fatalf("outcome %v, want %v", err, refused)
		}
	default:
		t.Fatal("a newer version's outcome was not delivered")
	}
}

func TestSaveWaiterForgotten(t *testing.T) {
	d := newDataLink(nil, 1, zap.NewNop())
	a, b := d.expect("p"), d.expect("p")
	d.forget("p", a)
	if got := len(d.waiters["p"]); got != 1 {
		t.Fatalf("%d waiters after forgetting one of two", got)
	}
	d.forget("p", b)
	d.forget("p", b) // twice is harmless
	if _, ok := d.waiters["p"]; ok {
		t.Fatal("a player with no waiters left keeps an entry")
	}
}
