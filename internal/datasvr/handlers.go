package datasvr

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/validate"
)

// requestTimeout bounds one request's work inside datasvr (a database
// load for an uncached player, a forwarded GM command).
const requestTimeout = 10 * time.Second

// sceneTimeout bounds how long datasvr waits for an owner scene to apply
// a GM give or kick.
const sceneTimeout = 5 * time.Second

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return host, port, nil
}

func badRequest(subject string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrBadRequest, subject, err)
}

// subscribe starts answering requests. Each request runs in its own
// goroutine (bounded by sem): NATS delivers one subscription's messages
// one at a time, and group commit needs many saves waiting together.
func (s *Server) subscribe() error {
	byData := map[string]func(ctx context.Context, data []byte) any{
		SubjectLoad: func(ctx context.Context, data []byte) any {
			var req LoadRequest
			if err := json.Unmarshal(data, &req); err != nil {
				return LoadReply{Error: toError(badRequest(SubjectLoad, err))}
			}
			rep, err := s.load(ctx, &req)
			rep.Error = toError(err)
			s.logReject("load", req.Player, req.Scene, req.Epoch, err)
			return rep
		},
		SubjectSave: func(ctx context.Context, data []byte) any {
			var req SaveRequest
			if err := json.Unmarshal(data, &req); err != nil {
				return Ack{Error: toError(badRequest(SubjectSave, err))}
			}
			ack, err := s.save(ctx, &req)
			ack.Error = toError(err)
			s.logReject("save", req.Player, req.Scene, req.Epoch, err)
			return ack
		},
		SubjectRelease: func(ctx context.Context, data []byte) any {
			var req ReleaseRequest
			if err := json.Unmarshal(data, &req); err != nil {
				return Ack{Error: toError(badRequest(SubjectRelease, err))}
			}
			ack, err := s.release(ctx, &req)
			ack.Error = toError(err)
			s.logReject("release", req.Player, req.Scene, req.Epoch, err)
			return ack
		},
		SubjectHandover: func(ctx context.Context, data []byte) any {
			var req HandoverRequest
			if err := json.Unmarshal(data, &req); err != nil {
				return Ack{Error: toError(badRequest(SubjectHandover, err))}
			}
			ack, err := s.handover(ctx, &req)
			ack.Error = toError(err)
			s.logReject("handover", req.Player, req.Scene, req.Epoch, err)
			return ack
		},
		SubjectCreate: func(ctx context.Context, data []byte) any {
			var req CreateRequest
			if err := json.Unmarshal(data, &req); err != nil {
				return Ack{Error: toError(badRequest(SubjectCreate, err))}
			}
			ack, err := s.create(ctx, &req)
			ack.Error = toError(err)
			return ack
		},
		SubjectShow: func(ctx context.Context, data []byte) any {
			var req ShowRequest
			if err := json.Unmarshal(data, &req); err != nil {
				return ShowReply{Error: toError(badRequest(SubjectShow, err))}
			}
			rep, err := s.show(ctx, &req)
			rep.Error = toError(err)
			return rep
		},
		SubjectGive: func(ctx context.Context, data []byte) any {
			var req AdminGiveRequest
			if err := json.Unmarshal(data, &req); err != nil {
				return giveError("", badRequest(SubjectGive, err))
			}
			return s.give(ctx, &req)
		},
		SubjectKick: func(ctx context.Context, data []byte) any {
			var req AdminKickRequest
			if err := json.Unmarshal(data, &req); err != nil {
				return KickReply{Error: err.Error(), Code: CodeBadRequest}
			}
			return s.kick(ctx, &req)
		},
		SubjectFlush: func(ctx context.Context, _ []byte) any {
			s.mu.Lock()
			n := len(s.dirty)
			s.mu.Unlock()
			err := s.requestFlush(ctx)
			return FlushReply{Players: n, Error: toError(err)}
		},
		SubjectStats: func(context.Context, []byte) any { return s.stats() },
	}
	routes := make(map[string]func(context.Context, *nats.Msg) any, len(byData))
	for subject, fn := range byData {
		routes[subject] = func(ctx context.Context, m *nats.Msg) any { return fn(ctx, m.Data) }
	}
	// GM changes need the operator token; each answers a refusal in its
	// own reply type.
	deny := map[string]func(error) any{
		SubjectCreate: func(err error) any { return Ack{Error: toError(err)} },
		SubjectGive:   func(err error) any { return giveError("", err) },
		SubjectKick: func(err error) any {
			e := toError(err)
			return KickReply{Error: e.Message, Code: e.Code}
		},
	}
	for subject, fn := range routes {
		if refuse, ok := deny[subject]; ok {
			inner := fn
			fn = func(ctx context.Context, m *nats.Msg) any {
				if err := s.checkOperator(m); err != nil {
					s.log.Warn("gm request refused", zap.String("subject", m.Subject), zap.Error(err))
					return refuse(err)
				}
				return inner(ctx, m)
			}
		}
		sub, err := s.nc.Subscribe(subject, func(m *nats.Msg) { s.dispatch(m, fn) })
		if err != nil {
			return fmt.Errorf("datasvr: subscribe %s: %w", subject, err)
		}
		// Saves from thousands of players arrive in bursts; let them queue
		// in the client rather than be dropped as a slow consumer.
		_ = sub.SetPendingLimits(1<<20, 256<<20)
		s.subs = append(s.subs, sub)
	}
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("datasvr: subscribe: %w", err)
	}
	return nil
}

// checkOperator verifies the operator token a GM change carries.
func (s *Server) checkOperator(m *nats.Msg) error {
	got := m.Header.Get(AuthHeader)
	if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+s.opToken)) == 1 {
		return nil
	}
	if got == "" {
		return fmt.Errorf("%w: %s needs the operator token (header %s: Bearer TOKEN)", ErrForbidden, m.Subject, AuthHeader)
	}
	return fmt.Errorf("%w: %s: wrong operator token", ErrForbidden, m.Subject)
}

func (s *Server) dispatch(m *nats.Msg, fn func(context.Context, *nats.Msg) any) {
	if m.Reply == "" {
		return // nobody to answer
	}
	s.sem <- struct{}{}
	s.reqs.Add(1)
	go func() {
		defer s.reqs.Done()
		defer func() { <-s.sem }()
		ctx, cancel := context.WithTimeout(s.bg, requestTimeout)
		defer cancel()
		out, err := json.Marshal(fn(ctx, m))
		if err != nil {
			s.log.Error("encode reply", zap.String("subject", m.Subject), zap.Error(err))
			return
		}
		if err := m.Respond(out); err != nil {
			s.log.Warn("reply not sent", zap.String("subject", m.Subject), zap.Error(err))
		}
	}()
}

// logReject logs refused scene requests: a fencing rejection is worth a
// line (a zombie scene, a scene bug), but a storm of them (thousands of
// saves of one stale scene) is one line a second per op, reason and scene,
// with how many were held back.
func (s *Server) logReject(op, player, scene string, epoch uint64, err error) {
	if err == nil {
		return
	}
	code := toError(err).Code
	ok, suppressed := s.rejects.Allow(op+"/"+code+"/"+scene, time.Now())
	if !ok {
		return
	}
	lvl := s.log.Info
	if errors.Is(err, ErrUnavailable) {
		lvl = s.log.Warn
	}
	lvl(op+" refused", zap.String("player", player), zap.String("scene", scene), zap.Uint64("epoch", epoch),
		zap.String("code", code), zap.Int("suppressed", suppressed), zap.Error(err))
}

func giveError(player string, err error) GiveReply {
	e := toError(err)
	return GiveReply{Player: player, Error: e.Message, Code: e.Code}
}

// give applies a GM give/take. An offline player is changed here; an
// online one is changed by its owner scene (a logged event there), which
// answers once its save is durable. If the lease moves while we ask (the
// scene released or handed the player over), we ask again.
func (s *Server) give(ctx context.Context, req *AdminGiveRequest) GiveReply {
	if err := s.checkGive(req); err != nil {
		return giveError(req.Player, err)
	}
	if err := validReqID(req.ReqID); err != nil {
		return giveError(req.Player, err)
	}
	hash := gmHash("give", req.Player, req.Item, strconv.FormatInt(req.Count, 10))
	if req.ReqID == "" {
		req.ReqID = nats.NewInbox()[len(nats.InboxPrefix):]
	} else {
		var rep GiveReply
		if ok, err := s.gmCheck(req.ReqID, hash, &rep); err != nil {
			return giveError(req.Player, err)
		} else if ok {
			s.log.Info("gm give repeated: answered with the original result", zap.String("player", req.Player), zap.String("req_id", req.ReqID))
			return rep
		}
	}
	for attempt := 0; ; attempt++ {
		rep, owner, online, err := s.giveOffline(ctx, req, hash)
		if err != nil {
			return giveError(req.Player, err)
		}
		if !online {
			return rep
		}
		log := s.log.With(zap.String("player", req.Player), zap.String("scene", owner.Scene), zap.Uint64("epoch", owner.Epoch), zap.String("req_id", req.ReqID))
		var srep GiveReply
		err = s.askScene(ctx, SceneGiveSubject(owner.Scene), GiveRequest{ReqID: req.ReqID, Player: req.Player, Item: req.Item, Count: req.Count}, &srep)
		if err != nil {
			log.Warn("gm give: owner scene did not answer", zap.Error(err))
			// The scene may still apply it (it is queued there): the outcome
			// is unknown, and a retry with the same request id is safe.
			return giveError(req.Player, fmt.Errorf("%w: player %s is online in scene %s, which did not answer (%v); outcome unknown, retry with request id %s",
				ErrUnavailable, req.Player, owner.Scene, err, req.ReqID))
		}
		if srep.Code == CodeNotOwner && attempt < 3 {
			log.Info("gm give: scene no longer holds the player; retrying")
			continue
		}
		if srep.Error != "" && srep.Code == "" {
			srep.Code = CodeSceneFailed
		}
		srep.Player = req.Player
		if srep.Error == "" {
			// The scene remembers the id too, but the player may move on
			// to another scene before a retry arrives.
			s.gmids.put(*newGMRecord(req.ReqID, "give", hash, srep))
		}
		log.Info("gm give applied by owner scene", zap.String("item", req.Item), zap.Int64("count", req.Count),
			zap.Uint64("version", srep.Version), zap.String("error", srep.Error))
		return srep
	}
}

func (s *Server) kick(ctx context.Context, req *AdminKickRequest) KickReply {
	fail := func(err error) KickReply {
		e := toError(err)
		return KickReply{Player: req.Player, Error: e.Message, Code: e.Code}
	}
	if err := validReqID(req.ReqID); err != nil {
		return fail(err)
	}
	hash := gmHash("kick", req.Player, strconv.FormatBool(req.Force))
	var prev KickReply
	if ok, err := s.gmCheck(req.ReqID, hash, &prev); err != nil {
		return fail(err)
	} else if ok {
		return prev
	}
	owner, err := s.ownerOf(ctx, req.Player)
	if err != nil {
		return fail(err)
	}
	if owner.Scene == "" || owner.Epoch == 0 {
		return KickReply{Player: req.Player} // not in any scene
	}
	if req.ReqID == "" {
		req.ReqID = nats.NewInbox()[len(nats.InboxPrefix):]
	}
	var rep KickReply
	err = s.askScene(ctx, SceneKickSubject(owner.Scene), KickRequest{ReqID: req.ReqID, Player: req.Player}, &rep)
	if err == nil {
		rep.Player = req.Player
		if rep.Error != "" && rep.Code == "" {
			rep.Code = CodeSceneFailed
		}
		if rep.Error == "" {
			s.gmids.put(*newGMRecord(req.ReqID, "kick", hash, rep))
		}
		return rep
	}
	if !req.Force {
		return fail(fmt.Errorf("%w: player %s: scene %s did not answer the kick (%v); use --force if it is dead", ErrSceneFailed, req.Player, owner.Scene, err))
	}
	if err := s.forceRelease(ctx, req.Player, owner); err != nil {
		return fail(err)
	}
	s.gmids.put(*newGMRecord(req.ReqID, "kick", hash, KickReply{Player: req.Player}))
	return KickReply{Player: req.Player}
}

// checkGive applies the input rules (package validate) to a GM give or
// take, the same ones the owner scene applies online.
func (s *Server) checkGive(req *AdminGiveRequest) error {
	bad := func(err error) error {
		return fmt.Errorf("%w: give %s %d %s: %w", ErrBadRequest, validate.Quote(req.Player), req.Count, validate.Quote(req.Item), err)
	}
	if err := validate.PlayerID(req.Player); err != nil {
		return bad(err)
	}
	if err := s.catalog.Item(req.Item); err != nil {
		return bad(err)
	}
	if err := validate.Count(req.Count); err != nil {
		return bad(err)
	}
	return nil
}

func (s *Server) askScene(ctx context.Context, subject string, req, rep any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, sceneTimeout)
	defer cancel()
	msg, err := s.nc.RequestWithContext(ctx, subject, b)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(msg.Data, rep); err != nil {
		return fmt.Errorf("bad reply on %s: %w", subject, err)
	}
	return nil
}
