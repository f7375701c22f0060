// Package dataclient is the data server's client side and its wire types:
// what a scene, the CLI and the bot link to talk to datasvr over NATS,
// without linking the server, its store, SQL drivers or the embedded NATS
// server.
//
// The scene side is Client (client.go) with its non-blocking save queue
// (queue.go); the GM side is AdminClient; proto.go is the protocol both
// sides share.
package dataclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// NATS subjects. Requests and replies are JSON encodings of the types
// below; every reply carries an Error (empty on success) whose Code maps to
// a sentinel error on the client side.
const (
	SubjectLoad     = "respawn.datasvr.load"
	SubjectSave     = "respawn.datasvr.save"
	SubjectRelease  = "respawn.datasvr.release"
	SubjectHandover = "respawn.datasvr.handover"

	SubjectCreate = "respawn.datasvr.admin.create"
	SubjectShow   = "respawn.datasvr.admin.show"
	SubjectGive   = "respawn.datasvr.admin.give" // give and take (negative count)
	SubjectKick   = "respawn.datasvr.admin.kick"
	SubjectFlush  = "respawn.datasvr.admin.flush"
	SubjectStats  = "respawn.datasvr.admin.stats"
)

// SceneGiveSubject is where datasvr forwards a GM give/take for a player
// that scene holds; the scene answers with a GiveReply.
func SceneGiveSubject(scene string) string { return "respawn.scene." + scene + ".give" }

// SceneKickSubject is where datasvr forwards a GM kick; the scene saves
// and releases the player, then answers with a KickReply.
func SceneKickSubject(scene string) string { return "respawn.scene." + scene + ".kick" }

// SceneSaveAllSubject asks a scene to save every dirty player now; it
// answers with a SaveAllReply once every save is acknowledged.
func SceneSaveAllSubject(scene string) string { return "respawn.scene." + scene + ".saveall" }

// Error codes carried in replies.
const (
	CodeStaleEpoch  = "stale_epoch"
	CodeOldVersion  = "old_version"
	CodeNotOwner    = "not_owner"
	CodeNotFound    = "not_found"
	CodeExists      = "exists"
	CodeUnavailable = "unavailable" // journal full, disk or database error: retry later
	CodeBadRequest  = "bad_request"
	CodeSceneFailed = "scene_failed" // the owner scene refused or did not answer
	// CodeRequestConflict: an operator request id reused with another body.
	CodeRequestConflict = "request_conflict"
	CodeForbidden       = "forbidden" // a GM change without the operator token
)

// AuthHeader is the NATS message header that carries the operator token
// ("Bearer TOKEN") on the admin requests that change players: create, give
// and take, kick. Show, stats and flush change nothing and need none.
const AuthHeader = "Authorization"

// Sentinel errors a client gets back (wrapped, with player and scene ids);
// test with errors.Is.
var (
	// ErrStaleEpoch: the lease is held by a newer incarnation of this
	// scene. The scene must drop the player: it is no longer its owner.
	ErrStaleEpoch = errors.New("datasvr: stale epoch")
	// ErrOldVersion: datasvr already holds this version or a newer one.
	ErrOldVersion = errors.New("datasvr: version not newer than stored")
	// ErrNotOwner: another scene holds the lease, or nobody does.
	ErrNotOwner = errors.New("datasvr: not the lease holder")
	// ErrNotFound: no such player.
	ErrNotFound = errors.New("datasvr: player not found")
	// ErrExists: create of a player that exists.
	ErrExists = errors.New("datasvr: player exists")
	// ErrUnavailable: datasvr could not make the change durable (journal
	// full, disk error) or could not reach the database. Nothing was
	// changed; retry later.
	ErrUnavailable = errors.New("datasvr: temporarily unavailable")
	// ErrBadRequest: a malformed request, or one that breaks the input
	// rules (package validate: player ids, items, counts, balances).
	ErrBadRequest = errors.New("datasvr: bad request")
	// ErrSceneFailed: a GM change for an online player failed in its scene.
	ErrSceneFailed = errors.New("datasvr: owner scene failed")
	// ErrRequestConflict: an operator request id was reused with a
	// different request; nothing was applied.
	ErrRequestConflict = errors.New("datasvr: request id reused with a different request")
	// ErrForbidden: a GM change without the right operator token.
	ErrForbidden = errors.New("datasvr: operator token missing or wrong")
)

var codeErrs = map[string]error{
	CodeStaleEpoch:  ErrStaleEpoch,
	CodeOldVersion:  ErrOldVersion,
	CodeNotOwner:    ErrNotOwner,
	CodeNotFound:    ErrNotFound,
	CodeExists:      ErrExists,
	CodeUnavailable: ErrUnavailable,
	CodeBadRequest:  ErrBadRequest,
	CodeSceneFailed: ErrSceneFailed,

	CodeRequestConflict: ErrRequestConflict,
	CodeForbidden:       ErrForbidden,
}

// Error is the error part of every reply.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Err turns a reply error into a Go error wrapping the code's sentinel
// (nil for a nil or empty Error).
func (e *Error) Err() error {
	if e == nil || e.Code == "" {
		return nil
	}
	if s, ok := codeErrs[e.Code]; ok {
		// The message is usually the server's wrapped sentinel already.
		return fmt.Errorf("%w: %s", s, strings.TrimPrefix(e.Message, s.Error()+": "))
	}
	return fmt.Errorf("datasvr: %s: %s", e.Code, e.Message)
}

// ErrorOf builds the reply error for err (nil for nil): the code of the
// sentinel err wraps, or CodeUnavailable.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	for code, s := range codeErrs {
		if errors.Is(err, s) {
			return &Error{Code: code, Message: err.Error()}
		}
	}
	return &Error{Code: CodeUnavailable, Message: err.Error()}
}

// Owner is a lease: the scene that may write a player, and its epoch.
// Epoch 0 means "handed over to this scene, not yet claimed": the
// destination's load claims it with its real epoch.
type Owner struct {
	Scene string `json:"scene"`
	Epoch uint64 `json:"epoch"`
}

// LoadRequest takes the lease for Scene/Epoch and returns the player.
type LoadRequest struct {
	Player string `json:"player"`
	Scene  string `json:"scene"`
	Epoch  uint64 `json:"epoch"`
	// Create makes a new player (with Name) when none exists.
	Create bool   `json:"create,omitempty"`
	Name   string `json:"name,omitempty"`
	// Transfer takes only a lease handed over to Scene (or already held
	// by it): a player arriving by travel. A player nobody handed over,
	// offline or held elsewhere, is refused with ErrNotOwner, so a forged
	// transfer message cannot pull anyone into a scene.
	Transfer bool `json:"transfer,omitempty"`
}

// LoadReply is the player as datasvr holds it. Version is what the scene's
// next save must exceed.
type LoadReply struct {
	Player  string          `json:"player"`
	Version uint64          `json:"version"`
	Data    json.RawMessage `json:"data,omitempty"`
	// HandedOver: this load claimed a lease another scene handed over to
	// this one (a travel): the player, with their session, is on the way
	// as a transfer and must not be entered from this copy.
	HandedOver bool   `json:"handed_over,omitempty"`
	Error      *Error `json:"error,omitempty"`
}

// SaveRequest stores Data as Version. It is acknowledged only once it is
// in datasvr's journal on disk.
type SaveRequest struct {
	Player  string          `json:"player"`
	Version uint64          `json:"version"`
	Scene   string          `json:"scene"`
	Epoch   uint64          `json:"epoch"`
	Data    json.RawMessage `json:"data"`
}

// Ack answers save, release, handover and the admin changes.
type Ack struct {
	Player  string `json:"player"`
	Version uint64 `json:"version"`
	Error   *Error `json:"error,omitempty"`
}

// ReleaseRequest drops the lease, with the final data when Data is set
// (then Version must be newer than the stored one).
type ReleaseRequest struct {
	Player  string          `json:"player"`
	Version uint64          `json:"version"`
	Scene   string          `json:"scene"`
	Epoch   uint64          `json:"epoch"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// HandoverRequest moves the lease from Scene/Epoch to To together with the
// final data, in one journal record. Retrying an applied handover (same To
// and Version) succeeds again.
type HandoverRequest struct {
	Player  string          `json:"player"`
	Version uint64          `json:"version"`
	Scene   string          `json:"scene"`
	Epoch   uint64          `json:"epoch"`
	To      string          `json:"to"`
	Data    json.RawMessage `json:"data"`
}

// CreateRequest creates a player (a GM test character). A repeat of
// ReqID is answered with the original result instead of "exists".
type CreateRequest struct {
	ReqID  string `json:"req_id,omitempty"`
	Player string `json:"player"`
	Name   string `json:"name,omitempty"`
}

// ShowRequest asks for a player.
type ShowRequest struct {
	Player string `json:"player"`
}

// ShowReply is a player as `respawn player show --json` prints it.
type ShowReply struct {
	ID      string           `json:"id"`
	Name    string           `json:"name"`
	Version uint64           `json:"version"`
	Gold    int64            `json:"gold"`
	Items   map[string]int64 `json:"items"`
	Owner   *Owner           `json:"owner"`
	Online  bool             `json:"online"`
	// Dirty: not yet in the database (safe in the journal).
	Dirty bool            `json:"dirty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Error *Error          `json:"error,omitempty"`
}

// AdminGiveRequest gives (Count > 0) or takes (Count < 0) Item ("gold" for
// gold). ReqID lets the owner scene recognise a retried request.
type AdminGiveRequest struct {
	ReqID  string `json:"req_id"`
	Player string `json:"player"`
	Item   string `json:"item"`
	Count  int64  `json:"count"`
}

// GiveRequest is what datasvr sends to the owner scene on
// SceneGiveSubject. The scene applies it as a logged event, saves, and
// replies once that save is acknowledged. ReqID is unique per GM command;
// a scene that sees one twice must answer without applying it again.
type GiveRequest struct {
	ReqID  string `json:"req_id"`
	Player string `json:"player"`
	Item   string `json:"item"`
	Count  int64  `json:"count"`
}

// GiveReply is the scene's (and datasvr's) answer to a give: the player's
// new version and the new count of the item. Error is empty on success.
type GiveReply struct {
	Player  string `json:"player"`
	Version uint64 `json:"version"`
	Count   int64  `json:"count"`
	Error   string `json:"error,omitempty"`
	// Code is set by datasvr when it answers the CLI.
	Code string `json:"code,omitempty"`
}

// AdminKickRequest asks datasvr to have the owner scene drop a player.
// Force drops the lease in datasvr when the owner scene does not answer
// (use only when that scene is known dead).
type AdminKickRequest struct {
	ReqID  string `json:"req_id"`
	Player string `json:"player"`
	Force  bool   `json:"force,omitempty"`
}

// KickRequest is sent to the owner scene on SceneKickSubject. The scene
// saves and releases the player, then replies.
type KickRequest struct {
	ReqID  string `json:"req_id"`
	Player string `json:"player"`
}

// KickReply is the scene's answer to a kick.
type KickReply struct {
	Player string `json:"player"`
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
}

// SaveAllRequest asks a scene to save every dirty player now.
type SaveAllRequest struct {
	ReqID string `json:"req_id"`
}

// SaveAllReply: the scene's saves are all acknowledged by datasvr.
type SaveAllReply struct {
	Scene   string `json:"scene"`
	Players int    `json:"players"`
	Error   string `json:"error,omitempty"`
}

// FlushRequest asks datasvr to write every dirty player to the database.
type FlushRequest struct{}

// FlushReply answers once the database holds everything acknowledged
// before the request.
type FlushReply struct {
	Players int    `json:"players"`
	Error   *Error `json:"error,omitempty"`
}

// StatsRequest asks for counters.
type StatsRequest struct{}

// StatsReply is datasvr's counters (cumulative since start unless noted).
type StatsReply struct {
	SavesAccepted  uint64  `json:"saves_accepted"`
	SavesRejected  uint64  `json:"saves_rejected"`
	SavesFailed    uint64  `json:"saves_failed"` // not durable: journal full / disk error
	Loads          uint64  `json:"loads"`
	CachedPlayers  int     `json:"cached_players"`  // now
	OnlinePlayers  int     `json:"online_players"`  // now
	DirtyPlayers   int     `json:"dirty_players"`   // now
	CacheBytes     int64   `json:"cache_bytes"`     // now, offline evictable
	JournalBytes   int64   `json:"journal_bytes"`   // now
	JournalFsyncs  uint64  `json:"journal_fsyncs"`  //
	JournalRecords uint64  `json:"journal_records"` //
	Flushes        uint64  `json:"flushes"`
	DBErrors       uint64  `json:"db_errors"`
	DBRows         uint64  `json:"db_rows"`
	DBStatements   uint64  `json:"db_statements"`
	DBBatches      uint64  `json:"db_batches"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	// Started is when this datasvr process started (Unix nanoseconds):
	// the cumulative counters restart from zero when it changes.
	Started int64 `json:"started_unix_nano"`
	// Degraded says why the database is not being written ("" when it is).
	Degraded string `json:"degraded,omitempty"`
	Error    *Error `json:"error,omitempty"`
}
