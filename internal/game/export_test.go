package game

import "testing"

// Internals the external tests (package game_test, which can import gamesim
// without a cycle) need. Compiled into test binaries only.

const EvRequest = evRequest

func DefByID(t testing.TB, id string) SceneDef { t.Helper(); return defByID(t, id) }

func EnterPlayer(t testing.TB, s *Scene, id string, gold int64, items map[string]int64) {
	t.Helper()
	enter(t, s, id, gold, items)
}

func CheckLedger(t testing.TB, s *Scene) { t.Helper(); checkLedger(t, s) }
