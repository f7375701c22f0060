package game

import "sort"

// View is the JSON shape of a scene for GM tooling and tests (`respawn scene
// inspect`). Slices are sorted by id; Epoch is filled in by the process,
// which knows it (the state machine does not).
type View struct {
	Scene            string                 `json:"scene"`
	Epoch            uint64                 `json:"epoch"`
	Tick             uint64                 `json:"tick"`
	Monsters         []MonsterView          `json:"monsters"`
	NPCs             []NPCView              `json:"npcs"`
	Players          []PlayerView           `json:"players"`
	Rooms            []string               `json:"rooms"`
	Ledger           map[string]LedgerEntry `json:"ledger"`
	PendingTransfers int                    `json:"pending_transfers"`
}

// MonsterView is one monster; HP 0 means dead and waiting to respawn.
type MonsterView struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	HP    int64  `json:"hp"`
	MaxHP int64  `json:"max_hp"`
}

// NPCView is one NPC and where it is on its path.
type NPCView struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	X         int    `json:"x"`
	Y         int    `json:"y"`
	PathIndex int    `json:"path_index"`
}

// PlayerView is one present player.
type PlayerView struct {
	ID    string           `json:"id"`
	Name  string           `json:"name"`
	Gold  int64            `json:"gold"`
	Items map[string]int64 `json:"items"`
	X     int              `json:"x"`
	Y     int              `json:"y"`
	HP    int64            `json:"hp"`
}

// PlayerView returns a present player's view (what a client sees of itself
// on joining).
func (s *Scene) PlayerView(id string) (PlayerView, bool) {
	p := s.players[id]
	if p == nil {
		return PlayerView{}, false
	}
	items := make(map[string]int64, len(p.data.Items))
	for k, c := range p.data.Items {
		items[k] = c
	}
	return PlayerView{ID: p.data.ID, Name: p.data.Name, Gold: p.data.Gold, Items: items, X: p.data.X, Y: p.data.Y, HP: p.hp}, true
}

// Inspect returns a copy of the scene's state for display.
func (s *Scene) Inspect() View {
	v := View{
		Scene:            s.def.ID,
		Tick:             s.tick,
		Monsters:         make([]MonsterView, 0, len(s.mons)),
		NPCs:             make([]NPCView, 0, len(s.npcs)),
		Players:          make([]PlayerView, 0, len(s.plist)),
		Rooms:            make([]string, 0, len(s.rooms)),
		Ledger:           make(map[string]LedgerEntry, len(s.ledger)),
		PendingTransfers: len(s.outbox),
	}
	for _, m := range s.mons {
		v.Monsters = append(v.Monsters, MonsterView{ID: m.def.ID, Name: m.def.Name, HP: m.hp, MaxHP: m.def.HP})
	}
	sort.Slice(v.Monsters, func(i, j int) bool { return v.Monsters[i].ID < v.Monsters[j].ID })
	for _, n := range s.npcs {
		var pt Point
		if n.pathIndex < len(n.def.Path) {
			pt = n.def.Path[n.pathIndex]
		}
		v.NPCs = append(v.NPCs, NPCView{ID: n.def.ID, Name: n.def.Name, X: pt.X, Y: pt.Y, PathIndex: n.pathIndex})
	}
	sort.Slice(v.NPCs, func(i, j int) bool { return v.NPCs[i].ID < v.NPCs[j].ID })
	for _, p := range s.plist {
		items := make(map[string]int64, len(p.data.Items))
		for k, c := range p.data.Items {
			items[k] = c
		}
		v.Players = append(v.Players, PlayerView{
			ID: p.data.ID, Name: p.data.Name, Gold: p.data.Gold, Items: items,
			X: p.data.X, Y: p.data.Y, HP: p.hp,
		})
	}
	for _, r := range s.rooms {
		v.Rooms = append(v.Rooms, r.id)
	}
	sort.Strings(v.Rooms)
	for k, l := range s.ledger {
		v.Ledger[k] = *l
	}
	return v
}
