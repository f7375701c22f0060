package scene

import (
	"encoding/json"
	"strconv"

	"github.com/respawn-dev/respawn/internal/game"
)

// Hand-written JSON for the position push the scene writes per move (the
// move reply's is game.AppendResultJSON): encoding/json's reflection and allocations were
// a visible share of a scene's CPU per request. The bytes are exactly what
// json.Marshal writes for the same values (jsonfast_test.go checks), so
// readers that parse the usual form by hand (the gateway's parsePos) keep
// working and any other reader sees no change.

// appendJSONString appends s as json.Marshal would quote it. Plain ASCII
// (everything an id or a name usually is) is copied; anything json.Marshal
// would escape or replace goes through it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil { // a string always encodes; keep the bytes valid anyway
				return append(b, `""`...)
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendPositionBody appends a position push's body,
// {"kind":K,"id":ID,"x":X,"y":Y}.
func appendPositionBody(b []byte, e game.PositionChanged) []byte {
	b = append(b, `{"kind":`...)
	b = appendJSONString(b, e.Kind)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"x":`...)
	b = strconv.AppendInt(b, int64(e.X), 10)
	b = append(b, `,"y":`...)
	b = strconv.AppendInt(b, int64(e.Y), 10)
	return append(b, '}')
}
