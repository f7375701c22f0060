package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func load(t *testing.T, file string, env map[string]string, args ...string) (*Config, *Loader, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	l := Bind(fs)
	l.getenv = func(k string) string { return env[k] }
	if file != "" {
		path := filepath.Join(t.TempDir(), "world.yaml")
		if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	cfg, err := l.Load()
	return cfg, l, err
}

func TestPrecedenceDefaultsFileEnvFlags(t *testing.T) {
	file := "worldmgr:\n  heartbeat_timeout: 3s\n  heartbeat_interval: 300ms\nscene:\n  tick_hz: 20\n"
	env := map[string]string{"RESPAWN_WORLDMGR_HEARTBEAT_TIMEOUT": "4s", "RESPAWN_DATA_DIR": "/tmp/from-env"}
	cfg, _, err := load(t, file, env, "--worldmgr.heartbeat-timeout", "5s")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WorldMgr.HeartbeatTimeout != 5*time.Second {
		t.Errorf("flag should win: %s", cfg.WorldMgr.HeartbeatTimeout)
	}
	if cfg.WorldMgr.HeartbeatInterval != 300*time.Millisecond || cfg.Scene.TickHz != 20 {
		t.Errorf("file values lost: %s %d", cfg.WorldMgr.HeartbeatInterval, cfg.Scene.TickHz)
	}
	if cfg.DataDir != "/tmp/from-env" {
		t.Errorf("env data dir: %s", cfg.DataDir)
	}
	if cfg.Datasvr.FlushInterval != 5*time.Second {
		t.Errorf("default lost: %s", cfg.Datasvr.FlushInterval)
	}
	if len(cfg.Scenes) == 0 {
		t.Error("default world content missing")
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		file string
		env  map[string]string
		args []string
		want string
	}{
		{file: "worldmgr:\n  heartbeat_timout: 1s\n", want: "heartbeat_timout"},
		{args: []string{"--worldmgr.heartbeat-timeout", "100ms"}, want: "worldmgr.heartbeat_timeout"},
		{env: map[string]string{"RESPAWN_SCENE_TICK_HZ": "zero"}, want: "RESPAWN_SCENE_TICK_HZ"},
		{args: []string{"--log.level", "loud"}, want: "log.level"},
		{args: []string{"--processes", "a=town;b=town"}, want: "processes[1].scenes[0]"},
		{args: []string{"--processes", "a=nowhere"}, want: "no definition"},
		{args: []string{"--gateway.listen", "7000"}, want: "gateway.listen"},
		{args: []string{"--scene.shm-slots", "2"}, want: "scene.shm_slots"},
		{args: []string{"--gateway.drain-timeout", "0s"}, want: "gateway.drain_timeout"},
		{env: map[string]string{"RESPAWN_GATEWAY_DRAIN_RATE": "0"}, want: "gateway.drain_rate"},
		{args: []string{"--admin.idle-timeout", "0s"}, want: "admin.idle_timeout"},
		{env: map[string]string{"RESPAWN_ADMIN_MAX_CONNS": "0"}, want: "admin.max_conns"},
		{file: "admin:\n  max_body_bytes: 10\n", want: "admin.max_body_bytes"},
		{args: []string{"--admin.max-header-bytes", "99999999"}, want: "admin.max_header_bytes"},
		{file: "scenes:\n  - id: town\n    kind: town\n    spawn: {x: 1, y: 1}\n    npcs:\n      - {id: m, kind: shop, path: [{x: 1, y: 1}], shop: [{item: \"../etc/passwd\", price: 1}]}\nprocesses:\n  - {name: town, scenes: [town]}\n", want: "shop[0].item"},
	} {
		_, _, err := load(t, tc.file, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v %q: error %v does not name %q", tc.args, tc.env, tc.file, err, tc.want)
		}
	}
}

func TestChildArgsReproduceTheConfig(t *testing.T) {
	parent, l, err := load(t, "scene:\n  tick_hz: 30\n", nil, "--worldmgr.heartbeat-timeout", "2s", "--data-dir", "rel/data")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(parent.DataDir) {
		t.Fatalf("data dir not made absolute: %s", parent.DataDir)
	}
	fs := pflag.NewFlagSet("child", pflag.ContinueOnError)
	cl := Bind(fs)
	cl.getenv = func(string) string { return "" }
	if err := fs.Parse(l.ChildArgs(parent)); err != nil {
		t.Fatal(err)
	}
	child, err := cl.Load()
	if err != nil {
		t.Fatal(err)
	}
	if child.DataDir != parent.DataDir || child.WorldMgr.HeartbeatTimeout != 2*time.Second || child.Scene.TickHz != 30 {
		t.Fatalf("child sees %s %s %d", child.DataDir, child.WorldMgr.HeartbeatTimeout, child.Scene.TickHz)
	}
}

func TestParseProcesses(t *testing.T) {
	ps, err := ParseProcesses("town=town; wild=forest, swamp")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[1].Name != "wild" || len(ps[1].Scenes) != 2 || ps[1].Scenes[1] != "swamp" {
		t.Fatalf("%+v", ps)
	}
	if _, err := ParseProcesses("town"); err == nil {
		t.Fatal("missing '=' accepted")
	}
}

func TestShippedConfigIsValid(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	l := Bind(fs)
	l.getenv = func(string) string { return "" }
	if err := fs.Parse([]string{"--config", "../../configs/world.yaml"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Processes) != 2 || len(cfg.Scenes) < 2 {
		t.Fatalf("configs/world.yaml: %d processes, %d scenes", len(cfg.Processes), len(cfg.Scenes))
	}
}
