package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/client"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/token"
)

// botResult is `bot play --json`.
type botResult struct {
	Bots        int     `json:"bots"`
	Sent        uint64  `json:"sent"`
	Answered    uint64  `json:"answered"`
	Errors      uint64  `json:"errors"`
	Disconnects uint64  `json:"disconnects"`
	Resumes     uint64  `json:"resumes"`
	Relogins    uint64  `json:"relogins"`
	Duplicates  uint64  `json:"duplicates"`
	Lost        uint64  `json:"lost"`
	RPS         float64 `json:"rps"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
}

// syncBuf is a bytes.Buffer safe for a process writing and a test reading.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// botRun is a `bot play` process.
type botRun struct {
	t              testing.TB
	cmd            *exec.Cmd
	stdout, stderr syncBuf
	done           chan struct{}
	err            error
}

// playBots starts `bot play` against this cluster with args; the process
// is killed by pid at cleanup if it is still running.
func (c *cluster) playBots(args ...string) *botRun {
	c.t.Helper()
	r := &botRun{t: c.t, done: make(chan struct{})}
	r.cmd = exec.Command(filepath.Join(binDir, "bot"), append(append([]string{"play"}, c.args()...), args...)...)
	r.cmd.Env = append(r.cmd.Environ(), c.env...)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	c.t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.done
		if c.t.Failed() {
			lines := strings.Split(r.stderr.String(), "\n")
			c.t.Logf("bot stderr (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return r
}

var answeredRE = regexp.MustCompile(`answered (\d+) \(`)

// answered is the last progress line's count of answered requests.
func (r *botRun) answered() uint64 {
	m := answeredRE.FindAllStringSubmatch(r.stderr.String(), -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.ParseUint(m[len(m)-1][1], 10, 64)
	return n
}

// waitAnswered waits until the bots have had n more requests answered
// than at the call.
func (r *botRun) waitAnswered(n uint64) {
	r.t.Helper()
	base := r.answered()
	poll.Until(r.t, 60*time.Second, func() error {
		select {
		case <-r.done:
			return fmt.Errorf("bot exited early: %v", r.err)
		default:
		}
		if got := r.answered() - base; got < n {
			return fmt.Errorf("%d of %d more requests answered", got, n)
		}
		return nil
	})
}

// result waits for the bots to finish and returns their JSON.
func (r *botRun) result(timeout time.Duration) (botResult, error) {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		r.t.Fatalf("bot play did not finish within %s", timeout)
	}
	var res botResult
	if err := json.Unmarshal([]byte(r.stdout.String()), &res); err != nil {
		r.t.Fatalf("bot output %q: %v (exit: %v)", r.stdout.String(), err, r.err)
	}
	return res, r.err
}

// 100 bots play the whole mix (move, attack, loot, buy, trade, travel,
// chat) while the forest's scene process is killed with SIGKILL: no bot is
// disconnected, every request is answered once, no request fails, and
// every bot's ledger equals what the scenes and the data server hold. At a
// rate (a goroutine per bot) and in a closed loop (GoFunc callbacks).
func TestBotPlaySurvivesSceneKill9(t *testing.T) {
	for _, rate := range []string{"20", "0"} {
		t.Run("rate="+rate, func(t *testing.T) {
			c := newCluster(t)
			c.startWorld()
			c.gateway("gateway")
			// The play lasts long enough for both waits on a loaded machine
			// (the bots then answer a few hundred a second, not 2000).
			bots := c.playBots("-n", "100", "--rate", rate, "--duration", "8s", "--json", "--progress", "200ms")
			bots.waitAnswered(500)
			c.killScene("forest")
			bots.waitAnswered(500)
			res, err := bots.result(90 * time.Second)
			t.Logf("bot play: %+v", res)
			if err != nil {
				t.Errorf("bot play exited with %v", err)
			}
			if res.Bots != 100 || res.Sent == 0 || res.Answered != res.Sent {
				t.Errorf("bots %d, sent %d, answered %d", res.Bots, res.Sent, res.Answered)
			}
			if res.Errors != 0 || res.Disconnects != 0 || res.Lost != 0 || res.Duplicates != 0 || res.Relogins != 0 {
				t.Errorf("errors %d, disconnects %d, lost %d, duplicates %d, relogins %d", res.Errors, res.Disconnects, res.Lost, res.Duplicates, res.Relogins)
			}
		})
	}
}

// A session keeps its seqs across travels, however fast the next request
// follows: with seqs past the scene's window (16), a join that raced the
// transfer used to enter the player from the data server's copy with a
// fresh session record (last applied 0), and every later request was
// refused as seq_too_far.
func TestTravelKeepsSessionSeqs(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	_, tcp, _ := c.gateway("gateway")
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	id := uniqueID("traveller")
	tok, err := token.IssueLogin(sec, id, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Options{Gateways: []string{tcp}, Token: tok, Name: id})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	scene := cl.Session().Scene
	other := map[string]string{"town": "forest", "forest": "town"}
	for trip := range 10 {
		for k := range 20 { // past the window before every travel
			rep, err := cl.Request(ctx, map[string]any{"op": "move", "x": 1 + k, "y": 1 + trip})
			if err != nil || !rep.OK() {
				t.Fatalf("trip %d move %d in %s: %v %v", trip, k, scene, err, rep.Err())
			}
		}
		rep, err := cl.Request(ctx, map[string]any{"op": "travel", "to": other[scene]})
		if err != nil || !rep.OK() {
			t.Fatalf("trip %d travel %s -> %s: %v %v", trip, scene, other[scene], err, rep.Err())
		}
		scene = other[scene]
	}
	if st := cl.Stats(); st.Duplicates != 0 || st.Disconnects != 0 {
		t.Fatalf("client stats %+v", st)
	}
}
