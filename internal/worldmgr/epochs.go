package worldmgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// epochStore keeps, per scene process, the highest epoch ever handed out or
// reported, on disk, so epochs never go backwards, also across manager
// restarts. It is written before a spawn, so a manager killed between the
// write and the spawn only skips an epoch. The supervisor decides the
// numbers; this only stores them.
type epochStore struct {
	path string
	max  map[string]uint64
}

func openEpochs(dataDir string) (*epochStore, bool, error) {
	dir := filepath.Join(dataDir, "worldmgr")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("epochs: %w", err)
	}
	s := &epochStore{path: filepath.Join(dir, "epochs.json"), max: map[string]uint64{}}
	raw, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("epochs: %w", err)
	}
	if err := json.Unmarshal(raw, &s.max); err != nil {
		return nil, false, fmt.Errorf("epochs %s: corrupt (%v); it only ever grows, so restore it or remove it only when no scene process is running", s.path, err)
	}
	return s, true, nil
}

// store persists epochs (fsync + rename).
func (s *epochStore) store(epochs map[string]uint64) error {
	s.max = epochs
	return s.save()
}

func (s *epochStore) save() error {
	raw, err := json.Marshal(s.max)
	if err != nil {
		return fmt.Errorf("epochs: %w", err)
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("epochs: %w", err)
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return fmt.Errorf("epochs: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("epochs: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("epochs: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("epochs: %w", err)
	}
	return nil
}
