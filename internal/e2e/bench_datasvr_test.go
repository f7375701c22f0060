package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDatasvrSaveLoad: `bot save-load` (the real binary) against a
// real datasvr with its defaults (SQLite, group_commit 2 ms,
// flush_interval 5 s): 4000 players in 8 simulated scenes, each saved every
// second, for RESPAWN_BENCH_SAVELOAD_DURATION (default 20 s). Reports the
// acknowledged saves/s, the ack latency, the database statements and rows
// per second, the coalescing (saves per row) and the saves lost.
func BenchmarkDatasvrSaveLoad(b *testing.B) {
	d := 20 * time.Second
	if v, err := time.ParseDuration(os.Getenv("RESPAWN_BENCH_SAVELOAD_DURATION")); err == nil && v > 0 {
		d = v
	}
	for b.Loop() {
		c := newCluster(b)
		c.startDatasvr()
		ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "bot"), "save-load", "--players", "4000", "--save-interval", "1s",
			"--duration", d.String(), "--json", "--nats", "nats://"+c.ports["nats.listen"], "--data-dir", c.dataDir)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		var res struct {
			SavesPerS        float64 `json:"saves_per_s"`
			AckP50Ms         float64 `json:"ack_p50_ms"`
			AckP99Ms         float64 `json:"ack_p99_ms"`
			DBRowsPerS       float64 `json:"db_rows_per_s"`
			DBStatementsPerS float64 `json:"db_statements_per_s"`
			SavesPerRow      float64 `json:"saves_per_row"`
			Rejected         uint64  `json:"rejected"`
			Lost             uint64  `json:"lost"`
			Unverified       uint64  `json:"unverified"`
		}
		if jerr := json.Unmarshal(stdout.Bytes(), &res); err != nil || jerr != nil {
			b.Fatalf("bot save-load: %v (%v)\n%s\n%s", err, jerr, stdout.String(), stderr.String())
		}
		if res.Lost != 0 || res.Rejected != 0 || res.Unverified != 0 {
			b.Fatalf("bot save-load: %d lost, %d rejected, %d unverified", res.Lost, res.Rejected, res.Unverified)
		}
		b.ReportMetric(res.SavesPerS, "saves/s")
		b.ReportMetric(res.AckP50Ms, "ack_p50_ms")
		b.ReportMetric(res.AckP99Ms, "ack_p99_ms")
		b.ReportMetric(res.DBStatementsPerS, "db_stmts/s")
		b.ReportMetric(res.DBRowsPerS, "db_rows/s")
		b.ReportMetric(res.SavesPerRow, "saves/row")
		b.ReportMetric(float64(res.Lost), "lost")
		fmt.Fprintf(os.Stderr, "%s: %.0f saves/s acknowledged, ack p50 %.1f ms p99 %.1f ms, %.1f statements/s, %.0f rows/s, %.1f saves per row, %d lost\n",
			b.Name(), res.SavesPerS, res.AckP50Ms, res.AckP99Ms, res.DBStatementsPerS, res.DBRowsPerS, res.SavesPerRow, res.Lost)
	}
}
