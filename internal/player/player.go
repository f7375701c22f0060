// Package player defines a player's persistent data: the one record the
// scenes, the data server and the CLI all agree on.
//
// The encoding is JSON with sorted map keys (encoding/json sorts them), so the
// same data always encodes to the same bytes. Scenes rely on that for
// deterministic replay; the data server stores the bytes as they are.
package player

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/respawn-dev/respawn/internal/validate"
)

// GoldItem is the item name that means gold in GM commands
// (`respawn player give ID gold 100`).
const GoldItem = validate.Gold

// Data is everything saved for one player.
type Data struct {
	ID    string           `json:"id"`
	Name  string           `json:"name"`
	Level int              `json:"level"`
	Gold  int64            `json:"gold"`
	Items map[string]int64 `json:"items,omitempty"`
	// Scene is where the player was last saved; a returning player enters here.
	Scene string `json:"scene,omitempty"`
	X     int    `json:"x"`
	Y     int    `json:"y"`
}

// Encode returns the canonical encoding of d.
func (d Data) Encode() ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("player %s: encode: %w", d.ID, err)
	}
	return b, nil
}

// Decode parses data written by Encode.
func Decode(b []byte) (Data, error) {
	var d Data
	if err := json.Unmarshal(b, &d); err != nil {
		return Data{}, fmt.Errorf("player: decode: %w", err)
	}
	if d.ID == "" {
		return Data{}, fmt.Errorf("player: decode: missing id")
	}
	return d, nil
}

// Clone returns a deep copy, so a caller can change it without touching d.
func (d Data) Clone() Data {
	c := d
	if d.Items != nil {
		c.Items = make(map[string]int64, len(d.Items))
		for k, v := range d.Items {
			c.Items[k] = v
		}
	}
	return c
}

// Count returns how many of item the player holds; item GoldItem means gold.
func (d Data) Count(item string) int64 {
	if item == GoldItem {
		return d.Gold
	}
	return d.Items[item]
}

// Add changes the count of item by delta (negative to take). The result
// must be a valid balance (validate.Add): a take never goes below zero and
// a give never past validate.MaxBalance, so nothing overflows.
func (d *Data) Add(item string, delta int64) error {
	n, err := validate.Add(d.Count(item), delta)
	if err != nil {
		return fmt.Errorf("player %s: %s: %w", d.ID, item, err)
	}
	if item == GoldItem {
		d.Gold = n
		return nil
	}
	if d.Items == nil {
		d.Items = make(map[string]int64)
	}
	if n == 0 {
		delete(d.Items, item)
	} else {
		d.Items[item] = n
	}
	return nil
}

// ItemNames returns the item names the player holds, sorted, for code that
// must not depend on map iteration order.
func (d Data) ItemNames() []string {
	names := make([]string, 0, len(d.Items))
	for k := range d.Items {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
