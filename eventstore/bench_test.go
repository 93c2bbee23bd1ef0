package eventstore_test

import (
	"crypto/sha256"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/verify"
)

// benchRecords makes a valid chain of n records of about 400 bytes each.
func benchRecords(n int) []eventstore.Record {
	recs := make([]eventstore.Record, n)
	var prev eventstore.Hash
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	data := make([]byte, 230)
	for i := range recs {
		recs[i] = eventstore.Record{Position: uint64(i + 1), StreamID: fmt.Sprintf("secret-%04d", i%1000), StreamVersion: uint64(i/1000 + 1),
			ID: eventstore.NewID(), Type: "secret.updated", Data: data, RecordedAt: t0.Add(time.Duration(i) * time.Microsecond),
			Metadata: eventstore.Metadata{Actor: "token:bench", Tenant: "org-bench", RequestID: fmt.Sprintf("req-%d", i), ClientAddr: "127.0.0.1"},
			PrevHash: prev}
		recs[i].Hash = eventstore.ComputeHash(&recs[i])
		prev = recs[i].Hash
	}
	return recs
}

// BenchmarkSHA256Raw is the floor: SHA-256 over canonical bytes encoded
// beforehand, one goroutine.
func BenchmarkSHA256Raw(b *testing.B) {
	recs := benchRecords(10000)
	canon := make([][]byte, len(recs))
	for i := range recs {
		canon[i] = eventstore.AppendCanonical(nil, &recs[i])
	}
	b.SetBytes(int64(len(canon[0])))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		sha256.Sum256(canon[i%len(canon)])
	}
}

// BenchmarkHash encodes a record canonically and hashes it, one goroutine.
func BenchmarkHash(b *testing.B) {
	recs := benchRecords(10000)
	var h eventstore.Hasher
	b.SetBytes(int64(eventstore.CanonicalSize(&recs[0])))
	for i := 0; b.Loop(); i++ {
		h.Hash(&recs[i%len(recs)])
	}
}

// BenchmarkSHA256RawParallel is the same floor on every CPU the
// benchmark runs with (-cpu), to set beside BenchmarkVerify: both sides
// then use the same number of cores.
func BenchmarkSHA256RawParallel(b *testing.B) {
	recs := benchRecords(10000)
	canon := make([][]byte, len(recs))
	for i := range recs {
		canon[i] = eventstore.AppendCanonical(nil, &recs[i])
	}
	b.SetBytes(int64(len(canon[0])))
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1000))
		for pb.Next() {
			sha256.Sum256(canon[i%len(canon)])
			i++
		}
	})
}

// BenchmarkVerify is whole-log verification in memory (verify.Records):
// hashes recomputed on every CPU a batch at a time, while chain, versions,
// times and the Merkle tree are checked in order. One op is one event.
func BenchmarkVerify(b *testing.B) {
	recs := benchRecords(10000) // as many as BenchmarkSHA256Raw hashes
	b.SetBytes(int64(eventstore.CanonicalSize(&recs[0])))
	b.ResetTimer()
	done := 0
	for done < b.N {
		n := min(len(recs), b.N-done)
		if _, err := verify.Records(recs[:n], verify.Options{}); err != nil {
			b.Fatal(err)
		}
		done += n
	}
}
