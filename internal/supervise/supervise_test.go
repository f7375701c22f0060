package supervise

import (
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/config"
)

func TestIntensityAndBackoff(t *testing.T) {
	p := config.Restart{MaxRestarts: 5, Window: 30 * time.Second, BackoffInitial: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond}
	var h History
	now := time.Unix(1000, 0)
	want := []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	for i, w := range want {
		d := Next(p, &h, now.Add(time.Duration(i)*time.Second))
		if d.Failed || d.Delay != w {
			t.Fatalf("restart %d: got %+v, want delay %s", i+1, d, w)
		}
	}
	if d := Next(p, &h, now.Add(5*time.Second)); !d.Failed {
		t.Fatalf("6th restart in 30s: want failed, got %+v", d)
	}
	if h.Total() != 6 {
		t.Fatalf("total %d", h.Total())
	}
	// Outside the window the history is forgotten.
	if d := Next(p, &h, now.Add(time.Minute)); d.Failed || d.Delay != 0 {
		t.Fatalf("after the window: %+v", d)
	}
	h.Reset()
	if d := Next(p, &h, now.Add(61*time.Second)); d.Failed || d.Delay != 0 {
		t.Fatalf("after reset: %+v", d)
	}
}
