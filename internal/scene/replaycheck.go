package scene

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// SlotCheck is the replay check of one slot.
type SlotCheck struct {
	ID            string `json:"id"`
	Events        int    `json:"events"`
	Tick          uint64 `json:"tick"`
	Hash          string `json:"hash,omitempty"`
	Deterministic bool   `json:"deterministic"`
	Skipped       string `json:"skipped,omitempty"`
}

// ReplayCheck replays every slot of the log at path twice and compares the
// resulting state hashes: a scene whose two replays differ is not
// deterministic, and its crash recovery would not be exact. defs gives the
// definition of top-level scenes; rooms take theirs from their parent's
// live rooms. The log must not be in use (it is opened read-only).
func ReplayCheck(path string, defs []game.SceneDef) ([]SlotCheck, error) {
	st, err := shmlog.OpenReadOnly(path)
	if err != nil {
		return nil, fmt.Errorf("replay-check %s: %w", path, err)
	}
	defer st.Close()
	known := map[string]game.SceneDef{}
	for _, d := range defs {
		known[d.ID] = d
	}
	ids := st.IDs()
	// Top-level scenes first, so their live rooms' definitions are known.
	var out []SlotCheck
	for _, pass := range []bool{false, true} {
		for _, id := range ids {
			if strings.Contains(id, "/") != pass {
				continue
			}
			slot, _ := st.Get(id)
			def, ok := known[id]
			if !ok {
				out = append(out, SlotCheck{ID: id, Skipped: "no definition (a room whose parent no longer lists it, or a scene not in the config)"})
				continue
			}
			a, n, err := Replay(slot, def)
			if err != nil {
				return out, err
			}
			b, _, err := Replay(slot, def)
			if err != nil {
				return out, err
			}
			ha, hb := a.Hash(), b.Hash()
			out = append(out, SlotCheck{ID: id, Events: n, Tick: a.Tick(), Hash: hex.EncodeToString(ha[:]), Deterministic: ha == hb})
			for _, cr := range a.LiveRooms() {
				if _, ok := known[cr.RoomID]; !ok {
					known[cr.RoomID] = cr.Def
				}
			}
		}
	}
	return out, nil
}
