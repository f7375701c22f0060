package scene

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/shmlog"
	"github.com/respawn-dev/respawn/internal/validate"
)

// The scene process's own API, on its service address: GM commands and
// inspection. Every change goes through the loop as a logged event.
func (p *Process) routes() {
	p.admin.Handle("GET /v1/info", func(w http.ResponseWriter, _ *http.Request) {
		admin.WriteJSON(w, http.StatusOK, p.hello())
	})
	p.admin.Handle("GET /v1/scenes/{id}/inspect", p.apiInspect)
	p.admin.Handle("POST /v1/scenes/{id}/gm/damage", p.apiDamage)
	p.admin.Handle("POST /v1/scenes/{id}/request", p.apiRequest)
	p.admin.Handle("POST /v1/scenes/{id}/enter", p.apiEnter)
	p.admin.Handle("GET /v1/log", p.apiLog)
	p.admin.Handle("POST /v1/scenes/{id}/repair", p.apiRepair)
}

// LogInfo is GET /v1/log: which slot of the event log each scene and room
// occupies, how many are free, and any damage: the corrupt scenes and rooms
// (until repaired) and the slots quarantined because their header cannot be
// read.
type LogInfo struct {
	Path        string                   `json:"path"`
	FreeSlots   int                      `json:"free_slots"`
	Slots       map[string]int           `json:"slots"`
	Corrupt     map[string]shmlog.Damage `json:"corrupt,omitempty"`
	Quarantined []shmlog.Damage          `json:"quarantined,omitempty"`
}

func (p *Process) apiLog(w http.ResponseWriter, _ *http.Request) {
	st := p.host.store
	info := LogInfo{Path: st.Path(), FreeSlots: st.FreeSlots(), Slots: map[string]int{}, Quarantined: st.Damaged()}
	for _, id := range st.IDs() {
		if i, ok := st.SlotIndex(id); ok {
			info.Slots[id] = i
		}
	}
	info.Corrupt = p.host.damages()
	admin.WriteJSON(w, http.StatusOK, info)
}

// EnterRequest is the body of POST /v1/scenes/{id}/enter: bring a player
// stored in datasvr into the scene (until the gateway does it on login).
type EnterRequest struct {
	Player string `json:"player"`
}

func (p *Process) apiEnter(w http.ResponseWriter, r *http.Request) {
	var req EnterRequest
	l, ok := p.loopAndBody(w, r, &req)
	if !ok {
		return
	}
	if err := validate.PlayerID(req.Player); err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	if p.host.data == nil {
		admin.WriteError(w, http.StatusServiceUnavailable, errors.New("no data server link"))
		return
	}
	ld, err := p.host.data.client(l).Load(r.Context(), req.Player)
	if err != nil {
		admin.WriteError(w, http.StatusConflict, fmt.Errorf("load player %s: %w", req.Player, err))
		return
	}
	effs, err := l.submit(r.Context(), game.Enter{Player: ld.Data, Version: ld.Version})
	if err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	for _, e := range effs {
		if wn, ok := e.(game.Warn); ok {
			admin.WriteError(w, http.StatusConflict, errors.New(wn.Msg))
			return
		}
	}
	var pv game.PlayerView
	_ = l.read(r.Context(), func(st *game.Scene) {
		for _, v := range st.Inspect().Players {
			if v.ID == req.Player {
				pv = v
			}
		}
	})
	admin.WriteJSON(w, http.StatusOK, pv)
}

func (p *Process) loopFor(w http.ResponseWriter, r *http.Request) (*loop, bool) {
	id := r.PathValue("id")
	if r.URL.Query().Get("room") != "" {
		id = r.URL.Query().Get("room")
	}
	l, err := p.host.serving(id)
	switch {
	case errors.Is(err, ErrCorrupt):
		admin.WriteError(w, http.StatusServiceUnavailable, err)
	case err != nil:
		admin.WriteError(w, http.StatusNotFound, fmt.Errorf("scene %q is not hosted by process %s", id, p.spec.Name))
	}
	return l, err == nil
}

// loopAndBody resolves the scene of a request and decodes its JSON body;
// false means the error answer has been written.
func (p *Process) loopAndBody(w http.ResponseWriter, r *http.Request, body any) (*loop, bool) {
	l, ok := p.loopFor(w, r)
	if !ok || !decodeBody(w, r, body) {
		return nil, false
	}
	return l, true
}

func (p *Process) apiInspect(w http.ResponseWriter, r *http.Request) {
	l, ok := p.loopFor(w, r)
	if !ok {
		return
	}
	var v InspectView
	if err := l.read(r.Context(), func(st *game.Scene) {
		v.View = st.Inspect()
		v.RecentEvents = l.recent.list() // read runs on the loop goroutine, which owns the ring
	}); err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	v.Epoch = p.opt.Epoch
	admin.WriteJSON(w, http.StatusOK, v)
}

// InspectView is GET /v1/scenes/{id}/inspect: the scene's state and its
// last RecentEvents events, newest first (recent.go).
type InspectView struct {
	game.View
	RecentEvents []RecentEvent `json:"recent_events"`
}

// DamageRequest is the body of POST /v1/scenes/{id}/gm/damage. ReqID makes
// a retried command apply once.
type DamageRequest struct {
	ReqID   string `json:"req_id"`
	Monster string `json:"monster"`
	Amount  int64  `json:"amount"`
}

func (p *Process) apiDamage(w http.ResponseWriter, r *http.Request) {
	var req DamageRequest
	l, ok := p.loopAndBody(w, r, &req)
	if !ok {
		return
	}
	if req.ReqID == "" || req.Monster == "" || req.Amount <= 0 {
		admin.WriteError(w, http.StatusBadRequest, errors.New("req_id, monster and a positive amount are required"))
		return
	}
	if err := validate.RequestID(req.ReqID); err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	effs, err := l.submit(r.Context(), game.GMDamage{ReqID: req.ReqID, Monster: req.Monster, Amount: req.Amount})
	if err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	for _, e := range effs {
		if rep, ok := e.(game.GMReply); ok && rep.ReqID == req.ReqID {
			writeResult(w, rep.Body)
			return
		}
	}
	admin.WriteError(w, http.StatusInternalServerError, errors.New("the scene gave no answer"))
}

// RequestBody is the body of POST /v1/scenes/{id}/request: one client
// request, as the gateway will relay it.
type RequestBody struct {
	Session string          `json:"session"`
	Player  string          `json:"player"`
	Seq     uint64          `json:"seq"`
	Op      json.RawMessage `json:"op"`
}

func (p *Process) apiRequest(w http.ResponseWriter, r *http.Request) {
	var req RequestBody
	l, ok := p.loopAndBody(w, r, &req)
	if !ok {
		return
	}
	op, err := DecodeOp(req.Op)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	if req.Session == "" || req.Player == "" || req.Seq == 0 {
		admin.WriteError(w, http.StatusBadRequest, errors.New("session, player and seq (from 1) are required"))
		return
	}
	if err := validate.PlayerID(req.Player); err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	effs, err := l.submit(r.Context(), game.Request{Session: req.Session, Player: req.Player, Seq: req.Seq, Op: op})
	if err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	for _, e := range effs {
		if rep, ok := e.(game.Reply); ok && rep.Session == req.Session {
			writeResult(w, rep.Body)
			return
		}
	}
	admin.WriteError(w, http.StatusInternalServerError, errors.New("the scene gave no answer"))
}

func writeResult(w http.ResponseWriter, body game.Result) {
	if e, ok := body.(game.ErrorResult); ok {
		admin.WriteJSON(w, http.StatusUnprocessableEntity, e)
		return
	}
	admin.WriteJSON(w, http.StatusOK, body)
}

// decodeBody decodes the JSON body (bounded by admin.max_body_bytes).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	return admin.DecodeJSON(w, r, v)
}
