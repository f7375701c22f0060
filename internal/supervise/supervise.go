// Package supervise is the restart policy shared by the world manager (for
// scene processes) and `respawn up` (for daemons): OTP-style restart
// intensity plus exponential backoff.
package supervise

import (
	"time"

	"github.com/respawn-dev/respawn/internal/config"
)

// History remembers one child's recent restarts. The zero value is ready.
type History struct {
	times []time.Time
	total int
}

// Decision is what to do after a child died.
type Decision struct {
	// Failed: the child restarted more than MaxRestarts times within
	// Window; stop restarting it until an operator says otherwise.
	Failed bool
	// Delay before the restart.
	Delay time.Duration
}

// Next records a death at now and decides. The first restart in a window is
// immediate, because a crash that players should not notice must be fixed
// in milliseconds; later ones back off exponentially so a crash loop does
// not burn the machine before the intensity limit trips.
func Next(p config.Restart, h *History, now time.Time) Decision {
	kept := h.times[:0]
	for _, t := range h.times {
		if now.Sub(t) < p.Window {
			kept = append(kept, t)
		}
	}
	h.times = append(kept, now)
	h.total++
	n := len(h.times)
	if n > p.MaxRestarts {
		return Decision{Failed: true}
	}
	if n == 1 || p.BackoffInitial == 0 {
		return Decision{}
	}
	d := p.BackoffInitial
	for i := 2; i < n && d < p.BackoffMax; i++ {
		d *= 2
	}
	return Decision{Delay: min(d, p.BackoffMax)}
}

// Reset forgets the recent restarts (an operator cleared a failed child).
func (h *History) Reset() { h.times = h.times[:0] }

// Total is the number of restarts ever recorded.
func (h *History) Total() int { return h.total }

// SetTotal restores the count after a manager restart, from what the child
// reports about itself.
func (h *History) SetTotal(n int) { h.total = n }
