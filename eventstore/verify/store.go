package verify

import (
	"context"
	"runtime"
	"sync"
	"time"

	"stele.dev/stele/eventstore"
)

// PageSize is how many records Store reads per query.
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
	pages := hashPages(ctx, readPages(ctx, s, head.Position))

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
	for p := range pages {
		if p.err != nil {
			return finish(p.err)
		}
		for i := range p.recs {
			var tree []eventstore.Hash
			if i < len(p.tree) && p.tree[i].Position == p.recs[i].Position {
				tree = p.tree[i].Hashes
			} else {
				return finish(fail(p.recs[i].Position, "no stored Merkle hashes for this event"))
			}
			if err := v.Record(&p.recs[i], p.computed[i], tree); err != nil {
				return finish(err)
			}
			if err := checkCheckpoints(); err != nil {
				return finish(err)
			}
		}
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
	if workers < 1 {
		workers = 1
	}
	chunk := (len(recs) + workers - 1) / workers
	if chunk < 256 {
		chunk = 256
	}
	var wg sync.WaitGroup
	for lo := 0; lo < len(recs); lo += chunk {
		hi := min(lo+chunk, len(recs))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h eventstore.Hasher
			for i := lo; i < hi; i++ {
				out[i] = h.Hash(&recs[i])
			}
		}()
	}
	wg.Wait()
}
