package gateway

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
)

// outbox is what a client connection has to write. A frame is written by
// its sender, at once, when nothing is queued before it and the socket
// takes it without blocking; otherwise it is queued, in order, for the
// connection's writer goroutine. On a closed loop (one request in flight)
// nothing is ever queued, and the writer wake-up the queue would cost per
// reply (a thread switch, dearer than the write) is saved. The queue is
// bounded in frames (gateway.out_queue): a client that does not read is
// cut, never buffered without end.
type outbox struct {
	raw  syscall.RawConn // nil: no direct writes (WebSocket, tests)
	max  int             // frames queued at most
	wake chan struct{}   // cap 1: the writer has something to take

	mu      sync.Mutex
	idle    sync.Cond // signalled when the socket's owner lets go
	pend    []byte    // frames queued, in order
	frames  int
	spare   []byte
	writing bool // a sender or the writer owns the socket's write side
	closed  bool // no more frames (the connection is closing)
	broken  bool // a direct write failed

	// The direct write's state, owned by whoever set writing: kept here
	// so the RawConn callback is made once, not per frame.
	step func(fd uintptr) bool
	wb   []byte
	wn   int
	werr error
}

// putResult is what became of a frame.
type putResult int

const (
	putWritten putResult = iota // written to the socket
	putQueued                   // queued for the writer
	putFull                     // refused: the queue is full
	putBroken                   // refused: the socket failed
	putClosed                   // dropped: the connection is closing
)

func (o *outbox) init(nc net.Conn, max int) {
	o.max = max
	o.wake = make(chan struct{}, 1)
	o.idle.L = &o.mu
	o.step = o.writeStep
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			o.raw = rc
		}
	}
}

// put writes b or queues it; b is not kept (a queued frame is copied).
func (o *outbox) put(b []byte) putResult {
	o.mu.Lock()
	if o.closed || o.broken {
		o.mu.Unlock()
		return putClosed
	}
	if o.raw != nil && !o.writing && len(o.pend) == 0 {
		o.writing = true
		o.mu.Unlock()
		n, err := o.tryWrite(b)
		o.mu.Lock()
		o.writing = false
		defer o.mu.Unlock()
		defer o.idle.Broadcast()
		if err != nil {
			o.broken = true
			return putBroken
		}
		if n < len(b) {
			// The socket is full: the rest goes first, before what others
			// queued meanwhile, and the writer waits for the socket.
			o.pend = append(append(make([]byte, 0, len(b)-n+len(o.pend)), b[n:]...), o.pend...)
			o.frames++
		}
		if len(o.pend) > 0 {
			o.signal()
		}
		if n < len(b) {
			return putQueued
		}
		return putWritten
	}
	if o.frames >= o.max {
		o.mu.Unlock()
		return putFull
	}
	o.pend = append(o.pend, b...)
	o.frames++
	if !o.writing {
		o.signal() // else the owner signals when it lets go
	}
	o.mu.Unlock()
	return putQueued
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// tryWrite writes as much of b as the socket takes now. A deadline that
// passed (the writer moves it only when it writes) is not a failure: the
// rest is queued and the writer, which sets a fresh one, writes it.
func (o *outbox) tryWrite(b []byte) (int, error) {
	o.wb, o.wn, o.werr = b, 0, nil
	err := o.raw.Write(o.step)
	n, werr := o.wn, o.werr
	o.wb = nil
	switch {
	case werr != nil:
		return n, werr
	case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
		return n, err
	}
	return n, nil
}

// writeStep is the RawConn callback: never waits for the socket.
func (o *outbox) writeStep(fd uintptr) bool {
	for o.wn < len(o.wb) {
		m, err := syscall.Write(int(fd), o.wb[o.wn:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if err != syscall.EAGAIN {
				o.werr = err
			}
			break
		}
		o.wn += m
	}
	return true
}

// take gives the writer everything queued and the socket's write side;
// false when there is nothing, or a sender is writing (it signals after).
func (o *outbox) take() ([]byte, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.writing || len(o.pend) == 0 {
		return nil, false
	}
	buf := o.pend
	o.pend, o.spare = o.spare[:0], nil
	o.frames = 0
	o.writing = true
	return buf, true
}

// release ends the writer's write of buf (from take).
func (o *outbox) release(buf []byte) {
	o.mu.Lock()
	o.writing = false
	if cap(buf) <= 64<<10 {
		o.spare = buf[:0] // a burst's big buffer is not pinned
	}
	if len(o.pend) > 0 {
		o.signal()
	}
	o.idle.Broadcast()
	o.mu.Unlock()
}

// close refuses further frames.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

// takeLast returns what is still queued once a sender's write in progress
// (never a blocking one) is over; nobody writes after.
func (o *outbox) takeLast() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	for o.writing {
		o.idle.Wait()
	}
	o.writing = true
	buf := o.pend
	o.pend, o.frames = nil, 0
	return buf
}
