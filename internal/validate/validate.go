// Package validate is the one set of rules for input that names a player,
// an item or a scene, or carries a count. The scene (GM commands, API
// bodies), the data server (create, give, take, offline and online) and the
// CLI all call it, so a value one of them accepts the others accept too.
//
// The rules, documented in docs/security.md:
//   - player ids: 1-64 bytes of A-Z a-z 0-9 '_' '-' (no dots, slashes,
//     spaces or control characters: ids end up in logs, NATS subjects and
//     file-like keys);
//   - item names: the same charset, 1-64 bytes, and the game must know the
//     item (a Catalog built from the world definition: shop items, loot,
//     gold);
//   - player names (display): 1-64 bytes of UTF-8, no control characters;
//   - GM request ids: the player-id charset, 1-128 bytes;
//   - scene ids: 1-32 bytes of a-z 0-9 '_' '-';
//   - a GM count: non-zero, at most MaxCount either way;
//   - a balance (gold or an item count) stays within 0..MaxBalance, and no
//     arithmetic on it can overflow int64.
//
// Errors wrap ErrInvalid and quote the offending value shortened, so a
// 5,000-character name makes a one-line error.
package validate

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits. MaxCount and MaxBalance are also rules of the game (package game
// refuses the same), so a change here changes what a replayed log produces.
const (
	MaxPlayerIDLen = 64
	MaxItemLen     = 64
	MaxSceneIDLen  = 32
	// MaxPlayerNameLen bounds a display name, in bytes.
	MaxPlayerNameLen = 64
	MaxRequestIDLen  = 128
	// MaxCount bounds one GM give or take.
	MaxCount = 1_000_000_000
	// MaxBalance bounds any balance, far below int64 overflow.
	MaxBalance = 1 << 60
)

// Gold is the item name that means a player's gold.
const Gold = "gold"

// ErrInvalid is wrapped by every error of this package.
var ErrInvalid = errors.New("invalid input")

// PlayerID checks a player id.
func PlayerID(id string) error {
	return name("player id", id, MaxPlayerIDLen, true)
}

// PlayerName checks a player's display name: 1-64 bytes of valid UTF-8
// with no control characters.
func PlayerName(n string) error {
	if n == "" {
		return fmt.Errorf("%w: player name must not be empty", ErrInvalid)
	}
	if len(n) > MaxPlayerNameLen {
		return fmt.Errorf("%w: player name %s is %d bytes, at most %d allowed", ErrInvalid, Quote(n), len(n), MaxPlayerNameLen)
	}
	if !utf8.ValidString(n) {
		return fmt.Errorf("%w: player name %s is not valid UTF-8", ErrInvalid, Quote(n))
	}
	for i, r := range n {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: player name %s has control character %U at byte %d", ErrInvalid, Quote(n), r, i)
		}
	}
	return nil
}

// RequestID checks the id of a GM request (what makes a retried command
// apply once): the player-id charset, 1-128 bytes.
func RequestID(id string) error {
	return name("request id", id, MaxRequestIDLen, true)
}

// SceneID checks a scene id (also a process name).
func SceneID(id string) error {
	return name("scene id", id, MaxSceneIDLen, false)
}

// SceneOrRoom checks the id of a scene or of one of its dungeon rooms
// ("forest" or "forest/dungeon-3"): what holds a player's lease, and what
// names the scene's NATS subjects, so it must never carry '.', '*' or '>'.
func SceneOrRoom(id string) error {
	scene, room, isRoom := strings.Cut(id, "/")
	if err := SceneID(scene); err != nil {
		return err
	}
	if isRoom {
		if err := name("room id", room, MaxSceneIDLen, false); err != nil {
			return fmt.Errorf("scene %s: %w", scene, err)
		}
	}
	return nil
}

// ItemName checks the spelling of an item name; Catalog.Item also checks
// that the game knows it.
func ItemName(item string) error {
	return name("item", item, MaxItemLen, true)
}

func name(kind, s string, maxLen int, upper bool) error {
	if s == "" {
		return fmt.Errorf("%w: %s must not be empty", ErrInvalid, kind)
	}
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s %s is %d bytes, at most %d allowed", ErrInvalid, kind, Quote(s), len(s), maxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || upper && c >= 'A' && c <= 'Z'
		if !ok {
			set := "a-z 0-9 '_' '-'"
			if upper {
				set = "A-Z a-z 0-9 '_' '-'"
			}
			return fmt.Errorf("%w: %s %s has %q at byte %d; only %s are allowed", ErrInvalid, kind, Quote(s), c, i, set)
		}
	}
	return nil
}

// Count checks the count of one GM give (positive) or take (negative).
func Count(n int64) error {
	if n == 0 {
		return fmt.Errorf("%w: count must not be zero", ErrInvalid)
	}
	if n > MaxCount || n < -MaxCount {
		return fmt.Errorf("%w: count %d is beyond ±%d", ErrInvalid, n, MaxCount)
	}
	return nil
}

// Add returns have+delta when the result is a valid balance (0..MaxBalance)
// and have itself is one. It cannot overflow: both bounds are checked
// before adding.
func Add(have, delta int64) (int64, error) {
	if have < 0 || have > MaxBalance {
		return 0, fmt.Errorf("%w: balance %d is outside 0..%d", ErrInvalid, have, int64(MaxBalance))
	}
	if delta > 0 && delta > MaxBalance-have {
		return 0, fmt.Errorf("%w: %d + %d would exceed the limit of %d", ErrInvalid, have, delta, int64(MaxBalance))
	}
	if delta < 0 && delta < -have {
		return 0, fmt.Errorf("%w: has %d, cannot take %s", ErrInvalid, have, negString(delta))
	}
	return have + delta, nil
}

// negString prints -delta without overflowing on math.MinInt64.
func negString(delta int64) string {
	s := fmt.Sprint(delta)
	return strings.TrimPrefix(s, "-")
}

// Catalog is the set of item names the game knows. Build it once from the
// world definition (game.CatalogItems); it is read-only afterwards and safe
// to share.
type Catalog struct {
	items map[string]struct{}
	names []string
}

// NewCatalog returns the catalog of items plus Gold. Each name must pass
// ItemName.
func NewCatalog(items []string) (*Catalog, error) {
	c := &Catalog{items: map[string]struct{}{Gold: {}}}
	var errs []error
	for _, it := range items {
		if err := ItemName(it); err != nil {
			errs = append(errs, err)
			continue
		}
		c.items[it] = struct{}{}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("item catalog: %w", errors.Join(errs...))
	}
	for it := range c.items {
		c.names = append(c.names, it)
	}
	sort.Strings(c.names)
	return c, nil
}

// Item checks that item is spelled right and in the catalog.
func (c *Catalog) Item(item string) error {
	if err := ItemName(item); err != nil {
		return err
	}
	if _, ok := c.items[item]; !ok {
		known := c.names
		more := ""
		if len(known) > 20 {
			known, more = known[:20], ", …"
		}
		return fmt.Errorf("%w: item %s is not in the game's catalog (%s%s)", ErrInvalid, Quote(item), strings.Join(known, ", "), more)
	}
	return nil
}

// Items returns the catalog's names, sorted.
func (c *Catalog) Items() []string { return append([]string(nil), c.names...) }

// Short returns s as it is when it is short printable ASCII without
// quotes, else Quote(s): for messages that name a value that may be hostile.
func Short(s string) string {
	if s == "" || len(s) > 40 {
		return Quote(s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' || s[i] == '"' {
			return Quote(s)
		}
	}
	return s
}

// Quote quotes s for an error message, shortened to 40 bytes.
func Quote(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
