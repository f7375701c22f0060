// Package deadline moves socket deadlines lazily. Setting a deadline is a
// runtime timer update, too dear to do once per frame on a busy
// connection; a Lazy deadline moves only once an eighth of its span has
// passed, so an operation gets between 7/8 of the span and all of it.
package deadline

import "time"

// Lazy is one connection's read or write deadline, owned by the goroutine
// that reads or writes. The zero value has no deadline set yet.
type Lazy struct{ at time.Time }

// Extend makes the deadline at least 7/8 of span away, calling set (e.g.
// net.Conn.SetWriteDeadline) when it moves it.
func (d *Lazy) Extend(span time.Duration, set func(time.Time) error) {
	now := time.Now()
	if d.at.Sub(now) >= span-span/8 {
		return
	}
	d.at = now.Add(span)
	_ = set(d.at)
}
