package game

import (
	"encoding/json"
	"fmt"
	"testing"
)

func TestResultJSONIsJSONMarshal(t *testing.T) {
	for _, r := range []Result{
		MoveResult{X: 3, Y: -4},
		MoveResult{},
		MoveResult{X: 1 << 40, Y: -1 << 40},
		OKResult{},
		ErrorResult{Code: "bad_request", Error: "no <such> thing"},
		AttackResult{Monster: "hogger", Damage: 3, HP: 7, MaxHP: 10},
		nil,
	} {
		got, err := AppendResultJSON([]byte("prefix"), r)
		if err != nil {
			t.Fatalf("%#v: %v", r, err)
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "prefix"+string(want) {
			t.Errorf("%#v: got %s, json.Marshal %s", r, got, want)
		}
	}
}

// ParseMoveResult reads what encoding/json reads, or leaves it to it.
func FuzzParseMoveResult(f *testing.F) {
	for _, s := range []string{`{"x":3,"y":-4}`, `{"x":0,"y":0}`, `{"x":07,"y":1}`, `{"y":1,"x":2}`, `{"x":1,"y":2} `, `{"x":1234567890,"y":2}`, `{"x":1`, ``} {
		f.Add([]byte(s))
	}
	for x := -3; x <= 3; x++ {
		f.Add([]byte(fmt.Sprintf(`{"x":%d,"y":%d}`, x*999, -x)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := ParseMoveResult(b)
		if !ok {
			return
		}
		var want MoveResult
		if err := json.Unmarshal(b, &want); err != nil || got != want {
			t.Fatalf("ParseMoveResult(%q) = %+v; encoding/json: %+v, %v", b, got, want, err)
		}
	})
}
