package scene

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/scenelink"
)

// The hand-written bodies must be byte for byte what json.Marshal writes.

func marshalPosition(t testing.TB, e game.PositionChanged) []byte {
	t.Helper()
	b, err := json.Marshal(struct {
		Kind string `json:"kind"`
		ID   string `json:"id"`
		X    int    `json:"x"`
		Y    int    `json:"y"`
	}{e.Kind, e.ID, e.X, e.Y})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPositionBodyIsJSONMarshal(t *testing.T) {
	for _, e := range []game.PositionChanged{
		{Kind: "player", ID: "p1", X: 3, Y: 4},
		{Kind: "player", ID: "", X: 0, Y: 0},
		{Kind: "npc", ID: "guard-7", X: -12, Y: 999999999},
		{Kind: "player", ID: `q"uo\te`, X: 1 << 40, Y: -(1 << 40)},
		{Kind: "player", ID: "<b>&amp;</b>", X: 1, Y: 2},
		{Kind: "player", ID: "tab\there\x00\x1f\x7f", X: 1, Y: 2},
		{Kind: "player", ID: "ünï\u2028\u2029", X: 1, Y: 2},
		{Kind: "player", ID: "bad\xff\xfeutf8", X: 1, Y: 2},
	} {
		got := appendPositionBody(nil, e)
		if want := marshalPosition(t, e); string(got) != string(want) {
			t.Errorf("%+v: got %s, json.Marshal %s", e, got, want)
		}
		p, ok := parsePosForTest(got)
		if !ok {
			t.Errorf("%+v: %s is not JSON", e, got)
		} else if utf8.ValidString(e.ID) && (p.ID != e.ID || p.X != e.X || p.Y != e.Y) {
			t.Errorf("%+v: decodes as %+v", e, p)
		}
	}
}

func parsePosForTest(b []byte) (game.PositionChanged, bool) {
	var p game.PositionChanged
	err := json.Unmarshal(b, &struct {
		Kind *string `json:"kind"`
		ID   *string `json:"id"`
		X    *int    `json:"x"`
		Y    *int    `json:"y"`
	}{&p.Kind, &p.ID, &p.X, &p.Y})
	return p, err == nil
}

func FuzzPositionBody(f *testing.F) {
	f.Add("player", "p1", 3, 4)
	f.Add("player", "a\"<\u2028\xff", -1, 1<<31)
	f.Fuzz(func(t *testing.T, kind, id string, x, y int) {
		e := game.PositionChanged{Kind: kind, ID: id, X: x, Y: y}
		if got, want := appendPositionBody(nil, e), marshalPosition(t, e); string(got) != string(want) {
			t.Fatalf("%+v: got %s, json.Marshal %s", e, got, want)
		}
	})
}

func BenchmarkPositionPushBody(b *testing.B) {
	e := game.PositionChanged{Kind: "player", ID: "bot-0042", X: 17, Y: 33}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = appendPositionBody(buf[:0], e)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			marshalPosition(b, e)
		}
	})
}

func TestPositionFrameDecodes(t *testing.T) {
	e := game.PositionChanged{Kind: "player", ID: "bot-1", X: -3, Y: 40}
	f := positionFrame("forest", e)
	var enc scenelink.Encoder
	(&scenelink.Push{Scene: "forest", Kind: "position", Body: marshalPosition(t, e)}).Append(&enc)
	if string(f) != string(enc.B) {
		t.Fatalf("frame %q, want %q", f, enc.B)
	}
	typ, body, _, err := scenelink.ReadFrame(bufio.NewReader(bytes.NewReader(f)), 1<<10, nil)
	if err != nil || typ != scenelink.TPush {
		t.Fatalf("type %d, %v", typ, err)
	}
	var p scenelink.Push
	if err := p.Decode(body); err != nil {
		t.Fatal(err)
	}
	if p.Scene != "forest" || p.Kind != "position" || p.Player != "" || string(p.Body) != `{"kind":"player","id":"bot-1","x":-3,"y":40}` {
		t.Fatalf("decoded %+v (%s)", p, p.Body)
	}
}
