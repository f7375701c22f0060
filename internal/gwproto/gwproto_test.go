package gwproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var b []byte
	want := []Frame{
		{Type: TypeHello, Body: []byte(`{"version":1}`)},
		{Type: TypeRequest, ID: 1<<64 - 1, Body: []byte(`{"op":"move","x":1,"y":2}`)},
		{Type: TypeReply, Code: CodeGameError, ID: 7, Body: []byte(`{"reason":"not_enough","error":"poor"}`)},
		{Type: TypePing, ID: 42},
	}
	for _, f := range want {
		b = AppendFrame(b, f)
	}
	r := NewReader(bytes.NewReader(b), DefaultMaxFrame)
	rest := b
	for i, w := range want {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.Type != w.Type || got.Code != w.Code || got.ID != w.ID || !bytes.Equal(got.Body, w.Body) {
			t.Fatalf("frame %d: got %+v want %+v", i, got, w)
		}
		f, n, err := Decode(rest, DefaultMaxFrame)
		if err != nil || n != HeaderLen+len(w.Body) || f.ID != w.ID {
			t.Fatalf("Decode frame %d: %+v n=%d err=%v", i, f, n, err)
		}
		rest = rest[n:]
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestFrameErrors(t *testing.T) {
	whole := AppendFrame(nil, Frame{Type: TypeRequest, ID: 1, Body: []byte(`{"op":"move"}`)})
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, 1<<30)
	short := make([]byte, 4)
	binary.BigEndian.PutUint32(short, 3)
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"truncated header", whole[:2], ErrTruncated},
		{"truncated fixed part", whole[:9], ErrTruncated},
		{"truncated body", whole[:len(whole)-1], ErrTruncated},
		{"oversize", huge, ErrTooLarge},
		{"length below header", short, ErrBadFrame},
	} {
		_, err := NewReader(bytes.NewReader(c.in), DefaultMaxFrame).Next()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if CodeOf(err, CodeOK) == CodeOK {
			t.Errorf("%s: error %v carries no code", c.name, err)
		}
	}
	if _, _, err := Decode(huge, DefaultMaxFrame); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Decode oversize: %v", err)
	}
	if _, n, err := Decode(whole[:5], DefaultMaxFrame); n != 0 || err != nil {
		t.Errorf("Decode partial: n=%d err=%v", n, err)
	}
}

func TestDecodeBody(t *testing.T) {
	var h Hello
	if err := DecodeBody(Frame{Type: TypeHello, Body: []byte(`{"version":1,"client":"x","future":true}`)}, &h); err != nil || h.Version != 1 {
		t.Fatalf("%+v %v", h, err)
	}
	for _, body := range []string{``, `[]`, `"x"`, `{"version":"one"}`, `{"version":1}{}`, `{`} {
		err := DecodeBody(Frame{Type: TypeHello, Body: []byte(body)}, &h)
		if CodeOf(err, CodeOK) != CodeBadFrame {
			t.Errorf("body %q: %v", body, err)
		}
	}
	if err := ValidOp([]byte(`{"op":"move"}`)); err != nil {
		t.Error(err)
	}
	if err := ValidOp([]byte(`{"x":1}`)); CodeOf(err, CodeOK) != CodeBadRequest {
		t.Errorf("op missing: %v", err)
	}
}

func TestCodeNames(t *testing.T) {
	seen := map[string]bool{}
	for c, n := range codeNames {
		if seen[n] {
			t.Errorf("name %s used twice", n)
		}
		seen[n] = true
		if c.String() != n {
			t.Errorf("%d: %s", c, c.String())
		}
	}
	if !CodeUnavailable.Retryable() || CodeGameError.Retryable() {
		t.Error("retryable codes wrong")
	}
}
