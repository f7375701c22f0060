package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/crashpoint"
)

// chaosReport is the part of `bot chaos --json` the tests read.
type chaosReport struct {
	Bots     int `json:"bots"`
	Requests struct {
		Sent     uint64 `json:"sent"`
		Answered uint64 `json:"answered"`
	} `json:"requests"`
	Faults []struct {
		Kind       string `json:"kind"`
		Target     string `json:"target"`
		AtMs       int64  `json:"at_ms"`
		RecoveryMs int64  `json:"recovery_ms"`
		Error      string `json:"error"`
	} `json:"faults"`
	Violations []struct {
		Check    string `json:"check"`
		Player   string `json:"player"`
		Expected string `json:"expected"`
		Found    string `json:"found"`
	} `json:"violations"`
}

// runChaos runs the bot binary's chaos command with its own cluster (the
// real binaries under respawn up) and returns its report and exit error.
func runChaos(t *testing.T, env []string, args ...string) (chaosReport, string, error) {
	t.Helper()
	work := t.TempDir()
	args = append([]string{"chaos", "--json", "--config", filepath.Join("..", "..", "configs", "world.yaml"),
		"--bin-dir", binDir, "--work-dir", work}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "bot"), args...)
	cmd.Env = append(cmd.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var rep chaosReport
	if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
		t.Fatalf("bot chaos %s: %v; no JSON report (%v)\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, jerr, stdout.String(), stderr.String())
	}
	return rep, stderr.String(), err
}

// TestChaosBotNoViolations is the short chaos run of `make test`: a few
// dozen bots play for ~45 s through two gateways while every fault kind
// hits the cluster once, and `bot chaos` finds no violation.
func TestChaosBotNoViolations(t *testing.T) {
	if testing.Short() {
		t.Skip("a 45 s chaos run")
	}
	rep, stderr, err := runChaos(t, nil, "--bots", "30", "--duration", "45s", "--every", "7s", "--seed", "12")
	for _, v := range rep.Violations {
		t.Errorf("violation %s %s: expected %s, found %s", v.Check, v.Player, v.Expected, v.Found)
	}
	if err != nil {
		t.Fatalf("bot chaos: %v\n%s", err, stderr)
	}
	if rep.Bots != 30 || rep.Requests.Answered == 0 || rep.Requests.Answered < rep.Requests.Sent {
		t.Fatalf("bots %d, sent %d, answered %d", rep.Bots, rep.Requests.Sent, rep.Requests.Answered)
	}
	var kinds []string
	for _, f := range rep.Faults {
		if f.Error != "" || f.RecoveryMs < 0 {
			t.Errorf("fault %s on %s at %d ms: recovery %d ms, %s", f.Kind, f.Target, f.AtMs, f.RecoveryMs, f.Error)
		}
		kinds = append(kinds, f.Kind)
	}
	for _, k := range []string{"scene", "worldmgr", "datasvr", "gateway", "hang", "stall"} {
		if !slices.Contains(kinds, k) {
			t.Errorf("fault kind %s never injected (faults: %v)", k, kinds)
		}
	}
	t.Logf("chaos: %d faults, %d requests answered\n%s", len(rep.Faults), rep.Requests.Answered, stderr)
}

// TestChaosBotFindsBrokenGuarantees turns off one guarantee at a time
// (RESPAWN_TEST_BREAK, package testhook) and requires `bot chaos` to report
// it: the scene's duplicate check (resends applied twice: duplication and
// histories porcupine cannot linearize), the gateway's resend (requests
// never answered) and the data server's lease fencing (the stale writer's
// save accepted).
func TestChaosBotFindsBrokenGuarantees(t *testing.T) {
	if testing.Short() {
		t.Skip("three chaos runs")
	}
	// Many requests in flight, so a killed gateway takes replies of
	// requests the scene applied with it (their resends are what the
	// duplicate check is for), and a killed scene breaks links mid-request.
	heavy := func(faults, seed string) []string {
		// As many in flight as the per-session rate limit (100/s) allows,
		// and a kill every 500 ms: a faster cluster answers sooner, which
		// leaves fewer requests applied-but-unanswered at each kill.
		return []string{"--bots", "60", "--rate", "90", "--pipeline", "8", "--duration", "10s", "--every", "500ms",
			"--faults", faults, "--seed", seed, "--request-timeout", "12s"}
	}
	for _, tc := range []struct {
		brk    string
		env    []string
		args   []string
		checks []string // each must report at least one violation
	}{
		// Kills at random moments leave resends to dedupe only by chance,
		// fewer the quicker the cluster answers: every gateway incarnation
		// also dies holding a reply (crashpoint gateway.before-reply), so
		// each run has applied requests that come back.
		{"dedupe", []string{crashpoint.Env + "=" + crashpoint.GatewayBeforeReply + "=1000"}, heavy("gateway", "3"), []string{"duplication", "linearizability"}},
		{"resend", nil, heavy("gateway,scene", "1"), []string{"unanswered"}},
		{"fencing", nil, []string{"--bots", "6", "--duration", "5s", "--every", "2s", "--faults", "scene"}, []string{"fencing"}},
	} {
		t.Run(tc.brk, func(t *testing.T) {
			rep, stderr, err := runChaos(t, append([]string{"RESPAWN_TEST_BREAK=" + tc.brk}, tc.env...), tc.args...)
			if err == nil {
				t.Fatalf("bot chaos exited 0 with %s broken\n%s", tc.brk, stderr)
			}
			found := map[string]int{}
			for _, v := range rep.Violations {
				found[v.Check]++
			}
			for _, c := range tc.checks {
				if found[c] == 0 {
					t.Errorf("%s broken: no %q violation; found %v\n%s", tc.brk, c, found, stderr)
				}
			}
			t.Logf("%s broken: violations %v", tc.brk, found)
		})
	}
}

// TestChaosBotCrashPoints arms every named crash point (package
// crashpoint) at seeded counts, so scene processes die between writing a
// log record and committing it, datasvr between writing and syncing its
// journal, gateways just before a resend; the run must still find no
// violation.
func TestChaosBotCrashPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("a 25 s chaos run")
	}
	var rep struct {
		chaosReport
		CrashesAt map[string]int `json:"crashes_at"`
	}
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "bot"), "chaos", "--json", "--config", filepath.Join("..", "..", "configs", "world.yaml"),
		"--bin-dir", binDir, "--work-dir", work, "--bots", "30", "--duration", "25s", "--every", "8s", "--faults", "scene,gateway", "--crash-points")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
		t.Fatalf("bot chaos: %v; no JSON report (%v)\n%s", err, jerr, stderr.String())
	}
	for _, v := range rep.Violations {
		t.Errorf("violation %s %s: expected %s, found %s", v.Check, v.Player, v.Expected, v.Found)
	}
	if err != nil {
		t.Fatalf("bot chaos --crash-points: %v\n%s", err, stderr.String())
	}
	fired := 0
	for _, n := range rep.CrashesAt {
		fired += n
	}
	if fired == 0 {
		t.Fatalf("no crash point fired: %v\n%s", rep.CrashesAt, stderr.String())
	}
	t.Logf("crash points fired: %v", rep.CrashesAt)
}

// `bot chaos --attach` plays against a cluster someone else started (here
// `respawn up` with two gateways), injects its faults into that cluster's
// processes, finds no violation, and leaves the cluster running.
func TestChaosBotAttaches(t *testing.T) {
	if testing.Short() {
		t.Skip("a chaos run")
	}
	c := newCluster(t)
	upWithTwoGateways(t, c)
	args := append([]string{"--attach", "--bots", "10", "--duration", "12s", "--every", "4s",
		"--faults", "scene,gateway", "--seed", "5"}, c.args()...)
	rep, stderr, err := runChaos(t, c.env, args...)
	for _, v := range rep.Violations {
		t.Errorf("violation %s %s: expected %s, found %s", v.Check, v.Player, v.Expected, v.Found)
	}
	if err != nil {
		t.Fatalf("bot chaos --attach: %v\n%s", err, stderr)
	}
	if len(rep.Faults) == 0 || rep.Requests.Answered == 0 {
		t.Fatalf("faults %d, answered %d\n%s", len(rep.Faults), rep.Requests.Answered, stderr)
	}
	for _, f := range rep.Faults {
		if f.Error != "" {
			t.Errorf("fault %s on %s: %s", f.Kind, f.Target, f.Error)
		}
	}
	c.waitRunning(30 * time.Second) // the attached cluster is still ours and still up
}
