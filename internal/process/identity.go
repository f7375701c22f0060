package process

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
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

// startTicks parses field 22 of a /proc/PID/stat line. The command name
// (field 2) may hold spaces and parentheses, so fields are counted from
// the last ')'.
func startTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 20", len(fields))
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: start time %q: %w", fields[19], err)
	}
	return v, nil
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
