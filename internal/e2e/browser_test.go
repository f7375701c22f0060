package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/respawn-dev/respawn/internal/client"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/token"
)

// chromiumPath finds Debian's chromium (or another Chrome) for the
// browser tests; "" means none (the caller skips and says why).
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts headless Chromium with a fresh profile and no network
// features (the machine is offline) and returns a tab's context.
func newBrowser(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("browser test skipped: no chromium found (apt-get install -y chromium; .ci/run installs it)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	tctx, tcancel := chromedp.NewContext(actx)
	t.Cleanup(func() { tcancel(); acancel(); cancel() })
	return tctx
}

// shot saves a PNG of the tab. With RESPAWN_SCREENSHOTS=1 (`make
// screenshots`) it goes to docs/screenshots/ (committed, linked from the
// README); otherwise to the test's temporary directory, so an ordinary
// test run does not rewrite tracked files in the checkout (which would
// stop a later `git rebase`).
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := filepath.Join(os.TempDir(), "respawn-screenshots")
	if os.Getenv("RESPAWN_SCREENSHOTS") == "1" {
		dir = filepath.Join("..", "..", "docs", "screenshots")
	}
	defer t.Logf("screenshot %s", filepath.Join(dir, name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// text reads an element's text.
func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("read #%s: %v", id, err)
	}
	return s
}

// waitJS polls a JavaScript predicate in the tab until it is truthy.
func waitJS(t *testing.T, ctx context.Context, what, expr string, timeout time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// A player plays in the browser client while an operator kills the
// scene's process from the web console in another tab: the login, a move
// before, the kill by a click, and a move after it all work, and the
// player's page never shows a disconnect.
func TestBrowserPlayAndConsoleKill(t *testing.T) {
	browser := newBrowser(t, 90*time.Second)
	c := newCluster(t)
	c.startWorld()
	_, _, ws := c.gateway("gateway")
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := token.IssueLogin(sec, "webplayer", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	playURL := "http" + strings.TrimPrefix(ws, "ws")
	consoleURL := "http://" + c.ports["worldmgr.admin"] + "/"

	// The play client: log in and move one step.
	play := browser
	if err := chromedp.Do(play,
		chromedp.Navigate(playURL),
		chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.SetValue(chromedp.ID("token"), tok),
		chromedp.Click(chromedp.ID("login")),
	); err != nil {
		t.Fatalf("play client login: %v", err)
	}
	waitJS(t, play, "the session", `document.getElementById("status").textContent.startsWith("playing in town as webplayer")`, 20*time.Second)
	start := text(t, play, "pos")
	if err := chromedp.Do(play, chromedp.Click(chromedp.ID("right"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, "the first move", fmt.Sprintf(`document.getElementById("pos").textContent !== %q && document.getElementById("pending").textContent === "0"`, start), 20*time.Second)
	moved := text(t, play, "pos")
	if err := chromedp.Do(play, chromedp.SetValue(chromedp.ID("chat-text"), "hello from the browser"), chromedp.Click(chromedp.ID("chat"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, "the chat echo", `document.getElementById("log").textContent.includes("hello from the browser")`, 20*time.Second)

	// Another player, a Go client on the gateway's TCP port, walks by:
	// the page draws it from the positions pushes.
	otherTok, err := token.IssueLogin(sec, "walker", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other, err := client.Dial(ctx, client.Options{Gateways: []string{c.ports["gateway.listen"]}, Token: otherTok, Name: "walker"})
	if err != nil {
		t.Fatalf("second player: %v", err)
	}
	defer other.Close()
	for i, xy := range [][2]int{{3, 2}, {4, 2}, {5, 3}} {
		rep, err := other.Request(ctx, map[string]any{"op": "move", "x": xy[0], "y": xy[1]})
		if err != nil || !rep.OK() {
			t.Fatalf("second player's move %d: %v %+v", i, err, rep)
		}
	}
	waitJS(t, play, "the other player on the map", `document.getElementById("players").textContent === "2"`, 20*time.Second)
	shot(t, play, "play.png")

	// The console, in a second tab: set the operator token, kill town.
	old, err := c.scene("town")
	if err != nil {
		t.Fatal(err)
	}
	cons, cancelCons := chromedp.NewContext(browser)
	defer cancelCons()
	if err := chromedp.Do(cons,
		chromedp.Navigate(consoleURL),
		chromedp.WaitVisible(chromedp.ID("kill-town")),
		chromedp.SetValue(chromedp.ID("token"), c.operatorToken()),
		chromedp.Click(chromedp.ID("save-token")),
		chromedp.Click(chromedp.ID("inspect-town")),
	); err != nil {
		t.Fatalf("console: %v", err)
	}
	waitJS(t, cons, "the scene detail", `document.getElementById("detail").textContent.includes("webplayer")`, 20*time.Second)
	// The walker's moves above are among town's recent events.
	waitJS(t, cons, "the recent events", `(document.getElementById("recent-events") || {textContent: ""}).textContent.includes("move walker")`, 20*time.Second)
	waitJS(t, cons, "the gateway row", `document.getElementById("gateways").textContent.includes("up")`, 20*time.Second)
	if err := chromedp.Do(cons, chromedp.Click(chromedp.ID("kill-town"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, cons, "the kill's answer", `document.getElementById("action").textContent.startsWith("kill town: {")`, 10*time.Second)

	// At once, back in the play tab: a move while town's process is dead.
	// The gateway holds it and resends it to the respawned process; the
	// page sees latency, not an error.
	if err := chromedp.Do(play, chromedp.Click(chromedp.ID("down"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, "the move across the kill", fmt.Sprintf(`document.getElementById("pos").textContent !== %q && document.getElementById("pending").textContent === "0"`, moved), 20*time.Second)
	c.waitReplaced(old, 20*time.Second)
	waitJS(t, cons, "the recovery on the timeline", `document.getElementById("timeline").textContent.includes("recovered")`, 20*time.Second)
	waitJS(t, cons, "the new pid in the table", fmt.Sprintf(`document.getElementById("scene-town").cells[2].textContent !== "%d"`, old.PID), 10*time.Second)

	// And one more move on the new process.
	across := text(t, play, "pos")
	if err := chromedp.Do(play, chromedp.Click(chromedp.ID("right"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, "the move after the recovery", fmt.Sprintf(`document.getElementById("pos").textContent !== %q && document.getElementById("pending").textContent === "0"`, across), 20*time.Second)
	if s := text(t, play, "status"); !strings.HasPrefix(s, "playing in town as webplayer") {
		t.Fatalf("the play client shows %q after the kill; want it still playing", s)
	}
	if s := text(t, play, "log"); strings.Contains(s, "closed") || strings.Contains(s, "reconnect") || strings.Contains(s, "move #") {
		t.Fatalf("the play client saw a disconnect or a failed move: %s", s)
	}

	// The boss: travel to the forest and hit Hogger; the page shows its HP.
	if err := chromedp.Do(play, chromedp.Click(chromedp.ID("travel"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, "the travel", `document.getElementById("status").textContent.startsWith("playing in forest")`, 20*time.Second)
	if err := chromedp.Do(play, chromedp.Click(chromedp.ID("attack"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, "Hogger's HP", `/^\d+\/1000$/.test(document.getElementById("boss-hp").textContent)`, 20*time.Second)

	// A GM command from the console: damage Hogger by 100.
	oldForest, err := c.scene("forest")
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(cons,
		chromedp.Click(chromedp.ID("inspect-forest")),
		chromedp.SetValue(chromedp.ID("gm-monster"), "hogger"),
		chromedp.Click(chromedp.ID("gm-damage")),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, cons, "the GM command's answer", `document.getElementById("gm-result").className === "ok"`, 20*time.Second)
	waitJS(t, cons, "forest's detail", `document.getElementById("detail").textContent.includes("Hogger")`, 20*time.Second)

	// Hang forest's process (SIGSTOP) from the console and attack at once:
	// the manager kills the hung process after the heartbeat timeout and
	// respawns it; the attack is answered by the new one.
	before := text(t, play, "boss-hp")
	if err := chromedp.Do(cons, chromedp.Click(chromedp.ID("hang-forest"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, cons, "the hang's answer", `document.getElementById("action").textContent.startsWith("hang forest: {")`, 10*time.Second)
	if err := chromedp.Do(play, chromedp.Click(chromedp.ID("attack"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, play, "the attack across the hang", fmt.Sprintf(`document.getElementById("boss-hp").textContent !== %q && document.getElementById("pending").textContent === "0"`, before), 30*time.Second)
	c.waitReplaced(oldForest, 20*time.Second)
	waitJS(t, cons, "forest's recovery on the timeline", `document.getElementById("timeline").textContent.includes("recovered forest")`, 20*time.Second)
	if s := text(t, play, "log"); strings.Contains(s, "closed") || strings.Contains(s, "reconnect") || strings.Contains(s, "attack #") {
		t.Fatalf("the play client saw a disconnect or a failed attack across the hang: %s", s)
	}
	waitJS(t, cons, "forest's new pid in the table", fmt.Sprintf(`document.getElementById("scene-forest").cells[2].textContent !== "%d"`, oldForest.PID), 10*time.Second)
	waitJS(t, cons, "forest's detail from the new process", `document.getElementById("detail").textContent.includes("Hogger")`, 20*time.Second)
	shot(t, cons, "console.png")
	t.Logf("Hogger %s -> %s across the hang", before, text(t, play, "boss-hp"))
	t.Logf("moves %s -> %s -> %s -> %s; latency last %s, max %s", start, moved, across, text(t, play, "pos"), text(t, play, "latency"), text(t, play, "latency-max"))
	shot(t, play, "play-after-kill.png")
}

// A player in the browser client plays through gw1 while gw1 is stopped
// with SIGTERM: the gateway drains, the page follows move_to to gw2's
// WebSocket, resumes without a new login, and the next move is answered
// there; the page never shows the session closed.
func TestBrowserFollowsGatewayDrain(t *testing.T) {
	browser := newBrowser(t, 90*time.Second)
	c := newCluster(t)
	gw, _, pid := upWithTwoGateways(t, c)
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := token.IssueLogin(sec, "drainplayer", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(browser,
		chromedp.Navigate("http://"+gw[0][1]+"/"),
		chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.SetValue(chromedp.ID("token"), tok),
		chromedp.Click(chromedp.ID("login")),
	); err != nil {
		t.Fatalf("play client login: %v", err)
	}
	waitJS(t, browser, "the session", `document.getElementById("status").textContent.startsWith("playing in town as drainplayer")`, 20*time.Second)
	move := func(what, button string) {
		t.Helper()
		before := text(t, browser, "pos")
		if err := chromedp.Do(browser, chromedp.Click(chromedp.ID(button))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, browser, what, fmt.Sprintf(`document.getElementById("pos").textContent !== %q && document.getElementById("pending").textContent === "0"`, before), 20*time.Second)
	}
	move("a move on gw1", "right")

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitJS(t, browser, "the move to gw2", `document.getElementById("log").textContent.includes("moving to ws://`+gw[1][1]+`/")`, 20*time.Second)
	waitJS(t, browser, "the resumed session", `document.getElementById("status").textContent.startsWith("playing in town as drainplayer (resumed)")`, 20*time.Second)
	move("a move on gw2", "down")
	log := text(t, browser, "log")
	if strings.Contains(log, "closed") {
		t.Fatalf("the play client saw its session closed: %s", log)
	}
	if n := strings.Count(log, "logged in as drainplayer"); n != 1 {
		t.Fatalf("the play client logged in %d times; want 1 (a resume, not a new login): %s", n, log)
	}
}
