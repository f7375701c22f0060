package validate

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"
)

func TestPlayerID(t *testing.T) {
	for _, ok := range []string{"p1", "Alice", "bot-17", "a_b", strings.Repeat("x", MaxPlayerIDLen)} {
		if err := PlayerID(ok); err != nil {
			t.Errorf("PlayerID(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct{ id, want string }{
		{"", "must not be empty"},
		{strings.Repeat("x", MaxPlayerIDLen+1), "at most 64"},
		{"a\nb", `'\n' at byte 1`},
		{"../../etc/passwd", `'.' at byte 0`},
		{"a b", `' ' at byte 1`},
		{"a.b", `'.'`},
		{"a*", `'*'`},
		{"é", `at byte 0`},
	} {
		err := PlayerID(tc.id)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("PlayerID(%q) = %v, want an ErrInvalid mentioning %q", tc.id, err, tc.want)
		}
	}
}

func TestLongValueShortError(t *testing.T) {
	err := PlayerID(strings.Repeat("a", 5000))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("a 5000-byte id gave %d bytes of error: %v", len(err.Error()), err)
	}
}

func TestPlayerNameAndRequestID(t *testing.T) {
	for _, ok := range []string{"Alice", "Zoë the Brave", "金"} {
		if err := PlayerName(ok); err != nil {
			t.Errorf("PlayerName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a\nb", "\xff", strings.Repeat("n", MaxPlayerNameLen+1), "tab\there"} {
		if err := PlayerName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("PlayerName(%q) = %v", bad, err)
		}
	}
	if err := RequestID("gm-3fA9"); err != nil {
		t.Error(err)
	}
	if err := RequestID("gm 1"); err == nil {
		t.Error("request id with a space accepted")
	}
}

func TestShort(t *testing.T) {
	for in, want := range map[string]string{"p1": "p1", "a\nb": `"a\nb"`, "": `""`, strings.Repeat("y", 50): `"` + strings.Repeat("y", 40) + `"…`} {
		if got := Short(in); got != want {
			t.Errorf("Short(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSceneID(t *testing.T) {
	if err := SceneID("forest"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "Forest", "forest/1", strings.Repeat("s", MaxSceneIDLen+1)} {
		if SceneID(bad) == nil {
			t.Errorf("SceneID(%q) accepted", bad)
		}
	}
}

func TestSceneOrRoom(t *testing.T) {
	for _, ok := range []string{"forest", "forest/dungeon-12"} {
		if err := SceneOrRoom(ok); err != nil {
			t.Errorf("SceneOrRoom(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "forest/", "/x", "forest/a/b", "forest.x", "forest/*", "town>", "forest/" + strings.Repeat("r", 33)} {
		if err := SceneOrRoom(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("SceneOrRoom(%q) = %v", bad, err)
		}
	}
}

func TestCatalog(t *testing.T) {
	c, err := NewCatalog([]string{"potion", "sword", "potion"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Items(), ","); got != "gold,potion,sword" {
		t.Errorf("items %s", got)
	}
	for _, ok := range []string{"gold", "potion", "sword"} {
		if err := c.Item(ok); err != nil {
			t.Errorf("Item(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct{ item, want string }{
		{"shield", "not in the game's catalog (gold, potion, sword)"},
		{"../../etc/passwd", "'.'"},
		{strings.Repeat("x", 5000), "at most 64"},
		{"", "must not be empty"},
		{"Potion", "not in the game's catalog"},
	} {
		err := c.Item(tc.item)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Item(%.20q) = %v, want %q", tc.item, err, tc.want)
		}
	}
	if _, err := NewCatalog([]string{"ok", "not ok"}); err == nil {
		t.Error("a catalog with a badly spelled item was accepted")
	}
}

func TestCount(t *testing.T) {
	for _, ok := range []int64{1, -1, MaxCount, -MaxCount} {
		if err := Count(ok); err != nil {
			t.Errorf("Count(%d): %v", ok, err)
		}
	}
	for _, bad := range []int64{0, MaxCount + 1, -MaxCount - 1, math.MaxInt64, math.MinInt64} {
		if err := Count(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Count(%d) = %v", bad, err)
		}
	}
}

func TestAdd(t *testing.T) {
	for _, tc := range []struct {
		have, delta, want int64
		ok                bool
	}{
		{0, 5, 5, true},
		{5, -5, 0, true},
		{5, -6, 0, false},
		{MaxBalance - 1, 1, MaxBalance, true},
		{MaxBalance, 1, 0, false},
		{0, math.MaxInt64, 0, false},
		{0, math.MinInt64, 0, false},
		{MaxBalance, math.MinInt64, 0, false},
		{-1, 1, 0, false},
		{math.MaxInt64, -1, 0, false},
	} {
		got, err := Add(tc.have, tc.delta)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("Add(%d, %d) = %d, %v; want %d ok=%v", tc.have, tc.delta, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzPlayerID(f *testing.F) {
	for _, s := range []string{"p1", "", "../x", "a\nb", strings.Repeat("z", 65), "Bob_2-x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := PlayerID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("%d-byte error", len(err.Error()))
			}
			return
		}
		if len(s) == 0 || len(s) > MaxPlayerIDLen || strings.ContainsAny(s, "./\\ \n\r\t\x00*>") {
			t.Fatalf("accepted %q", s)
		}
		for _, r := range s {
			if r > 127 {
				t.Fatalf("accepted non-ASCII %q", s)
			}
		}
	})
}

func FuzzCatalogItem(f *testing.F) {
	c, err := NewCatalog([]string{"potion", "wolf_pelt", "kings-crown"})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"potion", "gold", "../../etc/passwd", "", "potion\n", "Potion"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := c.Item(s)
		known := s == "gold" || s == "potion" || s == "wolf_pelt" || s == "kings-crown"
		if (err == nil) != known {
			t.Fatalf("Item(%q) = %v", s, err)
		}
	})
}

func FuzzAdd(f *testing.F) {
	for _, p := range [][2]int64{{0, 1}, {5, -6}, {MaxBalance, 1}, {0, math.MinInt64}, {math.MaxInt64, math.MaxInt64}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, have, delta int64) {
		got, err := Add(have, delta)
		exact := new(big.Int).Add(big.NewInt(have), big.NewInt(delta))
		valid := have >= 0 && have <= MaxBalance && exact.Sign() >= 0 && exact.Cmp(big.NewInt(MaxBalance)) <= 0
		if valid != (err == nil) {
			t.Fatalf("Add(%d, %d) = %d, %v; exact %s", have, delta, got, err, exact)
		}
		if err == nil && big.NewInt(got).Cmp(exact) != 0 {
			t.Fatalf("Add(%d, %d) = %d, exact %s", have, delta, got, exact)
		}
	})
}

func FuzzSceneOrRoom(f *testing.F) {
	for _, s := range []string{"forest", "forest/dungeon-1", "a.b", "x/y/z", "town>", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if SceneOrRoom(s) != nil {
			return
		}
		if strings.ContainsAny(s, ".*> \n\t") || strings.Count(s, "/") > 1 || len(s) > 2*MaxSceneIDLen+1 || strings.ToLower(s) != s {
			t.Fatalf("accepted %q", s)
		}
	})
}
