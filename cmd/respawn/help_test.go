package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// run executes the CLI in-process with args and returns what it printed.
func run(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	a := newApp(&out)
	root := a.root()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("respawn %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// The top-level help and the most used command's help fit on one screen,
// and list only the global flags, not the ~40 configuration overrides.
func TestHelpFitsOnOneScreen(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"scenes", "--help"}, {"status", "--help"}, {"gm", "damage", "--help"}} {
		out := run(t, args...)
		if n := strings.Count(out, "\n"); n > 40 {
			t.Errorf("respawn %s: %d lines, want <= 40:\n%s", strings.Join(args, " "), n, out)
		}
		for _, hidden := range []string{"--gateway.rate", "--admin.max-conns", "--datasvr.database"} {
			if strings.Contains(out, hidden) {
				t.Errorf("respawn %s lists %s", strings.Join(args, " "), hidden)
			}
		}
		for _, global := range []string{"--config", "--data-dir", "--worldmgr.admin"} {
			if !strings.Contains(out, global) {
				t.Errorf("respawn %s does not list %s", strings.Join(args, " "), global)
			}
		}
	}
}

// The commands that run from a configuration list its overrides; listing
// them for one command leaves them hidden for the next.
func TestConfigOverridesOnlyWhereAConfigIsRun(t *testing.T) {
	for _, args := range [][]string{{"up", "--help"}, {"config", "validate", "--help"}} {
		if out := run(t, args...); !strings.Contains(out, "--gateway.rate") || !strings.Contains(out, "--datasvr.database") {
			t.Errorf("respawn %s does not list the configuration overrides:\n%s", strings.Join(args, " "), out)
		}
	}
	var out bytes.Buffer
	a := newApp(&out)
	root := a.root()
	root.SetOut(&out)
	for _, args := range [][]string{{"up", "--help"}, {"scenes", "--help"}} {
		out.Reset()
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(out.String(), "--gateway.rate") {
		t.Errorf("scenes --help after up --help lists the overrides:\n%s", out.String())
	}
}

// Overrides stay accepted everywhere: scripts pass one set of cluster flags.
func TestHiddenOverridesStillAccepted(t *testing.T) {
	run(t, "scenes", "--help", "--gateway.rate", "5", "--shm-dir", "/tmp")
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_respawn", "zsh": "#compdef respawn", "fish": "complete -c respawn"} {
		if out := run(t, "completion", shell); !strings.Contains(out, want) {
			t.Errorf("completion %s: no %q in:\n%.300s", shell, want, out)
		}
	}
}

// --json is accepted by every command and makes data commands print JSON.
func TestJSONOnDataCommands(t *testing.T) {
	var out bytes.Buffer
	a := testApp(t)
	a.out = &out
	root := a.root()
	root.SetArgs([]string{"token", "--json"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var got struct{ Token string }
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Token != a.cfg.Admin.Token {
		t.Fatalf("token --json printed %q (%v)", out.String(), err)
	}
}

// An admin API that is not there: the error says what to check.
func TestUnreachableDaemonErrorSaysWhatToDo(t *testing.T) {
	a := testApp(t)
	a.attempt = time.Second
	err := a.adminCall("GET", "127.0.0.1:1", "/v1/scenes", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "respawn status") {
		t.Fatalf("error %v does not point at `respawn status`", err)
	}
}
