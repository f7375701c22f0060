package process

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Identity is what ties a pid to one particular process: the executable it
// runs, when it started (which a reused pid cannot repeat), and its command
// line.
type Identity struct {
	Exe string
	// StartTicks is field 22 of /proc/PID/stat: the start time in clock
	// ticks after boot.
	StartTicks uint64
	Cmdline    []string
}

// ReadIdentity reads pid's identity from /proc.
func ReadIdentity(pid int) (Identity, error) {
	if pid <= 0 {
		return Identity{}, fmt.Errorf("identity of pid %d: not a process id", pid)
	}
	dir := "/proc/" + strconv.Itoa(pid)
	exe, err := os.Readlink(dir + "/exe")
	if err != nil {
		return Identity{}, fmt.Errorf("identity of pid %d: %w", pid, err)
	}
	// A binary replaced on disk (a rebuild) still names its process.
	exe = strings.TrimSuffix(exe, " (deleted)")
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return Identity{}, fmt.Errorf("identity of pid %d: %w", pid, err)
	}
	start, err := startTicks(stat)
	if err != nil {
		return Identity{}, fmt.Errorf("identity of pid %d: %w", pid, err)
	}
	raw, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return Identity{}, fmt.Errorf("identity of pid %d: %w", pid, err)
	}
	args := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	return Identity{Exe: exe, StartTicks: start, Cmdline: args}, nil
}

// startTicks parses field 22 of a /proc/PID/stat line.
func startTicks(stat []byte) (uint64, error) {
	v, err := statField(stat, 22)
	if err != nil {
		return 0, fmt.Errorf("stat: start time: %w", err)
	}
	return v, nil
}

// statField parses numeric field n (counted from 1, as proc(5) does) of a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func statField(stat []byte, n int) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (state).
	if len(fields) < n-2 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least %d", len(fields), n-2)
	}
	v, err := strconv.ParseUint(fields[n-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: field %d %q: %w", n, fields[n-3], err)
	}
	return v, nil
}

// CPU is the CPU time pid has used so far, user and system, all threads
// (/proc/PID/stat utime + stime, in clock ticks of 10 ms).
func CPU(pid int) (time.Duration, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	ut, err := statField(stat, 14)
	if err != nil {
		return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	st, err := statField(stat, 15)
	if err != nil {
		return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(ut+st) * tick, nil
}

// Mismatch says how got differs from want, or "" when they are the same
// process.
func (want Identity) Mismatch(got Identity) string {
	switch {
	case want.StartTicks != got.StartTicks:
		return fmt.Sprintf("start time %d, expected %d (pid reused?)", got.StartTicks, want.StartTicks)
	case want.Exe != got.Exe:
		return fmt.Sprintf("executable %q, expected %q", got.Exe, want.Exe)
	case !slices.Equal(want.Cmdline, got.Cmdline):
		return fmt.Sprintf("command line %q, expected %q", got.Cmdline, want.Cmdline)
	}
	return ""
}
