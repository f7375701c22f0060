package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/poll"
)

// chaosDuration is how long TestChaosStopsManagerAndDatasvr runs its
// faults: 20 s by default, to keep `make test` short; the 60 s with
// RESPAWN_CHAOS_SECONDS=60.
func chaosDuration(t *testing.T) time.Duration {
	d := 20 * time.Second
	if s := os.Getenv("RESPAWN_CHAOS_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("RESPAWN_CHAOS_SECONDS=%q: want a positive number of seconds", s)
		}
		d = time.Duration(n) * time.Second
	}
	return d
}

// client sends one kind of request to one scene, each until it is
// acknowledged: a failed attempt (timeout, refused, 503) is resent with the
// same sequence number or request id, which the scene applies once.
type chaosClient struct {
	t     *testing.T
	c     *cluster
	scene string
	path  string
	body  func(n int) any
	token string
	http  http.Client

	mu    sync.Mutex
	acked int
	tries int
}

func (cl *chaosClient) addr() string {
	// The address from the table; while the manager is stopped, the last
	// one known (the scene process is the same, or the test fails anyway).
	if r, err := cl.c.scene(cl.scene); err == nil && r.Addr != "" {
		return r.Addr
	}
	return ""
}

func (cl *chaosClient) run(stop <-chan struct{}, done chan<- error) {
	addr := ""
	for n := 1; ; n++ {
		select {
		case <-stop:
			done <- nil
			return
		default:
		}
		raw, _ := json.Marshal(cl.body(n))
		deadline := time.Now().Add(30 * time.Second)
		for {
			if addr == "" {
				addr = cl.addr()
			}
			cl.mu.Lock()
			cl.tries++
			cl.mu.Unlock()
			status, msg, err := cl.post(addr, raw)
			if err == nil && status == http.StatusOK {
				break
			}
			if status == http.StatusBadRequest || status == http.StatusUnprocessableEntity || status == http.StatusConflict {
				done <- fmt.Errorf("%s #%d refused: %d %s", cl.scene, n, status, msg)
				return
			}
			if time.Now().After(deadline) {
				done <- fmt.Errorf("%s #%d not acknowledged within 30 s: %d %s %v", cl.scene, n, status, msg, err)
				return
			}
			time.Sleep(50 * time.Millisecond) // resend pacing, not a wait for a condition
		}
		cl.mu.Lock()
		cl.acked = n
		cl.mu.Unlock()
		time.Sleep(80 * time.Millisecond) // request pacing
	}
}

func (cl *chaosClient) post(addr string, body []byte) (int, string, error) {
	if addr == "" {
		return 0, "", fmt.Errorf("no address for %s", cl.scene)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+cl.path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cl.token)
	resp, err := cl.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(msg), nil
}

// Issue 11: for a while, the manager and the data server are SIGSTOPped and
// SIGCONTed at random while scenes serve requests. No scene is restarted
// (none had a fault of its own) and every acknowledged request is in the
// scenes' state, exactly once.
func TestChaosStopsManagerAndDatasvr(t *testing.T) {
	c := newCluster(t)
	ds := c.startDatasvr()
	mgr := c.start("worldmgr")
	before := c.waitRunning(20 * time.Second)

	player := uniqueID("chaos")
	c.respawn("player", "create", player, "--name", "Chaos")
	c.respawn("gm", "enter", "--scene", "town", "--player", player)
	c.respawn("player", "give", player, "gold", "10000")
	start, err := c.inspect("forest")
	if err != nil {
		t.Fatal(err)
	}
	hp0 := monster(start, "hogger").HP
	token := c.operatorToken()
	runID := uniqueID("chaos")
	buyer := &chaosClient{t: t, c: c, scene: "town", path: "/v1/scenes/town/request", token: token,
		http: http.Client{Timeout: 2 * time.Second},
		body: func(n int) any {
			return map[string]any{"session": runID, "player": player, "seq": n,
				"op": map[string]any{"op": "buy", "npc": "merchant", "item": "potion", "count": 1}}
		}}
	gm := &chaosClient{t: t, c: c, scene: "forest", path: "/v1/scenes/forest/gm/damage", token: token,
		http: http.Client{Timeout: 2 * time.Second},
		body: func(n int) any {
			return map[string]any{"req_id": fmt.Sprintf("%s-%d", runID, n), "monster": "hogger", "amount": 1}
		}}

	stop := make(chan struct{})
	done := make(chan error, 2)
	go buyer.run(stop, done)
	go gm.run(stop, done)

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	dur := chaosDuration(t)
	t.Logf("chaos for %s, seed %d", dur, seed)
	targets := map[string][]*proc{"worldmgr": {mgr}, "datasvr": {ds}, "both": {mgr, ds}}
	names := []string{"worldmgr", "datasvr", "both"}
	var faults []string
	for end := time.Now().Add(dur); time.Now().Before(end); {
		name := names[rng.IntN(len(names))]
		pause := time.Duration(100+rng.IntN(3400)) * time.Millisecond
		for _, p := range targets[name] {
			p.signal(syscall.SIGSTOP)
		}
		time.Sleep(pause) // the fault: stopped this long
		for _, p := range targets[name] {
			p.signal(syscall.SIGCONT)
		}
		faults = append(faults, fmt.Sprintf("%s %s", name, pause.Round(time.Millisecond)))
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond) // between faults
	}
	t.Logf("faults: %v", faults)
	close(stop)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("acknowledged: %d buys, %d GM damages (%d + %d attempts)", buyer.acked, gm.acked, buyer.tries, gm.tries)
	if buyer.acked < 10 || gm.acked < 10 {
		t.Fatalf("too few requests served to prove anything: %d buys, %d damages", buyer.acked, gm.acked)
	}

	// Zero restarts: every scene has the pid, epoch and restart count it
	// had, past the manager's grace period.
	poll.Until(t, 10*time.Second, func() error {
		after, err := c.scenes()
		if err != nil {
			return err
		}
		return sameTable(before, after)
	})
	holdFor(t, 3*time.Second, func() error {
		after, err := c.scenes()
		if err != nil {
			return err
		}
		return sameTable(before, after)
	})

	// Zero acknowledged events lost, none applied twice.
	town, err := c.inspect("town")
	if err != nil {
		t.Fatal(err)
	}
	var potions int64 = -1
	for _, p := range town.Players {
		if p.ID == player {
			potions = p.Items["potion"]
			if p.Gold != 10000-10*int64(buyer.acked) {
				t.Errorf("gold %d, want %d after %d buys", p.Gold, 10000-10*buyer.acked, buyer.acked)
			}
		}
	}
	if potions != int64(buyer.acked) {
		t.Errorf("player has %d potions, %d buys were acknowledged", potions, buyer.acked)
	}
	forest, err := c.inspect("forest")
	if err != nil {
		t.Fatal(err)
	}
	if hp := monster(forest, "hogger").HP; hp != hp0-int64(gm.acked) {
		t.Errorf("hogger at %d HP, want %d - %d acknowledged damages = %d", hp, hp0, gm.acked, hp0-int64(gm.acked))
	}
	// And the data server caught up with every acknowledged buy.
	poll.Until(t, 15*time.Second, func() error {
		p, err := c.showPlayer(player)
		if err != nil {
			return err
		}
		if p.Items["potion"] != int64(buyer.acked) {
			return fmt.Errorf("datasvr has %d potions, want %d", p.Items["potion"], buyer.acked)
		}
		return nil
	})
}
