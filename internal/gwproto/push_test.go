package gwproto

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestPushRoundTrip(t *testing.T) {
	cases := []Push{
		{Kind: "positions", Scene: "forest", Data: json.RawMessage(`{"players":[{"id":"bot-0001","x":3,"y":4}],"gone":["x"]}`)},
		{Kind: "notice", Scene: "town", Data: json.RawMessage(`{}`)},
		{Kind: "chat", Scene: `odd "scene" <&> é`, Data: json.RawMessage(`["a","b"]`)},
		{Kind: `k\`, Scene: "", Data: json.RawMessage(`{"x":"}"}`)},
	}
	for _, want := range cases {
		b := AppendPush([]byte("prefix"), want.Kind, want.Scene, want.Data)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatalf("%s: prefix overwritten", want.Kind)
		}
		f, n, err := Decode(b[len("prefix"):], DefaultMaxFrame)
		if err != nil || n != len(b)-len("prefix") || f.Type != TypePush || f.Code != CodeOK || f.ID != 0 {
			t.Fatalf("%s: frame %+v n=%d err=%v", want.Kind, f, n, err)
		}
		if !json.Valid(f.Body) {
			t.Fatalf("%s: body %s is not JSON", want.Kind, f.Body)
		}
		if plainString(want.Kind) && plainString(want.Scene) && len(b)-len("prefix") != PushLen(want.Kind, want.Scene, len(want.Data)) {
			t.Fatalf("%s: frame of %d bytes, PushLen %d", want.Kind, len(b)-len("prefix"), PushLen(want.Kind, want.Scene, len(want.Data)))
		}
		got, err := DecodePush(f.Body)
		if err != nil || got.Kind != want.Kind || got.Scene != want.Scene || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("DecodePush(%s) = %+v, %v; want %+v", f.Body, got, err, want)
		}
		var viaJSON Push
		if err := DecodeBody(f, &viaJSON); err != nil || viaJSON.Kind != want.Kind || viaJSON.Scene != want.Scene || !bytes.Equal(viaJSON.Data, want.Data) {
			t.Fatalf("JSON decoder read %s as %+v, %v", f.Body, viaJSON, err)
		}
	}
	if p, err := DecodePush(AppendPush(nil, "notice", "town", nil)[HeaderLen:]); err != nil || string(p.Data) != "{}" {
		t.Fatalf("empty data: %+v, %v", p, err)
	}
}

func TestDecodePushOtherForms(t *testing.T) {
	// Field order, spacing and escapes the fast path does not take still
	// decode; malformed bodies are a bad_frame error.
	got, err := DecodePush([]byte(` {"scene":"town", "data": {"a":1}, "kind":"n\u0065ws"}`))
	if err != nil || got.Kind != "news" || got.Scene != "town" || string(got.Data) != `{"a":1}` {
		t.Fatalf("reordered push: %+v, %v", got, err)
	}
	for _, bad := range []string{``, `[]`, `{"kind":"a","scene":"b","data":{}`, `{"kind":"a","scene":"b","data":}`, `{"kind":"a"} x`} {
		if _, err := DecodePush([]byte(bad)); CodeOf(err, CodeOK) != CodeBadFrame {
			t.Errorf("DecodePush(%q): %v, want a bad_frame error", bad, err)
		}
	}
}
