package game

import "github.com/respawn-dev/respawn/internal/scenedef"

// The definitions a scene is built from live in package scenedef, so the
// configuration can hold and validate a world without linking the game.
// These names keep the game's API as it was.
type (
	Point      = scenedef.Point
	LootDef    = scenedef.LootDef
	MonsterDef = scenedef.MonsterDef
	ShopItem   = scenedef.ShopItem
	NPCDef     = scenedef.NPCDef
	DungeonDef = scenedef.DungeonDef
	SceneDef   = scenedef.SceneDef
)

// Scene kinds.
const (
	KindTown    = scenedef.KindTown
	KindForest  = scenedef.KindForest
	KindDungeon = scenedef.KindDungeon
)

// NPC kinds.
const (
	NPCEscort = scenedef.NPCEscort
	NPCShop   = scenedef.NPCShop
)

// DefaultScenes returns the reference world (scenedef.DefaultScenes).
func DefaultScenes() []SceneDef { return scenedef.DefaultScenes() }
