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
// write and the spawn only skips an epoch.
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

// next reserves and persists the next epoch for process name.
func (s *epochStore) next(name string) (uint64, error) {
	e := s.max[name] + 1
	s.max[name] = e
	if err := s.save(); err != nil {
		s.max[name] = e - 1
		return 0, err
	}
	return e, nil
}

// observe raises the stored epoch to one a scene reported.
func (s *epochStore) observe(name string, epoch uint64) error {
	if epoch <= s.max[name] {
		return nil
	}
	s.max[name] = epoch
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
