// Package gamesim owns the reference game's random world driver: a
// reproducible stream of events (players, combat, trades, travel, dungeon
// rooms, GM commands, duplicates and garbage) applied to real game.Scene
// values and routed the way the scene process routes effects. Determinism,
// replay and conservation tests use it.
//
// It is test support: only _test.go files import it, so no production binary
// links it (check with `go list -deps ./cmd/...`).
package gamesim
