package verify_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/memstore"
	"stele.dev/stele/eventstore/merkle"
	"stele.dev/stele/eventstore/verify"
)

func chain(n int) []eventstore.Record {
	recs := make([]eventstore.Record, n)
	var prev eventstore.Hash
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for i := range recs {
		recs[i] = eventstore.Record{Position: uint64(i + 1), StreamID: fmt.Sprintf("s-%d", i%7), StreamVersion: uint64(i/7 + 1),
			ID: eventstore.NewID(), Type: "thing.happened", Data: []byte(fmt.Sprint(i)), RecordedAt: t0.Add(time.Duration(i) * time.Microsecond),
			Metadata: eventstore.Metadata{Actor: "user:ada"}, PrevHash: prev}
		recs[i].Hash = eventstore.ComputeHash(&recs[i])
		prev = recs[i].Hash
	}
	return recs
}

// Records (batched, hashing in parallel) agrees with a Verifier fed one
// record at a time, and names the first bad position.
func TestRecords(t *testing.T) {
	recs := chain(10000)
	rep, err := verify.Records(recs, verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var f merkle.Frontier
	for i := range recs {
		f.Append(nil, recs[i].Hash)
	}
	if rep.Events != 10000 || rep.Head != recs[9999].Hash || rep.Root != f.Root() ||
		!rep.First.Equal(recs[0].RecordedAt) || !rep.Last.Equal(recs[9999].RecordedAt) {
		t.Fatalf("report %+v", rep)
	}
	v, _ := verify.NewVerifier(verify.Options{})
	for i := range recs {
		if err := v.Record(&recs[i], eventstore.ComputeHash(&recs[i]), nil); err != nil {
			t.Fatal(err)
		}
	}
	if one, _ := v.Finish(); one.Root != rep.Root || one.Events != rep.Events {
		t.Fatalf("one by one %+v, batched %+v", one, rep)
	}

	for _, c := range []struct {
		name   string
		tamper func([]eventstore.Record)
		pos    uint64
	}{
		{"changed data", func(r []eventstore.Record) { r[5000].Data = []byte("x") }, 5001},
		{"stream version skipped", func(r []eventstore.Record) {
			r[7000].StreamVersion++
			r[7000].Hash = eventstore.ComputeHash(&r[7000])
		}, 7001},
		{"time goes back", func(r []eventstore.Record) {
			r[4096].RecordedAt = r[0].RecordedAt.Add(-time.Second)
			r[4096].Hash = eventstore.ComputeHash(&r[4096])
		}, 4097},
	} {
		bad := chain(10000)
		c.tamper(bad)
		_, err := verify.Records(bad, verify.Options{})
		var ve *verify.Error
		if !errors.As(err, &ve) || ve.Position != c.pos {
			t.Errorf("%s: %v, want a failure at position %d", c.name, err, c.pos)
		}
	}
}

// scanStore adds eventstore.Scanner to a memstore, with positions it
// pretends not to hold (deleted rows) or holds swapped.
type scanStore struct {
	*memstore.Store
	skip map[uint64]bool
	swap [2]uint64
}

func (s scanStore) ScanLog(ctx context.Context, from, to uint64, fn func([]eventstore.StoredEvent) error) error {
	recs, err := s.ReadAll(ctx, from, int(min(to, 1<<20)-from+1))
	if err != nil {
		return err
	}
	tree, err := s.ReadTree(ctx, from, len(recs))
	if err != nil {
		return err
	}
	var batch []eventstore.StoredEvent
	for i := range recs {
		j := i
		if p := recs[i].Position; p == s.swap[0] && s.swap[1] <= to {
			j = int(s.swap[1] - from)
		} else if p == s.swap[1] && s.swap[0] >= from {
			j = int(s.swap[0] - from)
		}
		if s.skip[recs[j].Position] {
			continue
		}
		var tr []byte
		for _, h := range tree[j].Hashes {
			tr = append(tr, h[:]...)
		}
		batch = append(batch, eventstore.StoredEvent{Canonical: eventstore.AppendCanonical(nil, &recs[j]), Hash: recs[j].Hash, Tree: tr})
		if len(batch) == 100 {
			if err := fn(batch); err != nil {
				return err
			}
			batch = nil
		}
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return nil
}

// Store reads a Scanner's batches in order, agrees with the paged read,
// and names the first missing or misplaced event.
func TestStoreScanner(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New(nil)
	for i := range 2000 {
		if _, err := mem.Append(ctx, fmt.Sprintf("s-%d", i%5), eventstore.Any,
			eventstore.Event{ID: eventstore.NewID(), Type: "thing.happened", Data: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := verify.Store(ctx, scanStore{Store: mem}, verify.Options{})
	if err != nil || rep.Events != 2000 || rep.TreeHashes < 2000 {
		t.Fatalf("verify = %+v, %v", rep, err)
	}
	plain, _ := verify.Store(ctx, mem, verify.Options{})
	if plain.Root != rep.Root || plain.Head != rep.Head || plain.TreeHashes != rep.TreeHashes {
		t.Fatalf("scanned %+v, paged %+v", rep, plain)
	}
	for _, c := range []struct {
		name string
		s    scanStore
		pos  uint64
	}{
		{"deleted", scanStore{Store: mem, skip: map[uint64]bool{450: true}}, 450},
		{"deleted at a batch's start", scanStore{Store: mem, skip: map[uint64]bool{601: true}}, 601},
		{"deleted at the end", scanStore{Store: mem, skip: map[uint64]bool{2000: true}}, 2000},
		{"swapped", scanStore{Store: mem, swap: [2]uint64{1210, 1211}}, 1210},
	} {
		_, err := verify.Store(ctx, c.s, verify.Options{})
		var ve *verify.Error
		if !errors.As(err, &ve) || ve.Position != c.pos {
			t.Errorf("%s: %v, want a failure at position %d", c.name, err, c.pos)
		}
	}
}
