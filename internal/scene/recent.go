// Recent events: what a scene did lately, for GET /v1/scenes/{id}/inspect and
// the console's scene detail.

package scene

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/respawn-dev/respawn/internal/game"
)

// RecentEvents bounds each scene's (and room's) ring of recent events: the
// inspect endpoint shows at most this many, newest first.
//
// The ring belongs to the process, not to the game state: it is neither
// logged nor snapshotted, so it starts empty after a restart (replayed events
// are not recorded again). Ticks, save ticks and acknowledgements are left
// out: at 10 Hz they would push everything an operator cares about out.
const RecentEvents = 50

// maxSummary bounds a summary's length in bytes (chat text is cut shorter).
const (
	maxSummary  = 200
	maxChatShow = 80
)

// RecentEvent is one applied event as the operator sees it.
type RecentEvent struct {
	Time time.Time `json:"time"`
	// Kind is the event or, for a player's request, the op: enter, leave,
	// attach, move, attack, buy, trade_offer, trade_accept, travel,
	// enter_dungeon, chat, travel_in, gm_damage, gm_give, reload,
	// save_rejected, room_ended.
	Kind    string `json:"kind"`
	Player  string `json:"player,omitempty"`
	Summary string `json:"summary"`
}

// recentEntry is what the loop stores per event: the event and its outcome,
// formatted only when someone asks (the loop's hot path pays a type switch,
// a clock read and a copy).
type recentEntry struct {
	at     time.Time
	ev     game.Event
	res    game.Result // the reply to a request or GM command; nil if none
	resent bool        // the reply was the stored one of an earlier apply
}

// recentRing is a fixed-size ring of the last RecentEvents entries. Only
// the scene's loop goroutine touches it.
type recentRing struct {
	buf  [RecentEvents]recentEntry
	next int // where the next entry goes
	n    int // entries held, at most RecentEvents
}

// record keeps ev (applied with effects effs) if an operator would want to
// see it.
func (r *recentRing) record(ev game.Event, effs []game.Effect) {
	e := recentEntry{ev: ev}
	switch ev := ev.(type) {
	case game.Tick, game.SaveTick, game.SaveAck, game.TravelAck:
		return
	case game.Request:
		for _, ef := range effs {
			if rep, ok := ef.(game.Reply); ok && rep.Player == ev.Player && rep.Seq == ev.Seq {
				e.res, e.resent = rep.Body, rep.Resent
				break
			}
		}
	case game.GMDamage:
		e.res, e.resent = gmReply(ev.ReqID, effs)
	case game.GMGive:
		e.res, e.resent = gmReply(ev.ReqID, effs)
	}
	e.at = time.Now()
	r.buf[r.next] = e
	r.next = (r.next + 1) % RecentEvents
	r.n = min(r.n+1, RecentEvents)
}

func gmReply(reqID string, effs []game.Effect) (game.Result, bool) {
	for _, ef := range effs {
		if rep, ok := ef.(game.GMReply); ok && rep.ReqID == reqID {
			return rep.Body, rep.Resent
		}
	}
	return nil, false
}

// list returns the entries newest first, formatted.
func (r *recentRing) list() []RecentEvent {
	out := make([]RecentEvent, 0, r.n)
	for i := 1; i <= r.n; i++ {
		e := &r.buf[(r.next-i+RecentEvents)%RecentEvents]
		kind, player, summary := describe(e.ev, e.res)
		if e.resent {
			summary = "resent: " + summary
		}
		out = append(out, RecentEvent{Time: e.at, Kind: kind, Player: player, Summary: clip(summary, maxSummary)})
	}
	return out
}

// describe says what ev was, who it concerned and what came of it.
func describe(ev game.Event, res game.Result) (kind, player, summary string) {
	switch ev := ev.(type) {
	case game.Enter:
		return "enter", ev.Player.ID, fmt.Sprintf("entered at level %d with %d gold", ev.Player.Level, ev.Player.Gold)
	case game.Leave:
		return "leave", ev.Player, "left"
	case game.Attach:
		return "attach", ev.Player, "session attached"
	case game.Request:
		kind, what := describeOp(ev.Op)
		return kind, ev.Player, what + ": " + outcome(res)
	case game.GMDamage:
		return "gm_damage", "", fmt.Sprintf("GM damage %d to %s (request %s): %s", ev.Amount, ev.Monster, ev.ReqID, outcome(res))
	case game.GMGive:
		return "gm_give", ev.Player, fmt.Sprintf("GM give %d %s (request %s): %s", ev.Count, ev.Item, ev.ReqID, outcome(res))
	case game.TravelIn:
		return "travel_in", ev.Player.ID, fmt.Sprintf("arrived from %s (transfer %s)", ev.From, ev.TransferID)
	case game.Reload:
		return "reload", ev.Player.ID, fmt.Sprintf("reloaded from the data server at version %d: %s", ev.Version, ev.Reason)
	case game.SaveRejected:
		return "save_rejected", ev.Player, fmt.Sprintf("save of version %d rejected: %s", ev.Version, ev.Reason)
	case game.RoomEnded:
		return "room_ended", "", fmt.Sprintf("room %s ended; its players are back", ev.RoomID)
	default:
		k := strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", ev), "game."))
		return k, "", k
	}
}

// describeOp names a request's op and says what was asked.
func describeOp(op game.Op) (kind, what string) {
	switch op := op.(type) {
	case game.Move:
		return "move", fmt.Sprintf("move to (%d,%d)", op.X, op.Y)
	case game.Attack:
		return "attack", "attack " + op.Monster
	case game.Buy:
		return "buy", fmt.Sprintf("buy %d %s from %s", op.Count, op.Item, op.NPC)
	case game.TradeOffer:
		return "trade_offer", fmt.Sprintf("offer %s to %s for %s", items(op.Give), op.To, items(op.Want))
	case game.TradeAccept:
		return "trade_accept", "accept trade " + op.TradeID
	case game.Travel:
		return "travel", "travel to " + op.To
	case game.EnterDungeon:
		return "enter_dungeon", "enter the dungeon"
	case game.Chat:
		return "chat", fmt.Sprintf("say %q", clip(op.Text, maxChatShow))
	default:
		return "request", fmt.Sprintf("%T", op)
	}
}

// outcome says what a request or GM command's reply was.
func outcome(res game.Result) string {
	switch r := res.(type) {
	case nil:
		return "no reply"
	case game.ErrorResult:
		return "refused (" + r.Code + "): " + r.Error
	case game.OKResult:
		return "ok"
	case game.MoveResult:
		return fmt.Sprintf("now at (%d,%d)", r.X, r.Y)
	case game.AttackResult:
		s := fmt.Sprintf("hit %s for %d (%d/%d)", r.Monster, r.Damage, r.HP, r.MaxHP)
		if r.Killed {
			s += ", killed it"
			if len(r.Loot) > 0 {
				s += ", loot " + items(r.Loot)
			}
		}
		if r.HitBack > 0 {
			s += fmt.Sprintf(", took %d (hp %d)", r.HitBack, r.PlayerHP)
		}
		if r.Died {
			s += ", died"
		}
		return s
	case game.BuyResult:
		return fmt.Sprintf("bought %d %s for %d gold (has %d, %d gold left)", r.Count, r.Item, r.Cost, r.Have, r.Gold)
	case game.TradeOfferResult:
		return "offered as " + r.TradeID
	case game.TradeResult:
		return fmt.Sprintf("trade %s done: gave %s, got %s", r.TradeID, items(r.Gave), items(r.Got))
	case game.TravelResult:
		return fmt.Sprintf("on the way to %s (transfer %s)", r.To, r.TransferID)
	case game.DungeonResult:
		return "on the way into room " + r.RoomID
	case game.MonsterResult:
		s := fmt.Sprintf("%s at %d/%d", r.Monster, r.HP, r.MaxHP)
		if r.Killed {
			s += ", killed"
		}
		return s
	case game.GiveResult:
		return fmt.Sprintf("%s now has %d %s", r.Player, r.Count, r.Item)
	default:
		return fmt.Sprintf("%T", res)
	}
}

func items(l []game.ItemCount) string {
	if len(l) == 0 {
		return "nothing"
	}
	parts := make([]string, len(l))
	for i, it := range l {
		parts[i] = fmt.Sprintf("%d %s", it.Count, it.Item)
	}
	return strings.Join(parts, ", ")
}

// clip cuts s to at most n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
