package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/respawn-dev/respawn/internal/admin"
)

// adminCall sends a request to a daemon's admin API and decodes the JSON
// answer into out (nil to ignore it). A non-2xx answer becomes an error with
// the daemon's message.
func (a *app) adminCall(method, addr, path string, body, out any) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, rd)
	if err != nil {
		return err
	}
	if t := admin.Bearer(cfg.Admin.Token); t != "" {
		req.Header.Set("Authorization", t)
	}
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, addr+path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, addr+path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, addr+path, resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, addr+path, err)
	}
	return nil
}

// adminGetRaw GETs path from a daemon's admin API and returns the status
// code and body whatever the status (an unhealthy /healthz is a 503 with a
// body worth reading).
func (a *app) adminGetRaw(addr, path string) (int, []byte, error) {
	cfg, err := a.config()
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if t := admin.Bearer(cfg.Admin.Token); t != "" {
		req.Header.Set("Authorization", t)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, raw, err
}
