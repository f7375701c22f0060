package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSceneLinksOnlyClients keeps the scene binary small: it talks to the
// data server and to NATS as a client, so it must not link the NATS
// server, a SQL driver or the data server itself. `go version -m
// bin/scene` shows the same modules; go list answers without a build.
func TestSceneLinksOnlyClients(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/nats-io/nats-server/",
		"github.com/jackc/pgx/",
		"github.com/go-sql-driver/mysql",
		"modernc.org/sqlite",
		"github.com/respawn-dev/respawn/internal/datasvr",
		"github.com/respawn-dev/respawn/internal/store",
		"github.com/respawn-dev/respawn/internal/journal",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %d packages: %q", len(deps), out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("cmd/scene links %s", d)
			}
		}
	}
}
