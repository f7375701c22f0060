package jsonint

import (
	"encoding/json"
	"testing"
)

func TestSmall(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		rest string
		ok   bool
	}{
		{"0", 0, "", true},
		{"17,", 17, ",", true},
		{"-5}", -5, "}", true},
		{"999999999", 999999999, "", true},
		{"1000000000", 0, "", false}, // 10 digits
		{"07", 0, "", false},         // leading zero
		{"-", 0, "", false},
		{"", 0, "", false},
		{"x1", 0, "", false},
	} {
		n, rest, ok := Small([]byte(c.in))
		if ok != c.ok || (ok && (n != c.n || string(rest) != c.rest)) {
			t.Errorf("Small(%q) = %d, %q, %v; want %d, %q, %v", c.in, n, rest, ok, c.n, c.rest, c.ok)
		}
	}
}

// Whatever Small accepts, encoding/json reads as the same number.
func FuzzSmall(f *testing.F) {
	for _, s := range []string{"0", "-12", "123456789", "007", "1e3", "-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, rest, ok := Small([]byte(s))
		if !ok {
			return
		}
		num := s[:len(s)-len(rest)]
		var want int
		if err := json.Unmarshal([]byte(num), &want); err != nil {
			t.Fatalf("Small accepted %q, which encoding/json refuses: %v", num, err)
		}
		if n != want {
			t.Fatalf("Small(%q) = %d, encoding/json %d", num, n, want)
		}
	})
}

// Whatever XY accepts, encoding/json reads as the same coordinates (as the
// end of an object: "{" before it).
func FuzzXY(f *testing.F) {
	for _, s := range []string{`"x":3,"y":-4}`, `"x":0,"y":0}`, `"x":07,"y":1}`, `"y":1,"x":2}`, `"x":1,"y":2} `, `"x":1234567890,"y":2}`, `"x":1`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, y, ok := XY(b)
		if !ok {
			return
		}
		var v struct{ X, Y int }
		if err := json.Unmarshal(append([]byte("{"), b...), &v); err != nil || v.X != x || v.Y != y {
			t.Fatalf("XY(%q) = %d, %d; encoding/json: %+v, %v", b, x, y, v, err)
		}
	})
}
