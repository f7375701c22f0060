// Package logging builds the zap loggers every respawn process uses:
// console output on a terminal, JSON otherwise, one named logger per process.
package logging

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/respawn-dev/respawn/internal/config"
)

// New returns a logger named name writing to stderr. Fields are attached to
// every line (for a scene process: its name, epoch and pid).
func New(cfg config.Log, name string, fields ...zap.Field) (*zap.Logger, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, fmt.Errorf("log.level %q: %w", cfg.Level, err)
	}
	console := cfg.Format == "console"
	if cfg.Format == "auto" {
		console = isTerminal(os.Stderr)
	}
	var zc zap.Config
	if console {
		zc = zap.NewDevelopmentConfig()
		zc.Development = false
		zc.DisableStacktrace = true
	} else {
		zc = zap.NewProductionConfig()
		zc.Sampling = nil // every line matters when reconstructing a crash
		zc.DisableStacktrace = true
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.OutputPaths = []string{"stderr"}
	zc.ErrorOutputPaths = []string{"stderr"}
	log, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("logging: %w", err)
	}
	return log.Named(name).With(fields...), nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
