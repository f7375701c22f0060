package datasvr

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/respawn-dev/respawn/internal/dataclient"
)

// GM changes need the operator token, even over a connection with the GM's
// bus credentials; reading does not.
func TestGMChangesNeedTheOperatorToken(t *testing.T) {
	h := start(t, testConfig(t, t.TempDir()), newMemStore())
	ctx := ctxT(t)
	if err := h.admin.Create(ctx, "held", ""); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*dataclient.AdminClient{
		"no token":    dataclient.NewAdminClient(h.gm, ""),
		"wrong token": dataclient.NewAdminClient(h.gm, "0123456789"),
	} {
		if err := c.Create(ctx, "intruder", ""); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: create: %v, want ErrForbidden", name, err)
		}
		if _, err := c.Give(ctx, "", "held", "gold", 100); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: give: %v, want ErrForbidden", name, err)
		}
		if err := c.Kick(ctx, "", "held", true); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: kick: %v, want ErrForbidden", name, err)
		}
		if show, err := c.Show(ctx, "held"); err != nil || show.Gold != 0 || show.Version != 1 {
			t.Errorf("%s: show: %+v %v", name, show, err)
		}
	}
	if _, err := h.admin.Show(ctx, "intruder"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused create made a player: %v", err)
	}
}

// Offline give and take obey the input rules, and a refused one changes
// nothing; scene requests naming a bad player id are refused too.
func TestOfflineGiveFollowsTheInputRules(t *testing.T) {
	h := start(t, testConfig(t, t.TempDir()), newMemStore())
	ctx := ctxT(t)
	if err := h.admin.Create(ctx, "p1", ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		player, item string
		count        int64
		want         string
	}{
		{"p1", "../../etc/passwd", 1, "item"},
		{"p1", strings.Repeat("i", 5000), 1, "at most 64"},
		{"p1", "dragon_egg", 1, "not in the game's catalog"},
		{"p1", "gold", math.MaxInt64, "count"},
		{"p1", "gold", math.MinInt64, "count"},
		{"p1", "potion", 0, "count"},
		{"p1", "potion", -1, "cannot take"},
		{"p1\n", "gold", 1, "player id"},
		{"../p1", "gold", 1, "player id"},
	} {
		_, err := h.admin.Give(ctx, "", tc.player, tc.item, tc.count)
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.want) || len(err.Error()) > 400 {
			t.Errorf("give %q %.20q %d: %v, want a short bad request about %q", tc.player, tc.item, tc.count, err, tc.want)
		}
	}
	if show, err := h.admin.Show(ctx, "p1"); err != nil || show.Version != 1 || show.Gold != 0 || len(show.Items) != 0 {
		t.Fatalf("refused gives changed the player: %+v %v", show, err)
	}
	if rep, err := h.admin.Give(ctx, "", "p1", "gold", 1_000_000_000); err != nil || rep.Count != 1_000_000_000 {
		t.Fatalf("the largest allowed give: %+v %v", rep, err)
	}
	town := h.client("town", 1)
	if _, err := town.LoadOrCreate(ctx, "bad id", ""); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("scene load of a bad id: %v", err)
	}
}
