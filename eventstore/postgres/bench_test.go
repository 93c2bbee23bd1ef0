package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/internal/pgtest"
)

// BenchmarkAppend appends one ~400-byte event per op from 1, 16 and 64
// goroutines, each to a stream of its own with an exact expected version.
// `stele bench ledger` measures the same with latency percentiles and a
// CopyFrom baseline; see docs/benchmarks.md.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("appenders=%d", c), func(b *testing.B) {
			pool := newPool(b, pgtest.Schema(b))
			s := openStore(b, pool, postgres.Options{})
			data := make([]byte, 230)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for g := range c {
				wg.Add(1)
				go func() {
					defer wg.Done()
					stream := fmt.Sprintf("bench-%d", g)
					for v := uint64(0); next.Add(1) <= int64(b.N); v++ {
						ev := eventstore.Event{ID: eventstore.NewID(), Type: "bench.appended", Data: data,
							Metadata: eventstore.Metadata{Actor: "token:bench", Tenant: "org-bench", RequestID: "req", ClientAddr: "127.0.0.1"}}
						if _, err := s.Append(context.Background(), stream, eventstore.Exactly(v), ev); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
