package version

import (
	"strings"
	"testing"
)

func TestCanReplay(t *testing.T) {
	old := Info{Build: "v1", ShmLog: 1, Snapshot: 3, SnapshotMin: 1, Event: 1, EventMin: 1}
	cases := []struct {
		name string
		next Info
		want []string // substrings of the error; none: readable
	}{
		{"same formats", Info{Build: "v2", ShmLog: 1, Snapshot: 3, SnapshotMin: 1, Event: 1, EventMin: 1}, nil},
		{"newer snapshot with a migration", Info{Build: "v2", ShmLog: 1, Snapshot: 4, SnapshotMin: 2, Event: 2, EventMin: 1}, nil},
		{"no migration", Info{Build: "v2", ShmLog: 1, Snapshot: 4, SnapshotMin: 4, Event: 1, EventMin: 1},
			[]string{"snapshot format 3 (build v1)", "build v2", "4..4", "no migration from 3"}},
		{"older binary", Info{Build: "v0", ShmLog: 1, Snapshot: 2, SnapshotMin: 1, Event: 1, EventMin: 1},
			[]string{"snapshot format 3", "1..2"}},
		{"event format dropped", Info{Build: "v2", ShmLog: 1, Snapshot: 3, SnapshotMin: 1, Event: 2, EventMin: 2},
			[]string{"event format 1", "2..2"}},
		{"log container", Info{Build: "v2", ShmLog: 2, Snapshot: 3, SnapshotMin: 1, Event: 1, EventMin: 1},
			[]string{"event log format 1", "log format 2"}},
	}
	for _, c := range cases {
		err := c.next.CanReplay(old)
		switch {
		case c.want == nil && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != nil && err == nil:
			t.Errorf("%s: readable, want refused", c.name)
		case c.want != nil:
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %q does not say %q", c.name, err, w)
				}
			}
		}
	}
}

func TestValidateBounds(t *testing.T) {
	if err := (Info{Build: strings.Repeat("x", MaxBuildLen+1)}).Validate(); err == nil {
		t.Error("an oversized build string was accepted")
	}
	if err := (Info{Build: "v1", Snapshot: -1}).Validate(); err == nil {
		t.Error("a negative format was accepted")
	}
	if err := New(Info{Snapshot: 3, SnapshotMin: 1}).Validate(); err != nil {
		t.Error(err)
	}
}
