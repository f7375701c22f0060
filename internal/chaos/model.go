package chaos

import (
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/respawn-dev/respawn/internal/game"
)

// Outcomes of one request as its bot saw it.
const (
	OutOK      = "ok"      // applied; Result holds the game's answer
	OutRefused = "refused" // the game said no (Reason); nothing changed
	OutUnknown = "unknown" // no answer: it may or may not have happened
)

// OpInput is what a bot asked for (the porcupine input).
type OpInput struct {
	Kind    string `json:"kind"` // move, buy, attack
	Item    string `json:"item,omitempty"`
	Count   int64  `json:"count,omitempty"`
	Price   int64  `json:"price,omitempty"` // buy: the shop's price per item
	Monster string `json:"monster,omitempty"`
	X       int    `json:"x,omitempty"`
	Y       int    `json:"y,omitempty"`
}

// OpOutput is what the bot saw (the porcupine output).
type OpOutput struct {
	Outcome string           `json:"outcome"`
	Reason  string           `json:"reason,omitempty"`
	Buy     game.BuyResult   `json:"-"`
	Loot    []game.ItemCount `json:"loot,omitempty"`
}

// Holdings is a player's gold and items: the pure model's state.
type Holdings struct {
	Gold  int64            `json:"gold"`
	Items map[string]int64 `json:"items"`
}

func (h Holdings) clone() Holdings {
	return Holdings{Gold: h.Gold, Items: maps.Clone(h.Items)}
}

func (h Holdings) equal(o Holdings) bool {
	if h.Gold != o.Gold {
		return false
	}
	for k, v := range h.Items {
		if o.Items[k] != v {
			return false
		}
	}
	for k, v := range o.Items {
		if h.Items[k] != v {
			return false
		}
	}
	return true
}

func (h Holdings) String() string {
	keys := make([]string, 0, len(h.Items))
	for k, v := range h.Items {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "gold=%d", h.Gold)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, h.Items[k])
	}
	return b.String()
}

// add applies an item change; "gold" is the gold.
func (h *Holdings) add(item string, n int64) {
	if item == "gold" {
		h.Gold += n
		return
	}
	if h.Items == nil {
		h.Items = map[string]int64{}
	}
	h.Items[item] += n
	if h.Items[item] == 0 {
		delete(h.Items, item)
	}
}

// effect is the change an applied request makes, from what its reply said.
func effect(h Holdings, in OpInput, out OpOutput) Holdings {
	h = h.clone()
	switch in.Kind {
	case "buy":
		h.Gold -= out.Buy.Cost
		h.add(out.Buy.Item, out.Buy.Count)
	case "attack":
		for _, l := range out.Loot {
			h.add(l.Item, l.Count)
		}
	}
	return h
}

// playerModel is the pure game model of one player's holdings, as far as
// the ops the bots send touch them. A buy's reply states the gold and the
// count held after it, so any request applied twice, lost, or applied out
// of order shows up as a reply no order of the history can explain. A
// request with no answer may have happened: both states go on.
func playerModel(init Holdings) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{init.clone()} },
		Step: func(state, input, output any) []any {
			h, in, out := state.(Holdings), input.(OpInput), output.(OpOutput)
			switch out.Outcome {
			case OutUnknown:
				if in.Kind == "buy" && in.Price > 0 {
					applied := h.clone()
					applied.Gold -= in.Price * in.Count
					applied.add(in.Item, in.Count)
					if applied.Gold >= 0 {
						return []any{h, applied}
					}
				}
				// move changes no holdings; an unanswered attack's loot is
				// unknown, so its player is not checked (see checkable).
				return []any{h}
			case OutRefused:
				if in.Kind == "buy" && in.Price > 0 && out.Reason == game.ErrNotEnough && h.Gold >= in.Price*in.Count {
					return nil // refused for want of gold it had
				}
				return []any{h}
			}
			switch in.Kind {
			case "buy":
				b := out.Buy
				if b.Item != in.Item || b.Count != in.Count || (in.Price > 0 && b.Cost != in.Price*in.Count) ||
					b.Gold != h.Gold-b.Cost || b.Have != h.Items[in.Item]+in.Count {
					return nil
				}
			}
			return []any{effect(h, in, out)}
		},
		Equal: func(a, b any) bool { return a.(Holdings).equal(b.(Holdings)) },
		DescribeOperation: func(input, output any) string {
			in, out := input.(OpInput), output.(OpOutput)
			switch {
			case out.Outcome != OutOK:
				return fmt.Sprintf("%s %s -> %s %s", in.Kind, in.Item+in.Monster, out.Outcome, out.Reason)
			case in.Kind == "buy":
				return fmt.Sprintf("buy %d %s -> gold %d have %d", in.Count, in.Item, out.Buy.Gold, out.Buy.Have)
			case in.Kind == "attack":
				return fmt.Sprintf("attack %s -> loot %v", in.Monster, out.Loot)
			}
			return in.Kind
		},
		DescribeState: func(s any) string { return s.(Holdings).String() },
	}
	return nm.ToModel()
}
