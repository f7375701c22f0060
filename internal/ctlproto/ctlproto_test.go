package ctlproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ca, cb := NewConn(a), NewConn(b)
	want := Hello{Process: "forest", PID: 42, Epoch: 7, Scenes: []SceneReport{{ID: "forest", Epoch: 7, Players: 3, State: "running"}}}
	go func() { _ = ca.Send(TypeHello, want, time.Second) }()
	f, err := cb.Receive(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var got Hello
	if f.Type != TypeHello {
		t.Fatalf("type %s", f.Type)
	}
	if err := f.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Process != "forest" || got.Epoch != 7 || len(got.Scenes) != 1 || got.Scenes[0].Players != 3 {
		t.Fatalf("got %+v", got)
	}
}

func frame(n uint32, rest ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, n)
	return append(b, rest...)
}

func TestBadFrames(t *testing.T) {
	cases := map[string][]byte{
		"huge length":    frame(1 << 30),
		"tiny length":    frame(1, 1),
		"wrong version":  frame(3, 9, 1, '{'),
		"unknown type":   frame(4, Version, 99, '{', '}'),
		"truncated body": frame(10, Version, byte(TypeHello), '{'),
		"zero type":      frame(2, Version, 0),
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(raw))
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("want ErrFrame, got %v", err)
			}
		})
	}
	f, err := ReadFrame(bytes.NewReader(frame(4, Version, byte(TypeHello), 'x', 'y')))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Decode(&Hello{}); !errors.Is(err, ErrFrame) {
		t.Fatalf("garbage JSON: want ErrFrame, got %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(frame(4, Version, byte(TypeHeartbeat), '{', '}'))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fr, err := ReadFrame(bytes.NewReader(raw))
		if err == nil {
			_ = fr.Decode(&Hello{})
		}
	})
}
