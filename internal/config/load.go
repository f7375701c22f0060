package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// DefaultPath is the config file used when neither --config nor
// RESPAWN_CONFIG names one and it exists in the working directory.
const DefaultPath = "configs/world.yaml"

// Loader binds the config to a command's flags and loads it.
type Loader struct {
	fs   *pflag.FlagSet
	path string
	// getenv is os.Getenv, replaceable in tests.
	getenv func(string) string
}

// Bind registers --config and one flag per setting (e.g.
// --worldmgr.heartbeat-timeout, --data-dir) on fs.
func Bind(fs *pflag.FlagSet) *Loader {
	l := &Loader{fs: fs, getenv: os.Getenv}
	fs.StringVar(&l.path, "config", "", "config file (default "+DefaultPath+" if present; env RESPAWN_CONFIG)")
	def := Default()
	for _, k := range keys(&def) {
		fs.String(k.flag(), "", fmt.Sprintf("override %s (env %s)", k.name, k.env()))
	}
	return l
}

// Load reads defaults, the file, the environment and the flags, in that
// order, validates the result and makes the directories absolute.
func (l *Loader) Load() (*Config, error) {
	cfg := Default()
	path, explicit := l.path, l.path != ""
	if !explicit {
		if p := l.getenv("RESPAWN_CONFIG"); p != "" {
			path, explicit = p, true
		} else {
			path = DefaultPath
		}
	}
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := decodeStrict(raw, &cfg); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist) && !explicit:
		path = ""
	default:
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, k := range keys(&cfg) {
		if v := l.getenv(k.env()); v != "" {
			if err := k.set(v); err != nil {
				return nil, fmt.Errorf("config: %s=%q: %w", k.env(), v, err)
			}
		}
		if f := l.fs.Lookup(k.flag()); f != nil && f.Changed {
			if err := k.set(f.Value.String()); err != nil {
				return nil, fmt.Errorf("config: --%s=%q: %w", k.flag(), f.Value.String(), err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []*string{&cfg.DataDir, &cfg.ShmDir, &cfg.BinDir} {
		if *d == "" {
			continue
		}
		abs, err := filepath.Abs(*d)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		*d = abs
	}
	if path != "" {
		if path, err = filepath.Abs(path); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	cfg.Source = path
	return &cfg, nil
}

// ChildArgs returns the arguments that give a child process the same
// configuration as this one: the config file and every flag that was set.
// Environment overrides reach children by inheritance.
func (l *Loader) ChildArgs(cfg *Config) []string {
	var args []string
	if cfg.Source != "" {
		args = append(args, "--config", cfg.Source)
	}
	// Directories are passed resolved so a child with another working
	// directory writes to the same place.
	args = append(args, "--data-dir", cfg.DataDir, "--shm-dir", cfg.ShmDir)
	if cfg.BinDir != "" {
		args = append(args, "--bin-dir", cfg.BinDir)
	}
	def := Default()
	for _, k := range keys(&def) {
		switch k.name {
		case "data_dir", "shm_dir", "bin_dir":
			continue
		}
		if f := l.fs.Lookup(k.flag()); f != nil && f.Changed {
			args = append(args, "--"+k.flag(), f.Value.String())
		}
	}
	return args
}

func decodeStrict(raw []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return err
	}
	return nil
}

// key is one leaf setting, addressed by its dotted yaml path.
type key struct {
	name string // e.g. worldmgr.heartbeat_timeout
	v    reflect.Value
}

func (k key) flag() string { return strings.ReplaceAll(k.name, "_", "-") }

func (k key) env() string {
	return "RESPAWN_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(k.name))
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	processType  = reflect.TypeOf([]Process(nil))
)

// keys lists every leaf setting of cfg, sorted by name.
func keys(cfg *Config) []key {
	var out []key
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			name := tag
			if prefix != "" {
				name = prefix + "." + tag
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && fv.Type() != durationType {
				walk(name, fv)
				continue
			}
			switch fv.Kind() {
			case reflect.String, reflect.Int, reflect.Int64, reflect.Bool:
			case reflect.Slice:
				if fv.Type() != processType {
					continue // content sections (scenes) are set in the file only
				}
			default:
				continue
			}
			out = append(out, key{name: name, v: fv})
		}
	}
	walk("", reflect.ValueOf(cfg).Elem())
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (k key) set(s string) error {
	switch {
	case k.v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		k.v.SetInt(int64(d))
	case k.v.Type() == processType:
		ps, err := ParseProcesses(s)
		if err != nil {
			return err
		}
		k.v.Set(reflect.ValueOf(ps))
	case k.v.Kind() == reflect.String:
		k.v.SetString(s)
	case k.v.Kind() == reflect.Int || k.v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		k.v.SetInt(n)
	case k.v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		k.v.SetBool(b)
	}
	return nil
}

// ParseProcesses parses the flag/env form of the process list:
// "town=town;wild=forest,swamp".
func ParseProcesses(s string) ([]Process, error) {
	var out []Process
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, scenes, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want NAME=SCENE[,SCENE]", part)
		}
		p := Process{Name: strings.TrimSpace(name)}
		for _, sc := range strings.Split(scenes, ",") {
			if sc = strings.TrimSpace(sc); sc != "" {
				p.Scenes = append(p.Scenes, sc)
			}
		}
		out = append(out, p)
	}
	return out, nil
}
