package scene

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/respawn-dev/respawn/internal/game"
)

// The move fast path decodes what the JSON decoder decodes, and leaves
// everything else to it.
func TestDecodeMoveMatchesJSON(t *testing.T) {
	ops := []string{
		`{"op":"move","x":3,"y":4}`,
		`{"op":"move","x":-7,"y":0}`,
		`{"op":"move","x":123456789,"y":-123456789}`,
		`{"op":"move","x":1234567890,"y":1}`,
		`{"op":"move","x":01,"y":1}`,
		`{"op":"move","x":1,"y":1} `,
		`{"op":"move","x":1,"y":1,"x":2}`,
		`{"op":"move","y":4,"x":3}`,
		`{"op":"move","x":1.5,"y":1}`,
		`{"op":"move","x":1,"y":`,
		`{"op":"move","x":-,"y":1}`,
		`{"op":"attack","monster":"boar"}`,
		`{"op":"move"}`,
	}
	for i := range 100 {
		ops = append(ops, fmt.Sprintf(`{"op":"move","x":%d,"y":%d}`, i*37%201-100, i))
	}
	for _, raw := range ops {
		got, gotErr := DecodeOp([]byte(raw))
		var want game.Op
		var wantErr error
		if o, err := decodeOpJSON([]byte(raw)); err != nil {
			wantErr = err
		} else {
			want = o
		}
		if (gotErr != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("DecodeOp(%s) = %#v, %v; JSON decoder %#v, %v", raw, got, gotErr, want, wantErr)
		}
	}
}
