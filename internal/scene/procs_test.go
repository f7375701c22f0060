package scene

import (
	"runtime"
	"testing"

	"github.com/respawn-dev/respawn/internal/config"
)

func TestProcsIsOnePerHostedSceneUnlessSet(t *testing.T) {
	cpus := runtime.NumCPU()
	cfg := config.Default()
	cfg.Processes = []config.Process{
		{Name: "one", Scenes: []string{"town"}},
		{Name: "many", Scenes: make([]string, cpus+3)},
	}
	for _, tc := range []struct {
		procs   int
		process string
		want    int
	}{
		{0, "one", 1},
		{0, "many", cpus},
		{0, "unknown", cpus},
		{3, "one", 3},
	} {
		cfg.Scene.Procs = tc.procs
		if got := Procs(&cfg, tc.process); got != tc.want {
			t.Errorf("scene.procs %d, process %s: %d, want %d", tc.procs, tc.process, got, tc.want)
		}
	}
}
