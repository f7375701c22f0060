package game

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/respawn-dev/respawn/internal/player"
)

// Event encoding (docs/game.md has the table): one kind byte, then the
// fields in declaration order. Unsigned integers are uvarints, signed ones
// zigzag varints, strings and lists a uvarint length then the bytes/elements,
// bools one byte. A Request's Op is its own kind byte and fields. player.Data
// is id, name, level, gold, item count, (item, count) sorted by item, scene,
// x, y. Unknown kinds and trailing bytes are errors, so a log record that
// decodes is the record that was written.

// Event kinds. Never renumber: they are in logs that outlive the binary.
const (
	evTick         byte = 1
	evSaveTick     byte = 2
	evEnter        byte = 3
	evLeave        byte = 4
	evRequest      byte = 5
	evGMDamage     byte = 6
	evGMGive       byte = 7
	evTravelIn     byte = 8
	evTravelAck    byte = 9
	evSaveAck      byte = 10
	evSaveRejected byte = 11
	evRoomEnded    byte = 12
	evAttach       byte = 13
	// evTravelInSession is TravelIn with the player's session (Session,
	// LastSeq) after its fields; kind 8 stays TravelIn without one.
	evTravelInSession byte = 14
	// evLeaveSession is Leave with a session; kind 4 stays Leave without.
	evLeaveSession byte = 15
	evReload       byte = 16
	// evTravelInReplies is evTravelInSession followed by the session's
	// stored replies: uv k (1..SessionWindow), (uv seq, u64le hash, result)….
	evTravelInReplies byte = 17
)

// Op kinds, same rule.
const (
	opMove         byte = 1
	opAttack       byte = 2
	opBuy          byte = 3
	opTradeOffer   byte = 4
	opTradeAccept  byte = 5
	opTravel       byte = 6
	opEnterDungeon byte = 7
	opChat         byte = 8
)

// Decoding limits: a garbage length must not make us allocate gigabytes.
const (
	maxStrLen  = 1 << 16
	maxListLen = 1 << 16
)

var (
	errShort    = errors.New("truncated")
	errTooLong  = errors.New("length over limit")
	errOverflow = errors.New("integer overflow")
)

// encoder appends the primitives. It refuses (via err) anything the decoder
// would refuse, so a record that was logged can always be replayed.
type encoder struct {
	b   []byte
	err error
	// scratch holds a result's JSON on its way into b (result).
	scratch []byte
}

func (e *encoder) u8(v byte)    { e.b = append(e.b, v) }
func (e *encoder) uv(v uint64)  { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) v(v int64)    { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *encoder) str(s string) {
	if len(s) > maxStrLen && e.err == nil {
		e.err = fmt.Errorf("string of %d bytes: %w", len(s), errTooLong)
	}
	e.uv(uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) int(v int) {
	if (v < math.MinInt32 || v > math.MaxInt32) && e.err == nil {
		e.err = fmt.Errorf("int %d: %w", v, errOverflow)
	}
	e.v(int64(v))
}

func (e *encoder) list(n int) {
	if n > maxListLen && e.err == nil {
		e.err = fmt.Errorf("list of %d: %w", n, errTooLong)
	}
	e.uv(uint64(n))
}
func (e *encoder) bytes(b []byte) { e.uv(uint64(len(b))); e.b = append(e.b, b...) }
func (e *encoder) boolean(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

func (e *encoder) items(l []ItemCount) {
	e.list(len(l))
	for _, ic := range l {
		e.str(ic.Item)
		e.v(ic.Count)
	}
}

func (e *encoder) strs(l []string) {
	e.list(len(l))
	for _, s := range l {
		e.str(s)
	}
}

func (e *encoder) player(d *player.Data) {
	e.str(d.ID)
	e.str(d.Name)
	e.int(d.Level)
	e.v(d.Gold)
	names := d.ItemNames()
	e.list(len(names))
	for _, n := range names {
		e.str(n)
		e.v(d.Items[n])
	}
	e.str(d.Scene)
	e.int(d.X)
	e.int(d.Y)
}

// decoder reads what encoder wrote. The first error sticks and every later
// read returns a zero value, so callers check err once at the end.
type decoder struct {
	b   []byte
	err error
	// ids, when set, interns the strings read (Replayer): a log repeats
	// the same player and session ids over and over.
	ids *interner
	// moves, when set, hands out one boxed Move per square (Replayer): a
	// log is mostly moves, and a box each is an allocation each.
	moves *squares
	// attack, when set, holds the last boxed Attack (Replayer): a log's
	// attacks are mostly on the same few monsters.
	attack *Op
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) u8() byte {
	if len(d.b) < 1 {
		d.fail(errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uv() uint64 {
	if len(d.b) > 0 && d.b[0] < 0x80 {
		// One byte: most lengths and seqs, and what binary.Uvarint would
		// return, without the call.
		v := d.b[0]
		d.b = d.b[1:]
		return uint64(v)
	}
	v, n := binary.Uvarint(d.b)
	if !d.consumed(n) {
		return 0
	}
	return v
}

func (d *decoder) v() int64 {
	if len(d.b) > 0 && d.b[0] < 0x80 {
		// One byte (|v| < 64): binary.Varint's zigzag, without the call.
		u := d.b[0]
		d.b = d.b[1:]
		v := int64(u >> 1)
		if u&1 != 0 {
			v = ^v
		}
		return v
	}
	v, n := binary.Varint(d.b)
	if !d.consumed(n) {
		return 0
	}
	return v
}

// consumed advances past a varint of n bytes, or records why there was none
// (binary's convention: 0 means too short, negative means overflow).
func (d *decoder) consumed(n int) bool {
	switch {
	case n == 0:
		d.fail(errShort)
		return false
	case n < 0:
		d.fail(errOverflow)
		return false
	}
	d.b = d.b[n:]
	return true
}

func (d *decoder) int() int {
	v := d.v()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail(fmt.Errorf("int %d: %w", v, errOverflow))
		return 0
	}
	return int(v)
}

func (d *decoder) u64() uint64 {
	if len(d.b) < 8 {
		d.fail(errShort)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) boolean() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(errors.New("bad bool"))
		return false
	}
}

func (d *decoder) length(limit uint64) int {
	n := d.uv()
	if n > limit || n > uint64(len(d.b)) {
		// Every element is at least one byte, so a length over what is left
		// is garbage too.
		if n > limit {
			d.fail(fmt.Errorf("%d: %w", n, errTooLong))
		} else {
			d.fail(errShort)
		}
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	b := d.rawStr()
	if d.err != nil {
		return ""
	}
	return d.string(b)
}

// rawStr reads a string's bytes, aliasing the record.
func (d *decoder) rawStr() []byte {
	n := d.length(maxStrLen)
	if d.err != nil {
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

// string is b as a string: interned when d interns.
func (d *decoder) string(b []byte) string {
	if d.ids != nil {
		return d.ids.get(b)
	}
	return string(b)
}

func (d *decoder) bytes() []byte {
	n := d.length(maxListLen * 16)
	if d.err != nil {
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) items() []ItemCount {
	n := d.length(maxListLen)
	if n == 0 || d.err != nil {
		return nil
	}
	l := make([]ItemCount, n)
	for i := range l {
		l[i].Item = d.str()
		l[i].Count = d.v()
	}
	return l
}

func (d *decoder) strs() []string {
	n := d.length(maxListLen)
	if n == 0 || d.err != nil {
		return nil
	}
	l := make([]string, n)
	for i := range l {
		l[i] = d.str()
	}
	return l
}

func (d *decoder) player() player.Data {
	var p player.Data
	p.ID = d.str()
	p.Name = d.str()
	p.Level = d.int()
	p.Gold = d.v()
	n := d.length(maxListLen)
	if n > 0 && d.err == nil {
		p.Items = make(map[string]int64, n)
		prev := ""
		for i := 0; i < n && d.err == nil; i++ {
			k, c := d.str(), d.v()
			if i > 0 && k <= prev {
				d.fail(fmt.Errorf("player %q: items not sorted at %q", p.ID, k))
			}
			prev = k
			p.Items[k] = c
		}
	}
	p.Scene = d.str()
	p.X = d.int()
	p.Y = d.int()
	return p
}

// EncodeEvent returns the binary encoding of ev (see the top of codec.go).
func EncodeEvent(ev Event) ([]byte, error) {
	return AppendEvent(nil, ev)
}

// AppendEvent appends the encoding of ev to dst, for callers that reuse a
// buffer.
func AppendEvent(dst []byte, ev Event) ([]byte, error) {
	e := encoder{b: dst}
	switch ev := ev.(type) {
	case Tick:
		e.u8(evTick)
	case SaveTick:
		e.u8(evSaveTick)
	case Enter:
		e.u8(evEnter)
		e.player(&ev.Player)
		e.uv(ev.Version)
	case Leave:
		if ev.Session == "" {
			e.u8(evLeave)
			e.str(ev.Player)
			break
		}
		e.u8(evLeaveSession)
		e.str(ev.Player)
		e.str(ev.Session)
	case Attach:
		e.u8(evAttach)
		e.str(ev.Player)
		e.str(ev.Session)
	case Request:
		e.u8(evRequest)
		e.str(ev.Session)
		e.str(ev.Player)
		e.uv(ev.Seq)
		if err := e.op(ev.Op); err != nil {
			return dst, err
		}
	case GMDamage:
		e.u8(evGMDamage)
		e.str(ev.ReqID)
		e.str(ev.Monster)
		e.v(ev.Amount)
	case GMGive:
		e.u8(evGMGive)
		e.str(ev.ReqID)
		e.str(ev.Player)
		e.str(ev.Item)
		e.v(ev.Count)
	case TravelIn:
		withSession := ev.Session != "" || ev.LastSeq != 0 || len(ev.Replies) > 0
		switch {
		case len(ev.Replies) > 0:
			e.u8(evTravelInReplies)
		case withSession:
			e.u8(evTravelInSession)
		default:
			e.u8(evTravelIn)
		}
		e.str(ev.TransferID)
		e.str(ev.From)
		e.player(&ev.Player)
		e.uv(ev.Version)
		if withSession {
			e.str(ev.Session)
			e.uv(ev.LastSeq)
		}
		if len(ev.Replies) > 0 {
			if len(ev.Replies) > SessionWindow {
				return dst, fmt.Errorf("game: encode travel-in %s: %d carried replies, at most %d", ev.TransferID, len(ev.Replies), SessionWindow)
			}
			e.uv(uint64(len(ev.Replies)))
			for _, r := range ev.Replies {
				if r.Body == nil {
					return dst, fmt.Errorf("game: encode travel-in %s: carried reply of seq %d has no body", ev.TransferID, r.Seq)
				}
				e.uv(r.Seq)
				e.u64(r.Hash)
				e.result(r.Body)
			}
		}
	case TravelAck:
		e.u8(evTravelAck)
		e.str(ev.TransferID)
	case SaveAck:
		e.u8(evSaveAck)
		e.str(ev.Player)
		e.uv(ev.Version)
	case SaveRejected:
		e.u8(evSaveRejected)
		e.str(ev.Player)
		e.uv(ev.Version)
		e.str(ev.Reason)
	case RoomEnded:
		e.u8(evRoomEnded)
		e.str(ev.RoomID)
		e.strs(ev.Applied)
		e.uv(ev.AppliedFloor)
	case Reload:
		e.u8(evReload)
		e.player(&ev.Player)
		e.uv(ev.Version)
		e.str(ev.Reason)
	default:
		return dst, fmt.Errorf("game: encode event: unknown type %T", ev)
	}
	if e.err != nil {
		return dst, fmt.Errorf("game: encode %T: %w", ev, e.err)
	}
	return e.b, nil
}

func (e *encoder) op(op Op) error {
	switch op := op.(type) {
	case Move:
		e.u8(opMove)
		e.int(op.X)
		e.int(op.Y)
	case Attack:
		e.u8(opAttack)
		e.str(op.Monster)
	case Buy:
		e.u8(opBuy)
		e.str(op.NPC)
		e.str(op.Item)
		e.v(op.Count)
	case TradeOffer:
		e.u8(opTradeOffer)
		e.str(op.To)
		e.items(op.Give)
		e.items(op.Want)
	case TradeAccept:
		e.u8(opTradeAccept)
		e.str(op.TradeID)
	case Travel:
		e.u8(opTravel)
		e.str(op.To)
	case EnterDungeon:
		e.u8(opEnterDungeon)
	case Chat:
		e.u8(opChat)
		e.str(op.Text)
	default:
		return fmt.Errorf("game: encode request: unknown op %T", op)
	}
	return nil
}

// DecodeEvent parses an encoding made by EncodeEvent. Garbage gives an error,
// never a panic.
func DecodeEvent(b []byte) (Event, error) {
	return decodeEvent(decoder{b: b})
}

func decodeEvent(d decoder) (Event, error) {
	kind := d.u8()
	var ev Event
	switch kind {
	case evTick:
		ev = Tick{}
	case evSaveTick:
		ev = SaveTick{}
	case evEnter:
		p := d.player()
		ev = Enter{Player: p, Version: d.uv()}
	case evLeave:
		ev = Leave{Player: d.str()}
	case evLeaveSession:
		l := Leave{Player: d.str(), Session: d.str()}
		if l.Session == "" && d.err == nil {
			d.fail(errors.New("leave with an empty session"))
		}
		ev = l
	case evAttach:
		ev = Attach{Player: d.str(), Session: d.str()}
	case evRequest:
		ev = d.request()
	case evGMDamage:
		ev = GMDamage{ReqID: d.str(), Monster: d.str(), Amount: d.v()}
	case evGMGive:
		ev = GMGive{ReqID: d.str(), Player: d.str(), Item: d.str(), Count: d.v()}
	case evTravelIn, evTravelInSession, evTravelInReplies:
		t := TravelIn{TransferID: d.str(), From: d.str()}
		t.Player = d.player()
		t.Version = d.uv()
		if kind != evTravelIn {
			t.Session = d.str()
			t.LastSeq = d.uv()
			if t.Session == "" && t.LastSeq == 0 && d.err == nil {
				d.fail(errors.New("travel-in with an empty session"))
			}
		}
		if kind == evTravelInReplies {
			k := d.length(SessionWindow)
			if k == 0 && d.err == nil {
				d.fail(errors.New("travel-in with an empty reply list"))
			}
			for j := 0; j < k && d.err == nil; j++ {
				r := CarriedReply{Seq: d.uv(), Hash: d.u64(), Body: d.result()}
				if r.Body == nil && d.err == nil {
					d.fail(fmt.Errorf("travel-in: carried reply of seq %d has no body", r.Seq))
				}
				t.Replies = append(t.Replies, r)
			}
		}
		ev = t
	case evTravelAck:
		ev = TravelAck{TransferID: d.str()}
	case evSaveAck:
		ev = SaveAck{Player: d.str(), Version: d.uv()}
	case evSaveRejected:
		ev = SaveRejected{Player: d.str(), Version: d.uv(), Reason: d.str()}
	case evRoomEnded:
		ev = RoomEnded{RoomID: d.str(), Applied: d.strs(), AppliedFloor: d.uv()}
	case evReload:
		p := d.player()
		ev = Reload{Player: p, Version: d.uv(), Reason: d.str()}
	default:
		if d.err == nil {
			return nil, fmt.Errorf("game: decode event: unknown kind %d", kind)
		}
	}
	if err := d.end(kind); err != nil {
		return nil, err
	}
	return ev, nil
}

// request reads a Request's fields (after its kind byte).
func (d *decoder) request() Request {
	r := Request{Session: d.str(), Player: d.str(), Seq: d.uv()}
	r.Op = d.op()
	return r
}

// end is the error of a decode of an event of kind: the first read that
// failed, or bytes left over.
func (d *decoder) end(kind byte) error {
	if d.err != nil {
		return fmt.Errorf("game: decode event (kind %d): %w", kind, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("game: decode event (kind %d): %d trailing bytes", kind, len(d.b))
	}
	return nil
}

func (d *decoder) op() Op {
	kind := d.u8()
	switch kind {
	case opMove:
		m := Move{X: d.int(), Y: d.int()}
		if d.moves != nil {
			return d.moves.move(m)
		}
		return m
	case opAttack:
		b := d.rawStr()
		if d.err != nil || d.attack == nil {
			return Attack{Monster: d.string(b)}
		}
		// The last box when it is the same monster: no string made, no
		// interning lookup.
		if last, ok := (*d.attack).(Attack); !ok || last.Monster != string(b) {
			*d.attack = Attack{Monster: d.string(b)}
		}
		return *d.attack
	case opBuy:
		return Buy{NPC: d.str(), Item: d.str(), Count: d.v()}
	case opTradeOffer:
		return TradeOffer{To: d.str(), Give: d.items(), Want: d.items()}
	case opTradeAccept:
		return TradeAccept{TradeID: d.str()}
	case opTravel:
		return Travel{To: d.str()}
	case opEnterDungeon:
		return EnterDungeon{}
	case opChat:
		return Chat{Text: d.str()}
	default:
		d.fail(fmt.Errorf("unknown op kind %d", kind))
		return nil
	}
}

// Result kinds for the snapshot (stored replies). Never renumber.
const (
	resError        byte = 1
	resOK           byte = 2
	resMove         byte = 3
	resAttack       byte = 4
	resBuy          byte = 5
	resTradeOffer   byte = 6
	resTradeOffered byte = 7
	resTrade        byte = 8
	resTravel       byte = 9
	resDungeon      byte = 10
	resMonster      byte = 11
	resGive         byte = 12
)

// result encodes a stored reply as a kind byte and its JSON. Replies are
// only encoded at snapshot time, so the convenience costs nothing per event.
func (e *encoder) result(r Result) {
	var kind byte
	switch r.(type) {
	case ErrorResult:
		kind = resError
	case OKResult:
		kind = resOK
	case MoveResult:
		kind = resMove
	case AttackResult:
		kind = resAttack
	case BuyResult:
		kind = resBuy
	case TradeOfferResult:
		kind = resTradeOffer
	case TradeOffered:
		kind = resTradeOffered
	case TradeResult:
		kind = resTrade
	case TravelResult:
		kind = resTravel
	case DungeonResult:
		kind = resDungeon
	case MonsterResult:
		kind = resMonster
	case GiveResult:
		kind = resGive
	default:
		e.u8(0)
		return
	}
	var err error
	e.scratch, err = AppendResultJSON(e.scratch[:0], r)
	if err != nil {
		// Plain structs of strings and ints cannot fail to marshal.
		panic(fmt.Sprintf("game: marshal %T: %v", r, err))
	}
	e.u8(kind)
	e.bytes(e.scratch)
}

func (d *decoder) result() Result {
	kind := d.u8()
	if kind == 0 || d.err != nil {
		return nil
	}
	b := d.bytes()
	if d.err != nil {
		return nil
	}
	var r Result
	var err error
	switch kind {
	case resError:
		r, err = unmarshalAs[ErrorResult](b)
	case resOK:
		r, err = unmarshalAs[OKResult](b)
	case resMove:
		if m, ok := ParseMoveResult(b); ok {
			r = m // a snapshot holds thousands: encoding/json was most of a restore's reply windows
		} else {
			r, err = unmarshalAs[MoveResult](b)
		}
	case resAttack:
		r, err = unmarshalAs[AttackResult](b)
	case resBuy:
		r, err = unmarshalAs[BuyResult](b)
	case resTradeOffer:
		r, err = unmarshalAs[TradeOfferResult](b)
	case resTradeOffered:
		r, err = unmarshalAs[TradeOffered](b)
	case resTrade:
		r, err = unmarshalAs[TradeResult](b)
	case resTravel:
		r, err = unmarshalAs[TravelResult](b)
	case resDungeon:
		r, err = unmarshalAs[DungeonResult](b)
	case resMonster:
		r, err = unmarshalAs[MonsterResult](b)
	case resGive:
		r, err = unmarshalAs[GiveResult](b)
	default:
		err = fmt.Errorf("unknown result kind %d", kind)
	}
	if err != nil {
		d.fail(fmt.Errorf("stored reply: %w", err))
		return nil
	}
	return r
}

func unmarshalAs[T Result](b []byte) (Result, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// normItems sorts and merges l by item, rejecting non-positive counts, so a
// trade has one canonical form however the client spelled it.
func normItems(l []ItemCount) ([]ItemCount, error) {
	if len(l) == 0 {
		return nil, nil // nil, not empty: the snapshot cannot tell them apart
	}
	if len(l) > maxTradeLines {
		return nil, fmt.Errorf("more than %d lines", maxTradeLines)
	}
	out := make([]ItemCount, 0, len(l))
	for _, ic := range l {
		if ic.Item == "" || len(ic.Item) > maxIDLen {
			return nil, fmt.Errorf("bad item name %q", ic.Item)
		}
		if ic.Count <= 0 || ic.Count > maxAmount {
			return nil, fmt.Errorf("%s: count %d not in 1..%d", ic.Item, ic.Count, maxAmount)
		}
		out = append(out, ic)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Item < out[j].Item })
	merged := out[:0]
	for _, ic := range out {
		if n := len(merged); n > 0 && merged[n-1].Item == ic.Item {
			merged[n-1].Count += ic.Count
			if merged[n-1].Count > maxAmount {
				return nil, fmt.Errorf("%s: count over %d", ic.Item, maxAmount)
			}
			continue
		}
		merged = append(merged, ic)
	}
	return merged, nil
}
