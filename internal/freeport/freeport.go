// Package freeport owns handing out loopback ports that a caller gives to
// another process to bind (a daemon a test starts, a chaos cluster), without
// two callers ever getting the same port at the same time — across goroutines,
// test binaries run in parallel by `go test ./...`, and chaos runs.
//
// Listening on :0, closing and passing the number on races: the kernel hands
// the same number to the next :0 listener or outgoing connection. Instead:
//
//   - ports come from a fixed band (Low..High) below Linux's default
//     ephemeral range (32768–60999), so the kernel never picks them for :0
//     listeners or outgoing connections;
//   - a port is held by an exclusive flock(2) on a lock file under
//     os.TempDir() (one directory per user). flock locks belong to the open
//     file, so they exclude other processes and other calls in the same
//     process alike, and the kernel drops them when the holder exits, even by
//     kill -9: a crashed test never leaks a reservation;
//   - the port must also accept a listener at reservation time, so software
//     outside this scheme that already uses it is skipped.
//
// A reservation lasts until Release (or the end of the test, for Addr).
package freeport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// The band ports are taken from. Its size bounds how many reservations can be
// held at once machine-wide, and the number of lock files in the directory.
const (
	Low  = 20000
	High = 29999 // inclusive
)

// ErrExhausted means every port of the band is reserved or in use.
var ErrExhausted = errors.New("freeport: no free port in the band")

// Port is one reserved loopback port.
type Port struct {
	// Addr is "127.0.0.1:PORT".
	Addr string
	// Num is the port number.
	Num  int
	lock *os.File
}

// Release gives the port back. The process that was handed the port may
// still be bound to it; releasing only lets the next Reserve pick it.
func (p *Port) Release() error {
	if p.lock == nil {
		return nil
	}
	err := p.lock.Close() // closing the file drops its flock
	p.lock = nil
	if err != nil {
		return fmt.Errorf("freeport: release %d: %w", p.Num, err)
	}
	return nil
}

// Reserve returns a port no other caller holds and that was free a moment
// ago. The caller must Release it (or exit).
func Reserve() (*Port, error) {
	if err := os.MkdirAll(filepath.Dir(lockPath(Low)), 0o700); err != nil {
		return nil, fmt.Errorf("freeport: lock directory: %w", err)
	}
	n := High - Low + 1
	// Start somewhere different in every process and call, so parallel
	// callers rarely probe the same files.
	start := int((uint64(os.Getpid())*7919 + uint64(time.Now().UnixNano())) % uint64(n))
	for i := range n {
		num := Low + (start+i)%n
		f, err := os.OpenFile(lockPath(num), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("freeport: lock file for %d: %w", num, err)
		}
		if err := flock(f); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // held by another caller
			}
			return nil, fmt.Errorf("freeport: lock %d: %w", num, err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(num)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			f.Close() // used by something outside this scheme
			continue
		}
		if err := ln.Close(); err != nil {
			f.Close()
			return nil, fmt.Errorf("freeport: probe %d: %w", num, err)
		}
		return &Port{Addr: addr, Num: num, lock: f}, nil
	}
	return nil, ErrExhausted
}

// lockPath is the lock file of port num: one directory per user, so users do
// not trip over each other's file permissions.
func lockPath(num int) string {
	return filepath.Join(os.TempDir(), "respawn-ports-"+strconv.Itoa(os.Getuid()), strconv.Itoa(num)+".lock")
}

// flock takes f's exclusive lock without waiting.
func flock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// TB is the part of testing.TB that Addr needs (so this package does not
// import "testing").
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Addr reserves a port for the rest of the test and returns its
// "127.0.0.1:PORT" address; the test's cleanup releases it (after the
// cleanups registered later, such as the ones stopping the processes that
// bound it).
func Addr(t TB) string {
	t.Helper()
	p, err := Reserve()
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := p.Release(); err != nil {
			t.Fatalf("%v", err)
		}
	})
	return p.Addr
}
