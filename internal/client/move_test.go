package client

import "testing"

// move_to names the other gateway the way the gateway's config does; the
// client's own list may spell the same listener a little differently.
func TestSameAddrMatchesMoveTo(t *testing.T) {
	for _, c := range []struct {
		mine, moveTo string
		same         bool
	}{
		{"127.0.0.1:7100", "127.0.0.1:7100", true},
		{"tcp://127.0.0.1:7100", "127.0.0.1:7100", true},
		{"ws://127.0.0.1:7101", "ws://127.0.0.1:7101/", true},
		{"ws://127.0.0.1:7101/", "ws://127.0.0.1:7101/", true},
		{"ws://127.0.0.1:7101/", "127.0.0.1:7101", false}, // another transport
		{"127.0.0.1:7100", "127.0.0.1:7102", false},
		{"127.0.0.1:7100/", "127.0.0.1:7100", false}, // not a URL: taken as given
	} {
		if got := sameAddr(c.mine, c.moveTo); got != c.same {
			t.Errorf("sameAddr(%q, %q) = %v, want %v", c.mine, c.moveTo, got, c.same)
		}
	}
}
