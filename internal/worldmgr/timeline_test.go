package worldmgr

import (
	"fmt"
	"testing"
)

func TestTimelineKeepsNewestInOrder(t *testing.T) {
	tl := newTimeline(3)
	if got := tl.list(); len(got) != 0 {
		t.Fatalf("empty timeline lists %v", got)
	}
	for i := range 5 {
		tl.add(TimelineEvent{Process: fmt.Sprint(i)})
	}
	got := tl.list()
	if len(got) != 3 || got[0].Process != "2" || got[1].Process != "3" || got[2].Process != "4" {
		t.Fatalf("want events 2,3,4 oldest first, got %+v", got)
	}
}
