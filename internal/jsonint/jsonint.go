// Package jsonint reads the small JSON integers (map coordinates) that the
// hot paths of the scene, the gateway and the bot parse by hand instead of
// through encoding/json. It owns nothing else: callers fall back to
// encoding/json for any form it refuses.
package jsonint

import "bytes"

// Small reads an optionally negative decimal integer of at most 9 digits
// without leading zeros from the start of b, and returns it with the rest
// of b. ok is false for anything else (no digits, 10 or more digits, a
// leading zero), so the caller can hand the input to encoding/json.
func Small(b []byte) (n int, rest []byte, ok bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	i := 0
	for ; i < len(b) && i < 10 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int(b[i]-'0')
	}
	if i == 0 || i == 10 || (i > 1 && b[0] == '0') {
		return 0, nil, false
	}
	if neg {
		n = -n
	}
	return n, b[i:], true
}

// XY reads `"x":X,"y":Y}` from the start of b: the end of an object whose
// last two fields are map coordinates, as the scene writes them (a move's
// reply, a position push). ok is false for any other bytes.
func XY(b []byte) (x, y int, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`"x":`))
	if ok {
		x, rest, ok = Small(rest)
	}
	if ok {
		rest, ok = bytes.CutPrefix(rest, []byte(`,"y":`))
	}
	if ok {
		y, rest, ok = Small(rest)
	}
	if !ok || string(rest) != "}" {
		return 0, 0, false
	}
	return x, y, true
}
