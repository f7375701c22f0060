package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// logLine is the part of a JSON log line the phase breakdown reads.
type logLine struct {
	TS        string  `json:"ts"`
	Msg       string  `json:"msg"`
	Epoch     uint64  `json:"epoch"`
	Process   string  `json:"process"`
	MainAt    string  `json:"main_at"`
	Standby   bool    `json:"standby"`
	Prepare   float64 `json:"prepare"`
	Open      float64 `json:"open"`
	Restore   float64 `json:"restore"`
	Subscribe float64 `json:"subscribe"`
	// StartLoops: the loops' start and the recovery's effects (the version
	// check of every player).
	StartLoops float64 `json:"start_loops"`
	Dial       float64 `json:"dial"`
	Took       float64 `json:"took"`
	// CPU and RestoreCPU: the scene process's CPU time (all threads) until
	// it served, and during the log's open and restore.
	CPU        float64 `json:"cpu"`
	RestoreCPU float64 `json:"restore_cpu"`
	Reason     string  `json:"reason"`
	// StandbyEpoch and Why: a handoff's spare ready, or why it went cold.
	StandbyEpoch uint64 `json:"standby_epoch"`
	Why          string `json:"why"`
	at           time.Time
}

const logTime = "2006-01-02T15:04:05.000Z0700"

// readLogLines parses every JSON line of the files (unparsable lines are
// skipped: a crash may leave half a line).
func readLogLines(paths ...string) []logLine {
	var out []logLine
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l logLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			if l.at, err = time.Parse(logTime, l.TS); err != nil {
				continue
			}
			out = append(out, l)
		}
		f.Close()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// blipPhases reconstructs, from the cluster's logs and the players' spans,
// when each step of the replacement of process proc by epoch happened,
// relative to from (the kill or handoff request): the phase breakdown of
// docs/BENCHMARKS.md. The logs have millisecond timestamps.
func blipPhases(c *cluster, proc string, epoch uint64, from time.Time, spans []span) string {
	var mgr, gw []string
	for _, p := range c.procs {
		switch filepath.Base(p.name) {
		case "worldmgr":
			mgr = append(mgr, p.log)
		case "gateway":
			gw = append(gw, p.log)
		}
	}
	ms := func(t time.Time) string {
		if t.IsZero() {
			return "?"
		}
		return fmt.Sprintf("%.0f", float64(t.Sub(from).Microseconds())/1000)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "epoch %d (ms after the fault):", epoch)
	var noticed, spawned, serving, mainAt, registered, running, linked time.Time
	var sl logLine
	var dial float64
	var spareReady time.Time
	var cold string
	for _, l := range readLogLines(mgr...) {
		if l.at.Before(from.Truncate(time.Millisecond)) || l.Process != proc {
			continue
		}
		switch {
		case l.Msg == "standby ready" && l.StandbyEpoch == epoch && spareReady.IsZero():
			spareReady = l.at
		case l.Msg == "scene process handing over cold: its successor starts after it exits and replays" && cold == "" && noticed.IsZero():
			cold = l.Why
		case noticed.IsZero() && (l.Msg == "scene process died" || strings.HasPrefix(l.Msg, "scene process handed over")):
			noticed = l.at
		case l.Msg == "spawned scene process" && l.Epoch == epoch:
			spawned = l.at
		case (l.Msg == "scene process running again" || l.Msg == "scene process registered") && l.Epoch == epoch && running.IsZero():
			running = l.at
		}
	}
	var toldExit, handedOver time.Time
	var handTook float64
	for _, l := range readLogLines(filepath.Join(c.dataDir, "logs", "scene-"+proc+".log")) {
		if l.Epoch < epoch && !l.at.Before(from.Truncate(time.Millisecond)) {
			switch l.Msg {
			case "world manager told this process to exit":
				toldExit = l.at
			case "handed the event log over":
				handedOver, handTook = l.at, l.Took
			}
		}
		if l.Epoch != epoch {
			continue
		}
		if l.Msg == "replicas republished" {
			fmt.Fprintf(&b, " republish %s (took %.1f),", ms(l.at), l.Took*1000)
		}
		switch l.Msg {
		case "scene process serving":
			serving, sl = l.at, l
			mainAt, _ = time.Parse(time.RFC3339Nano, l.MainAt)
			if mainAt.IsZero() {
				mainAt, _ = time.Parse(logTime, l.MainAt)
			}
		case "registered with world manager":
			registered = l.at
		}
	}
	var learnt time.Time
	if os.Getenv("RESPAWN_BLIP_DEBUG") != "" {
		for _, path := range gw {
			raw, _ := os.ReadFile(path)
			for _, line := range strings.Split(string(raw), "\n") {
				var l logLine
				if json.Unmarshal([]byte(line), &l) == nil {
					if at, err := time.Parse(logTime, l.TS); err == nil && !at.Before(from.Add(-5*time.Millisecond)) && at.Before(from.Add(300*time.Millisecond)) {
						fmt.Fprintf(os.Stderr, "  gw +%s %s\n", ms(at), line)
					}
				}
			}
		}
	}
	for _, l := range readLogLines(gw...) {
		if l.Msg == "scene table: process running" && l.Epoch == epoch && l.Process == proc && learnt.IsZero() {
			learnt = l.at
		}
		if l.Msg == "linked to scene process" && l.Epoch == epoch && l.Process == proc {
			linked, dial = l.at, l.Dial
			break
		}
	}
	var first, last time.Time
	for _, s := range spans {
		if s.end.Before(from) || s.start.After(running.Add(time.Second)) {
			continue
		}
		if !linked.IsZero() && s.end.After(linked) && (first.IsZero() || s.end.Before(first)) {
			first = s.end
		}
		if s.start.Before(from) || !s.start.After(linked) {
			if s.end.After(last) {
				last = s.end
			}
		}
	}
	if !spareReady.IsZero() {
		fmt.Fprintf(&b, " spare ready %s,", ms(spareReady))
	}
	if cold != "" {
		fmt.Fprintf(&b, " COLD (%s),", cold)
	}
	if !toldExit.IsZero() {
		fmt.Fprintf(&b, " old told to exit %s, log handed over %s (took %.1f),", ms(toldExit), ms(handedOver), handTook*1000)
	}
	fmt.Fprintf(&b, " noticed %s, spawned %s, main (standby: takeover) %s, prepare %.1f (standby %v), log open +%.1f, restore +%.1f (cpu: open+restore %.1f, process until serving %.1f), subscribe +%.1f, loops started +%.1f, serving %s, registered %s, running (mgr) %s, gateway's table %s, gateway linked %s (dial %.1f), first reply %s, last held reply %s",
		ms(noticed), ms(spawned), ms(mainAt), sl.Prepare*1000, sl.Standby, sl.Open*1000, sl.Restore*1000, sl.RestoreCPU*1000, sl.CPU*1000, sl.Subscribe*1000, sl.StartLoops*1000, ms(serving), ms(registered), ms(running), ms(learnt), ms(linked), dial*1000, ms(first), ms(last))
	return b.String()
}
