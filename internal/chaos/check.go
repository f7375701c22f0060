package chaos

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/poll"

	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/player"
)

// worldWatch samples every scene's state during the run: a scene's tick
// (and with it its monsters' HP and NPCs' paths) must never go back, also
// across a restart of its process.
type worldWatch struct {
	cl *cluster

	mu       sync.Mutex
	last     map[string]sample
	samples  int
	backward []Violation
}

type sample struct {
	tick  uint64
	epoch uint64
	mons  map[string]int64
	npcs  map[string]int
}

// maxBackward bounds the violations kept per run.
const maxBackward = 100

func newWorldWatch(cl *cluster) *worldWatch {
	return &worldWatch{cl: cl, last: map[string]sample{}}
}

func (w *worldWatch) run(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		w.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *worldWatch) sample(ctx context.Context) {
	rows, err := w.cl.scenes(ctx)
	if err != nil {
		return // the manager is down: sample later
	}
	for _, r := range rows {
		if r.Addr == "" || r.State != "running" {
			continue
		}
		var v game.View
		if err := w.cl.getJSON(ctx, "http://"+r.Addr+"/v1/scenes/"+r.ID+"/inspect", &v); err != nil {
			continue
		}
		s := sample{tick: v.Tick, epoch: v.Epoch, mons: map[string]int64{}, npcs: map[string]int{}}
		for _, m := range v.Monsters {
			s.mons[m.ID] = m.HP
		}
		for _, n := range v.NPCs {
			s.npcs[n.ID] = n.PathIndex
		}
		w.mu.Lock()
		w.samples++
		if prev, ok := w.last[r.ID]; ok && s.tick < prev.tick && len(w.backward) < maxBackward {
			w.backward = append(w.backward, Violation{Check: "world", Scene: r.ID,
				Expected: fmt.Sprintf("tick >= %d (seen at epoch %d, monsters %v)", prev.tick, prev.epoch, prev.mons),
				Found:    fmt.Sprintf("tick %d at epoch %d, monsters %v", s.tick, s.epoch, s.mons)})
		}
		if prev, ok := w.last[r.ID]; !ok || s.tick >= prev.tick {
			w.last[r.ID] = s
		}
		w.mu.Unlock()
	}
}

// checkAll runs the end-of-run checks into rep.
func checkAll(ctx context.Context, rep *Report, cl *cluster, ac *dataclient.AdminClient, s *swarm, w *worldWatch, say func(string, ...any)) {
	add := func(c Check, vs []Violation) {
		c.Violations = len(vs)
		rep.Checks = append(rep.Checks, c)
		rep.Violations = append(rep.Violations, vs...)
	}
	for _, b := range s.bots {
		if b.unknownAttack {
			rep.Unchecked++
		}
	}

	// Disconnects: none, and a killed gateway's clients resumed without a
	// new login.
	var vs []Violation
	for _, b := range s.bots {
		st := b.c.Stats()
		rep.Clients.Resumes += st.Resumes
		rep.Clients.Relogins += st.Relogins
		rep.Clients.Disconnects += st.Disconnects
		rep.Clients.Lost += st.Lost
		rep.Clients.Resends += st.Resends
		rep.Clients.Duplicates += st.Duplicates
		if st.Disconnects > 0 || st.Relogins > 0 {
			vs = append(vs, Violation{Check: "disconnects", Player: b.id, Requests: len(b.hist),
				Expected: "no disconnect; a lost connection resumed without a new login",
				Found:    fmt.Sprintf("%d disconnects, %d relogins, %d resumes", st.Disconnects, st.Relogins, st.Resumes)})
		}
		if err := b.c.Err(); err != nil {
			vs = append(vs, Violation{Check: "disconnects", Player: b.id, Requests: len(b.hist),
				Expected: "session alive", Found: err.Error()})
		}
	}
	add(Check{Name: "disconnects", Checked: len(s.bots)}, vs)

	// Answered: every request got its reply (the client library resends
	// through failovers by itself; a request left without one broke the
	// promise even if the session lives on).
	vs = nil
	for _, b := range s.bots {
		b.mu.Lock()
		if b.unknown > 0 {
			var first string
			for _, r := range b.hist {
				if r.out.Outcome == OutUnknown {
					// When it was sent and the faults around it, so a
					// long run's report says where the answer waited.
					at := time.Duration(r.call).Milliseconds()
					first = fmt.Sprintf("%s sent at %d ms: %s; faults from 30 s before until its timeout: %s",
						r.in.Kind, at, r.out.Reason, faultsAround(rep.Faults, at-30_000, at+s.reqTimeout.Milliseconds()))
					break
				}
			}
			vs = append(vs, Violation{Check: "unanswered", Player: b.id, Requests: len(b.hist),
				Expected: fmt.Sprintf("every request answered within %s", s.reqTimeout),
				Found:    fmt.Sprintf("%d without an answer", b.unknown), Detail: "first: " + first})
		}
		b.mu.Unlock()
	}
	add(Check{Name: "unanswered", Checked: len(s.bots)}, vs)

	// Stuck: every session answers a final request within the bound.
	vs = nil
	var vmu sync.Mutex
	_ = parallel(ctx, len(s.bots), 64, func(i int) error {
		b := s.bots[i]
		fctx, cancel := context.WithTimeout(ctx, stuckBound)
		defer cancel()
		start := time.Now()
		r, err := b.c.Request(fctx, map[string]any{"op": "move", "x": 2, "y": 2})
		if err == nil && (r.OK() || r.Reason != "") {
			return nil
		}
		found := fmt.Sprint(err)
		if err == nil {
			found = r.Err().Error()
		}
		vmu.Lock()
		vs = append(vs, Violation{Check: "stuck", Player: b.id, Requests: len(b.hist),
			Expected: fmt.Sprintf("a final request answered within %s", stuckBound),
			Found:    fmt.Sprintf("%s after %s", found, time.Since(start).Round(time.Millisecond))})
		vmu.Unlock()
		return nil
	})
	add(Check{Name: "stuck", Checked: len(s.bots)}, vs)

	// The scenes' state: each bot's acknowledged effects, and each scene's
	// conservation ledger.
	views, verr := sceneViews(ctx, cl)
	held := map[string]Holdings{}
	for _, v := range views {
		for _, p := range v.Players {
			h := Holdings{Gold: p.Gold, Items: map[string]int64{}}
			for k, n := range p.Items {
				h.add(k, n)
			}
			held[p.ID] = h
		}
	}
	vs = nil
	checked := 0
	for _, b := range s.bots {
		if b.unknownAttack {
			continue
		}
		checked++
		got, ok := held[b.id]
		if !ok {
			vs = append(vs, Violation{Check: "lost", Player: b.id, Requests: len(b.hist),
				Expected: "player present in a scene", Found: "in no scene"})
			continue
		}
		vs = append(vs, compareHeld("scene", b, got)...)
	}
	c := Check{Name: "acknowledged (scenes)", Checked: checked}
	if verr != nil {
		c.Note = verr.Error()
		vs = append(vs, Violation{Check: "lost", Expected: "every scene inspectable", Found: verr.Error()})
	}
	add(c, vs)

	vs = nil
	for _, v := range views {
		vs = append(vs, ledgerCheck(v)...)
	}
	add(Check{Name: "duplication (ledger)", Checked: len(views)}, vs)

	// World state never went back.
	w.mu.Lock()
	add(Check{Name: "world", Checked: w.samples}, w.backward)
	w.mu.Unlock()

	// Linearizability of each player's history.
	vs = nil
	checked = 0
	var timeouts int
	for _, b := range s.bots {
		if b.unknownAttack {
			continue
		}
		checked++
		ops := b.operations()
		res, info := porcupine.CheckOperationsVerbose(playerModel(b.init), ops, 10*time.Second)
		switch res {
		case porcupine.Illegal:
			vs = append(vs, Violation{Check: "linearizability", Player: b.id, Requests: len(ops),
				Expected: "a history the game model can explain (each request applied once, in some order consistent with real time)",
				Found:    "no linearization", Detail: longestPrefix(ops, info)})
		case porcupine.Unknown:
			timeouts++
		}
	}
	c = Check{Name: "linearizability", Checked: checked}
	if timeouts > 0 {
		c.Note = fmt.Sprintf("%d histories not decided within 10 s", timeouts)
	}
	add(c, vs)

	// Fencing: a stale writer's save must be refused.
	n, fvs := fencingProbe(ctx, cl, ac, s)
	add(Check{Name: "fencing (stale writer)", Checked: n}, fvs)

	// The data server: log every bot out (a save), then what it holds must
	// be each bot's ledger.
	_ = parallel(ctx, len(s.bots), 64, func(i int) error {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = s.bots[i].c.Logout(lctx)
		return nil
	})
	vs = nil
	checked = 0
	vmu = sync.Mutex{}
	_ = parallel(ctx, len(s.bots), 32, func(i int) error {
		b := s.bots[i]
		if b.unknownAttack {
			return nil
		}
		var show dataclient.ShowReply
		// A gateway retries a leave for up to three hold timeouts (a
		// scene may wait a whole hold for a final save while datasvr comes
		// back): the player is offline within that, not at once.
		err := poll.Within(ctx, 40*time.Second, func() error {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var err error
			if show, err = ac.Show(sctx, b.id); err != nil {
				return err
			}
			if show.Online {
				return fmt.Errorf("player %s still online", b.id)
			}
			return nil
		})
		vmu.Lock()
		defer vmu.Unlock()
		checked++
		if err != nil {
			vs = append(vs, Violation{Check: "lost", Player: b.id, Requests: len(b.hist),
				Expected: "the player saved and offline at the data server after logout", Found: err.Error()})
			return nil
		}
		h := Holdings{Gold: show.Gold, Items: map[string]int64{}}
		for k, n := range show.Items {
			h.add(k, n)
		}
		vs = append(vs, compareHeld("datasvr", b, h)...)
		return nil
	})
	add(Check{Name: "acknowledged (datasvr)", Checked: checked}, vs)

	sort.SliceStable(rep.Violations, func(i, j int) bool { return rep.Violations[i].Check < rep.Violations[j].Check })
	say("checks done: %d violations", len(rep.Violations))
}

// stuckBound is how long a final request may take after the settle.
const stuckBound = 10 * time.Second

// compareHeld compares what a bot was acknowledged with what where holds:
// less is a lost acknowledgement, more a duplication.
// faultsAround lists the faults injected between fromMs and toMs (run
// time), with how long each took to recover.
func faultsAround(faults []Fault, fromMs, toMs int64) string {
	var out []string
	for _, f := range faults {
		if f.AtMs < fromMs || f.AtMs > toMs {
			continue
		}
		rec := fmt.Sprintf("recovered in %d ms", f.RecoveryMs)
		if f.RecoveryMs < 0 {
			rec = "not recovered"
		}
		out = append(out, fmt.Sprintf("%s %s at %d ms (%s)", f.Kind, f.Target, f.AtMs, rec))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func compareHeld(where string, b *bot, got Holdings) []Violation {
	b.mu.Lock()
	want := b.held.clone()
	n := len(b.hist)
	b.mu.Unlock()
	if want.equal(got) {
		return nil
	}
	check := "lost"
	// More than acknowledged of anything: something was applied twice (an
	// unanswered buy may have happened: it explains less gold and more of
	// its item, never more gold).
	if got.Gold > want.Gold {
		check = "duplication"
	}
	for k, v := range got.Items {
		if v > want.Items[k] && b.unknown == 0 {
			check = "duplication"
		}
	}
	if b.unknown > 0 && check == "lost" {
		// Unanswered buys: tolerated when got is want minus some of them.
		return nil
	}
	return []Violation{{Check: check, Player: b.id, Requests: n, Detail: where,
		Expected: want.String(), Found: got.String()}}
}

// ledgerCheck checks a scene's conservation: for gold and every item,
// held by its players == entered - left + in - out + minted - sunk.
func ledgerCheck(v game.View) []Violation {
	heldBy := map[string]int64{}
	for _, p := range v.Players {
		heldBy["gold"] += p.Gold
		for k, n := range p.Items {
			heldBy[k] += n
		}
	}
	keys := map[string]bool{}
	for k := range heldBy {
		keys[k] = true
	}
	for k := range v.Ledger {
		keys[k] = true
	}
	var out []Violation
	for k := range keys {
		l := v.Ledger[k]
		want := l.Entered - l.Left + l.In - l.Out + l.Minted - l.Sunk
		if heldBy[k] != want {
			out = append(out, Violation{Check: "duplication", Scene: v.Scene,
				Expected: fmt.Sprintf("%s held = %d (entered %d - left %d + in %d - out %d + minted %d - sunk %d)",
					k, want, l.Entered, l.Left, l.In, l.Out, l.Minted, l.Sunk),
				Found: fmt.Sprintf("%s held = %d", k, heldBy[k])})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Expected < out[j].Expected })
	return out
}

// sceneViews inspects every scene of the table.
func sceneViews(ctx context.Context, cl *cluster) ([]game.View, error) {
	rows, err := cl.scenes(ctx)
	if err != nil {
		return nil, err
	}
	var out []game.View
	for _, r := range rows {
		var v game.View
		err := poll.Within(ctx, 10*time.Second, func() error {
			return cl.getJSON(ctx, "http://"+r.Addr+"/v1/scenes/"+r.ID+"/inspect", &v)
		})
		if err != nil {
			return out, fmt.Errorf("inspect %s: %w", r.ID, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// longestPrefix describes where porcupine's longest linearization stopped.
func longestPrefix(ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	parts := info.PartialLinearizations()
	best := []int(nil)
	for _, p := range parts {
		for _, l := range p {
			if len(l) > len(best) {
				best = l
			}
		}
	}
	model := playerModel(Holdings{})
	desc := fmt.Sprintf("longest linearizable prefix: %d of %d requests", len(best), len(ops))
	if len(best) < len(ops) {
		done := map[int]bool{}
		for _, k := range best {
			done[k] = true
		}
		for k, op := range ops {
			if !done[k] {
				desc += "; first request it cannot place: " + model.DescribeOperation(op.Input, op.Output)
				break
			}
		}
	}
	return desc
}

// fencingProbe is the stale writer: for one player of each scene it saves,
// as the previous epoch of the scene holding the player's lease, a copy
// with forgeGold more gold. The data server must refuse it as a stale
// epoch; an accepted one is a fencing violation (and the forged gold then
// shows up in the ledger checks too).
func fencingProbe(ctx context.Context, cl *cluster, ac *dataclient.AdminClient, s *swarm) (int, []Violation) {
	nc, err := bus.Connect(cl.cfg.NATS.ClientURL(), "bot-chaos-stale-writer", bus.RoleScene, s.sec, zap.NewNop())
	if err != nil {
		return 0, []Violation{{Check: "fencing", Expected: "a connection as a scene to probe fencing", Found: err.Error()}}
	}
	defer nc.Close()
	var vs []Violation
	probed := map[string]bool{}
	n := 0
	for _, b := range s.bots {
		if probed[b.scene] || b.unknownAttack {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		show, err := ac.Show(pctx, b.id)
		cancel()
		if err != nil || show.Owner == nil || show.Owner.Epoch < 1 {
			continue
		}
		d, err := player.Decode(show.Data)
		if err != nil {
			continue
		}
		probed[b.scene] = true
		n++
		d.Gold += forgeGold
		stale := show.Owner.Epoch - 1
		dc := dataclient.NewClient(nc, show.Owner.Scene, stale, zap.NewNop())
		pctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		err = dc.Save(pctx, b.id, show.Version+1, d)
		cancel()
		switch {
		case err == nil:
			vs = append(vs, Violation{Check: "fencing", Player: b.id, Scene: show.Owner.Scene,
				Expected: fmt.Sprintf("a save by scene %s epoch %d refused: the lease has epoch %d", show.Owner.Scene, stale, show.Owner.Epoch),
				Found:    fmt.Sprintf("accepted as version %d", show.Version+1)})
		case errors.Is(err, dataclient.ErrStaleEpoch):
		default:
			vs = append(vs, Violation{Check: "fencing", Player: b.id, Scene: show.Owner.Scene,
				Expected: fmt.Sprintf("a save by scene %s epoch %d refused as a stale epoch", show.Owner.Scene, stale),
				Found:    err.Error()})
		}
	}
	return n, vs
}

// forgeGold is what the stale writer adds: large enough that no play
// explains it.
const forgeGold = 1_000_000
