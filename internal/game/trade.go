// Items and trade: adding items with the holding limit, buying from NPCs,
// and two-player trade offers and acceptance.

package game

import (
	"fmt"
	"strconv"

	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/validate"
)

type trade struct {
	id, from, to string
	give, want   []ItemCount
	expires      uint64
}

// addItem changes p's count of item by delta, refusing negative balances and
// int64 overflow (player.Add checks only the first).
// TradesTo returns the ids of the open trade offers made to player, oldest
// first. For tools and test drivers.
func (s *Scene) TradesTo(player string) []string {
	var ids []string
	for _, t := range s.trades {
		if t.to == player {
			ids = append(ids, t.id)
		}
	}
	return ids
}

func (s *Scene) addItem(p *playerState, item string, delta int64) error {
	have := p.data.Count(item)
	if delta > 0 && have > maxHoldable-delta {
		return fmt.Errorf("player %s: %s would exceed %d", p.data.ID, item, int64(maxHoldable))
	}
	if err := p.data.Add(item, delta); err != nil {
		return err
	}
	if len(p.data.Items) == 0 {
		p.data.Items = nil // one spelling of "no items", as after a restore
	}
	return nil
}

// maxHoldable caps any balance far below int64 overflow (the same bound
// the data server and the CLI apply).
const maxHoldable = validate.MaxBalance

func (s *Scene) opBuy(p *playerState, op Buy, out []Effect) (Result, []Effect) {
	i, ok := s.npcIx[op.NPC]
	if !ok || s.npcs[i].def.Kind != NPCShop {
		return errResult(ErrNotFound, "no shop %s in %s", op.NPC, s.def.ID), out
	}
	var price int64
	for _, it := range s.npcs[i].def.Shop {
		if it.Item == op.Item {
			price = it.Price
		}
	}
	if price == 0 {
		return errResult(ErrNotFound, "%s does not sell %q", op.NPC, op.Item), out
	}
	if op.Count <= 0 || op.Count > maxBuyCount {
		return errResult(ErrBadRequest, "count must be 1..%d", maxBuyCount), out
	}
	cost := price * op.Count
	if p.data.Gold < cost {
		return errResult(ErrNotEnough, "%s costs %d gold, you have %d", op.Item, cost, p.data.Gold), out
	}
	if have := p.data.Count(op.Item); have > maxHoldable-op.Count {
		return errResult(ErrLimit, "cannot hold more %s", op.Item), out
	}
	_ = s.addItem(p, goldItem, -cost) // checked above
	_ = s.addItem(p, op.Item, op.Count)
	s.led(goldItem).Sunk += cost
	s.led(op.Item).Minted += op.Count
	out = append(out, s.save(p, true), s.profile(p))
	return BuyResult{Item: op.Item, Count: op.Count, Cost: cost, Gold: p.data.Gold, Have: p.data.Count(op.Item)}, out
}

func hasAll(d *player.Data, l []ItemCount) error {
	for _, ic := range l {
		if have := d.Count(ic.Item); have < ic.Count {
			return fmt.Errorf("%s has %d %s, needs %d", d.ID, have, ic.Item, ic.Count)
		}
	}
	return nil
}

func (s *Scene) opTradeOffer(p *playerState, op TradeOffer, out []Effect) (Result, []Effect) {
	to := s.players[op.To]
	if to == nil || to == p {
		return errResult(ErrNotFound, "no other player %s in %s", op.To, s.def.ID), out
	}
	give, err := normItems(op.Give)
	if err != nil {
		return errResult(ErrBadRequest, "give: %v", err), out
	}
	want, err := normItems(op.Want)
	if err != nil {
		return errResult(ErrBadRequest, "want: %v", err), out
	}
	if len(give)+len(want) == 0 {
		return errResult(ErrBadRequest, "an empty trade"), out
	}
	if err := hasAll(&p.data, give); err != nil {
		return errResult(ErrNotEnough, "%v", err), out
	}
	open := 0
	for _, t := range s.trades {
		if t.from == p.data.ID {
			open++
		}
	}
	if open >= maxOpenTrades {
		return errResult(ErrLimit, "%d offers already open", open), out
	}
	s.nextTrade++
	t := trade{
		id:   s.def.ID + "/trade-" + strconv.FormatUint(s.nextTrade, 10),
		from: p.data.ID, to: to.data.ID, give: give, want: want,
		expires: s.tick + tradeTTL,
	}
	s.trades = append(s.trades, t)
	out = append(out, Notify{Player: to.data.ID, Body: TradeOffered{TradeID: t.id, From: t.from, Give: give, Want: want}})
	return TradeOfferResult{TradeID: t.id}, out
}

func (s *Scene) opTradeAccept(p *playerState, op TradeAccept, out []Effect) (Result, []Effect) {
	ti := -1
	for i, t := range s.trades {
		if t.id == op.TradeID {
			ti = i
		}
	}
	if ti < 0 {
		return errResult(ErrNotFound, "no open trade %s", op.TradeID), out
	}
	t := s.trades[ti]
	if t.to != p.data.ID {
		return errResult(ErrNotAllowed, "trade %s is not offered to %s", t.id, p.data.ID), out
	}
	// An accept consumes the offer, whether or not the goods are still there.
	s.trades = append(s.trades[:ti], s.trades[ti+1:]...)
	from := s.players[t.from]
	if from == nil {
		return errResult(ErrNotFound, "trade %s: %s left", t.id, t.from), out
	}
	if err := hasAll(&from.data, t.give); err != nil {
		return errResult(ErrNotEnough, "trade %s: %v", t.id, err), out
	}
	if err := hasAll(&p.data, t.want); err != nil {
		return errResult(ErrNotEnough, "trade %s: %v", t.id, err), out
	}
	// Work on copies and commit both at once: all or nothing.
	a, b := from.data.Clone(), p.data.Clone()
	ap, bp := &playerState{data: a}, &playerState{data: b}
	for _, ic := range t.give {
		if err := errJoin(s.addItem(ap, ic.Item, -ic.Count), s.addItem(bp, ic.Item, ic.Count)); err != nil {
			return errResult(ErrLimit, "trade %s: %v", t.id, err), out
		}
	}
	for _, ic := range t.want {
		if err := errJoin(s.addItem(bp, ic.Item, -ic.Count), s.addItem(ap, ic.Item, ic.Count)); err != nil {
			return errResult(ErrLimit, "trade %s: %v", t.id, err), out
		}
	}
	from.data, p.data = ap.data, bp.data
	out = append(out,
		s.save(from, true), s.save(p, true), s.profile(from), s.profile(p),
		Notify{Player: from.data.ID, Body: TradeResult{TradeID: t.id, Gave: t.give, Got: t.want}})
	return TradeResult{TradeID: t.id, Gave: t.want, Got: t.give}, out
}

func errJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
