package gwproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the frame reader and every body
// decoder the gateway uses: nothing may panic, every error must carry a
// code, and every frame read must re-encode to the bytes it came from.
func FuzzDecode(f *testing.F) {
	f.Add(AppendFrame(nil, Frame{Type: TypeHello, Body: []byte(`{"version":1}`)}))
	f.Add(AppendFrame(nil, Frame{Type: TypeRequest, ID: 3, Body: []byte(`{"op":"move","x":1}`)}))
	f.Add(AppendFrame(AppendFrame(nil, Frame{Type: TypeLogin, Body: []byte(`{"token":"v1.a.1.x"}`)}), Frame{Type: TypePing, ID: 9}))
	f.Add(AppendPush(nil, "positions", "forest", []byte(`{"players":[{"id":"a","x":1,"y":2}]}`)))
	f.Add([]byte{0, 0, 0, 1, 2})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), 1024)
		off := 0
		for {
			fr, err := r.Next()
			if err != nil {
				if err != io.EOF && CodeOf(err, CodeOK) == CodeOK {
					t.Fatalf("error without a code: %v", err)
				}
				if err == io.EOF && off != len(in) {
					t.Fatalf("EOF at %d of %d", off, len(in))
				}
				return
			}
			enc := AppendFrame(nil, fr)
			if !bytes.Equal(enc, in[off:off+len(enc)]) {
				t.Fatalf("frame at %d does not re-encode to its bytes", off)
			}
			d, n, derr := Decode(in[off:], 1024)
			if derr != nil || n != len(enc) || d.Type != fr.Type || d.ID != fr.ID {
				t.Fatalf("Decode disagrees with Reader at %d: %v", off, derr)
			}
			off += len(enc)
			var msgs = []any{&Hello{}, &Login{}, &Resume{}, &Session{}, &Push{}, &ErrorBody{}, &Welcome{}}
			for _, m := range msgs {
				if err := DecodeBody(fr, m); err != nil && CodeOf(err, CodeOK) != CodeBadFrame {
					t.Fatalf("body error with code %v", CodeOf(err, CodeOK))
				}
			}
			if p, err := DecodePush(fr.Body); err != nil && CodeOf(err, CodeOK) != CodeBadFrame {
				t.Fatalf("DecodePush error with code %v", CodeOf(err, CodeOK))
			} else if err == nil && json.Valid(fr.Body) {
				// What the JSON decoder reads, the fast path reads too.
				var want Push
				if DecodeBody(fr, &want) == nil && (want.Kind != p.Kind || want.Scene != p.Scene || !bytes.Equal(bytes.TrimSpace(want.Data), bytes.TrimSpace(p.Data))) {
					t.Fatalf("DecodePush %+v, JSON decoder %+v", p, want)
				}
			}
			if err := ValidOp(fr.Body); err != nil {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("ValidOp error without a code: %v", err)
				}
			}
		}
	})
}
