// Package config loads the cluster's settings: built-in defaults, then
// configs/world.yaml (strictly: unknown keys are errors), then RESPAWN_*
// environment variables, then command-line flags. Every daemon and the CLI
// load it the same way, so `respawn config validate` sees exactly what a
// daemon would see at start.
package config

import (
	"fmt"
	"net"
	"time"

	"github.com/respawn-dev/respawn/internal/scenedef"
	"github.com/respawn-dev/respawn/internal/validate"
)

// Config is the whole cluster configuration. Each top-level key is one
// section of configs/world.yaml.
type Config struct {
	// DataDir is where the cluster writes: databases, journals, epochs, logs.
	DataDir string `yaml:"data_dir"`
	// ShmDir holds the scenes' shared-memory event logs.
	ShmDir string `yaml:"shm_dir"`
	// BinDir is where `respawn up` and the world manager find the binaries;
	// empty means the directory of the running executable.
	BinDir string `yaml:"bin_dir"`
	// Secret is the cluster secret (internal/secret). Empty: the file
	// <data_dir>/secret, created with a random secret when missing.
	Secret string `yaml:"secret"`

	Log      Log      `yaml:"log"`
	Admin    Admin    `yaml:"admin"`
	NATS     NATS     `yaml:"nats"`
	WorldMgr WorldMgr `yaml:"worldmgr"`
	Scene    Scene    `yaml:"scene"`
	Datasvr  Datasvr  `yaml:"datasvr"`
	Gateway  Gateway  `yaml:"gateway"`

	// Processes says which scene process hosts which scenes.
	Processes []Process `yaml:"processes"`
	// Scenes is the world's content: monsters, NPCs, shops, dungeons.
	Scenes []scenedef.SceneDef `yaml:"scenes"`

	// Source is the file this configuration was read from ("" for defaults).
	Source string `yaml:"-"`
}

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // auto (console on a terminal, JSON otherwise), console, json
}

// Admin configures every HTTP server of the cluster: each daemon's admin
// port (metrics, /healthz, pprof, its API) and each scene process's service
// address.
type Admin struct {
	// Token is the operator token: the bearer token every request that
	// changes state (and pprof) must carry. Empty: the token derived from the
	// cluster secret (internal/secret), which the CLI derives the same way.
	// An admin port bound beyond loopback refuses to start without an
	// explicit token, and then wants it on every request but /healthz.
	Token string `yaml:"token"`
	// ReadHeaderTimeout bounds reading a request's headers, including the
	// wait for the first request on a new connection.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds handling a request and writing its answer; it must
	// exceed the slowest API call (a GM give waits up to 20 s for the owner
	// scene's durable save) and any pprof profile asked for.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes a keep-alive connection with no request for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's header block.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes bounds a request body; a bigger one gets 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxConns bounds the open connections of one server; beyond it new
	// connections wait in the kernel's accept queue.
	MaxConns int `yaml:"max_conns"`
}

// NATS says where the message bus is.
type NATS struct {
	// URL of an external NATS server or cluster. Empty: datasvr embeds one
	// listening on Listen, and everyone else connects there.
	URL    string `yaml:"url"`
	Listen string `yaml:"listen"`
}

// WorldMgr configures the world manager and the control protocol.
type WorldMgr struct {
	Listen            string        `yaml:"listen"` // scene control TCP
	Admin             string        `yaml:"admin"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	HeartbeatTimeout  time.Duration `yaml:"heartbeat_timeout"`
	// RecoveryWindow is how long a restarted manager collects scene reports
	// before respawning scenes nobody reported. 0 means 2 × HeartbeatTimeout.
	RecoveryWindow time.Duration `yaml:"recovery_window"`
	// StartTimeout bounds how long a spawned scene process may take to
	// replay its log and register before it is killed and counted a crash.
	StartTimeout time.Duration `yaml:"start_timeout"`
	Restart      Restart       `yaml:"restart"`
	// Standby keeps one warm spare per scene process: a scene process
	// started with the next epoch that has done everything but open the
	// event log, and waits for its lock. When the primary exits (a crash,
	// a kill, a handoff) the spare takes over at once: no detection, exec
	// or runtime start on the way (docs/operations.md). Off by default: it
	// doubles the scene processes.
	Standby bool `yaml:"standby"`
}

// Restart is an OTP-style restart policy, shared by the world manager (for
// scene processes) and `respawn up` (for daemons).
type Restart struct {
	// MaxRestarts within Window marks the child failed: more than this many
	// restarts in Window and it is not restarted again.
	MaxRestarts int           `yaml:"max_restarts"`
	Window      time.Duration `yaml:"window"`
	// The first restart in a window is immediate; later ones wait
	// BackoffInitial, doubling up to BackoffMax.
	BackoffInitial time.Duration `yaml:"backoff_initial"`
	BackoffMax     time.Duration `yaml:"backoff_max"`
}

// Scene configures scene processes.
type Scene struct {
	// Host is the address scene processes listen on (random ports).
	Host     string `yaml:"host"`
	TickHz   int    `yaml:"tick_hz"`
	ShmSlots int    `yaml:"shm_slots"`
	// ShmSlotSize is the bytes per log slot (both halves).
	ShmSlotSize int `yaml:"shm_slot_size"`
	// SnapshotEvents and SnapshotInterval bound a slot's events since its
	// last snapshot.
	SnapshotEvents   int           `yaml:"snapshot_events"`
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// FlushInterval is how often the log is msync'ed: a machine crash loses
	// at most this much; a process crash loses nothing.
	FlushInterval time.Duration `yaml:"flush_interval"`
	SaveInterval  time.Duration `yaml:"save_interval"`
	// The gateway link (docs/link.md): the largest frame, unanswered
	// requests per connection, and gateway connections per process.
	LinkMaxFrame    int `yaml:"link_max_frame"`
	LinkMaxInflight int `yaml:"link_max_inflight"`
	LinkMaxConns    int `yaml:"link_max_conns"`
	// Procs is how many threads run a scene process's Go code at once
	// (GOMAXPROCS); 0 is one per scene the process hosts, at most the
	// CPUs. A GOMAXPROCS environment variable overrides it.
	Procs int `yaml:"procs"`
}

// Datasvr configures the data server.
type Datasvr struct {
	Admin string `yaml:"admin"`
	// Database is a DSN: sqlite:PATH (relative to data_dir), postgres://…,
	// or mysql://user:pass@tcp(host:port)/db.
	Database      string        `yaml:"database"`
	FlushInterval time.Duration `yaml:"flush_interval"`
	// FlushBatch is the most players one database transaction of a flush
	// writes; a larger flush is several transactions in a row.
	FlushBatch int `yaml:"flush_batch"`
	// GroupCommit is the longest a save waits for the journal's fsync batch.
	GroupCommit time.Duration `yaml:"group_commit"`
	// JournalMaxBytes bounds the journal; beyond it saves are refused.
	JournalMaxBytes int64 `yaml:"journal_max_bytes"`
	// CacheMaxBytes bounds cached offline players.
	CacheMaxBytes int64 `yaml:"cache_max_bytes"`
}

// Gateway configures the client gateways. Listen, WebSocket and Admin are
// the addresses of a gateway started without --instance; Instances lists
// the gateways `respawn up` starts (empty: one, named ID, on those
// addresses). Every limit applies to each gateway and to each client.
type Gateway struct {
	ID        string            `yaml:"id"` // this gateway's name (logs, metrics, session announcements)
	Listen    string            `yaml:"listen"`
	WebSocket string            `yaml:"websocket"` // "" disables WebSocket
	Admin     string            `yaml:"admin"`
	Instances []GatewayInstance `yaml:"instances"`

	// MaxFrame bounds one frame, header included, in both directions.
	MaxFrame int `yaml:"max_frame"`
	// Window is how many unanswered requests one session may have.
	Window int `yaml:"window"`
	// Rate and Burst are the per-session request rate limit (requests/s).
	Rate  int `yaml:"rate"`
	Burst int `yaml:"burst"`
	// FloodLimit closes a client after this many requests in a row refused
	// for rate.
	FloodLimit int `yaml:"flood_limit"`
	// LoginTimeout bounds HELLO + LOGIN/RESUME from the connection's start
	// (slowloris: a client that trickles bytes is closed at this deadline).
	LoginTimeout time.Duration `yaml:"login_timeout"`
	// IdleTimeout closes a logged-in connection that sent nothing for this
	// long (clients PING before it); it is also the per-frame read deadline.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// WriteTimeout bounds one write to a client.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// OutQueue bounds the frames waiting to be written to one client; a
	// client that lets it fill is cut (slow_consumer), alone.
	OutQueue int `yaml:"out_queue"`
	// MaxConns and MaxConnsPerIP bound connections (TCP and WebSocket
	// together) per gateway and per client address.
	MaxConns      int `yaml:"max_conns"`
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// SessionTTL is how long a session whose connection dropped waits for
	// a RESUME before the player is saved and taken out of the scene.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// HoldTimeout, HoldMax and HoldMaxBytes bound the requests held for a
	// scene process that is down (per process): after HoldTimeout a held
	// request is answered `unavailable` (retryable); beyond HoldMax
	// requests or HoldMaxBytes bytes new ones are answered so at once.
	HoldTimeout  time.Duration `yaml:"hold_timeout"`
	HoldMax      int           `yaml:"hold_max"`
	HoldMaxBytes int64         `yaml:"hold_max_bytes"`
	// PushInterval batches nearby players' positions; ViewRadius (in map
	// units) is how far a client sees; MaxPositions bounds one batch.
	PushInterval time.Duration `yaml:"push_interval"`
	ViewRadius   int           `yaml:"view_radius"`
	MaxPositions int           `yaml:"max_positions"`
	// PushHold lets a client's positions batch wait up to this long for
	// the next frame written to that client (a reply, as a rule) and go
	// out in the same write; 0 sends every batch at once. Below
	// PushInterval.
	PushHold time.Duration `yaml:"push_hold"`
	// LinkConns is the persistent connections to each scene process.
	LinkConns int `yaml:"link_conns"`
	// DrainTimeout bounds a stopping gateway's drain: it tells each client
	// to move (CLOSE shutting_down) once its request in flight is answered,
	// and exits when every client has gone or this passes.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// DrainRate paces those moves (clients per second), so thousands of
	// clients do not hit the next gateway in the same millisecond; more
	// clients than DrainRate × DrainTimeout/2 are moved faster, all within
	// the first half of the drain.
	DrainRate int `yaml:"drain_rate"`
}

// GatewayInstance is one gateway of several.
type GatewayInstance struct {
	Name      string `yaml:"name"`
	Listen    string `yaml:"listen"`
	WebSocket string `yaml:"websocket"`
	Admin     string `yaml:"admin"`
}

// Gateways returns every gateway `respawn up` starts and `respawn status`
// shows: Instances, or the single one of Listen/WebSocket/Admin.
func (c *Config) Gateways() []GatewayInstance {
	if len(c.Gateway.Instances) > 0 {
		return c.Gateway.Instances
	}
	g := c.Gateway
	return []GatewayInstance{{Name: g.ID, Listen: g.Listen, WebSocket: g.WebSocket, Admin: g.Admin}}
}

// GatewayInstance returns the settings of gateway name ("" = the one of
// Listen/WebSocket/Admin): the shared limits with that instance's id and
// addresses.
func (c *Config) GatewayInstance(name string) (Gateway, error) {
	g := c.Gateway
	if name == "" {
		return g, nil
	}
	for _, in := range c.Gateway.Instances {
		if in.Name == name {
			g.ID, g.Listen, g.WebSocket, g.Admin = in.Name, in.Listen, in.WebSocket, in.Admin
			return g, nil
		}
	}
	return g, fmt.Errorf("gateway.instances: no gateway named %q", name)
}

// Process is one scene process and the scenes it hosts.
type Process struct {
	Name   string   `yaml:"name"`
	Scenes []string `yaml:"scenes"`
}

// MinShmSlotSize is the smallest log slot accepted: half of it holds a
// snapshot, and a full scene's session records alone may take
// game.SessionSnapshotBound() of that (a game test keeps the two in step).
const MinShmSlotSize = 16 << 20

// Default returns the built-in defaults: a working one-machine cluster.
func Default() Config {
	return Config{
		DataDir: "./data",
		ShmDir:  "/dev/shm/respawn",
		Log:     Log{Level: "info", Format: "auto"},
		Admin: Admin{
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
			MaxBodyBytes:      1 << 20,
			MaxConns:          1024,
		},
		NATS: NATS{Listen: "127.0.0.1:7422"},
		WorldMgr: WorldMgr{
			Listen:            "127.0.0.1:7100",
			Admin:             "127.0.0.1:7101",
			HeartbeatInterval: 200 * time.Millisecond,
			HeartbeatTimeout:  time.Second,
			StartTimeout:      15 * time.Second,
			Restart: Restart{
				MaxRestarts:    5,
				Window:         30 * time.Second,
				BackoffInitial: 50 * time.Millisecond,
				BackoffMax:     2 * time.Second,
			},
		},
		Scene: Scene{
			Host:             "127.0.0.1",
			TickHz:           10,
			ShmSlots:         64,
			ShmSlotSize:      16 << 20,
			SnapshotEvents:   10000,
			SnapshotInterval: 30 * time.Second,
			FlushInterval:    100 * time.Millisecond,
			SaveInterval:     time.Second,
			LinkMaxFrame:     1 << 20,
			LinkMaxInflight:  4096,
			LinkMaxConns:     64,
		},
		Datasvr: Datasvr{
			Admin:           "127.0.0.1:7301",
			Database:        "sqlite:respawn.db",
			FlushInterval:   5 * time.Second,
			FlushBatch:      2000,
			GroupCommit:     2 * time.Millisecond,
			JournalMaxBytes: 1 << 30,
			CacheMaxBytes:   256 << 20,
		},
		Gateway: Gateway{
			ID:            "gateway",
			Listen:        "127.0.0.1:7000",
			WebSocket:     "127.0.0.1:7001",
			Admin:         "127.0.0.1:7201",
			MaxFrame:      64 << 10,
			Window:        16,
			Rate:          100,
			Burst:         200,
			FloodLimit:    1000,
			LoginTimeout:  5 * time.Second,
			IdleTimeout:   30 * time.Second,
			WriteTimeout:  5 * time.Second,
			OutQueue:      1024,
			MaxConns:      20000,
			MaxConnsPerIP: 4096,
			SessionTTL:    60 * time.Second,
			HoldTimeout:   10 * time.Second,
			HoldMax:       20000,
			HoldMaxBytes:  32 << 20,
			PushInterval:  100 * time.Millisecond,
			ViewRadius:    30,
			MaxPositions:  64,
			PushHold:      50 * time.Millisecond,
			LinkConns:     1,
			DrainTimeout:  10 * time.Second,
			DrainRate:     1000,
		},
		Processes: []Process{
			{Name: "town", Scenes: []string{"town"}},
			{Name: "forest", Scenes: []string{"forest"}},
		},
		Scenes: scenedef.DefaultScenes(),
	}
}

// SceneDef returns the definition of scene id.
func (c *Config) SceneDef(id string) (scenedef.SceneDef, bool) {
	for _, d := range c.Scenes {
		if d.ID == id {
			return d, true
		}
	}
	return scenedef.SceneDef{}, false
}

// EffectiveRecoveryWindow returns the recovery window with its default applied.
func (w WorldMgr) EffectiveRecoveryWindow() time.Duration {
	if w.RecoveryWindow > 0 {
		return w.RecoveryWindow
	}
	return 2 * w.HeartbeatTimeout
}

// ProcessOf returns the process hosting scene id.
func (c *Config) ProcessOf(sceneID string) (Process, bool) {
	for _, p := range c.Processes {
		for _, s := range p.Scenes {
			if s == sceneID {
				return p, true
			}
		}
	}
	return Process{}, false
}

// Process returns the process named name.
func (c *Config) Process(name string) (Process, bool) {
	for _, p := range c.Processes {
		if p.Name == name {
			return p, true
		}
	}
	return Process{}, false
}

// Validate checks the configuration and names the key of the first problem.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if c.ShmDir == "" {
		bad("shm_dir", "must not be empty")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "console", "json":
	default:
		bad("log.format", "%q is not one of auto, console, json", c.Log.Format)
	}
	addr := func(key, v string, optional bool) {
		if v == "" && optional {
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(key, "%q is not host:port: %v", v, err)
		}
	}
	addr("nats.listen", c.NATS.Listen, c.NATS.URL != "")
	addr("worldmgr.listen", c.WorldMgr.Listen, false)
	addr("worldmgr.admin", c.WorldMgr.Admin, false)
	addr("datasvr.admin", c.Datasvr.Admin, false)
	addr("gateway.listen", c.Gateway.Listen, false)
	addr("gateway.websocket", c.Gateway.WebSocket, true)
	addr("gateway.admin", c.Gateway.Admin, false)
	a := c.Admin
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"admin.read_header_timeout", a.ReadHeaderTimeout}, {"admin.read_timeout", a.ReadTimeout},
		{"admin.write_timeout", a.WriteTimeout}, {"admin.idle_timeout", a.IdleTimeout}} {
		if d.v <= 0 {
			bad(d.key, "must be positive, got %s", d.v)
		}
	}
	if a.MaxHeaderBytes < 1<<10 || a.MaxHeaderBytes > 1<<20 {
		bad("admin.max_header_bytes", "must be between 1024 and 1048576, got %d", a.MaxHeaderBytes)
	}
	if a.MaxBodyBytes < 1<<10 || a.MaxBodyBytes > 64<<20 {
		bad("admin.max_body_bytes", "must be between 1024 and 67108864, got %d", a.MaxBodyBytes)
	}
	if a.MaxConns < 1 || a.MaxConns > 1<<16 {
		bad("admin.max_conns", "must be between 1 and 65536, got %d", a.MaxConns)
	}
	c.validateGateway(bad, addr)
	w := c.WorldMgr
	if w.HeartbeatInterval <= 0 {
		bad("worldmgr.heartbeat_interval", "must be positive, got %s", w.HeartbeatInterval)
	}
	if w.HeartbeatTimeout <= w.HeartbeatInterval {
		bad("worldmgr.heartbeat_timeout", "must be greater than worldmgr.heartbeat_interval (%s), got %s", w.HeartbeatInterval, w.HeartbeatTimeout)
	}
	if w.RecoveryWindow < 0 {
		bad("worldmgr.recovery_window", "must not be negative")
	}
	if w.StartTimeout <= 0 {
		bad("worldmgr.start_timeout", "must be positive")
	}
	if w.Restart.MaxRestarts < 0 {
		bad("worldmgr.restart.max_restarts", "must not be negative")
	}
	if w.Restart.Window <= 0 {
		bad("worldmgr.restart.window", "must be positive")
	}
	if w.Restart.BackoffInitial < 0 || w.Restart.BackoffMax < w.Restart.BackoffInitial {
		bad("worldmgr.restart.backoff_max", "must be at least worldmgr.restart.backoff_initial")
	}
	s := c.Scene
	if s.TickHz < 1 || s.TickHz > 1000 {
		bad("scene.tick_hz", "must be between 1 and 1000, got %d", s.TickHz)
	}
	if s.ShmSlots < 1 {
		bad("scene.shm_slots", "must be at least 1")
	}
	if s.ShmSlotSize < MinShmSlotSize {
		bad("scene.shm_slot_size", "must be at least %d (a full scene's session records alone may take 7 MB of a snapshot), got %d", MinShmSlotSize, s.ShmSlotSize)
	}
	if s.LinkMaxFrame < 4<<10 || s.LinkMaxFrame > 64<<20 {
		bad("scene.link_max_frame", "must be between 4096 and 67108864, got %d", s.LinkMaxFrame)
	}
	if s.LinkMaxInflight < 1 || s.LinkMaxInflight > 1<<20 {
		bad("scene.link_max_inflight", "must be between 1 and 1048576, got %d", s.LinkMaxInflight)
	}
	if s.LinkMaxConns < 1 {
		bad("scene.link_max_conns", "must be at least 1, got %d", s.LinkMaxConns)
	}
	if s.SnapshotEvents < 1 {
		bad("scene.snapshot_events", "must be at least 1")
	}
	if s.Procs < 0 || s.Procs > 1024 {
		bad("scene.procs", "must be between 0 (one per hosted scene) and 1024, got %d", s.Procs)
	}
	if s.FlushInterval <= 0 {
		bad("scene.flush_interval", "must be positive")
	}
	if s.SaveInterval <= 0 {
		bad("scene.save_interval", "must be positive")
	}
	if c.Datasvr.Database == "" {
		bad("datasvr.database", "must not be empty")
	}
	if c.Datasvr.FlushInterval <= 0 {
		bad("datasvr.flush_interval", "must be positive")
	}
	if c.Datasvr.FlushBatch < 1 || c.Datasvr.FlushBatch > 100000 {
		bad("datasvr.flush_batch", "%d: must be 1-100000", c.Datasvr.FlushBatch)
	}
	if len(c.Processes) == 0 {
		bad("processes", "at least one scene process is needed")
	}
	names := map[string]bool{}
	scenes := map[string]string{}
	for i, p := range c.Processes {
		key := fmt.Sprintf("processes[%d]", i)
		if !validName(p.Name) {
			bad(key+".name", "%q must be 1-32 characters of a-z, 0-9, '-' or '_'", p.Name)
		}
		if names[p.Name] {
			bad(key+".name", "%q is used twice", p.Name)
		}
		names[p.Name] = true
		if len(p.Scenes) == 0 {
			bad(key+".scenes", "process %q hosts no scene", p.Name)
		}
		// Every scene and each of its possible dungeon rooms needs a log
		// slot: size the log so a room can never fail for want of one.
		need := 0
		for _, sc := range p.Scenes {
			if d, ok := c.SceneDef(sc); ok {
				need += d.Slots()
			}
		}
		if need > c.Scene.ShmSlots {
			bad("scene.shm_slots", "process %q can need %d log slots (its scenes and their max dungeon rooms), only %d configured", p.Name, need, c.Scene.ShmSlots)
		}
		for j, sc := range p.Scenes {
			if !validName(sc) {
				bad(fmt.Sprintf("%s.scenes[%d]", key, j), "%q must be 1-32 characters of a-z, 0-9, '-' or '_'", sc)
			}
			if other, dup := scenes[sc]; dup {
				bad(fmt.Sprintf("%s.scenes[%d]", key, j), "scene %q is already hosted by process %q", sc, other)
			}
			scenes[sc] = p.Name
			if _, ok := c.SceneDef(sc); !ok && validName(sc) {
				bad(fmt.Sprintf("%s.scenes[%d]", key, j), "scene %q has no definition under scenes", sc)
			}
		}
	}
	defs := map[string]bool{}
	for i, d := range c.Scenes {
		key := fmt.Sprintf("scenes[%d]", i)
		if defs[d.ID] {
			bad(key+".id", "%q is defined twice", d.ID)
		}
		defs[d.ID] = true
		if err := d.Validate(); err != nil {
			bad(key, "%v", err)
		}
	}
	if len(errs) > 0 {
		return &Error{Problems: errs}
	}
	return nil
}

// validName applies the scene id rule (package validate) to scene and
// process names: both name NATS subjects and files.
func validName(s string) bool { return validate.SceneID(s) == nil }

// Error lists every problem found in a configuration.
type Error struct{ Problems []error }

func (e *Error) Error() string {
	msg := "invalid config: "
	for i, p := range e.Problems {
		if i > 0 {
			msg += "; "
		}
		msg += p.Error()
	}
	return msg
}

// ClientURL is the NATS URL every process connects to: the external one, or
// the one datasvr embeds.
func (n NATS) ClientURL() string {
	if n.URL != "" {
		return n.URL
	}
	return "nats://" + n.Listen
}

func (c *Config) validateGateway(bad func(key, format string, args ...any), addr func(key, v string, optional bool)) {
	g := c.Gateway
	if !validName(g.ID) {
		bad("gateway.id", "%q must be 1-32 characters of a-z, 0-9, '-' or '_'", g.ID)
	}
	positive := func(key string, v int64) {
		if v <= 0 {
			bad(key, "must be positive, got %d", v)
		}
	}
	if g.MaxFrame < 1024 || g.MaxFrame > 16<<20 {
		bad("gateway.max_frame", "must be between 1024 and 16777216, got %d", g.MaxFrame)
	}
	if g.Window < 1 || g.Window > 16 {
		// The scene keeps the replies of its last 16 requests per session:
		// a larger window could resend a seq the scene no longer answers.
		bad("gateway.window", "must be between 1 and 16 (the scene's reply window), got %d", g.Window)
	}
	for _, kv := range []struct {
		key string
		v   int64
	}{
		{"gateway.rate", int64(g.Rate)}, {"gateway.burst", int64(g.Burst)}, {"gateway.flood_limit", int64(g.FloodLimit)},
		{"gateway.login_timeout", int64(g.LoginTimeout)}, {"gateway.idle_timeout", int64(g.IdleTimeout)},
		{"gateway.write_timeout", int64(g.WriteTimeout)}, {"gateway.out_queue", int64(g.OutQueue)},
		{"gateway.max_conns", int64(g.MaxConns)}, {"gateway.max_conns_per_ip", int64(g.MaxConnsPerIP)},
		{"gateway.session_ttl", int64(g.SessionTTL)}, {"gateway.hold_timeout", int64(g.HoldTimeout)},
		{"gateway.hold_max", int64(g.HoldMax)}, {"gateway.hold_max_bytes", g.HoldMaxBytes},
		{"gateway.push_interval", int64(g.PushInterval)}, {"gateway.view_radius", int64(g.ViewRadius)},
		{"gateway.max_positions", int64(g.MaxPositions)}, {"gateway.link_conns", int64(g.LinkConns)},
		{"gateway.drain_timeout", int64(g.DrainTimeout)}, {"gateway.drain_rate", int64(g.DrainRate)},
	} {
		positive(kv.key, kv.v)
	}
	if g.PushHold < 0 || g.PushHold >= g.PushInterval {
		bad("gateway.push_hold", "must be at least 0 and below gateway.push_interval (%s), got %s", g.PushInterval, g.PushHold)
	}
	names := map[string]bool{}
	for i, in := range g.Instances {
		key := fmt.Sprintf("gateway.instances[%d]", i)
		if !validName(in.Name) {
			bad(key+".name", "%q must be 1-32 characters of a-z, 0-9, '-' or '_'", in.Name)
		}
		if names[in.Name] {
			bad(key+".name", "%q is used twice", in.Name)
		}
		names[in.Name] = true
		addr(key+".listen", in.Listen, false)
		addr(key+".websocket", in.WebSocket, true)
		addr(key+".admin", in.Admin, false)
	}
}
