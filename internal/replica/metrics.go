package replica

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collector exports a reader's Stats at scrape time, so the metrics and
// Stats() can never disagree and nothing is updated on the hot path.
type collector struct {
	stats                                         func() Stats
	keys, age, lag, applied, ignored, msgs, resyn *prometheus.Desc
	gaps, synced                                  *prometheus.Desc
}

func newCollector(module string, stats func() Stats) *collector {
	cl := prometheus.Labels{"module": module}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("respawn_replica_"+name, help, labels, cl)
	}
	return &collector{
		stats:   stats,
		keys:    d("keys", "Keys held by the replica."),
		age:     d("age_seconds", "Time since the newest update was received."),
		lag:     d("lag_seconds", "Receive time minus owner publish time over recent updates.", "quantile"),
		applied: d("applied_total", "Entries applied (newer than the held version)."),
		ignored: d("ignored_total", "Entries ignored as stale or duplicate."),
		msgs:    d("messages_total", "Messages received on the update subject."),
		resyn:   d("resyncs_total", "Snapshot requests sent (start, reconnect, gap)."),
		gaps:    d("gaps_total", "Sequence gaps detected."),
		synced:  d("synced", "1 once the first snapshot has completed."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.keys, c.age, c.lag, c.applied, c.ignored, c.msgs, c.resyn, c.gaps, c.synced} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	k := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	g(c.keys, float64(st.Keys))
	g(c.age, st.Age.Seconds())
	g(c.lag, st.LagP50.Seconds(), "0.5")
	g(c.lag, st.LagP99.Seconds(), "0.99")
	k(c.applied, st.Applied)
	k(c.ignored, st.Ignored)
	k(c.msgs, st.Messages)
	k(c.resyn, st.Resyncs)
	k(c.gaps, st.Gaps)
	var s float64
	if st.Synced {
		s = 1
	}
	g(c.synced, s)
}
