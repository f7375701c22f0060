package admin

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

func TestTokenRequiredOffLoopback(t *testing.T) {
	if _, err := New("0.0.0.0:0", "", nil); err == nil || !strings.Contains(err.Error(), "admin.token") {
		t.Fatalf("non-loopback without a token: %v", err)
	}
	s, err := New("127.0.0.1:0", "s3cret", nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(context.Background())
	for _, tc := range []struct {
		auth string
		want int
	}{{"", http.StatusUnauthorized}, {"Bearer wrong", http.StatusUnauthorized}, {"Bearer s3cret", http.StatusOK}} {
		req, _ := http.NewRequest("GET", "http://"+s.Addr()+"/healthz", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Authorization %q: status %d, want %d", tc.auth, resp.StatusCode, tc.want)
		}
	}
}
