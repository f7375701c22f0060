package crashpoint

import (
	"slices"
	"testing"
)

func TestHitKillsAtTheArmedCount(t *testing.T) {
	p, err := Parse("journal.before-fsync=3, gateway.resend")
	if err != nil {
		t.Fatal(err)
	}
	var killed []string
	p.kill = func(point string) { killed = append(killed, point) }
	for range 5 {
		p.Hit(JournalBeforeFsync)
		p.Hit(JournalAfterFsync) // not armed
	}
	p.Hit(GatewayResend)
	if !slices.Equal(killed, []string{JournalBeforeFsync, GatewayResend}) {
		t.Fatalf("killed at %v", killed)
	}
	var none *Points
	none.Hit(JournalBeforeFsync) // unarmed: nothing
	for _, bad := range []string{"journal.fsync=1", "gateway.resend=0", "gateway.resend=x"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
	if p, err := Parse(""); p != nil || err != nil {
		t.Fatalf("empty: %v %v", p, err)
	}
}
