package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/scenedef"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/validate"
)

// playerCommands are the GM commands on player data: they talk to datasvr
// (and, for save-all, to every scene) over NATS request-reply.
func playerCommands(a *app) []*cobra.Command {
	p := &cobra.Command{Use: "player", Short: "Create, inspect and change players (GM)"}
	p.AddCommand(playerCreateCmd(a), playerShowCmd(a), playerGiveCmd(a, 1), playerGiveCmd(a, -1), playerKickCmd(a))
	return []*cobra.Command{p, saveAllCmd(a)}
}

// natsConn connects to the cluster's NATS (cfg.NATS.ClientURL()) as role:
// bus.RoleOperator for commands that only look, bus.RoleGM for those that
// change player data. The password comes from the cluster secret (config
// `secret`, RESPAWN_SECRET, or <data_dir>/secret).
func (a *app) natsConn(role bus.Role) (*nats.Conn, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	// Never create a secret here: a new one would only be refused.
	if cfg.Secret == "" {
		path := filepath.Join(cfg.DataDir, secret.FileName)
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no cluster secret (RESPAWN_SECRET) and none at %s to log in to NATS with (use the cluster's --data-dir or config): %w", path, err)
		}
	}
	sec, err := secret.Load(cfg.Secret, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	auth, err := bus.Auth(role, sec)
	if err != nil {
		return nil, err
	}
	url := cfg.NATS.ClientURL()
	nc, err := nats.Connect(url, append(auth, nats.Name("respawn-cli"), nats.Timeout(5*time.Second))...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s as %s (is datasvr running? is this the cluster's data_dir or secret?): %w", url, role, err)
	}
	return nc, nil
}

// withDatasvr runs fn with an admin client connected as role; the timeout
// covers the whole command. The client carries the operator token when the
// CLI can find it (create, give, take and kick need it; show does not).
func (a *app) withDatasvr(role bus.Role, timeout time.Duration, fn func(ctx context.Context, nc *nats.Conn, c *dataclient.AdminClient) error) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	tok, tokErr := operatorToken(cfg)
	nc, err := a.natsConn(role)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = fn(ctx, nc, dataclient.NewAdminClient(nc, tok))
	if errors.Is(err, dataclient.ErrForbidden) && tokErr != nil {
		return fmt.Errorf("%w (%v)", err, tokErr)
	}
	return err
}

func playerCreateCmd(a *app) *cobra.Command {
	var name, reqID string
	cmd := &cobra.Command{
		Use:   "create ID",
		Short: "Create a player (a GM test character)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := validate.PlayerID(args[0]); err != nil {
				return err
			}
			if name != "" {
				if err := validate.PlayerName(name); err != nil {
					return err
				}
			}
			if reqID == "" {
				reqID = newReqID("create")
			}
			return a.withDatasvr(bus.RoleGM, 35*time.Second, func(_ context.Context, _ *nats.Conn, c *dataclient.AdminClient) error {
				err := a.retry(30*time.Second, reqID, func(ctx context.Context) error {
					return c.CreateReq(ctx, reqID, args[0], name)
				})
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(map[string]string{"player": args[0], "name": name, "request_id": reqID})
				}
				fmt.Fprintf(a.out, "created player %s\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "character name (default: the id)")
	reqIDFlag(cmd, &reqID)
	return cmd
}

// playerShow is what `player show --json` prints.
type playerShow struct {
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Version uint64            `json:"version"`
	Gold    int64             `json:"gold"`
	Items   map[string]int64  `json:"items"`
	Owner   *dataclient.Owner `json:"owner"`
	Online  bool              `json:"online"`
	// InDatabase is false while the newest version is only in datasvr's
	// journal (durable, not yet flushed).
	InDatabase bool `json:"in_database"`
}

func playerShowCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a player's newest acknowledged data",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return a.withDatasvr(bus.RoleOperator, 15*time.Second, func(ctx context.Context, _ *nats.Conn, c *dataclient.AdminClient) error {
				r, err := c.Show(ctx, args[0])
				if err != nil {
					return err
				}
				out := playerShow{ID: r.ID, Name: r.Name, Version: r.Version, Gold: r.Gold, Items: r.Items,
					Owner: r.Owner, Online: r.Online, InDatabase: !r.Dirty}
				if out.Items == nil {
					out.Items = map[string]int64{}
				}
				if a.json {
					return a.printJSON(out)
				}
				owner := "none (offline)"
				if r.Owner != nil {
					owner = fmt.Sprintf("scene %s epoch %d", r.Owner.Scene, r.Owner.Epoch)
					if r.Owner.Epoch == 0 {
						owner += " (handed over, not yet loaded)"
					}
				}
				fmt.Fprintf(a.out, "player   %s (%s)\nversion  %d\nowner    %s\ngold     %d\n", r.ID, r.Name, r.Version, owner, r.Gold)
				names := make([]string, 0, len(r.Items))
				for k := range r.Items {
					names = append(names, k)
				}
				sort.Strings(names)
				for _, k := range names {
					fmt.Fprintf(a.out, "item     %s x%d\n", k, r.Items[k])
				}
				return nil
			})
		},
	}
	return cmd
}

func playerGiveCmd(a *app, sign int64) *cobra.Command {
	verb, short := "give", "Give a player COUNT of ITEM (ITEM gold means gold)"
	if sign < 0 {
		verb, short = "take", "Take COUNT of ITEM from a player (ITEM gold means gold)"
	}
	var reqID string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   verb + " ID ITEM COUNT",
		Short: short,
		Long: short + ".\n\nAn online player's owner scene applies the change as a logged event; an offline\n" +
			"player is changed in datasvr. Either way the command returns once the change is durable.\n\n" +
			"A temporarily unavailable answer is retried with the same request id until --timeout; the\n" +
			"change is applied at most once however often that id is sent (also with --request-id by hand).",
		Args: cobra.ExactArgs(3),
		RunE: func(_ *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[2], 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("COUNT must be a positive integer, got %s", validate.Quote(args[2]))
			}
			// The rules datasvr and the scenes apply, checked here first
			// for a quick, clear answer.
			cfg, err := a.config()
			if err != nil {
				return err
			}
			catalog, err := scenedef.Catalog(cfg.Scenes)
			if err != nil {
				return err
			}
			for _, err := range []error{validate.PlayerID(args[0]), catalog.Item(args[1]), validate.Count(sign * n)} {
				if err != nil {
					return err
				}
			}
			if reqID == "" {
				reqID = newReqID("gm")
			}
			return a.withDatasvr(bus.RoleGM, timeout+5*time.Second, func(_ context.Context, _ *nats.Conn, c *dataclient.AdminClient) error {
				var rep dataclient.GiveReply
				err := a.retry(timeout, reqID, func(ctx context.Context) error {
					var err error
					rep, err = c.Give(ctx, reqID, args[0], args[1], sign*n)
					return err
				})
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(map[string]any{"player": args[0], "item": args[1], "count": rep.Count, "version": rep.Version, "request_id": reqID})
				}
				fmt.Fprintf(a.out, "player %s now has %d %s (version %d, request %s)\n", args[0], rep.Count, args[1], rep.Version, reqID)
				return nil
			})
		},
	}
	reqIDFlag(cmd, &reqID)
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to keep retrying a temporarily unavailable answer")
	return cmd
}

func reqIDFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "request-id", "", "request id (default: a new one); a repeated id is answered with its original result, not applied again")
}

func playerKickCmd(a *app) *cobra.Command {
	var force bool
	var reqID string
	cmd := &cobra.Command{
		Use:   "kick ID",
		Short: "Have the player's scene save and drop them",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if reqID == "" {
				reqID = newReqID("kick")
			}
			return a.withDatasvr(bus.RoleGM, 35*time.Second, func(_ context.Context, _ *nats.Conn, c *dataclient.AdminClient) error {
				err := a.retry(30*time.Second, reqID, func(ctx context.Context) error {
					return c.Kick(ctx, reqID, args[0], force)
				})
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(map[string]any{"player": args[0], "kicked": true})
				}
				fmt.Fprintf(a.out, "player %s kicked\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "drop the lease in datasvr if the owner scene does not answer (only when it is dead)")
	reqIDFlag(cmd, &reqID)
	return cmd
}

func saveAllCmd(a *app) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "save-all",
		Short: "Every scene saves its players now, then datasvr flushes to the database",
		Long: "Asks every scene in the config to save all dirty players and waits for their saves to be\n" +
			"acknowledged, then asks datasvr to flush; returns once the database holds everything.\n" +
			"Scenes that do not answer within --timeout are reported and make the command fail.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			rep, err := a.saveAll(timeout)
			if rep != nil {
				if perr := a.printSaveAll(rep); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for each scene")
	return cmd
}

// SaveAllReport is what save-all (and shutdown) did, for --json.
type SaveAllReport struct {
	Scenes  []SceneSave `json:"scenes"`
	Flushed int         `json:"datasvr_flushed_players"`
	Err     string      `json:"error,omitempty"`
}

// SceneSave is one scene's answer to save-all.
type SceneSave struct {
	Scene   string `json:"scene"`
	Players int    `json:"players_saved"`
	Error   string `json:"error,omitempty"`
}

func (a *app) printSaveAll(rep *SaveAllReport) error {
	if a.json {
		return a.printJSON(rep)
	}
	for _, s := range rep.Scenes {
		if s.Error != "" {
			fmt.Fprintf(a.out, "scene %-16s FAILED: %s\n", s.Scene, s.Error)
		} else {
			fmt.Fprintf(a.out, "scene %-16s saved %d players\n", s.Scene, s.Players)
		}
	}
	if rep.Err == "" || rep.Flushed > 0 {
		fmt.Fprintf(a.out, "datasvr flushed %d players to the database\n", rep.Flushed)
	}
	return nil
}

// saveAll asks every scene to save all dirty players, waits for their saves
// to be acknowledged, then has datasvr flush to the database. The report is
// non-nil once the scenes were asked, even when it fails.
func (a *app) saveAll(timeout time.Duration) (*SaveAllReport, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	var report *SaveAllReport
	err = a.withDatasvr(bus.RoleGM, timeout+30*time.Second, func(ctx context.Context, nc *nats.Conn, c *dataclient.AdminClient) error {
		var scenes []string
		for _, p := range cfg.Processes {
			scenes = append(scenes, p.Scenes...)
		}
		sort.Strings(scenes)
		report = &SaveAllReport{Scenes: make([]SceneSave, len(scenes))}
		replies := report.Scenes
		var failed []string
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, sc := range scenes {
			wg.Go(func() {
				sctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				msg, err := nc.RequestWithContext(sctx, dataclient.SceneSaveAllSubject(sc), mustJSON(dataclient.SaveAllRequest{ReqID: "saveall-" + strconv.FormatInt(time.Now().UnixNano(), 36)}))
				var rep dataclient.SaveAllReply
				if err == nil {
					err = jsonDecode(msg.Data, &rep)
				}
				if err == nil && rep.Error != "" {
					err = errors.New(rep.Error)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
						err = fmt.Errorf("did not answer within %s", timeout)
					}
					replies[i] = SceneSave{Scene: sc, Error: err.Error()}
					failed = append(failed, sc)
					return
				}
				replies[i] = SceneSave{Scene: sc, Players: rep.Players}
			})
		}
		wg.Wait()
		n, err := c.Flush(ctx)
		if err != nil {
			report.Err = err.Error()
			return fmt.Errorf("datasvr flush: %w (is datasvr running and its database reachable? `respawn status`)", err)
		}
		report.Flushed = n
		if len(failed) > 0 {
			sort.Strings(failed)
			report.Err = "scenes did not save: " + strings.Join(failed, ", ")
			return fmt.Errorf("save-all: %d scene(s) did not save: %s (see `respawn scenes`; retry with a longer --timeout)", len(failed), strings.Join(failed, ", "))
		}
		return nil
	})
	return report, err
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err)) // only our own plain structs get here
	}
	return b
}

func jsonDecode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("bad reply: %w", err)
	}
	return nil
}
