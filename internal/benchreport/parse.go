// Package benchreport turns the project's benchmark output into
// docs/BENCHMARKS.md: it parses `go test -bench -json` streams (the
// b.ReportMetric figures of each benchmark, and "benchmetric:" lines a test
// logs), compares each figure with its target and the anchor it is judged
// against (one table, Rows), and renders the machine and the results as
// markdown. cmd/benchreport runs the benchmarks and writes the file.
package benchreport

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Key names one figure: the benchmark's package (last path element), its
// name without the -GOMAXPROCS suffix (sub-benchmarks included), and the
// unit it was reported in.
type Key struct {
	Pkg, Bench, Unit string
}

func (k Key) String() string { return k.Pkg + "." + k.Bench + " " + k.Unit }

// Results are the figures of one or more runs; a later run of the same
// benchmark replaces an earlier figure.
type Results map[Key]float64

// MetricPrefix starts a line a test logs to report a figure that is not a
// benchmark's: "benchmetric: NAME VALUE UNIT" (NAME without spaces). The
// figure is keyed as a benchmark NAME of the test's package.
const MetricPrefix = "benchmetric: "

// maxLine bounds one line of go test output we keep while parsing; longer
// lines (a huge log line) are cut, which cannot hide a benchmark result.
const maxLine = 1 << 20

// benchLine is a benchmark result: name(-procs), iterations, then value/unit
// pairs separated by tabs.
var benchLine = regexp.MustCompile(`^(Benchmark\S*?)(?:-\d+)?\s+(\d+)\s+(\d.*)$`)

// event is the part of a test2json event we read.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// ParseJSON reads a `go test -json` stream and adds every benchmark figure
// and benchmetric line to res. It returns the packages that failed (a
// benchmark that fails reports nothing: its rows show as missing) and an
// error only for a stream that is not test2json.
func ParseJSON(r io.Reader, res Results) (failed []string, err error) {
	// Output of one test arrives in pieces (a benchmark's name and its
	// figures are separate events); join them per test before splitting
	// into lines.
	pending := map[[2]string]*strings.Builder{}
	flush := func(pkg, test string, all bool) {
		k := [2]string{pkg, test}
		b := pending[k]
		if b == nil {
			return
		}
		s := b.String()
		cut := strings.LastIndexByte(s, '\n')
		if all {
			cut = len(s) - 1
		}
		if cut < 0 {
			return
		}
		for _, line := range strings.Split(s[:cut+1], "\n") {
			parseLine(path.Base(pkg), line, res)
		}
		b.Reset()
		if cut+1 < len(s) {
			b.WriteString(s[cut+1:])
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		raw := sc.Bytes()
		if len(raw) == 0 || raw[0] != '{' {
			continue // go build output and the like
		}
		var ev event
		if err := json.Unmarshal(raw, &ev); err != nil {
			return failed, fmt.Errorf("benchreport: not a go test -json line: %.80q: %w", raw, err)
		}
		switch ev.Action {
		case "output":
			k := [2]string{ev.Package, ev.Test}
			b := pending[k]
			if b == nil {
				b = &strings.Builder{}
				pending[k] = b
			}
			if b.Len() < maxLine {
				b.WriteString(ev.Output)
			}
			if strings.Contains(ev.Output, "\n") {
				flush(ev.Package, ev.Test, false)
			}
		case "fail":
			if ev.Test == "" {
				failed = append(failed, ev.Package)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return failed, fmt.Errorf("benchreport: read go test output: %w", err)
	}
	for k := range pending {
		flush(k[0], k[1], true)
	}
	return failed, nil
}

// parseLine adds the figures of one output line to res, if it has any.
func parseLine(pkg, line string, res Results) {
	line = strings.TrimSpace(line)
	if i := strings.Index(line, MetricPrefix); i >= 0 {
		f := strings.Fields(line[i+len(MetricPrefix):])
		if len(f) != 3 {
			return
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return
		}
		res[Key{pkg, f[0], f[2]}] = v
		return
	}
	m := benchLine.FindStringSubmatch(line)
	if m == nil {
		return
	}
	f := strings.Fields(m[3])
	for i := 0; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return
		}
		res[Key{pkg, m[1], f[i+1]}] = v
	}
}
