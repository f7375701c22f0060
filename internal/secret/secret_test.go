package secret

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestLoadCreatesOnceWithMode0600(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	got := make([]*Secret, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Add(1)
		go func(i int) { defer wg.Done(); got[i], errs[i] = Load("", dir) }(i)
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if string(got[i].key) != string(got[0].key) {
			t.Fatal("racing loaders disagree on the secret")
		}
	}
	st, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	again, err := Load("", dir)
	if err != nil || string(again.key) != string(got[0].key) {
		t.Fatalf("reload: %v", err)
	}
}

func TestConfiguredWinsAndShortRefused(t *testing.T) {
	s, err := Load("0123456789abcdef-configured", t.TempDir())
	if err != nil || string(s.key) != "0123456789abcdef-configured" {
		t.Fatalf("configured secret: %v", err)
	}
	if _, err := Load("short", ""); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}
	if _, err := Load("", ""); err == nil {
		t.Fatal("no secret and no data dir was accepted")
	}
}

func TestSignVerify(t *testing.T) {
	s, _ := New([]byte("0123456789abcdef"))
	other, _ := New([]byte("fedcba9876543210"))
	mac := s.Sign(PurposeControl, []byte("ab"), []byte("c"))
	if !s.Verify(PurposeControl, mac, []byte("ab"), []byte("c")) {
		t.Fatal("own signature refused")
	}
	if s.Verify(PurposeControl, mac, []byte("a"), []byte("bc")) {
		t.Fatal("parts are not length-prefixed")
	}
	if s.Verify(PurposeLink, mac, []byte("ab"), []byte("c")) {
		t.Fatal("purposes share keys")
	}
	if other.Verify(PurposeControl, mac, []byte("ab"), []byte("c")) {
		t.Fatal("another secret verified the signature")
	}
	if s.OperatorToken() == other.OperatorToken() || s.NATSPassword("scene") == s.NATSPassword("datasvr") {
		t.Fatal("derived credentials collide")
	}
}
