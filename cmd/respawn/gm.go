package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/scene"
	"github.com/respawn-dev/respawn/internal/validate"
)

func gmCommands(a *app) []*cobra.Command {
	return []*cobra.Command{gmCommand(a), replayCheckCommand(a)}
}

// sceneCall calls the API of the process hosting scene id.
func (a *app) sceneCall(method, id, path string, body, out any) error {
	row, err := a.sceneRow(id)
	if err != nil {
		return err
	}
	if row.Addr == "" {
		return fmt.Errorf("scene %s is %s: no process serves it right now", id, row.State)
	}
	return a.adminCall(method, row.Addr, "/v1/scenes/"+url.PathEscape(id)+path, body, out)
}

func sceneInspectCommand(a *app) *cobra.Command {
	var room string
	cmd := &cobra.Command{
		Use:   "inspect ID",
		Short: "Show a scene's live state: tick, monsters, NPCs, players, rooms, recent events",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var v scene.InspectView
			path := "/inspect"
			if room != "" {
				path += "?room=" + url.QueryEscape(room)
			}
			if err := a.sceneCall("GET", args[0], path, nil, &v); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(v)
			}
			fmt.Fprintf(a.out, "scene %s  epoch %d  tick %d  players %d  rooms %v\n", v.Scene, v.Epoch, v.Tick, len(v.Players), v.Rooms)
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MONSTER\tNAME\tHP")
			for _, m := range v.Monsters {
				fmt.Fprintf(tw, "%s\t%s\t%d/%d\n", m.ID, m.Name, m.HP, m.MaxHP)
			}
			fmt.Fprintln(tw, "NPC\tNAME\tPOSITION")
			for _, n := range v.NPCs {
				fmt.Fprintf(tw, "%s\t%s\t(%d,%d) step %d\n", n.ID, n.Name, n.X, n.Y, n.PathIndex)
			}
			fmt.Fprintln(tw, "RECENT\tPLAYER\tEVENT")
			for _, e := range v.RecentEvents {
				fmt.Fprintf(tw, "%s %s\t%s\t%s\n", e.Time.Format("15:04:05.000"), e.Kind, e.Player, e.Summary)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&room, "room", "", "inspect a dungeon room of this scene (e.g. forest/dungeon-1)")
	return cmd
}

func gmCommand(a *app) *cobra.Command {
	gm := &cobra.Command{Use: "gm", Short: "Game-master commands; each is a logged event in its scene"}
	var d scene.DamageRequest
	var sceneID, room string
	var timeout time.Duration
	damage := &cobra.Command{
		Use:   "damage --scene ID --monster MONSTER_ID --amount N",
		Short: "Deal damage to a monster and print its new HP",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if d.ReqID == "" {
				d.ReqID = newReqID("gm")
			}
			var res game.MonsterResult
			path := "/gm/damage"
			if room != "" {
				path += "?room=" + url.QueryEscape(room)
			}
			// The scene may be restarting: retried with the same id, which
			// it applies once.
			err := a.retry(timeout, d.ReqID, func(context.Context) error {
				return a.sceneCall("POST", sceneID, path, d, &res)
			})
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.out, "%s: %d/%d HP%s\n", res.Monster, res.HP, res.MaxHP, map[bool]string{true: " (killed)"}[res.Killed])
			return nil
		},
	}
	damage.Flags().StringVar(&sceneID, "scene", "", "scene id")
	damage.Flags().StringVar(&d.Monster, "monster", "", "monster id")
	damage.Flags().StringVar(&room, "room", "", "a dungeon room of the scene (e.g. forest/dungeon-1)")
	damage.Flags().Int64Var(&d.Amount, "amount", 0, "damage to deal")
	damage.Flags().StringVar(&d.ReqID, "request-id", "", "request id (default: a new one); a repeated id is answered, not applied again")
	damage.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to keep retrying a temporarily unavailable scene")
	for _, f := range []string{"scene", "monster", "amount"} {
		_ = damage.MarkFlagRequired(f)
	}

	var r scene.RequestBody
	var reqScene, op string
	request := &cobra.Command{
		Use:   "request --scene ID --player P --seq N OP_JSON",
		Short: `Send a player request as the gateway would, e.g. '{"op":"attack","monster":"hogger"}'`,
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			op = args[0]
			if err := validate.PlayerID(r.Player); err != nil {
				return err
			}
			if !json.Valid([]byte(op)) {
				return fmt.Errorf("OP_JSON is not JSON: %s", op)
			}
			r.Op = json.RawMessage(op)
			if r.Session == "" {
				r.Session = "gm-" + r.Player
			}
			var res json.RawMessage
			if err := a.sceneCall("POST", reqScene, "/request", r, &res); err != nil {
				return err
			}
			_, err := fmt.Fprintln(a.out, string(res))
			return err
		},
	}
	request.Flags().StringVar(&reqScene, "scene", "", "scene id")
	request.Flags().StringVar(&r.Player, "player", "", "player id")
	request.Flags().StringVar(&r.Session, "session", "", "session id (default gm-PLAYER)")
	request.Flags().Uint64Var(&r.Seq, "seq", 0, "request sequence number (1, 2, ...); a repeated one is answered, not reapplied")
	for _, f := range []string{"scene", "player", "seq"} {
		_ = request.MarkFlagRequired(f)
	}
	var enterScene, enterPlayer string
	enter := &cobra.Command{
		Use:   "enter --scene ID --player P",
		Short: "Bring a stored player into a scene (loads it from datasvr and takes its lease)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := validate.PlayerID(enterPlayer); err != nil {
				return err
			}
			var pv game.PlayerView
			if err := a.sceneCall("POST", enterScene, "/enter", scene.EnterRequest{Player: enterPlayer}, &pv); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(pv)
			}
			fmt.Fprintf(a.out, "%s entered %s at (%d,%d) with %d gold\n", pv.ID, enterScene, pv.X, pv.Y, pv.Gold)
			return nil
		},
	}
	enter.Flags().StringVar(&enterScene, "scene", "", "scene id")
	enter.Flags().StringVar(&enterPlayer, "player", "", "player id")
	_ = enter.MarkFlagRequired("scene")
	_ = enter.MarkFlagRequired("player")
	gm.AddCommand(damage, request, enter)
	return gm
}

func replayCheckCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replay-check FILE",
		Short: "Replay every scene in an event log twice and compare state hashes (determinism check)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			checks, err := scene.ReplayCheck(args[0], cfg.Scenes)
			if err != nil {
				return err
			}
			bad := 0
			for _, c := range checks {
				if c.Skipped == "" && !c.Deterministic {
					bad++
				}
			}
			if a.json {
				if err := a.printJSON(checks); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SLOT\tEVENTS\tTICK\tDETERMINISTIC\tHASH")
				for _, c := range checks {
					if c.Skipped != "" {
						fmt.Fprintf(tw, "%s\t-\t-\tskipped\t%s\n", c.ID, c.Skipped)
						continue
					}
					fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%.16s\n", c.ID, c.Events, c.Tick, c.Deterministic, c.Hash)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d scenes replayed to different states", bad)
			}
			return nil
		},
	}
	return cmd
}
