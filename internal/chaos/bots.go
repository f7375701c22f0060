package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/respawn-dev/respawn/internal/client"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/token"
)

// playable is what a bot can do in one scene, from the world config.
type playable struct {
	id       string
	shop     string // shop NPC id ("" none)
	wares    []wares
	monsters []string
	exits    []string
}

type wares struct {
	item  string
	price int64
}

func playables(cfg *config.Config) map[string]*playable {
	out := map[string]*playable{}
	for _, d := range cfg.Scenes {
		p := &playable{id: d.ID, exits: d.Exits}
		for _, n := range d.NPCs {
			if len(n.Shop) > 0 && p.shop == "" {
				p.shop = n.ID
				for _, s := range n.Shop {
					p.wares = append(p.wares, wares{s.Item, s.Price})
				}
			}
		}
		for _, m := range d.Monsters {
			p.monsters = append(p.monsters, m.ID)
		}
		out[d.ID] = p
	}
	return out
}

// record is one request as its bot saw it.
type record struct {
	in       OpInput
	out      OpOutput
	call, rt int64 // ns since the run started; rt MaxInt64 when unanswered
}

// bot is one player and everything it saw.
type bot struct {
	i     int
	id    string
	c     *client.Client
	scene string
	r     *rand.Rand
	init  Holdings
	held  Holdings // init + every acknowledged effect

	mu            sync.Mutex
	hist          []record
	unknown       int // requests with no answer
	unknownAttack bool
}

// swarm is the run's bots.
type swarm struct {
	cfg        *config.Config
	play       map[string]*playable
	bots       []*bot
	t0         time.Time
	rate       float64
	pipeline   int
	reqTimeout time.Duration
	sec        *secret.Secret

	sent, answered, refused, unknown atomic.Uint64
	lat                              latencies
}

const goldGift = 1_000_000

// login creates bot i's player, gives it gold, logs it in through the
// gateways (spread: bot i starts at gateway i mod n) and sends it to the
// scene it plays in.
func (s *swarm) login(ctx context.Context, ac *dataclient.AdminClient, sec *secret.Secret, gateways []string, prefix string, seed uint64, i int) (*bot, error) {
	id := fmt.Sprintf("%s-%04d", prefix, i)
	if err := ac.CreateReq(ctx, id+"-create", id, id); err != nil && !errors.Is(err, dataclient.ErrExists) {
		return nil, err
	}
	if _, err := ac.Give(ctx, id+"-gold", id, "gold", goldGift); err != nil {
		return nil, err
	}
	c, sess, v, err := LoginBot(ctx, sec, id, gateways, i)
	if err != nil {
		return nil, err
	}
	b := &bot{i: i, id: id, c: c, scene: sess.Scene, r: rand.New(rand.NewPCG(seed, uint64(i)))}
	b.init = Holdings{Gold: v.Gold, Items: map[string]int64{}}
	for k, n := range v.Items {
		b.init.add(k, n)
	}
	// Odd bots fight, even bots shop, where an exit allows.
	here := s.play[b.scene]
	if here != nil && i%2 == 1 && len(here.monsters) == 0 {
		for _, e := range here.exits {
			if p := s.play[e]; p != nil && len(p.monsters) > 0 {
				rep, err := c.Request(ctx, map[string]any{"op": "travel", "to": e})
				if err != nil || !rep.OK() {
					c.Close()
					return nil, fmt.Errorf("send %s to %s: %v %v", id, e, err, rep.Err())
				}
				if err := waitIn(ctx, c, e); err != nil {
					c.Close()
					return nil, fmt.Errorf("send %s to %s: %w", id, e, err)
				}
				b.scene = e
				break
			}
		}
	}
	b.held = b.init.clone()
	return b, nil
}

// waitIn waits until the player's travel landed: a move answered by the
// destination (the gateway re-routes on arrival).
func waitIn(ctx context.Context, c *client.Client, scene string) error {
	return poll.Wait(ctx, func() error {
		if s := c.Session(); s.Scene == scene {
			return nil
		}
		rep, err := c.Request(ctx, map[string]any{"op": "move", "x": 3, "y": 3})
		if err != nil {
			return poll.Stop(err)
		}
		if rep.Code == gwproto.CodeGameError && rep.Reason == game.ErrNotInScene {
			return errors.New("still travelling")
		}
		return nil
	})
}

// next picks the bot's next request in its scene.
func (s *swarm) next(b *bot) (OpInput, map[string]any) {
	p := s.play[b.scene]
	n := b.r.IntN(10)
	switch {
	case p != nil && n >= 4 && len(p.monsters) > 0:
		m := p.monsters[b.r.IntN(len(p.monsters))]
		return OpInput{Kind: "attack", Monster: m}, map[string]any{"op": "attack", "monster": m}
	case p != nil && n >= 4 && len(p.wares) > 0:
		w := p.wares[0] // the cheapest line keeps bots buying for the whole run
		cnt := int64(1 + b.r.IntN(3))
		return OpInput{Kind: "buy", Item: w.item, Count: cnt, Price: w.price},
			map[string]any{"op": "buy", "npc": p.shop, "item": w.item, "count": cnt}
	}
	x, y := 1+b.r.IntN(30), 1+b.r.IntN(30)
	return OpInput{Kind: "move", X: x, Y: y}, map[string]any{"op": "move", "x": x, "y": y}
}

// run is one bot's play until stop: up to s.pipeline requests in flight,
// each started at the bot's rate.
func (s *swarm) run(stop <-chan struct{}, b *bot) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, s.pipeline)
	interval := time.Duration(float64(time.Second) / s.rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			wg.Wait()
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		case <-stop:
			wg.Wait()
			return
		}
		in, op := s.next(b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.do(b, in, op)
		}()
	}
}

// do sends one request and records what came back.
func (s *swarm) do(b *bot, in OpInput, op map[string]any) {
	ctx, cancel := context.WithTimeout(context.Background(), s.reqTimeout)
	defer cancel()
	call := time.Since(s.t0)
	s.sent.Add(1)
	rep, err := b.c.Request(ctx, op)
	rt := time.Since(s.t0)
	rec := record{in: in, call: int64(call)}
	switch {
	case err != nil:
		rec.out = OpOutput{Outcome: OutUnknown, Reason: err.Error()}
		rec.rt = math.MaxInt64
		s.unknown.Add(1)
	case rep.OK():
		rec.out = OpOutput{Outcome: OutOK}
		switch in.Kind {
		case "buy":
			_ = json.Unmarshal(rep.Body, &rec.out.Buy)
		case "attack":
			var a game.AttackResult
			_ = json.Unmarshal(rep.Body, &a)
			rec.out.Loot = a.Loot
		}
		rec.rt = int64(rt)
		s.answered.Add(1)
		s.lat.add(rt - call)
	case rep.Code == gwproto.CodeGameError:
		rec.out = OpOutput{Outcome: OutRefused, Reason: rep.Reason}
		rec.rt = int64(rt)
		s.answered.Add(1)
		s.refused.Add(1)
		s.lat.add(rt - call)
	default:
		// The gateway's own errors (unavailable after the hold ran out)
		// leave the outcome unknown to the bot.
		rec.out = OpOutput{Outcome: OutUnknown, Reason: fmt.Sprintf("%s: %s", rep.Code, rep.Error)}
		rec.rt = math.MaxInt64
		s.unknown.Add(1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hist = append(b.hist, rec)
	switch rec.out.Outcome {
	case OutOK:
		b.held = effect(b.held, in, rec.out)
	case OutUnknown:
		b.unknown++
		if in.Kind != "move" {
			b.unknownAttack = b.unknownAttack || in.Kind == "attack"
		}
	}
}

// operations is the bot's history for porcupine.
func (b *bot) operations() []porcupine.Operation {
	b.mu.Lock()
	defer b.mu.Unlock()
	ops := make([]porcupine.Operation, 0, len(b.hist))
	for _, r := range b.hist {
		ops = append(ops, porcupine.Operation{ClientId: 0, Input: r.in, Output: r.out, Call: r.call, Return: r.rt})
	}
	slices.SortFunc(ops, func(a, b porcupine.Operation) int { return int(a.Call - b.Call) })
	return ops
}

// latencies keeps answered requests' latencies (bounded: a reservoir).
type latencies struct {
	mu  sync.Mutex
	n   uint64
	max time.Duration
	s   []time.Duration
}

const latencyReservoir = 200_000

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	l.max = max(l.max, d)
	if len(l.s) < latencyReservoir {
		l.s = append(l.s, d)
		return
	}
	// Reservoir sampling with a deterministic stride is enough for
	// percentiles of a long run.
	l.s[l.n%latencyReservoir] = d
}

func (l *latencies) summary() (p50, p99, mx float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.s) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(l.s)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return ms(s[len(s)/2]), ms(s[len(s)*99/100]), ms(l.max)
}

// LoginBot logs player id in through the gateways with a token signed by
// the cluster secret. Bot i starts at gateway i (mod their number) and can
// fail over to every other one. It returns the client, its session and the
// player's state at login.
func LoginBot(ctx context.Context, sec *secret.Secret, id string, gateways []string, i int) (*client.Client, gwproto.Session, game.PlayerView, error) {
	var v game.PlayerView
	tok, err := token.IssueLogin(sec, id, time.Now().Add(24*time.Hour))
	if err != nil {
		return nil, gwproto.Session{}, v, err
	}
	addrs := make([]string, len(gateways))
	for k := range gateways {
		addrs[k] = gateways[(i+k)%len(gateways)]
	}
	// Bots never read pushes: buffering them would only hold memory.
	c, err := client.Dial(ctx, client.Options{Gateways: addrs, Token: tok, Name: id, DiscardPushes: true})
	if err != nil {
		return nil, gwproto.Session{}, v, fmt.Errorf("login %s: %w", id, err)
	}
	sess := c.Session()
	if err := json.Unmarshal(sess.State, &v); err != nil {
		c.Close()
		return nil, gwproto.Session{}, v, fmt.Errorf("login %s: session state: %w", id, err)
	}
	return c, sess, v, nil
}
