package deadline

import (
	"testing"
	"time"
)

func TestExtendMovesOnlyWhenAnEighthPassed(t *testing.T) {
	var d Lazy
	var sets []time.Time
	set := func(at time.Time) error { sets = append(sets, at); return nil }
	const span = time.Hour
	d.Extend(span, set)
	d.Extend(span, set) // moments later: far enough still
	if len(sets) != 1 {
		t.Fatalf("%d sets, want 1", len(sets))
	}
	if left := time.Until(sets[0]); left < span-time.Minute {
		t.Fatalf("deadline %v away, want about %v", left, span)
	}
	d.at = time.Now().Add(span - span/8 - time.Second) // an eighth has passed
	d.Extend(span, set)
	if len(sets) != 2 {
		t.Fatalf("%d sets after an eighth passed, want 2", len(sets))
	}
}
