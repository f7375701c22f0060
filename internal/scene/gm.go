package scene

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/validate"
)

// The data server's requests for players this process owns. Each becomes a
// logged event; the answer goes back once the resulting save is durable.

const gmTimeout = 10 * time.Second

func respond(l *loop, m *nats.Msg, v any) {
	raw, err := json.Marshal(v)
	if err == nil {
		err = m.Respond(raw)
	}
	if err != nil {
		l.log.Warn("answer to datasvr lost; it will retry", zap.Error(err))
	}
}

// savedAfter waits until the Save in effs for player (if any) is durable;
// w was registered (dataLink.expect) before the event was submitted.
func (p *Process) savedAfter(ctx context.Context, w *ackWaiter, player string, effs []game.Effect) error {
	for _, e := range effs {
		if s, ok := e.(game.Save); ok && s.Player.ID == player {
			select {
			case err := <-p.host.data.await(player, w, s.Version):
				return err
			case <-ctx.Done():
				return fmt.Errorf("save of player %s version %d not acknowledged: %w", player, s.Version, ctx.Err())
			}
		}
	}
	return nil
}

func (p *Process) onGive(ctx context.Context, l *loop, m *nats.Msg) {
	var req dataclient.GiveRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		respond(l, m, dataclient.GiveReply{Error: "bad give request: " + err.Error()})
		return
	}
	// The same rules datasvr applied before forwarding: a give that reached
	// the scene some other way obeys them too.
	if err := p.checkGive(&req); err != nil {
		respond(l, m, dataclient.GiveReply{Player: req.Player, Error: err.Error(), Code: dataclient.CodeBadRequest})
		return
	}
	ctx, cancel := context.WithTimeout(ctx, gmTimeout)
	defer cancel()
	w := p.host.data.expect(req.Player)
	defer p.host.data.forget(req.Player, w)
	effs, err := l.submit(ctx, game.GMGive{ReqID: req.ReqID, Player: req.Player, Item: req.Item, Count: req.Count})
	if err != nil {
		respond(l, m, dataclient.GiveReply{Player: req.Player, Error: err.Error()})
		return
	}
	rep := dataclient.GiveReply{Player: req.Player}
	for _, e := range effs {
		if r, ok := e.(game.GMReply); ok && r.ReqID == req.ReqID {
			switch b := r.Body.(type) {
			case game.GiveResult:
				rep.Count = b.Count
			case game.ErrorResult:
				rep.Error = b.Error
			}
		}
		if s, ok := e.(game.Save); ok && s.Player.ID == req.Player {
			rep.Version = s.Version
		}
	}
	if rep.Error == "" {
		err := p.savedAfter(ctx, w, req.Player, effs)
		switch {
		case errors.Is(err, dataclient.ErrOldVersion):
			// The data server's copy was newer: the player is reloaded and
			// this give, applied to the old copy, is forgotten with it.
			// Once the reload is logged, the same request id applies anew.
			werr := p.host.data.waitReloaded(ctx, l, req.Player)
			rep.Count, rep.Version = 0, 0
			rep.Error = fmt.Sprintf("player %s was reloaded from the data server (its copy was newer); the give was not kept, retry request %s", req.Player, req.ReqID)
			rep.Code = dataclient.CodeUnavailable
			if werr != nil {
				rep.Error += ": " + werr.Error()
			}
		case err != nil:
			rep.Error = err.Error()
		}
	}
	respond(l, m, rep)
}

// checkGive applies the input rules (package validate) to a GM give.
func (p *Process) checkGive(req *dataclient.GiveRequest) error {
	for _, err := range []error{validate.RequestID(req.ReqID), validate.PlayerID(req.Player), p.catalog.Item(req.Item), validate.Count(req.Count)} {
		if err != nil {
			return fmt.Errorf("give %s %d %s: %w", validate.Quote(req.Player), req.Count, validate.Quote(req.Item), err)
		}
	}
	return nil
}

func (p *Process) onKick(ctx context.Context, l *loop, m *nats.Msg) {
	var req dataclient.KickRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		respond(l, m, dataclient.KickReply{Error: "bad kick request: " + err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(ctx, gmTimeout)
	defer cancel()
	var v uint64
	present := false
	if err := l.read(ctx, func(st *game.Scene) { _, v, present = st.Player(req.Player) }); err != nil || !present {
		respond(l, m, dataclient.KickReply{Player: req.Player, Error: fmt.Sprintf("player %s is not in scene %s", req.Player, l.id)})
		return
	}
	w := p.host.data.expect(req.Player)
	defer p.host.data.forget(req.Player, w)
	effs, err := l.submit(ctx, game.Leave{Player: req.Player})
	if err == nil {
		err = p.savedAfter(ctx, w, req.Player, effs)
	}
	for _, e := range effs {
		if s, ok := e.(game.Save); ok && s.Player.ID == req.Player {
			v = s.Version
		}
	}
	if err == nil {
		// The final save is durable; give the lease back.
		err = p.host.data.client(l).Release(ctx, req.Player, v, nil)
		if errors.Is(err, dataclient.ErrOldVersion) {
			err = nil
		}
	}
	rep := dataclient.KickReply{Player: req.Player}
	if err != nil {
		rep.Error = err.Error()
	}
	respond(l, m, rep)
}

func (p *Process) onSaveAll(ctx context.Context, l *loop, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, gmTimeout)
	defer cancel()
	rep := dataclient.SaveAllReply{Scene: l.id}
	// The scene and its dungeon rooms: their players are the scene's too.
	for _, sl := range append([]*loop{l}, p.host.rooms(l.id)...) {
		rep.Players += int(sl.players.Load())
		if _, err := sl.submit(ctx, game.SaveTick{}); err != nil {
			rep.Error = err.Error()
		} else if err := p.host.data.flush(ctx, sl); err != nil {
			rep.Error = err.Error()
		}
	}
	respond(l, m, rep)
}
