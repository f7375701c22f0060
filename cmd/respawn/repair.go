package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/scene"
)

// sceneRepairCommand is `respawn scene repair ID`: rebuild a corrupt scene
// (or dungeon room, ID scene/room) from the last good snapshot and the good
// prefix of its log, and say exactly what was dropped.
func sceneRepairCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair ID",
		Short: "Rebuild a corrupt scene from its last good snapshot and the good part of its log; says what was dropped",
		Long: "A scene whose event log is damaged mid-log is `corrupt` in `respawn scenes` and serves nothing.\n" +
			"repair rebuilds it from the snapshot and the events before the damage (or from an empty state when\n" +
			"the snapshot itself is lost), drops the events after the damage, and serves it again. Players whose\n" +
			"later saves were dropped are older than the data server's copy; the scene finds out at once and\n" +
			"takes the data server's copy. A dungeon room is repaired as SCENE/ROOM (forest/dungeon-2).",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			id, path := args[0], "/repair"
			if parent, _, room := strings.Cut(id, "/"); room {
				id, path = parent, "/repair?room="+url.QueryEscape(args[0])
			}
			var res scene.RepairResult
			if err := a.sceneCall("POST", id, path, nil, &res); err != nil {
				return fmt.Errorf("repair %s: %w", args[0], err)
			}
			if a.json {
				return a.printJSON(res)
			}
			d := res.Damage
			fmt.Fprintf(a.out, "scene %s repaired: rebuilt from %s\n", res.Scene, res.From)
			fmt.Fprintf(a.out, "damage: %s in slot %d", d.Kind, d.Slot)
			if d.Half != "" {
				fmt.Fprintf(a.out, " half %s offset %d", d.Half, d.Offset)
			}
			fmt.Fprintf(a.out, " (file offset %d): %s\n", d.FileOffset, d.Reason)
			if res.Dropped > 0 {
				fmt.Fprintf(a.out, "dropped: %d acknowledged events, seq %d..%d\n", res.Dropped, res.FirstDropped, res.LastDropped)
			} else {
				fmt.Fprintln(a.out, "dropped: no committed event could be found after the damage")
			}
			fmt.Fprintf(a.out, "players: %d checked against the data server (%s)\n", len(res.Players), strings.Join(res.Players, ", "))
			if len(res.Rooms) > 0 {
				fmt.Fprintf(a.out, "rooms: %s\n", strings.Join(res.Rooms, ", "))
			}
			return nil
		},
	}
	return cmd
}
