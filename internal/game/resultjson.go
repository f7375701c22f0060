package game

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/respawn-dev/respawn/internal/jsonint"
)

// AppendResultJSON appends r as json.Marshal(r) would write it: a move's
// reply by hand (most replies are moves, and a scene writes one per move,
// to the gateway and into every snapshot's reply windows), anything else
// through json.Marshal.
func AppendResultJSON(b []byte, r Result) ([]byte, error) {
	if m, ok := r.(MoveResult); ok {
		b = append(b, `{"x":`...)
		b = strconv.AppendInt(b, int64(m.X), 10)
		b = append(b, `,"y":`...)
		b = strconv.AppendInt(b, int64(m.Y), 10)
		return append(b, '}'), nil
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return b, err
	}
	return append(b, raw...), nil
}

// ParseMoveResult reads the form AppendResultJSON writes for a move,
// {"x":X,"y":Y}; ok is false for any other bytes, which the caller hands
// to encoding/json.
func ParseMoveResult(b []byte) (MoveResult, bool) {
	rest, ok := bytes.CutPrefix(b, []byte("{"))
	if !ok {
		return MoveResult{}, false
	}
	x, y, ok := jsonint.XY(rest)
	return MoveResult{X: x, Y: y}, ok
}
