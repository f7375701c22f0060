// Package version is what a binary says about itself: its build version
// (set at link time) and the protocol and storage formats it speaks and
// reads. Every process reports it (control hello, /healthz) so version skew
// in a cluster is visible, and `respawn upgrade` compares a new scene
// binary's readable formats with what the running one writes before it
// replaces anything.
package version

import (
	"fmt"
	"runtime"
)

// build is the build version, set by the linker:
//
//	go build -ldflags "-X github.com/respawn-dev/respawn/internal/version.build=v1.2.3"
//
// The Makefile sets it from `git describe`; a plain `go build` says "dev".
var build = "dev"

// formatBump is a test hook set by the linker (any non-empty value): the
// binary claims snapshot and event formats one above the real ones and
// reads only those, as a release with an incompatible format and no
// migration would. Tests use it to prove an upgrade stops before such a
// binary touches a log.
var formatBump = ""

// Build is the build version of this binary.
func Build() string { return build }

// MaxBuildLen bounds a build string another process reports.
const MaxBuildLen = 128

// Info is what one process reports about itself. A zero protocol or format
// means the process does not speak or write it.
type Info struct {
	Build string `json:"build"`
	Go    string `json:"go,omitempty"`
	// Control: worldmgr ↔ scene (internal/ctlproto).
	Control int `json:"control,omitempty"`
	// Link: gateway ↔ scene (internal/scenelink).
	Link int `json:"link,omitempty"`
	// Client: client ↔ gateway (internal/gwproto).
	Client int `json:"client,omitempty"`
	// ShmLog: the event log's container format (internal/shmlog).
	ShmLog int `json:"shmlog,omitempty"`
	// Snapshot is the snapshot format written; SnapshotMin..Snapshot are
	// the formats read (older ones through migrations in the decoder).
	Snapshot    int `json:"snapshot,omitempty"`
	SnapshotMin int `json:"snapshot_min,omitempty"`
	// Event is the event format written; EventMin..Event are read.
	Event    int `json:"event,omitempty"`
	EventMin int `json:"event_min,omitempty"`
}

// New returns the Info of this binary with the given formats filled in by
// its main package (this package links none of them).
func New(i Info) Info {
	i.Build, i.Go = build, runtime.Version()
	if formatBump != "" && i.Snapshot != 0 {
		i.Snapshot++
		i.SnapshotMin = i.Snapshot
		i.Event++
		i.EventMin = i.Event
	}
	return i
}

// Validate bounds an Info another process sent.
func (i Info) Validate() error {
	if len(i.Build) > MaxBuildLen || len(i.Go) > MaxBuildLen {
		return fmt.Errorf("build version of %d bytes (max %d)", len(i.Build), MaxBuildLen)
	}
	for _, v := range []int{i.Control, i.Link, i.Client, i.ShmLog, i.Snapshot, i.SnapshotMin, i.Event, i.EventMin} {
		if v < 0 || v > 1<<16 {
			return fmt.Errorf("format version %d out of range 0..65536", v)
		}
	}
	return nil
}

// CanReplay says whether a binary reporting i can replay a log written by
// a process reporting old: the same log container, and old's snapshot and
// event formats inside the ranges i reads. The error names the versions.
func (i Info) CanReplay(old Info) error {
	if old.ShmLog != i.ShmLog {
		return fmt.Errorf("event log format %d (build %s) cannot be read by build %s, which reads log format %d",
			old.ShmLog, old.Build, i.Build, i.ShmLog)
	}
	if old.Snapshot < i.SnapshotMin || old.Snapshot > i.Snapshot {
		return fmt.Errorf("snapshot format %d (build %s) cannot be read by build %s, which reads snapshot formats %d..%d and carries no migration from %d",
			old.Snapshot, old.Build, i.Build, i.SnapshotMin, i.Snapshot, old.Snapshot)
	}
	if old.Event < i.EventMin || old.Event > i.Event {
		return fmt.Errorf("event format %d (build %s) cannot be read by build %s, which reads event formats %d..%d and carries no migration from %d",
			old.Event, old.Build, i.Build, i.EventMin, i.Event, old.Event)
	}
	return nil
}
