package verify

import (
	"context"
	"crypto/sha256"
	"runtime"
	"sync"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

// PageSize is how many records Store reads per query when the store is
// not an eventstore.Scanner.
const PageSize = 5000

type page struct {
	recs     []eventstore.Record
	tree     []eventstore.TreeEntry
	computed []eventstore.Hash
	err      error
}

// Store verifies the log in s from position 1 to the head it finds when
// it starts: every record (recomputing hashes in parallel), every stored
// Merkle hash, every stored checkpoint, the stored head, and the trusted
// checkpoint if given. It returns the report and, on failure, an error
// matching ErrFailed that names the first bad position and the reason.
// Events appended while it runs are not checked.
//
// It reads the log through s's ScanLog if s is an eventstore.Scanner (the
// PostgreSQL store streams it by binary COPY), else a page at a time
// through ReadAll and ReadTree; either way the hashes of one batch are
// computed on every CPU while the batch before it is checked.
func Store(ctx context.Context, s eventstore.Store, opts Options) (Report, error) {
	start := time.Now()
	v, err := NewVerifier(opts)
	if err != nil {
		return Report{}, err
	}
	head, err := s.Head(ctx)
	if err != nil {
		return Report{}, err
	}
	cps, err := s.Checkpoints(ctx, 0, 0)
	if err != nil {
		return Report{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	checkCheckpoints := func() error {
		for len(cps) > 0 && cps[0].Size <= v.Size() {
			cp := cps[0]
			cps = cps[1:]
			if err := v.Checkpoint(cp.Note, cp.Size, cp.Root); err != nil {
				return err
			}
		}
		return nil
	}
	finish := func(err error) (Report, error) {
		r, ferr := v.Finish()
		r.Duration = time.Since(start)
		if err == nil {
			err = ferr
		}
		return r, err
	}
	if err := checkCheckpoints(); err != nil {
		return finish(err)
	}
	if sc, ok := s.(eventstore.Scanner); ok {
		err = verifyScan(ctx, sc, v, head.Position, checkCheckpoints)
	} else {
		err = verifyPages(ctx, s, v, head.Position, checkCheckpoints)
	}
	if err != nil {
		return finish(err)
	}
	if err := ctx.Err(); err != nil {
		return finish(err)
	}
	if v.Size() != head.Position {
		return finish(fail(v.Size()+1, "the stored head is at position %d but the log ends at %d (events were removed)", head.Position, v.Size()))
	}
	if v.prev != head.Hash {
		return finish(fail(head.Position, "the stored head hash %s differs from the last event's hash %s", short(head.Hash), short(v.prev)))
	}
	if len(cps) > 0 {
		return finish(fail(0, "a checkpoint covers %d events but the log ends at %d (events were removed)", cps[0].Size, head.Position))
	}
	// Rows past the head are either appends committed since we started
	// (the head moved with them, in the same transaction) or insertions.
	var beyond uint64
	for from := head.Position + 1; ; {
		recs, err := s.ReadAll(ctx, from, PageSize)
		if err != nil {
			return finish(err)
		}
		if len(recs) == 0 {
			break
		}
		beyond = recs[len(recs)-1].Position
		from = beyond + 1
	}
	if beyond > 0 {
		now, err := s.Head(ctx)
		if err != nil {
			return finish(err)
		}
		if beyond > now.Position {
			return finish(fail(now.Position+1, "an event is stored at position %d, past the head %d (an event was inserted)", beyond, now.Position))
		}
	}
	return finish(nil)
}

// verifyPages feeds v the log up to position end, read a page at a time
// through ReadAll and ReadTree.
func verifyPages(ctx context.Context, s eventstore.Store, v *Verifier, end uint64, checkCheckpoints func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for p := range hashPages(ctx, readPages(ctx, s, end)) {
		if p.err != nil {
			return p.err
		}
		for i := range p.recs {
			var tree []eventstore.Hash
			if i < len(p.tree) && p.tree[i].Position == p.recs[i].Position {
				tree = p.tree[i].Hashes
			} else {
				return fail(p.recs[i].Position, "no stored Merkle hashes for this event")
			}
			if err := v.Record(&p.recs[i], p.computed[i], tree); err != nil {
				return err
			}
			if err := checkCheckpoints(); err != nil {
				return err
			}
		}
	}
	return nil
}

// storedBatch is a batch of the log read by a Scanner, with the hashes of
// its events' encodings.
type storedBatch struct {
	evs      []eventstore.StoredEvent
	computed []eventstore.Hash // SHA-256 of each encoding
	leaves   []eventstore.Hash // Merkle leaf hash of each stored hash
	bad      []error           // per event: a malformed encoding, if any
	err      error
}

// verifyScan feeds v the log up to position end as sc streams it: one
// goroutine reads, the hashes are computed on every CPU a batch at a
// time, and the events are checked in order here, while the next batches
// are read and hashed.
func verifyScan(ctx context.Context, sc eventstore.Scanner, v *Verifier, end uint64, checkCheckpoints func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	read := make(chan storedBatch, 4)
	go func() {
		defer close(read)
		err := sc.ScanLog(ctx, 1, end, func(evs []eventstore.StoredEvent) error {
			select {
			case read <- storedBatch{evs: evs}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil && ctx.Err() == nil {
			select {
			case read <- storedBatch{err: err}:
			case <-ctx.Done():
			}
		}
	}()
	hashed := make(chan storedBatch, 2)
	go func() {
		defer close(hashed)
		workers := runtime.GOMAXPROCS(0)
		for b := range read {
			if b.err == nil {
				b.computed = make([]eventstore.Hash, len(b.evs))
				b.leaves = make([]eventstore.Hash, len(b.evs))
				b.bad = hashStored(b.evs, b.computed, b.leaves, workers)
			}
			select {
			case hashed <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	for b := range hashed {
		if b.err != nil {
			return b.err
		}
		for i := range b.evs {
			if b.bad != nil && b.bad[i] != nil {
				return fail(v.Size()+1, "the stored event does not encode: %v", b.bad[i])
			}
			if err := v.stored(&b.evs[i], b.computed[i], &b.leaves[i]); err != nil {
				return err
			}
			if err := checkCheckpoints(); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// hashStored sets out[i] to the SHA-256 of evs[i].Canonical and leaves[i]
// to the Merkle leaf hash of evs[i].Hash, using up to workers goroutines,
// and returns, if any encoding is malformed, the error for each event (nil
// otherwise).
func hashStored(evs []eventstore.StoredEvent, out, leaves []eventstore.Hash, workers int) []error {
	var bad []error
	var mu sync.Mutex
	parallel(len(evs), workers, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if err := eventstore.CheckCanonical(evs[i].Canonical); err != nil {
				mu.Lock()
				if bad == nil {
					bad = make([]error, len(evs))
				}
				bad[i] = err
				mu.Unlock()
				continue
			}
			out[i] = sha256.Sum256(evs[i].Canonical)
			leaves[i] = merkle.LeafHash(evs[i].Hash)
		}
	})
	return bad
}

// parallel runs fn over [0, n) split into ranges, each on a goroutine of
// its own, and waits for them. The ranges are at most chunkSize long (at
// least workers of them) so that the scheduler can keep every CPU busy
// even while other goroutines (the in-order checks) run beside them.
func parallel(n, workers int, fn func(lo, hi int)) {
	if workers < 1 {
		workers = 1
	}
	chunk := min(max((n+workers-1)/workers, 64), chunkSize)
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// chunkSize bounds the ranges parallel hands to one goroutine.
const chunkSize = 512

// readPages reads records and their tree hashes up to position end.
func readPages(ctx context.Context, s eventstore.Store, end uint64) <-chan page {
	out := make(chan page, 2)
	go func() {
		defer close(out)
		for from := uint64(1); from <= end; {
			n := int(min(uint64(PageSize), end-from+1))
			recs, err := s.ReadAll(ctx, from, n)
			var tree []eventstore.TreeEntry
			if err == nil {
				tree, err = s.ReadTree(ctx, from, n)
			}
			if err == nil && len(recs) == 0 {
				err = fail(from, "event missing: the log ends at position %d but the head is at %d (events were removed)", from-1, end)
			}
			select {
			case out <- page{recs: recs, tree: tree, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			from = recs[len(recs)-1].Position + 1
		}
	}()
	return out
}

// hashPages recomputes the records' hashes, splitting each page across
// the available CPUs.
func hashPages(ctx context.Context, in <-chan page) <-chan page {
	out := make(chan page, 2)
	workers := runtime.GOMAXPROCS(0)
	go func() {
		defer close(out)
		for p := range in {
			if p.err == nil {
				p.computed = make([]eventstore.Hash, len(p.recs))
				HashAll(p.recs, p.computed, workers)
			}
			select {
			case out <- p:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// HashAll sets out[i] to the canonical hash of recs[i], using up to
// workers goroutines.
func HashAll(recs []eventstore.Record, out []eventstore.Hash, workers int) {
	parallel(len(recs), workers, func(lo, hi int) {
		var h eventstore.Hasher
		for i := lo; i < hi; i++ {
			out[i] = h.Hash(&recs[i])
		}
	})
}

// recordBatch is how many records Records hashes at a time.
const recordBatch = 4096

// Records verifies a whole log held in memory, recs[i] being the event at
// position i+1 (as Verifier.Record does, with no stored Merkle hashes to
// compare). It hashes each batch of records on every CPU while the batch
// before it is checked in order.
func Records(recs []eventstore.Record, opts Options) (Report, error) {
	start := time.Now()
	v, err := NewVerifier(opts)
	if err != nil {
		return Report{}, err
	}
	type hashed struct{ lo, hi int }
	computed := make([]eventstore.Hash, len(recs))
	leaves := make([]eventstore.Hash, len(recs))
	ready := make(chan hashed, 2)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(ready)
		workers := runtime.GOMAXPROCS(0)
		for lo := 0; lo < len(recs); lo += recordBatch {
			hi := min(lo+recordBatch, len(recs))
			parallel(hi-lo, workers, func(a, b int) {
				var h eventstore.Hasher
				for i := lo + a; i < lo+b; i++ {
					computed[i] = h.Hash(&recs[i])
					leaves[i] = merkle.LeafHash(recs[i].Hash)
				}
			})
			select {
			case ready <- hashed{lo, hi}:
			case <-stop:
				return
			}
		}
	}()
	for b := range ready {
		for i := b.lo; i < b.hi; i++ {
			r := &recs[i]
			if err := v.check(r.Position, r.PrevHash, r.Hash, computed[i], r.RecordedAt.UnixMicro(), r.StreamID, r.StreamVersion, nil, false, &leaves[i]); err != nil {
				rep, _ := v.Finish()
				rep.Duration = time.Since(start)
				return rep, err
			}
		}
	}
	rep, err := v.Finish()
	rep.Duration = time.Since(start)
	return rep, err
}
