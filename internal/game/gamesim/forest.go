package gamesim

import (
	"fmt"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/player"
)

// ForestEvents emits the failover benchmarks' forest history to add:
// players p0… entering, then events events, a tenth of them ticks, a
// tenth attacks and the rest moves, each request the next seq of its
// player's session s0…. The e2e blip benchmarks prefill a live log with
// it; the scene package's replay benchmark replays the same history.
func ForestEvents(players, events int, add func(game.Event)) {
	seq := make([]uint64, players)
	for i := range players {
		add(game.Enter{Player: player.Data{ID: fmt.Sprintf("p%d", i), Name: fmt.Sprintf("Player %d", i), Gold: 100}, Version: 1})
	}
	for n := range events {
		i := n % players
		switch {
		case n%10 == 0:
			add(game.Tick{})
		case n%10 == 1:
			seq[i]++
			add(game.Request{Session: fmt.Sprintf("s%d", i), Player: fmt.Sprintf("p%d", i), Seq: seq[i], Op: game.Attack{Monster: "wolf-1"}})
		default:
			seq[i]++
			add(game.Request{Session: fmt.Sprintf("s%d", i), Player: fmt.Sprintf("p%d", i), Seq: seq[i], Op: game.Move{X: n % 90, Y: i % 90}})
		}
	}
}
