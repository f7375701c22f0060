// Command benchreport is `make bench`: it runs every benchmark suite of the
// project (internal/benchreport.Suites) with `go test -json`, collects the
// figures, and writes docs/BENCHMARKS.md from scratch with the machine, the
// command of each figure, its target, its anchor and whether it is met.
//
//	go run ./cmd/benchreport                        # everything (what make bench runs)
//	go run ./cmd/benchreport -suites micro,replica  # a subset; other rows show no figure
//	go run ./cmd/benchreport -from raw/             # re-render from kept go test output
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/respawn-dev/respawn/internal/benchreport"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run() error {
	var ids []string
	for _, s := range benchreport.Suites {
		ids = append(ids, s.ID)
	}
	out := flag.String("out", "docs/BENCHMARKS.md", "the report to write")
	only := flag.String("suites", strings.Join(ids, ","), "suites to run, comma-separated")
	raw := flag.String("raw", "", "keep each suite's go test -json output in this directory")
	from := flag.String("from", "", "do not run: render from the SUITE.json files a -raw run kept here (the machine, date and times are then the render's)")
	flag.Parse()

	want := strings.Split(*only, ",")
	for _, id := range want {
		if !slices.Contains(ids, id) {
			return fmt.Errorf("-suites: unknown suite %q (known: %s)", id, strings.Join(ids, ","))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	machine := benchreport.ThisMachine(".")
	res := benchreport.Results{}
	var runs []benchreport.Run
	for _, s := range benchreport.Suites {
		if !slices.Contains(want, s.ID) {
			continue
		}
		began := time.Now()
		r := benchreport.Run{Suite: s.ID}
		var err error
		if *from != "" {
			err = parseFile(filepath.Join(*from, s.ID+".json"), res, &r)
		} else {
			fmt.Fprintf(os.Stderr, "benchreport: suite %s: go test -json %s %s\n", s.ID, strings.Join(s.Args, " "), strings.Join(s.Pkgs, " "))
			err = runSuite(ctx, s, *raw, res, &r)
		}
		r.Took = time.Since(began)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted in suite %s: %w", s.ID, ctx.Err())
			}
			r.Failed, r.Note = true, err.Error()
			fmt.Fprintf(os.Stderr, "benchreport: suite %s failed after %s: %v\n", s.ID, r.Took.Round(time.Second), err)
		} else {
			fmt.Fprintf(os.Stderr, "benchreport: suite %s took %s\n", s.ID, r.Took.Round(time.Second))
		}
		runs = append(runs, r)
	}
	total := time.Since(start)
	doc := benchreport.Render(machine, runs, total, res)
	if err := os.WriteFile(*out, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	met, missing := 0, 0
	for _, row := range benchreport.Rows {
		switch _, v := row.Judge(res); v {
		case benchreport.Met:
			met++
		case benchreport.Missing, benchreport.NoFigure:
			missing++
		}
	}
	fmt.Printf("benchreport: wrote %s: %d targets met, %d missing; make bench took %s\n", *out, met, missing, total.Round(time.Second))
	return nil
}

// runSuite runs one suite's go test -json, parsing its output as it comes
// (and keeping it under rawDir when set); the test binaries' stderr and go
// build's messages pass through.
func runSuite(ctx context.Context, s benchreport.Suite, rawDir string, res benchreport.Results, r *benchreport.Run) error {
	args := append([]string{"test", "-json"}, s.Args...)
	cmd := exec.CommandContext(ctx, "go", append(args, s.Pkgs...)...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("suite %s: %w", s.ID, err)
	}
	var src io.Reader = stdout
	if rawDir != "" {
		if err := os.MkdirAll(rawDir, 0o755); err != nil {
			return fmt.Errorf("suite %s: %w", s.ID, err)
		}
		f, err := os.Create(filepath.Join(rawDir, s.ID+".json"))
		if err != nil {
			return fmt.Errorf("suite %s: %w", s.ID, err)
		}
		defer f.Close()
		src = io.TeeReader(stdout, f)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("suite %s: start go test: %w", s.ID, err)
	}
	failed, perr := benchreport.ParseJSON(src, res)
	_, _ = io.Copy(io.Discard, stdout) // after a parse error, let go test finish
	werr := cmd.Wait()
	switch {
	case perr != nil:
		return fmt.Errorf("suite %s: %w", s.ID, perr)
	case len(failed) > 0:
		return fmt.Errorf("go test failed in %s", strings.Join(failed, ", "))
	case werr != nil:
		var ee *exec.ExitError
		if errors.As(werr, &ee) {
			return fmt.Errorf("go test exited with %d", ee.ExitCode())
		}
		return fmt.Errorf("suite %s: %w", s.ID, werr)
	}
	return nil
}

// parseFile re-reads a kept SUITE.json.
func parseFile(path string, res benchreport.Results, r *benchreport.Run) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	failed, err := benchreport.ParseJSON(bytes.NewReader(raw), res)
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("go test failed in %s", strings.Join(failed, ", "))
	}
	return nil
}
