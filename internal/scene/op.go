package scene

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/jsonint"
)

// opJSON is the JSON form of a client operation:
// {"op":"move","x":3,"y":4}, {"op":"attack","monster":"hogger"},
// {"op":"buy","npc":"shopkeeper","item":"potion","count":1},
// {"op":"travel","to":"town"}, {"op":"dungeon"}, {"op":"chat","text":"hi"},
// {"op":"trade_offer","to":"p2","give":[{"item":"gold","count":5}],"want":[...]},
// {"op":"trade_accept","trade":"..."}.
type opJSON struct {
	Op      string           `json:"op"`
	X       int              `json:"x"`
	Y       int              `json:"y"`
	Monster string           `json:"monster"`
	NPC     string           `json:"npc"`
	Item    string           `json:"item"`
	Count   int64            `json:"count"`
	To      string           `json:"to"`
	Text    string           `json:"text"`
	Give    []game.ItemCount `json:"give"`
	Want    []game.ItemCount `json:"want"`
	Trade   string           `json:"trade"`
}

// DecodeOp parses the JSON form of a client operation.
func DecodeOp(raw []byte) (game.Op, error) {
	if m, ok := decodeMove(raw); ok {
		return m, nil
	}
	return decodeOpJSON(raw)
}

// decodeOpJSON parses any op with the JSON decoder.
func decodeOpJSON(raw []byte) (game.Op, error) {
	var o opJSON
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("bad op: %w", err)
	}
	switch o.Op {
	case "move":
		return game.Move{X: o.X, Y: o.Y}, nil
	case "attack":
		return game.Attack{Monster: o.Monster}, nil
	case "buy":
		return game.Buy{NPC: o.NPC, Item: o.Item, Count: o.Count}, nil
	case "travel":
		return game.Travel{To: o.To}, nil
	case "dungeon":
		return game.EnterDungeon{}, nil
	case "chat":
		return game.Chat{Text: o.Text}, nil
	case "trade_offer":
		return game.TradeOffer{To: o.To, Give: o.Give, Want: o.Want}, nil
	case "trade_accept":
		return game.TradeAccept{TradeID: o.Trade}, nil
	}
	return nil, fmt.Errorf("unknown op %q (want move, attack, buy, travel, dungeon, chat, trade_offer or trade_accept)", o.Op)
}

// decodeMove reads the common move op in its usual spelling,
// {"op":"move","x":X,"y":Y}, without the JSON decoder (moves are most of
// a scene's requests). Any other spelling is left to the decoder.
func decodeMove(b []byte) (game.Move, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"op":"move",`))
	if !ok {
		return game.Move{}, false
	}
	x, y, ok := jsonint.XY(rest)
	return game.Move{X: x, Y: y}, ok
}
