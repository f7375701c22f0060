package ctlproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/secret"
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
		"wrong version":  frame(3, 1, 1, '{'),
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

// FuzzReadFrame feeds the manager's decoding path arbitrary bytes: frame,
// then the signed hello, then a heartbeat. Whatever arrives, the decoder
// returns an error or a hello that verified and is within bounds; it never
// panics, and never accepts a hello nobody signed.
func FuzzReadFrame(f *testing.F) {
	s := testSecret(f, "fuzz")
	nm := bytes.Repeat([]byte{7}, NonceLen)
	f.Add(frame(4, Version, byte(TypeHeartbeat), '{', '}'))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(frame(4, Version, byte(TypeHello), 'x', 'y'))
	var buf bytes.Buffer
	a, b := net.Pipe()
	go func() {
		_, _ = NewConn(a).SendHello(s, nm, Hello{Process: "forest", PID: 42, Epoch: 1}, time.Second)
		a.Close()
	}()
	_, _ = io.Copy(&buf, b)
	f.Add(buf.Bytes())
	body := `{"msg":{"process":"x"},"mac":"AAAA"}`
	f.Add(append(frame(uint32(2+len(body)), Version, byte(TypeHello)), body...))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fr, err := ReadFrame(bytes.NewReader(raw))
		if err != nil {
			if !errors.Is(err, ErrFrame) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		h, ns, err := OpenHello(s, nm, fr)
		if err == nil {
			if len(ns) != NonceLen || h.Validate() != nil {
				t.Fatalf("accepted an invalid hello %+v", h)
			}
		} else if !errors.Is(err, ErrFrame) && !errors.Is(err, ErrAuth) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		var hb Heartbeat
		if fr.Decode(&hb) == nil {
			_ = hb.Validate()
		}
	})
}

func testSecret(tb testing.TB, seed string) *secret.Secret {
	tb.Helper()
	s, err := secret.New([]byte("test secret of the cluster " + seed))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// handshake runs both sides over a pipe: the manager's (challenge, open
// hello, signed welcome) with mgr, the scene's with scene.
func handshake(t *testing.T, mgr, scene *secret.Secret, h Hello) (Hello, error, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ma, sb := NewConn(a), NewConn(b)
	type res struct {
		h   Hello
		err error
	}
	mres := make(chan res, 1)
	go func() {
		nm, err := ma.SendChallenge(time.Second)
		if err != nil {
			mres <- res{err: err}
			return
		}
		f, err := ma.Receive(time.Second)
		if err != nil {
			mres <- res{err: err}
			return
		}
		got, ns, err := OpenHello(mgr, nm, f)
		if err != nil {
			a.Close()
			mres <- res{err: err}
			return
		}
		mres <- res{h: got, err: ma.SendSigned(Session{Secret: mgr, Scene: ns, Manager: nm}, TypeWelcome, Welcome{HeartbeatTimeout: time.Second}, time.Second)}
	}()
	serr := func() error {
		f, err := sb.Receive(time.Second)
		if err != nil {
			return err
		}
		nm, err := DecodeChallenge(f)
		if err != nil {
			return err
		}
		ns, err := sb.SendHello(scene, nm, h, time.Second)
		if err != nil {
			return err
		}
		f, err = sb.Receive(time.Second)
		if err != nil {
			return err
		}
		var w Welcome
		return OpenSigned(Session{Secret: scene, Scene: ns, Manager: nm}, f, &w)
	}()
	b.Close()
	r := <-mres
	return r.h, r.err, serr
}

func TestHandshake(t *testing.T) {
	s := testSecret(t, "a")
	h := Hello{Process: "forest", PID: 42, Epoch: 3, Exe: "/bin/scene", StartTicks: 99, Cmdline: []string{"scene", "--process", "forest"}}
	got, merr, serr := handshake(t, s, s, h)
	if merr != nil || serr != nil {
		t.Fatalf("manager %v, scene %v", merr, serr)
	}
	if got.Process != "forest" || got.PID != 42 || got.Epoch != 3 || got.StartTicks != 99 || len(got.Cmdline) != 3 {
		t.Fatalf("got %+v", got)
	}
	// A scene without the secret is refused by the manager.
	if _, merr, _ := handshake(t, s, testSecret(t, "b"), h); !errors.Is(merr, ErrAuth) {
		t.Fatalf("wrong secret: manager says %v", merr)
	}
	// Out-of-range fields are refused even when signed.
	h.Epoch = 1<<64 - 1
	if _, merr, _ := handshake(t, s, s, h); !errors.Is(merr, ErrFrame) || !strings.Contains(merr.Error(), "epoch") {
		t.Fatalf("epoch 2^64-1: manager says %v", merr)
	}
}

// A manager without the secret cannot welcome a scene or tell it to exit.
func TestSceneRefusesUnsignedManager(t *testing.T) {
	good, bad := testSecret(t, "a"), testSecret(t, "b")
	ns, nm := bytes.Repeat([]byte{1}, NonceLen), bytes.Repeat([]byte{2}, NonceLen)
	for _, tc := range []struct {
		name string
		sign Session
	}{
		{"wrong secret", Session{Secret: bad, Scene: ns, Manager: nm}},
		{"other session", Session{Secret: good, Scene: nm, Manager: ns}},
	} {
		a, b := net.Pipe()
		go func() { _ = NewConn(a).SendSigned(tc.sign, TypeExit, Exit{Reason: "go away"}, time.Second) }()
		f, err := NewConn(b).Receive(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var e Exit
		if err := OpenSigned(Session{Secret: good, Scene: ns, Manager: nm}, f, &e); !errors.Is(err, ErrAuth) || e.Reason != "" {
			t.Errorf("%s: %v, %+v", tc.name, err, e)
		}
		a.Close()
		b.Close()
	}
}

// A signed hello is good for the one challenge it answers.
func TestHelloReplayIsRefused(t *testing.T) {
	s := testSecret(t, "a")
	nm1, nm2 := bytes.Repeat([]byte{1}, NonceLen), bytes.Repeat([]byte{2}, NonceLen)
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		_, _ = NewConn(a).SendHello(s, nm1, Hello{Process: "forest", PID: 42, Epoch: 1}, time.Second)
		a.Close()
	}()
	var buf bytes.Buffer
	_, _ = io.Copy(&buf, b)
	f, err := ReadFrame(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenHello(s, nm1, f); err != nil {
		t.Fatalf("fresh: %v", err)
	}
	if _, _, err := OpenHello(s, nm2, f); !errors.Is(err, ErrAuth) {
		t.Fatalf("replayed: %v", err)
	}
	// Tampering with the signed bytes breaks the signature.
	tampered := bytes.Replace(buf.Bytes(), []byte(`"pid":42`), []byte(`"pid":1 `), 1)
	f, err = ReadFrame(bytes.NewReader(tampered))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenHello(s, nm1, f); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v", err)
	}
}
