package main

import (
	"encoding/json"
	"testing"

	"github.com/respawn-dev/respawn/internal/game"
)

// moveResult reads every body as the JSON decoder does: the scene's form
// by hand, any other form (spaces, field order, extra fields, bad input)
// through the decoder.
func TestMoveResultMatchesJSON(t *testing.T) {
	for _, body := range []string{
		`{"x":3,"y":4}`, `{"x":-12,"y":0}`, `{"x":0,"y":-0}`, `{"y":4,"x":3}`, `{"x": 3, "y": 4}`,
		`{"x":3,"y":4,"z":1}`, `{"x":03,"y":4}`, `{"x":1234567890,"y":1}`, `{"x":3}`, `{}`, `{"x":"3","y":4}`,
		``, `{"x":3,"y":4}}`, `{"x":-,"y":4}`, `null`,
	} {
		var want game.MoveResult
		wantOK := json.Unmarshal([]byte(body), &want) == nil
		got, ok := moveResult([]byte(body))
		if ok != wantOK || (ok && got != want) {
			t.Errorf("moveResult(%q) = %+v %v, json.Unmarshal %+v %v", body, got, ok, want, wantOK)
		}
	}
}

func FuzzMoveResult(f *testing.F) {
	f.Add([]byte(`{"x":3,"y":4}`))
	f.Add([]byte(`{"x":-1,"y":999999999}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var want game.MoveResult
		wantOK := json.Unmarshal(body, &want) == nil
		got, ok := moveResult(body)
		if ok != wantOK || (ok && got != want) {
			t.Errorf("moveResult(%q) = %+v %v, json.Unmarshal %+v %v", body, got, ok, want, wantOK)
		}
	})
}
