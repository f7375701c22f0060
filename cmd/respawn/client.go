package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/secret"
)

// operatorToken is the operator token the daemons want: admin.token
// (RESPAWN_ADMIN_TOKEN), else derived from the cluster secret (`secret`, or
// <data_dir>/secret). Unlike a daemon, the CLI never creates the secret
// file: a token derived from a fresh secret would match no daemon.
func operatorToken(cfg *config.Config) (string, error) {
	if cfg.Admin.Token != "" || cfg.Secret != "" {
		return admin.OperatorToken(cfg)
	}
	path := filepath.Join(cfg.DataDir, secret.FileName)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no admin.token (RESPAWN_ADMIN_TOKEN) and no cluster secret at %s (use the cluster's --data-dir or config): %w", path, err)
	}
	return admin.OperatorToken(cfg)
}

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
	tok, err := operatorToken(cfg)
	switch {
	case err == nil:
		req.Header.Set("Authorization", admin.Bearer(tok))
	case method != http.MethodGet:
		// Reading works without it on loopback; changing never does.
		return fmt.Errorf("%s %s needs the operator token: %w", method, addr+path, err)
	}
	c := http.Client{Timeout: a.callTimeout()}
	resp, err := c.Do(req)
	if err != nil {
		// Refused, reset or timed out: the daemon is restarting or busy,
		// and a request may or may not have been applied.
		return unavailable{fmt.Errorf("%s %s: %w (is it running? see `respawn status`; the address comes from the config or --worldmgr.admin/--datasvr.admin/--gateway.admin)", method, addr+path, err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return unavailable{fmt.Errorf("%s %s: %w", method, addr+path, err)}
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		err := fmt.Errorf("%s %s: %s", method, addr+path, resp.Status)
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			err = fmt.Errorf("%s", e.Error)
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			err = fmt.Errorf("%w (the operator token was refused: use the cluster's --data-dir or config, or set RESPAWN_ADMIN_TOKEN)", err)
		}
		if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout {
			return unavailable{err}
		}
		return err
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
