package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Handle is a process this program may signal: one it started, or one it
// verified against an identity. Signals go through a pidfd where the kernel
// has one, so a pid reused by another process after ours died is never
// hit; without one, the identity is checked again right before each signal.
type Handle struct {
	pid int
	id  Identity

	// child: a process we started; Go's os.Process signals through a
	// pidfd, and exited is closed by whoever waits for it.
	child  *os.Process
	exited <-chan struct{}

	mu     sync.RWMutex
	fd     int // adopted: pidfd, or -1
	closed bool
}

// Child wraps a process this program started; exited must be closed once
// it has been waited for.
func Child(p *os.Process, exited <-chan struct{}) *Handle {
	return &Handle{pid: p.Pid, child: p, exited: exited, fd: -1}
}

// ErrNotOurs marks a pid that is not the process it was said to be.
var ErrNotOurs = errors.New("process: pid is not the process described")

// Adopt ties pid to a process this program did not start, if it is the one
// want describes. The pidfd is opened before the identity is read, so a pid
// reused in between fails the check instead of being adopted.
func Adopt(pid int, want Identity) (*Handle, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("%w: pid %d", ErrNotOurs, pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
		fd = -1 // no pidfd here: identity checks before each signal
	default:
		return nil, fmt.Errorf("%w: pid %d: %v", ErrNotOurs, pid, err)
	}
	got, err := ReadIdentity(pid)
	if err == nil {
		if d := want.Mismatch(got); d != "" {
			err = fmt.Errorf("%w: pid %d: %s", ErrNotOurs, pid, d)
		}
	} else {
		err = fmt.Errorf("%w: %v", ErrNotOurs, err)
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, err
	}
	return &Handle{pid: pid, id: want, fd: fd}, nil
}

// PID is the process id.
func (h *Handle) PID() int { return h.pid }

// Signal sends sig to the process, never to another one that took its pid.
func (h *Handle) Signal(sig syscall.Signal) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return fmt.Errorf("signal %s to pid %d: handle closed", sig, h.pid)
	}
	if h.child != nil {
		if err := h.child.Signal(sig); err != nil {
			return fmt.Errorf("signal %s to pid %d: %w", sig, h.pid, err)
		}
		return nil
	}
	if h.fd >= 0 {
		if err := unix.PidfdSendSignal(h.fd, sig, nil, 0); err != nil {
			return fmt.Errorf("signal %s to pid %d: %w", sig, h.pid, err)
		}
		return nil
	}
	got, err := ReadIdentity(h.pid)
	if err != nil {
		return fmt.Errorf("signal %s to pid %d: %w", sig, h.pid, os.ErrProcessDone)
	}
	if d := h.id.Mismatch(got); d != "" {
		return fmt.Errorf("signal %s: %w: pid %d: %s", sig, ErrNotOurs, h.pid, d)
	}
	return Signal(h.pid, sig)
}

// Exited reports whether the process is gone (a zombie counts as gone).
func (h *Handle) Exited() bool {
	if h.child != nil {
		select {
		case <-h.exited:
			return true
		default:
			return !Alive(h.pid)
		}
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return true
	}
	if h.fd >= 0 {
		// A pidfd turns readable when its process exits.
		fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err == nil && n > 0 {
			return true
		}
		return !Alive(h.pid)
	}
	got, err := ReadIdentity(h.pid)
	return err != nil || h.id.Mismatch(got) != "" || !Alive(h.pid)
}

// WaitGone waits until the process is gone or ctx ends.
func (h *Handle) WaitGone(ctx context.Context) error {
	// fd is read under the lock: Close may run meanwhile (the manager
	// releases a handle while a kill of it still waits).
	h.mu.RLock()
	pidfd := h.child == nil && h.fd >= 0
	h.mu.RUnlock()
	if pidfd {
		if done, err := h.waitPidfd(ctx); done {
			return err
		}
		// poll(2) failed on the pidfd: fall back to watching /proc.
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !h.Exited() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("pid %d still alive: %w", h.pid, ctx.Err())
		case <-h.exited: // nil for adopted processes: never ready
		case <-t.C:
		}
	}
	return nil
}

// Kill sends SIGKILL and waits until the process is gone, so whatever it
// held (a log's lock, a port) is free for its replacement.
func (h *Handle) Kill(ctx context.Context) error {
	if h.Exited() {
		return nil
	}
	if err := h.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return h.WaitGone(ctx)
}

// Close releases the pidfd; the handle then signals nothing.
func (h *Handle) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}

// waitPidfd sleeps in poll(2) on the pidfd, which the kernel wakes when the
// process exits: no polling of /proc for a process that lives for days.
// done false: poll itself failed and the caller should watch another way.
func (h *Handle) waitPidfd(ctx context.Context) (done bool, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return true, fmt.Errorf("pid %d still alive: %w", h.pid, err)
		}
		h.mu.RLock()
		if h.closed {
			h.mu.RUnlock()
			return true, fmt.Errorf("pid %d: handle closed", h.pid)
		}
		fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
		// Short slices, so ctx and Close are noticed soon.
		n, err := unix.Poll(fds, 50)
		h.mu.RUnlock()
		if err == nil && n > 0 {
			return true, nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false, nil
		}
	}
}
