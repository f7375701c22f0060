// Package process signals and watches OS processes. The world manager
// signals scene processes only through a Handle, which ties a pid to one
// process (one it started, or one whose Identity it checked) so a forged or
// reused pid is never hit; `respawn up` and the CLI watch daemons by pid.
package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Alive reports whether pid is a live process. A zombie (dead, not yet
// reaped by its parent) counts as dead: it can never run again. But a
// killed thread group leader turns zombie before its other threads finish
// exiting, and until the last one does the process still holds its files,
// flocks, mappings and sockets: that is still alive (a restart onto them
// would fail), which is what num_threads above 1 says.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state letter follows the command name in parentheses, which may
	// itself contain spaces or parentheses: split at the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return true
	}
	switch stat[i+2] {
	case 'X':
		return false
	case 'Z':
		// Fields after the state: ppid pgrp ... num_threads is the 18th.
		f := bytes.Fields(stat[i+2:])
		if len(f) < 18 {
			return false
		}
		n, err := strconv.Atoi(string(f[17]))
		return err == nil && n > 1
	}
	return true
}

// Signal sends sig to pid.
func Signal(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return fmt.Errorf("signal pid %d: not a process id", pid)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal %s to pid %d: %w", sig, pid, err)
	}
	return nil
}

// WaitGone polls until pid is no longer alive or ctx ends.
func WaitGone(ctx context.Context, pid int) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for Alive(pid) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("pid %d still alive: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// ParseSignal accepts KILL, SIGKILL, kill, STOP, TERM, CONT, INT, HUP.
func ParseSignal(s string) (syscall.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(s), "SIG") {
	case "KILL":
		return syscall.SIGKILL, nil
	case "STOP":
		return syscall.SIGSTOP, nil
	case "CONT":
		return syscall.SIGCONT, nil
	case "TERM":
		return syscall.SIGTERM, nil
	case "INT":
		return syscall.SIGINT, nil
	case "HUP":
		return syscall.SIGHUP, nil
	}
	return 0, fmt.Errorf("unknown signal %q (want KILL, STOP, CONT, TERM, INT or HUP)", s)
}
