package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkSaveBatch measures the data server's steady-state flush: a
// batch of 4000 existing players, each with ~300 bytes of fresh data and a
// newer version, so every row takes the upsert's update path. One op is
// one SaveBatch; rows/s and stmts/s are the rates the data server reports.
func BenchmarkSaveBatch(b *testing.B) {
	const players, dataSize = 4000, 300
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			s, p := openTest(b, be)
			rng := rand.New(rand.NewPCG(1, 2))
			recs := make([]Record, players)
			for i := range recs {
				data := make([]byte, dataSize-20+rng.IntN(41))
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				recs[i] = Record{ID: fmt.Sprintf("%sb%05d", p, i), Data: data, OwnerScene: "scene-1", OwnerEpoch: 1}
			}
			version := uint64(1)
			save := func() {
				for i := range recs {
					recs[i].Version = version
					recs[i].Data[0]++ // make each version's data differ
				}
				version++
				if err := s.SaveBatch(ctxT(b), recs); err != nil {
					b.Fatal(err)
				}
			}
			save() // insert once; the timed loop measures updates

			before := s.Stats()
			b.SetBytes(int64(players * dataSize))
			b.ResetTimer()
			for b.Loop() {
				save()
			}
			b.StopTimer()
			st := s.Stats()
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(st.Rows-before.Rows)/sec, "rows/s")
			b.ReportMetric(float64(st.Statements-before.Statements)/sec, "stmts/s")
		})
	}
}
