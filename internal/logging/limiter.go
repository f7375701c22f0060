package logging

import (
	"sync"
	"time"
)

// Limiter rate-limits a repeated log line: per key, one line per interval
// passes, and the next line that passes reports how many were held back
// (a storm of "save refused" becomes one line a second with a count).
// Keys are bounded: past maxKeys the table starts afresh.
type Limiter struct {
	every   time.Duration
	maxKeys int

	mu   sync.Mutex
	keys map[string]*limited
}

type limited struct {
	last       time.Time
	suppressed int
}

// DefaultLimiterKeys bounds a Limiter's table when NewLimiter is given 0.
const DefaultLimiterKeys = 4096

// NewLimiter lets one line per key through every interval.
func NewLimiter(every time.Duration, maxKeys int) *Limiter {
	if maxKeys <= 0 {
		maxKeys = DefaultLimiterKeys
	}
	return &Limiter{every: every, maxKeys: maxKeys, keys: map[string]*limited{}}
}

// Allow says whether a line for key should be logged now, and how many
// lines for key were suppressed since the last one that was.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[key]
	if e == nil {
		if len(l.keys) >= l.maxKeys {
			clear(l.keys)
		}
		e = &limited{}
		l.keys[key] = e
	} else if now.Sub(e.last) < l.every {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}
