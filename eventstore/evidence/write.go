package evidence

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

// Source is what an export reads of the log; an eventstore.Store is one.
type Source interface {
	Head(ctx context.Context) (eventstore.Head, error)
	ReadAll(ctx context.Context, from uint64, limit int) ([]eventstore.Record, error)
	TreeHashes(ctx context.Context, indexes []int64) ([]eventstore.Hash, error)
	LatestCheckpoint(ctx context.Context) (eventstore.Checkpoint, error)
}

// Request says what to export.
type Request struct {
	// Org is the tenant: the events whose Metadata.Tenant equals it.
	Org string
	// From and To bound the events' recorded times, [From, To); a zero
	// bound is open.
	From, To time.Time
	// Sign, when set, signs a checkpoint of the log's current head (such
	// as checkpoint.Checkpointer.Checkpoint). It is called only when the
	// latest stored checkpoint does not cover the last event to export.
	// Without it such an export fails with ErrNotCovered.
	Sign func(ctx context.Context) (eventstore.Checkpoint, error)
}

// ErrNotCovered means no signed checkpoint covers the last event to
// export yet, and the export could not sign one: try again once the
// server has signed its next checkpoint.
var ErrNotCovered = errors.New("evidence: no signed checkpoint covers the organization's latest events yet")

// ErrInvalid means a Request cannot be exported: an organization that
// cannot name a tenant in a file, or an empty range.
var ErrInvalid = errors.New("evidence: invalid request")

// pageSize is how many records an export reads at a time.
const pageSize = 1000

// Export is a prepared export: the range of log positions to read and
// the checkpoint that every proof is made against.
type Export struct {
	src Source
	req Request
	// lo and hi bound the positions read, [lo, hi]; lo > hi when the
	// range holds no event.
	lo, hi uint64
	// Checkpoint is the signed checkpoint of the file.
	Checkpoint eventstore.Checkpoint
}

// Summary describes a written evidence file.
type Summary struct {
	Events                      uint64
	FirstPosition, LastPosition uint64
	Bytes                       int64
}

// Prepare finds the positions whose recorded times lie in the range (the
// log's times never decrease, so a binary search over positions does),
// and a checkpoint that covers the last of the tenant's events in it: the
// latest stored one when it does, else one that req.Sign signs now. It
// reads nothing of the tenant's events yet, so that a caller can still
// answer with an error before it starts writing.
func Prepare(ctx context.Context, src Source, req Request) (*Export, error) {
	if err := ValidOrg(req.Org); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	req.From, req.To = ceilMicro(req.From), ceilMicro(req.To)
	if !req.From.IsZero() && !req.To.IsZero() && !req.From.Before(req.To) {
		return nil, fmt.Errorf("%w: the range is empty: want from before to (at the log's precision, microseconds)", ErrInvalid)
	}
	head, err := src.Head(ctx)
	if err != nil {
		return nil, err
	}
	x := &Export{src: src, req: req, lo: 1, hi: head.Position}
	if !req.From.IsZero() {
		if x.lo, err = firstAtOrAfter(ctx, src, head.Position, req.From); err != nil {
			return nil, err
		}
	}
	if !req.To.IsZero() {
		end, err := firstAtOrAfter(ctx, src, head.Position, req.To)
		if err != nil {
			return nil, err
		}
		x.hi = end - 1
	}
	cp, err := src.LatestCheckpoint(ctx)
	switch {
	case errors.Is(err, eventstore.ErrNotFound):
		cp = eventstore.Checkpoint{}
	case err != nil:
		return nil, err
	}
	if cp.Note != nil && cp.Size >= x.hi {
		x.Checkpoint = cp
		return x, nil
	}
	if req.Sign != nil {
		if cp, err = req.Sign(ctx); err != nil {
			return nil, fmt.Errorf("evidence: signing a checkpoint: %w", err)
		}
		if cp.Size < x.hi {
			return nil, fmt.Errorf("evidence: the checkpoint signed covers %d events, fewer than the %d to read", cp.Size, x.hi)
		}
		x.Checkpoint = cp
		return x, nil
	}
	if cp.Note == nil {
		return nil, fmt.Errorf("%w (the ledger has no signed checkpoint)", ErrNotCovered)
	}
	// Without a signer: the latest checkpoint still serves if none of the
	// events after it is the tenant's (usually few: the checkpointer signs
	// every few seconds while the log grows).
	for from := max(cp.Size+1, x.lo); from <= x.hi; {
		recs, err := src.ReadAll(ctx, from, int(min(pageSize, x.hi-from+1)))
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			return nil, fmt.Errorf("evidence: the log ends at position %d, before %d", from-1, x.hi)
		}
		for i := range recs {
			if recs[i].Position <= x.hi && recs[i].Metadata.Tenant == req.Org {
				return nil, fmt.Errorf("%w (the latest covers %d events; the organization has one at position %d)", ErrNotCovered, cp.Size, recs[i].Position)
			}
		}
		from = recs[len(recs)-1].Position + 1
	}
	x.hi = min(x.hi, cp.Size)
	x.Checkpoint = cp
	return x, nil
}

// ceilMicro rounds a bound up to whole microseconds, the log's
// precision, in UTC: the events at or after t are those at or after the
// rounded bound.
func ceilMicro(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	c := eventstore.TruncateTime(t)
	if c.Before(t) {
		c = c.Add(time.Microsecond)
	}
	return c
}

// firstAtOrAfter returns the first position whose recorded time is at
// or after t, or head+1 when there is none.
func firstAtOrAfter(ctx context.Context, src Source, head uint64, t time.Time) (uint64, error) {
	lo, hi := uint64(1), head+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		recs, err := src.ReadAll(ctx, mid, 1)
		if err != nil {
			return 0, err
		}
		if len(recs) == 0 || recs[0].Position != mid {
			return 0, fmt.Errorf("evidence: the log has no event at position %d below its head %d", mid, head)
		}
		if recs[0].RecordedAt.Before(t) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// WriteTo writes the evidence file to w, reading the log page by page
// and the proofs' hashes a page at a time. An error after the first
// bytes leaves the file without its end line, which no reader accepts.
func (x *Export) WriteTo(ctx context.Context, w io.Writer) (Summary, error) {
	var sum Summary
	cw := &countWriter{w: w}
	digest := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(cw, digest), 64<<10)
	size := x.Checkpoint.Size
	fmt.Fprintf(bw, "%s\norg %s\nfrom %s\nto %s\ncheckpoint %d\n", Magic, x.req.Org, formatTime(x.req.From), formatTime(x.req.To), len(x.Checkpoint.Note))
	bw.Write(x.Checkpoint.Note)
	proofs := &prover{src: x.src, size: size, cache: map[int64]eventstore.Hash{}}
	var line []byte
	var page []*eventstore.Record
	for from := x.lo; from <= x.hi; {
		recs, err := x.src.ReadAll(ctx, from, int(min(pageSize, x.hi-from+1)))
		if err != nil {
			return sum, err
		}
		if len(recs) == 0 {
			return sum, fmt.Errorf("evidence: the log ends at position %d, before %d", from-1, x.hi)
		}
		page = page[:0]
		for i := range recs {
			r := &recs[i]
			if r.Position != from+uint64(i) {
				return sum, fmt.Errorf("evidence: expected position %d, read %d", from+uint64(i), r.Position)
			}
			if r.Position <= x.hi && r.Metadata.Tenant == x.req.Org && inRange(r.RecordedAt, x.req.From, x.req.To) {
				page = append(page, r)
			}
		}
		from = recs[len(recs)-1].Position + 1
		ps, err := proofs.prove(ctx, page)
		if err != nil {
			return sum, err
		}
		for i, r := range page {
			line = appendEventLine(line[:0], r, ps[i])
			if _, err := bw.Write(line); err != nil {
				return sum, err
			}
			if sum.Events == 0 {
				sum.FirstPosition = r.Position
			}
			sum.LastPosition = r.Position
			sum.Events++
		}
	}
	if err := bw.Flush(); err != nil {
		return sum, err
	}
	end := fmt.Sprintf("end %d %s\n", sum.Events, hex.EncodeToString(digest.Sum(nil)))
	if _, err := io.WriteString(cw, end); err != nil {
		return sum, err
	}
	sum.Bytes = cw.n
	return sum, nil
}

// appendEventLine appends "event <position> <hash> <record> <proof>...\n".
func appendEventLine(dst []byte, r *eventstore.Record, proof []eventstore.Hash) []byte {
	dst = append(dst, "event "...)
	dst = strconv.AppendUint(dst, r.Position, 10)
	dst = append(dst, ' ')
	dst = hex.AppendEncode(dst, r.Hash[:])
	dst = append(dst, ' ')
	dst = base64.StdEncoding.AppendEncode(dst, eventstore.AppendCanonical(nil, r))
	for _, h := range proof {
		dst = append(dst, ' ')
		dst = hex.AppendEncode(dst, h[:])
	}
	return append(dst, '\n')
}

// prover makes inclusion proofs for many events of one tree, reading the
// stored hashes they need in one call per page and keeping the upper
// nodes, which neighbouring proofs share.
type prover struct {
	src   Source
	size  uint64
	cache map[int64]eventstore.Hash
}

// maxCache bounds the cached hashes (32 MiB of hashes).
const maxCache = 1 << 20

func (p *prover) prove(ctx context.Context, recs []*eventstore.Record) ([][]eventstore.Hash, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	// First learn which stored hashes the proofs read, then read the
	// missing ones at once, then make the proofs from the cache.
	rec := &recorder{}
	for _, r := range recs {
		if _, err := merkle.InclusionProof(ctx, rec, p.size, r.Position-1); err != nil {
			return nil, err
		}
	}
	if len(p.cache)+len(rec.indexes) > maxCache {
		clear(p.cache)
	}
	var missing []int64
	seen := map[int64]bool{}
	for _, ix := range rec.indexes {
		if _, ok := p.cache[ix]; !ok && !seen[ix] {
			seen[ix] = true
			missing = append(missing, ix)
		}
	}
	for len(missing) > 0 {
		n := min(len(missing), 10000)
		hs, err := p.src.TreeHashes(ctx, missing[:n])
		if err != nil {
			return nil, err
		}
		if len(hs) != n {
			return nil, fmt.Errorf("evidence: read %d tree hashes for %d indexes", len(hs), n)
		}
		for i, h := range hs {
			p.cache[missing[i]] = h
		}
		missing = missing[n:]
	}
	out := make([][]eventstore.Hash, len(recs))
	for i, r := range recs {
		proof, err := merkle.InclusionProof(ctx, cacheReader(p.cache), p.size, r.Position-1)
		if err != nil {
			return nil, err
		}
		out[i] = proof
	}
	return out, nil
}

// recorder is a merkle.Reader that notes the indexes asked for and
// answers zero hashes.
type recorder struct{ indexes []int64 }

func (r *recorder) TreeHashes(_ context.Context, indexes []int64) ([]eventstore.Hash, error) {
	r.indexes = append(r.indexes, indexes...)
	return make([]eventstore.Hash, len(indexes)), nil
}

// cacheReader is a merkle.Reader over cached hashes.
type cacheReader map[int64]eventstore.Hash

func (c cacheReader) TreeHashes(_ context.Context, indexes []int64) ([]eventstore.Hash, error) {
	out := make([]eventstore.Hash, len(indexes))
	for i, ix := range indexes {
		h, ok := c[ix]
		if !ok {
			return nil, fmt.Errorf("evidence: tree hash %d was not read", ix)
		}
		out[i] = h
	}
	return out, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
