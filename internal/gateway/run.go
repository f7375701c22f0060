package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/secret"
)

// Run runs gateway instance (config.GatewayInstance; "" = the gateway of
// gateway.listen/websocket/admin) until ctx ends: what cmd/gateway calls.
func Run(ctx context.Context, cfg *config.Config, instance string, log *zap.Logger) error {
	gc, err := cfg.GatewayInstance(instance)
	if err != nil {
		return err
	}
	log = log.With(zap.String("gateway", gc.ID))
	sec, err := secret.Load(cfg.Secret, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if len(cfg.Processes) == 0 || len(cfg.Processes[0].Scenes) == 0 {
		return errors.New("gateway: no scene to bring new players into")
	}
	nc, err := bus.Connect(cfg.NATS.ClientURL(), "gateway-"+gc.ID, bus.RoleGateway, sec, log)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer nc.Close()
	var g *Gateway // set before the admin port serves
	adm, err := admin.New(gc.Admin, cfg, func() error { return g.Healthy() })
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	adm.SetVersion(VersionInfo())
	op, err := admin.OperatorToken(cfg)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	// The clients of this gateway move to the next one of the config when
	// it stops (an upgrade restarts gateways one at a time).
	moveTo, moveToWS := "", ""
	if gws := cfg.Gateways(); len(gws) > 1 {
		for i, in := range gws {
			if in.Name == gc.ID {
				next := gws[(i+1)%len(gws)]
				moveTo = next.Listen
				if next.WebSocket != "" {
					moveToWS = "ws://" + next.WebSocket + "/"
				}
			}
		}
	}
	g, err = New(Options{Config: gc, DefaultScene: cfg.Processes[0].Scenes[0], Secret: sec, OperatorToken: op, NATS: nc, Log: log,
		Registerer: adm.Registry, MoveTo: moveTo, MoveToWS: moveToWS})
	if err != nil {
		return err
	}
	if err := g.Start(); err != nil {
		return err
	}
	defer g.Shutdown()
	adm.Handle("GET /v1/info", func(w http.ResponseWriter, _ *http.Request) {
		st := g.rt.table.Stats() // the scene-table replica this gateway routes from
		admin.WriteJSON(w, http.StatusOK, map[string]any{"gateway": gc.ID, "listen": g.Addr(), "websocket": g.WebSocketAddr(),
			"connections": g.limits.count(), "sessions": g.reg.count(),
			"scene_table": map[string]any{"synced": st.Synced, "keys": st.Keys, "resyncs": st.Resyncs,
				"lag_p99_ms": st.LagP99.Seconds() * 1000, "lag_max_ms": st.LagMax.Seconds() * 1000}})
	})
	admErr := make(chan error, 1)
	go func() { admErr <- adm.Serve() }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = adm.Shutdown(sctx)
	}()
	select {
	case <-ctx.Done():
		// Drain while the admin port still answers: /healthz says
		// draining and the metrics can be read until the clients have gone.
		log.Info("gateway stopping: draining")
		g.Drain()
		return nil
	case err := <-admErr:
		return err
	}
}
