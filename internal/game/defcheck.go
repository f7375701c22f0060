package game

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// A scene's replay depends on its definition: monsters' HP and damage, loot,
// shop prices, exits. The snapshot therefore records the definition it was
// built from (its canonical JSON and a hash of it), and Restore refuses to
// continue a history under another definition, naming what changed, instead
// of silently diverging from what the scene acknowledged.

// ErrDefinitionChanged is wrapped by Restore when the scene's definition
// differs from the one its snapshot was built from.
var ErrDefinitionChanged = errors.New("scene definition changed since the snapshot")

// maxDefDiffs bounds how many differences an error lists.
const maxDefDiffs = 8

// defJSON is the canonical encoding of a definition: encoding/json writes
// struct fields in declaration order, so equal definitions give equal bytes.
func defJSON(def SceneDef) []byte {
	b, err := json.Marshal(def)
	if err != nil {
		// Only plain data: cannot fail. Hash the error so it still differs.
		return []byte(err.Error())
	}
	return b
}

// DefHash is the hash of a definition the snapshot records.
func DefHash(def SceneDef) uint64 {
	sum := sha256.Sum256(defJSON(def))
	return binary.LittleEndian.Uint64(sum[:8])
}

// checkDef compares the definition recorded in a snapshot with def.
func checkDef(recorded []byte, hash uint64, def SceneDef) error {
	if DefHash(def) == hash {
		return nil
	}
	var old SceneDef
	var diffs []string
	if err := json.Unmarshal(recorded, &old); err != nil {
		diffs = []string{"the recorded definition is unreadable: " + err.Error()}
	} else {
		diffs = DefDiff(old, def)
		if len(diffs) == 0 {
			// Only the encoding differs (a newer binary added a field the
			// old definition leaves at its zero value): the same world.
			return nil
		}
	}
	more := ""
	if len(diffs) > maxDefDiffs {
		more = fmt.Sprintf("; and %d more", len(diffs)-maxDefDiffs)
		diffs = diffs[:maxDefDiffs]
	}
	return fmt.Errorf("%w: %s%s", ErrDefinitionChanged, strings.Join(diffs, "; "), more)
}

// DefDiff lists the differences between two definitions as readable paths:
// "monsters[hogger].hp: 100 -> 150", "npcs[bob]: removed". Lists of things
// with an id are matched by id.
func DefDiff(old, cur SceneDef) []string {
	var a, b any
	_ = json.Unmarshal(defJSON(old), &a)
	_ = json.Unmarshal(defJSON(cur), &b)
	var out []string
	diffValue("", a, b, &out)
	return out
}

func diffValue(path string, a, b any, out *[]string) {
	if reflect.DeepEqual(a, b) {
		return
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := make([]string, 0, len(av)+len(bv))
		for k := range av {
			keys = append(keys, k)
		}
		for k := range bv {
			if _, ok := av[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			diffValue(join(path, k), av[k], bv[k], out)
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok {
			break
		}
		if ids, ok := byID(av); ok {
			if bids, ok := byID(bv); ok {
				diffByID(path, av, bv, ids, bids, out)
				return
			}
		}
		if len(av) == len(bv) {
			for i := range av {
				diffValue(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i], out)
			}
			return
		}
	}
	*out = append(*out, fmt.Sprintf("%s: %s -> %s", orTop(path), show(a), show(b)))
}

func diffByID(path string, a, b []any, aid, bid []string, out *[]string) {
	bIndex := make(map[string]int, len(bid))
	for i, id := range bid {
		bIndex[id] = i
	}
	aIndex := make(map[string]int, len(aid))
	for i, id := range aid {
		aIndex[id] = i
		j, ok := bIndex[id]
		if !ok {
			*out = append(*out, fmt.Sprintf("%s[%s]: removed", path, id))
			continue
		}
		diffValue(fmt.Sprintf("%s[%s]", path, id), a[i], b[j], out)
	}
	for _, id := range bid {
		if _, ok := aIndex[id]; !ok {
			*out = append(*out, fmt.Sprintf("%s[%s]: added", path, id))
		}
	}
}

// byID returns the "id" of every element when all are objects with one.
func byID(l []any) ([]string, bool) {
	ids := make([]string, len(l))
	for i, v := range l {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		id, ok := m["id"].(string)
		if !ok {
			return nil, false
		}
		ids[i] = id
	}
	return ids, len(l) > 0
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func orTop(path string) string {
	if path == "" {
		return "definition"
	}
	return path
}

func show(v any) string {
	if v == nil {
		return "(none)"
	}
	b, _ := json.Marshal(v)
	if len(b) > 60 {
		return string(b[:57]) + "..."
	}
	return string(b)
}
