// Package scenedef is the world's static content: scene definitions with
// their monsters, NPCs, shops and dungeons, their validation and the
// reference world. It is data only, so the configuration can hold and check
// a world without linking the game's state machines (package game), which
// play it.
package scenedef

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/validate"
)

// Scene kinds.
const (
	KindTown    = "town"
	KindForest  = "forest"
	KindDungeon = "dungeon"
)

// NPC kinds.
const (
	NPCEscort = "escort"
	NPCShop   = "shop"
)

// Limits on definitions and on any amount the game handles; they keep
// snapshots and replies small and sums far from overflow. The game's rules
// use the same values, so changing one changes what a replayed log
// produces.
const (
	MaxAmount  = validate.MaxCount // any single count, HP, damage or gold drop
	MaxPrice   = 1_000_000         // a shop price
	MaxIDLen   = 128               // scene, monster, NPC and item ids
	MaxEntries = 1024              // monsters, NPCs or path points in one definition
)

// Defaults applied when a definition leaves a field at zero.
const (
	DefaultSize      = 100 // scene width and height in tiles
	DefaultStepTicks = 10  // escort NPC: one path step per second at 10 Hz
	DefaultMaxRooms  = 16  // live dungeon rooms one scene may have open
)

// Point is a tile position.
type Point struct {
	X int `yaml:"x" json:"x"`
	Y int `yaml:"y" json:"y"`
}

// LootDef is one item a monster drops to its killer.
type LootDef struct {
	Item  string `yaml:"item" json:"item"`
	Count int64  `yaml:"count" json:"count"`
}

// MonsterDef describes a monster and where it stands.
type MonsterDef struct {
	ID     string `yaml:"id" json:"id"`
	Name   string `yaml:"name" json:"name"`
	HP     int64  `yaml:"hp" json:"hp"`
	Damage int64  `yaml:"damage" json:"damage"`
	// RespawnTicks is how long a killed monster stays dead; 0 means it never
	// comes back (a dungeon boss).
	RespawnTicks uint64    `yaml:"respawn_ticks" json:"respawn_ticks"`
	X            int       `yaml:"x" json:"x"`
	Y            int       `yaml:"y" json:"y"`
	Boss         bool      `yaml:"boss,omitempty" json:"boss,omitempty"`
	Loot         []LootDef `yaml:"loot,omitempty" json:"loot,omitempty"`
	GoldDrop     int64     `yaml:"gold_drop,omitempty" json:"gold_drop,omitempty"`
}

// ShopItem is one line of a shop NPC's price list.
type ShopItem struct {
	Item  string `yaml:"item" json:"item"`
	Price int64  `yaml:"price" json:"price"`
}

// NPCDef describes an NPC. An escort walks its Path (looping); a shop stands
// on Path[0] and sells Shop.
type NPCDef struct {
	ID   string  `yaml:"id" json:"id"`
	Name string  `yaml:"name" json:"name"`
	Kind string  `yaml:"kind" json:"kind"`
	Path []Point `yaml:"path" json:"path"`
	// StepTicks is how many ticks an escort waits between steps (default 10).
	StepTicks uint64     `yaml:"step_ticks,omitempty" json:"step_ticks,omitempty"`
	Shop      []ShopItem `yaml:"shop,omitempty" json:"shop,omitempty"`
}

// DungeonDef is the template of the instanced rooms a scene can open.
type DungeonDef struct {
	Name     string       `yaml:"name" json:"name"`
	Monsters []MonsterDef `yaml:"monsters" json:"monsters"`
	Spawn    Point        `yaml:"spawn" json:"spawn"`
	// MaxRooms bounds the rooms open at once from one scene (default 16).
	MaxRooms int `yaml:"max_rooms,omitempty" json:"max_rooms,omitempty"`
}

// SceneDef is the static definition of a scene (configs/world.yaml, under
// `scenes:`) or of a dungeon room (built by RoomDef, never written by hand).
type SceneDef struct {
	ID     string `yaml:"id" json:"id"`
	Kind   string `yaml:"kind" json:"kind"`
	Seed   uint64 `yaml:"seed" json:"seed"`
	Width  int    `yaml:"width,omitempty" json:"width,omitempty"`
	Height int    `yaml:"height,omitempty" json:"height,omitempty"`
	// Spawn is where arriving (and dying) players are placed.
	Spawn Point `yaml:"spawn" json:"spawn"`
	// Exits lists the scenes a player may Travel to from here.
	Exits    []string     `yaml:"exits,omitempty" json:"exits,omitempty"`
	Monsters []MonsterDef `yaml:"monsters,omitempty" json:"monsters,omitempty"`
	NPCs     []NPCDef     `yaml:"npcs,omitempty" json:"npcs,omitempty"`
	Dungeon  *DungeonDef  `yaml:"dungeon,omitempty" json:"dungeon,omitempty"`
	// Parent is set on dungeon rooms only: the scene that opened the room and
	// where its players return.
	Parent string `yaml:"parent,omitempty" json:"parent,omitempty"`
	// BreakDedupe is a test hook (RESPAWN_TEST_BREAK=dedupe, package
	// testhook): a resent request is applied again instead of answered
	// with its recorded reply. Never in a config file, never encoded, not
	// part of the definition's hash.
	BreakDedupe bool `yaml:"-" json:"-"`
}

// EffectiveWidth is the width in tiles, with the default applied.
func (d SceneDef) EffectiveWidth() int {
	if d.Width <= 0 {
		return DefaultSize
	}
	return d.Width
}

// EffectiveHeight is the height in tiles, with the default applied.
func (d SceneDef) EffectiveHeight() int {
	if d.Height <= 0 {
		return DefaultSize
	}
	return d.Height
}

// InBounds says whether tile (x, y) is inside the scene.
func (d SceneDef) InBounds(x, y int) bool {
	return x >= 0 && y >= 0 && x < d.EffectiveWidth() && y < d.EffectiveHeight()
}

// EffectiveStepTicks is the ticks between an escort's steps, with the
// default applied.
func (n NPCDef) EffectiveStepTicks() uint64 {
	if n.StepTicks == 0 {
		return DefaultStepTicks
	}
	return n.StepTicks
}

// Slots is how many event-log slots the scene can need at once: its own
// and one per live dungeon room.
func (d SceneDef) Slots() int {
	if d.Dungeon == nil {
		return 1
	}
	return 1 + d.Dungeon.EffectiveMaxRooms()
}

// EffectiveMaxRooms is the bound on open rooms, with the default applied.
func (d *DungeonDef) EffectiveMaxRooms() int {
	if d.MaxRooms <= 0 {
		return DefaultMaxRooms
	}
	return d.MaxRooms
}

// RoomDef builds the definition of dungeon room roomID opened from d with the
// given seed. The scene process gets the same value in CreateRoom; it can also
// rebuild it from the parent's definition, which is why the room's def is
// derived rather than stored.
func (d SceneDef) RoomDef(roomID string, seed uint64) (SceneDef, error) {
	if d.Dungeon == nil {
		return SceneDef{}, fmt.Errorf("scene %q: no dungeon defined", d.ID)
	}
	if !strings.HasPrefix(roomID, d.ID+"/") {
		return SceneDef{}, fmt.Errorf("scene %q: room id %q is not under it", d.ID, roomID)
	}
	ms := make([]MonsterDef, len(d.Dungeon.Monsters))
	for i, m := range d.Dungeon.Monsters {
		m.Loot = append([]LootDef(nil), m.Loot...)
		ms[i] = m
	}
	return SceneDef{
		ID:       roomID,
		Kind:     KindDungeon,
		Seed:     seed,
		Width:    d.Width,
		Height:   d.Height,
		Spawn:    d.Dungeon.Spawn,
		Exits:    []string{d.ID},
		Monsters: ms,
		Parent:   d.ID,
	}, nil
}

func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%s: must not be empty", what)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s: %q longer than %d bytes", what, id, MaxIDLen)
	}
	return nil
}

// Validate reports every problem in d, each naming the field.
func (d SceneDef) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("scene %q: "+format, append([]any{d.ID}, args...)...))
	}
	if err := checkID("id", d.ID); err != nil {
		add("%w", err)
	}
	switch d.Kind {
	case KindTown, KindForest:
		if d.Parent != "" {
			add("parent: only dungeon rooms have a parent")
		}
	case KindDungeon:
		if d.Parent == "" {
			add("parent: a dungeon room needs its parent scene")
		}
		if d.Dungeon != nil {
			add("dungeon: a dungeon room cannot open rooms itself")
		}
	default:
		add("kind: %q is not one of town, forest, dungeon", d.Kind)
	}
	if d.Width < 0 || d.Height < 0 {
		add("width/height: must not be negative")
	}
	if !d.InBounds(d.Spawn.X, d.Spawn.Y) {
		add("spawn: (%d,%d) outside %dx%d", d.Spawn.X, d.Spawn.Y, d.EffectiveWidth(), d.EffectiveHeight())
	}
	for i, e := range d.Exits {
		if err := checkID(fmt.Sprintf("exits[%d]", i), e); err != nil {
			add("%w", err)
		} else if e == d.ID {
			add("exits[%d]: %q is the scene itself", i, e)
		}
	}
	errs = append(errs, validateMonsters(d, "monsters", d.Monsters)...)
	if d.Kind == KindDungeon && !hasBoss(d.Monsters) {
		add("monsters: a dungeon room needs a boss")
	}
	if len(d.NPCs) > MaxEntries {
		add("npcs: more than %d", MaxEntries)
	}
	seen := map[string]bool{}
	for i, n := range d.NPCs {
		f := fmt.Sprintf("npcs[%d]", i)
		if err := checkID(f+".id", n.ID); err != nil {
			add("%w", err)
		} else if seen[n.ID] {
			add("%s.id: duplicate %q", f, n.ID)
		}
		seen[n.ID] = true
		switch n.Kind {
		case NPCEscort:
			if len(n.Shop) > 0 {
				add("%s.shop: only shop NPCs sell", f)
			}
		case NPCShop:
			if len(n.Shop) == 0 {
				add("%s.shop: a shop needs at least one item", f)
			}
		default:
			add("%s.kind: %q is not one of escort, shop", f, n.Kind)
		}
		if len(n.Path) == 0 {
			add("%s.path: needs at least one point", f)
		}
		if len(n.Path) > MaxEntries {
			add("%s.path: more than %d points", f, MaxEntries)
		}
		for j, p := range n.Path {
			if !d.InBounds(p.X, p.Y) {
				add("%s.path[%d]: (%d,%d) outside %dx%d", f, j, p.X, p.Y, d.EffectiveWidth(), d.EffectiveHeight())
			}
		}
		items := map[string]bool{}
		for j, s := range n.Shop {
			if err := checkItem(fmt.Sprintf("%s.shop[%d].item", f, j), s.Item); err != nil {
				add("%w", err)
			} else if items[s.Item] {
				add("%s.shop[%d].item: duplicate %q", f, j, s.Item)
			}
			items[s.Item] = true
			if s.Price <= 0 || s.Price > MaxPrice {
				add("%s.shop[%d].price: must be in 1..%d, got %d", f, j, MaxPrice, s.Price)
			}
		}
	}
	if dg := d.Dungeon; dg != nil {
		if d.Kind == KindDungeon {
			// reported above
		} else {
			errs = append(errs, validateMonsters(d, "dungeon.monsters", dg.Monsters)...)
			if !hasBoss(dg.Monsters) {
				add("dungeon.monsters: a dungeon needs a boss")
			}
			if !d.InBounds(dg.Spawn.X, dg.Spawn.Y) {
				add("dungeon.spawn: (%d,%d) outside %dx%d", dg.Spawn.X, dg.Spawn.Y, d.EffectiveWidth(), d.EffectiveHeight())
			}
			if dg.MaxRooms < 0 {
				add("dungeon.max_rooms: must not be negative")
			}
		}
	}
	return errors.Join(errs...)
}

func hasBoss(ms []MonsterDef) bool {
	for _, m := range ms {
		if m.Boss {
			return true
		}
	}
	return false
}

func checkItem(what, item string) error {
	if err := validate.ItemName(item); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if item == player.GoldItem {
		return fmt.Errorf("%s: %q is gold, use gold_drop or a price", what, item)
	}
	return nil
}

func validateMonsters(d SceneDef, field string, ms []MonsterDef) []error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("scene %q: "+format, append([]any{d.ID}, args...)...))
	}
	if len(ms) > MaxEntries {
		add("%s: more than %d", field, MaxEntries)
	}
	seen := map[string]bool{}
	for i, m := range ms {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := checkID(f+".id", m.ID); err != nil {
			add("%w", err)
		} else if seen[m.ID] {
			add("%s.id: duplicate %q", f, m.ID)
		}
		seen[m.ID] = true
		if m.HP <= 0 || m.HP > MaxAmount {
			add("%s.hp: must be in 1..%d, got %d", f, MaxAmount, m.HP)
		}
		if m.Damage < 0 || m.Damage > MaxAmount {
			add("%s.damage: must be in 0..%d, got %d", f, MaxAmount, m.Damage)
		}
		if !d.InBounds(m.X, m.Y) {
			add("%s: position (%d,%d) outside %dx%d", f, m.X, m.Y, d.EffectiveWidth(), d.EffectiveHeight())
		}
		if m.GoldDrop < 0 || m.GoldDrop > MaxAmount {
			add("%s.gold_drop: must be in 0..%d, got %d", f, MaxAmount, m.GoldDrop)
		}
		if m.RespawnTicks == 0 && !m.Boss {
			add("%s.respawn_ticks: must be > 0 (only a boss may stay dead)", f)
		}
		for j, l := range m.Loot {
			if err := checkItem(fmt.Sprintf("%s.loot[%d].item", f, j), l.Item); err != nil {
				add("%w", err)
			}
			if l.Count <= 0 || l.Count > MaxAmount {
				add("%s.loot[%d].count: must be in 1..%d, got %d", f, j, MaxAmount, l.Count)
			}
		}
	}
	return errs
}

// DefaultScenes returns the reference world: a town with a shop, and a forest
// with Hogger, wolves, an escort NPC and a dungeon entrance. docs/game.md has
// the same as YAML (a test keeps them equal).
func DefaultScenes() []SceneDef {
	return []SceneDef{
		{
			ID: "town", Kind: KindTown, Seed: 1,
			Spawn: Point{X: 10, Y: 10},
			Exits: []string{"forest"},
			NPCs: []NPCDef{{
				ID: "merchant", Name: "Merchant Tilda", Kind: NPCShop,
				Path: []Point{{X: 12, Y: 10}},
				Shop: []ShopItem{{Item: "potion", Price: 10}, {Item: "shield", Price: 80}, {Item: "sword", Price: 100}},
			}},
		},
		{
			ID: "forest", Kind: KindForest, Seed: 2,
			Spawn: Point{X: 2, Y: 2},
			Exits: []string{"town"},
			Monsters: []MonsterDef{
				{
					ID: "hogger", Name: "Hogger", HP: 1000, Damage: 12, RespawnTicks: 600,
					X: 50, Y: 50, Boss: true,
					Loot:     []LootDef{{Item: "hogger_claw", Count: 1}, {Item: "potion", Count: 2}},
					GoldDrop: 200,
				},
				{ID: "wolf-1", Name: "Gray Wolf", HP: 60, Damage: 5, RespawnTicks: 100, X: 20, Y: 30, Loot: []LootDef{{Item: "wolf_pelt", Count: 1}}, GoldDrop: 5},
				{ID: "wolf-2", Name: "Gray Wolf", HP: 60, Damage: 5, RespawnTicks: 100, X: 24, Y: 33, Loot: []LootDef{{Item: "wolf_pelt", Count: 1}}, GoldDrop: 5},
				{ID: "wolf-3", Name: "Gray Wolf", HP: 60, Damage: 5, RespawnTicks: 100, X: 28, Y: 29, Loot: []LootDef{{Item: "wolf_pelt", Count: 1}}, GoldDrop: 5},
			},
			NPCs: []NPCDef{{
				ID: "farmer", Name: "Farmer Maybell", Kind: NPCEscort, StepTicks: 10,
				Path: []Point{{X: 5, Y: 5}, {X: 6, Y: 5}, {X: 7, Y: 5}, {X: 8, Y: 6}, {X: 9, Y: 7}, {X: 10, Y: 8}},
			}},
			Dungeon: &DungeonDef{
				Name:  "Kobold Mine",
				Spawn: Point{X: 1, Y: 1},
				Monsters: []MonsterDef{
					{ID: "kobold-1", Name: "Kobold Miner", HP: 40, Damage: 4, RespawnTicks: 300, X: 5, Y: 5, Loot: []LootDef{{Item: "candle", Count: 1}}, GoldDrop: 3},
					{ID: "kobold-king", Name: "Kobold King", HP: 300, Damage: 9, X: 9, Y: 9, Boss: true, Loot: []LootDef{{Item: "kings_crown", Count: 1}}, GoldDrop: 100},
				},
				MaxRooms: 16,
			},
		},
	}
}

// CatalogItems returns every item the world can produce, sorted: what its
// shops sell and its monsters (dungeon monsters too) drop. With gold, that
// is the game's item catalog (Catalog): a GM cannot give what the game
// could never make.
func CatalogItems(defs []SceneDef) []string {
	set := map[string]bool{}
	loot := func(ms []MonsterDef) {
		for _, m := range ms {
			for _, l := range m.Loot {
				set[l.Item] = true
			}
		}
	}
	for _, d := range defs {
		loot(d.Monsters)
		if d.Dungeon != nil {
			loot(d.Dungeon.Monsters)
		}
		for _, n := range d.NPCs {
			for _, it := range n.Shop {
				set[it.Item] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for it := range set {
		out = append(out, it)
	}
	sort.Strings(out)
	return out
}

// Catalog is validate.NewCatalog(CatalogItems(defs)): the items a GM may
// give or take, checked the same way by datasvr, the scenes and the CLI.
func Catalog(defs []SceneDef) (*validate.Catalog, error) {
	return validate.NewCatalog(CatalogItems(defs))
}
