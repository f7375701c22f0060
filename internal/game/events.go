package game

import "github.com/respawn-dev/respawn/internal/player"

// Event is everything that can change a scene: the sealed set below. Each is
// logged (EncodeEvent) before it is applied.
type Event interface{ isEvent() }

// Tick is one unit of time (10 Hz by default). Scenes never read a clock.
type Tick struct{}

// SaveTick asks the scene to emit a Save for every dirty player. It is an
// event, not a method, so the dirty/clean transitions are replayed.
type SaveTick struct{}

// Enter brings a player loaded from the data server into the scene.
type Enter struct {
	Player  player.Data
	Version uint64 // the data server's version of Player
}

// Leave removes a player (logout); a dirty player gets a final urgent Save.
// With Session set it applies only while Session is the player's current
// session, so a stale logout cannot remove a newer session's player.
type Leave struct {
	Player  string
	Session string
}

// Attach makes Session the player's current session (the gateway's login or
// resume). A new session id resets the player's session record (the client
// starts again at seq 1); the same id changes nothing. It answers with
// Attached.
type Attach struct {
	Player  string
	Session string
}

// Request is a client request relayed by the gateway. Seq is the session's
// request number (1, 2, …; strictly increasing, gaps allowed): exactly-once
// hangs on it. Session must be the player's current session.
type Request struct {
	Session string
	Player  string
	Seq     uint64
	Op      Op
}

// GMDamage takes Amount HP from a monster (no loot: nobody killed it).
type GMDamage struct {
	ReqID   string
	Monster string
	Amount  int64
}

// GMGive gives Count of Item (negative takes; "gold" means gold).
type GMGive struct {
	ReqID  string
	Player string
	Item   string
	Count  int64
}

// TravelIn delivers a player sent by another scene's TravelOut. It may arrive
// more than once (the source resends until acknowledged); TransferID dedupes.
// Session and LastSeq carry the player's session on, so the sequence
// continues here.
type TravelIn struct {
	TransferID string
	From       string
	Player     player.Data
	Version    uint64
	Session    string
	LastSeq    uint64
	// Replies are the session's stored replies (ascending seq, at most
	// SessionWindow, the last one LastSeq's when it was kept), so the
	// destination answers a resend of a request applied at the source
	// (the travel itself) with its original reply.
	Replies []CarriedReply
}

// CarriedReply is one stored reply of a travelling player's session: the
// request's seq, the FNV-1a hash of its encoded op and the reply.
type CarriedReply struct {
	Seq  uint64
	Hash uint64
	Body Result
}

// TravelAck tells the source scene that the destination applied TransferID,
// so the outbox entry can go.
type TravelAck struct{ TransferID string }

// SaveAck is the data server accepting a save.
type SaveAck struct {
	Player  string
	Version uint64
}

// SaveRejected is the data server refusing a save: this scene no longer owns
// the player (stale epoch or version), so the player is dropped from it.
// Version is the rejected save's version; a rejection of a save older than
// the player's current stay is ignored.
type SaveRejected struct {
	Player  string
	Version uint64
	Reason  string
}

// RoomEnded tells the parent that one of its dungeon rooms ended and was
// freed. It carries the room's record of the transfers it applied from the
// parent, so the parent can take back players whose transfer never arrived.
type RoomEnded struct {
	RoomID       string
	Applied      []string // transfer ids from the parent the room applied
	AppliedFloor uint64   // and every id with a counter at or below this
}

// Reload replaces a present player's data with the data server's copy at
// Version, after the data server refused a save of it as older: its copy is
// the newer history (events lost here and repaired away, or a create made
// while the database was down that lost to the database's copy). The
// scene keeps the player, at its current position when that is valid.
type Reload struct {
	Player  player.Data
	Version uint64
	Reason  string
}

func (Reload) isEvent()       {}
func (Tick) isEvent()         {}
func (SaveTick) isEvent()     {}
func (Enter) isEvent()        {}
func (Leave) isEvent()        {}
func (Attach) isEvent()       {}
func (Request) isEvent()      {}
func (GMDamage) isEvent()     {}
func (GMGive) isEvent()       {}
func (TravelIn) isEvent()     {}
func (TravelAck) isEvent()    {}
func (SaveAck) isEvent()      {}
func (SaveRejected) isEvent() {}
func (RoomEnded) isEvent()    {}

// Op is a client operation inside a Request: the sealed set below.
type Op interface{ isOp() }

// Move walks to (X, Y) inside the scene.
type Move struct{ X, Y int }

// Attack hits a monster; a surviving monster hits back.
type Attack struct{ Monster string }

// Buy buys Count of Item from a shop NPC.
type Buy struct {
	NPC   string
	Item  string
	Count int64
}

// ItemCount is an amount of one item ("gold" means gold).
type ItemCount struct {
	Item  string `json:"item"`
	Count int64  `json:"count"`
}

// TradeOffer proposes a swap to player To in the same scene.
type TradeOffer struct {
	To   string
	Give []ItemCount
	Want []ItemCount
}

// TradeAccept accepts an offer made to the requester; both sides move at once
// or not at all.
type TradeAccept struct{ TradeID string }

// Travel moves the player to scene To (one of the scene's exits).
type Travel struct{ To string }

// EnterDungeon opens a new dungeon room and moves the player into it.
type EnterDungeon struct{}

// Chat says Text to everybody in the scene.
type Chat struct{ Text string }

func (Move) isOp()         {}
func (Attack) isOp()       {}
func (Buy) isOp()          {}
func (TradeOffer) isOp()   {}
func (TradeAccept) isOp()  {}
func (Travel) isOp()       {}
func (EnterDungeon) isOp() {}
func (Chat) isOp()         {}

// Effect is something the scene process must do after Apply returns: the
// sealed set below. Effects are data; the scene never performs them.
type Effect interface{ isEffect() }

// Reply answers Request Seq of Session, sent by Player (only ever to that
// player). Resent is set when the request had been applied before and Body
// is its stored reply. Moved names the scene a departed player went to when
// the request was refused with ErrNotInScene.
type Reply struct {
	Session string
	Player  string
	Seq     uint64
	Body    Result
	Resent  bool
	Moved   string
}

// Attached answers Attach: LastSeq is the highest seq applied in the
// session (0 for a new one). Code is "" when Session is now the player's
// current session, else an error code (ErrNotInScene with Moved when the
// player travelled from here, ErrBadRequest).
type Attached struct {
	Player  string
	Session string
	LastSeq uint64
	Code    string
	Moved   string
}

// GMReply answers a GM command.
type GMReply struct {
	ReqID  string
	Body   Result
	Resent bool
}

// Broadcast goes to every player in Scene.
type Broadcast struct {
	Scene string
	Body  Notice
}

// Notify goes to one player (e.g. "you were offered a trade").
type Notify struct {
	Player string
	Body   Result
}

// Save asks the data server to store Player at Version. Urgent saves follow
// purchases, trades, travel, GM gives and leaving; others come from SaveTick.
type Save struct {
	Player  player.Data
	Version uint64
	Urgent  bool
}

// TravelOut sends a player to scene To. The scene keeps it in its outbox
// until TravelAck; see PendingTransfers. Session and LastSeq are the
// player's session, continued at the destination.
type TravelOut struct {
	TransferID string
	From       string
	To         string
	Player     player.Data
	Version    uint64
	Session    string
	LastSeq    uint64
	// Replies are the session's stored replies up to LastSeq; see TravelIn.
	// Filled when the effect leaves Apply and by PendingTransfers; the
	// outbox itself keeps none (the departed session record owns them).
	Replies []CarriedReply
}

// In is the TravelIn that delivers t to its destination.
func (t TravelOut) In() TravelIn {
	return TravelIn{TransferID: t.TransferID, From: t.From, Player: t.Player, Version: t.Version, Session: t.Session, LastSeq: t.LastSeq, Replies: t.Replies}
}

// AckTransfer tells source scene To that TransferID was applied here; the
// process delivers it there as TravelAck. Sent again for a resent TravelIn.
type AckTransfer struct {
	TransferID string
	To         string
}

// CreateRoom asks the process to start dungeon room RoomID (idempotent: a
// room that already exists is left alone).
type CreateRoom struct {
	RoomID string
	Def    SceneDef
}

// EndRoom says room RoomID is finished and empty: the process delivers
// RoomEnded (with Applied) to Parent, then frees the room's log slot.
type EndRoom struct {
	RoomID       string
	Parent       string
	Applied      []string
	AppliedFloor uint64
}

// ProfileChanged is a player's new gold/items/level for the profile replica.
type ProfileChanged struct {
	Player string
	Level  int
	Gold   int64
	Items  []ItemCount // sorted by item
}

// PositionChanged is an object's new position for the position replica.
type PositionChanged struct {
	Scene string
	Kind  string // "player", "npc"
	ID    string
	X, Y  int
}

// ChatOut is a chat line for everyone in Scene.
type ChatOut struct {
	Scene string
	From  string
	Name  string
	Text  string
}

// Kick disconnects Player from this scene.
type Kick struct {
	Player string
	Reason string
}

// Warn is something odd the process should log (a malformed transfer, an
// event for nobody); the scene ignored it.
type Warn struct{ Msg string }

func (Reply) isEffect()           {}
func (Attached) isEffect()        {}
func (GMReply) isEffect()         {}
func (Broadcast) isEffect()       {}
func (Notify) isEffect()          {}
func (Save) isEffect()            {}
func (TravelOut) isEffect()       {}
func (AckTransfer) isEffect()     {}
func (CreateRoom) isEffect()      {}
func (EndRoom) isEffect()         {}
func (ProfileChanged) isEffect()  {}
func (PositionChanged) isEffect() {}
func (ChatOut) isEffect()         {}
func (Kick) isEffect()            {}
func (Warn) isEffect()            {}

// Notice is the body of a Broadcast.
type Notice struct {
	Type string `json:"type"` // player_entered, player_left, player_died, monster_killed, monster_respawned, room_cleared
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	By   string `json:"by,omitempty"`
}

// Result is the body of a Reply, GMReply or Notify: the sealed set below, all
// JSON-marshalable. Stored replies are part of the snapshot.
type Result interface{ isResult() }

// Error codes in ErrorResult.
const (
	ErrBadRequest  = "bad_request"
	ErrNotInScene  = "not_in_scene"
	ErrNotFound    = "not_found"
	ErrNotAllowed  = "not_allowed"
	ErrNotEnough   = "not_enough"
	ErrMonsterDead = "monster_dead"
	ErrLimit       = "limit"
	// Session errors: the request was not applied and is not recorded.
	ErrSessionReplaced = "session_replaced" // another session of the player is current
	ErrSeqReused       = "seq_reused"       // an applied seq resent with another body
	ErrSeqTooOld       = "seq_too_old"      // older than the window, or a gap never applied
	// ErrRequestConflict: a GM request id reused for a different command.
	ErrRequestConflict = "request_conflict"
	ErrSeqTooFar       = "seq_too_far" // more than SessionWindow past the last applied
)

// ErrorResult is a refused request.
type ErrorResult struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}

// OKResult is a success with nothing to say (chat).
type OKResult struct{}

// MoveResult is where the player now stands.
type MoveResult struct {
	X int `json:"x"`
	Y int `json:"y"`
}

// AttackResult is one exchange of blows.
type AttackResult struct {
	Monster  string      `json:"monster"`
	Damage   int64       `json:"damage"`
	HP       int64       `json:"hp"`
	MaxHP    int64       `json:"max_hp"`
	Killed   bool        `json:"killed"`
	Loot     []ItemCount `json:"loot,omitempty"`
	HitBack  int64       `json:"hit_back"`
	PlayerHP int64       `json:"player_hp"`
	Died     bool        `json:"died,omitempty"`
}

// BuyResult is a completed purchase.
type BuyResult struct {
	Item  string `json:"item"`
	Count int64  `json:"count"`
	Cost  int64  `json:"cost"`
	Gold  int64  `json:"gold"`
	Have  int64  `json:"have"`
}

// TradeOfferResult names the new offer.
type TradeOfferResult struct {
	TradeID string `json:"trade_id"`
}

// TradeOffered tells the other side about an offer (via Notify).
type TradeOffered struct {
	TradeID string      `json:"trade_id"`
	From    string      `json:"from"`
	Give    []ItemCount `json:"give"`
	Want    []ItemCount `json:"want"`
}

// TradeResult is a completed trade, from the point of view of its receiver.
type TradeResult struct {
	TradeID string      `json:"trade_id"`
	Gave    []ItemCount `json:"gave"`
	Got     []ItemCount `json:"got"`
}

// TravelResult names the transfer that carries the player away.
type TravelResult struct {
	TransferID string `json:"transfer_id"`
	To         string `json:"to"`
}

// DungeonResult names the new room and the transfer into it.
type DungeonResult struct {
	RoomID     string `json:"room_id"`
	TransferID string `json:"transfer_id"`
}

// MonsterResult is a monster's state after a GM command.
type MonsterResult struct {
	Monster string `json:"monster"`
	HP      int64  `json:"hp"`
	MaxHP   int64  `json:"max_hp"`
	Killed  bool   `json:"killed"`
}

// GiveResult is a player's new count of an item after a GM give.
type GiveResult struct {
	Player string `json:"player"`
	Item   string `json:"item"`
	Count  int64  `json:"count"`
}

func (ErrorResult) isResult()      {}
func (OKResult) isResult()         {}
func (MoveResult) isResult()       {}
func (AttackResult) isResult()     {}
func (BuyResult) isResult()        {}
func (TradeOfferResult) isResult() {}
func (TradeOffered) isResult()     {}
func (TradeResult) isResult()      {}
func (TravelResult) isResult()     {}
func (DungeonResult) isResult()    {}
func (MonsterResult) isResult()    {}
func (GiveResult) isResult()       {}
