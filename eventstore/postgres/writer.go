package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

// Request states: queued, taken into a batch, abandoned by a cancelled caller.
const (
	stateQueued int32 = iota
	stateTaken
	stateAbandoned
)

type appendReq struct {
	stream   string
	expected eventstore.ExpectedVersion
	events   []eventstore.Event
	size     int
	state    atomic.Int32
	done     chan appendResult
	// set by the writer while deciding
	result eventstore.Appended
	err    error
}

type appendResult struct {
	res eventstore.Appended
	err error
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.Appended, error) {
	if err := eventstore.ValidateAppend(stream, expected, events); err != nil {
		return eventstore.Appended{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.Appended{}, err
	}
	if s.closed.Load() {
		return eventstore.Appended{}, eventstore.ErrClosed
	}
	r := &appendReq{stream: stream, expected: expected, events: events, done: make(chan appendResult, 1)}
	for i := range events {
		r.size += len(events[i].Data)
	}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return eventstore.Appended{}, ctx.Err()
	case <-s.closing:
		return eventstore.Appended{}, eventstore.ErrClosed
	}
	select {
	case out := <-r.done:
		return out.res, out.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateAbandoned) {
			return eventstore.Appended{}, ctx.Err()
		}
		out := <-r.done // already being written: report the real outcome
		return out.res, out.err
	}
}

// writer is the one goroutine that commits this process's appends, a
// batch at a time: whatever appends are queued when the previous batch
// commits form the next one, so under load many appends share one commit.
func (s *Store) writer() {
	var carry *appendReq
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case <-s.closing:
				s.drain()
				return
			case first = <-s.reqs:
			}
		}
		batch := make([]*appendReq, 0, 64)
		events, bytes := 0, 0
		take := func(r *appendReq) bool {
			if len(batch) > 0 && (events+len(r.events) > s.opts.MaxBatchEvents || bytes+r.size > s.opts.MaxBatchBytes) {
				return false
			}
			if r.state.CompareAndSwap(stateQueued, stateTaken) {
				batch = append(batch, r)
				events += len(r.events)
				bytes += r.size
			}
			return true
		}
		take(first)
	fill:
		for {
			select {
			case r := <-s.reqs:
				if !take(r) {
					carry = r
					break fill
				}
			default:
				break fill
			}
		}
		if len(batch) > 0 && !s.commitFast(batch) {
			s.commitSlow(batch)
		}
		s.gather()
	}
}

// gatherRounds bounds how many times gather yields.
const gatherRounds = 4

// gather lets the goroutines that the last batch answered run before the
// writer takes the next batch: it yields to them as long as the queue
// keeps growing (at most gatherRounds times). Callers that append again at
// once (a busy server's request handlers) then share the next commit
// instead of waiting for the one after it; a caller that does not costs
// one yield.
func (s *Store) gather() {
	n := len(s.reqs)
	for range gatherRounds {
		runtime.Gosched()
		m := len(s.reqs)
		if m == n {
			return
		}
		n = m
	}
}

// drain fails every queued append after Close.
func (s *Store) drain() {
	for {
		select {
		case r := <-s.reqs:
			if r.state.CompareAndSwap(stateQueued, stateTaken) {
				r.done <- appendResult{err: eventstore.ErrClosed}
			}
		default:
			return
		}
	}
}

// plan is the outcome of deciding a batch: the rows to insert and the
// state after them.
type plan struct {
	rows     *copyRows
	next     eventstore.Head
	frontier *merkle.Frontier
	versions map[string]uint64
}

// maxCachedStreams bounds the writer's stream version cache; past it the
// cache starts again empty.
const maxCachedStreams = 200_000

// commitFast decides batch on top of the writer's view and writes it in
// one round trip (execAppend): ledger_advance locks the head and checks it
// is where the view says, checks the versions of streams the writer has
// not seen, moves the head and notifies; a COPY inserts the rows; the
// implicit transaction commits. It
// returns false, having written nothing, when the batch needs the slow
// path: no valid view, an Any or StreamExists append to an unseen stream,
// a conflict (which may really be a retry of a stored append: only the
// slow path reads stored event IDs), or a refusal by the database (the
// head moved, a stream was not at the version assumed, or an event ID is
// stored). Otherwise it answers the batch and returns true.
func (s *Store) commitFast(batch []*appendReq) bool {
	if s.frontier == nil {
		return false
	}
	versions := make(map[string]uint64, len(batch))
	var checkStreams []string
	var checkVersions []int64
	for _, r := range batch {
		if _, ok := versions[r.stream]; ok {
			continue
		}
		if v, ok := s.streamCache[r.stream]; ok {
			versions[r.stream] = v
			continue
		}
		if r.expected < 0 {
			return false
		}
		versions[r.stream] = uint64(r.expected)
		checkStreams = append(checkStreams, r.stream)
		checkVersions = append(checkVersions, int64(r.expected))
	}
	p := s.decide(batch, s.cacheHead, s.frontier, versions, nil)
	for _, r := range batch {
		if r.err != nil {
			return false
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false
	}
	defer conn.Release()
	err = s.execAppend(ctx, conn, s.cacheHead, checkStreams, checkVersions, &p, false)
	if err != nil {
		s.cacheHead, s.frontier, s.streamCache = eventstore.Head{}, nil, nil
		err = s.classify(conn, err)
		if errors.Is(err, errRefused) {
			s.stats.refused.Add(1)
			s.log.Debug("ledger fast path refused; redoing the batch under the head lock", "err", err)
			return false
		}
		s.log.Error("ledger append batch failed", "requests", len(batch), "err", err)
		answer(batch, err)
		return true
	}
	s.remember(p)
	s.stats.fast.Add(1)
	s.stats.events.Add(uint64(p.rows.rows))
	s.observe(p.next)
	answer(batch, nil)
	return true
}

// errRefused marks a write the database refused without writing
// anything: the head had moved, a stream was not at the version assumed,
// or an event ID was already stored.
var errRefused = errors.New("refused")

// classify turns a failed write round trip into errRefused (nothing
// written, redo it), ErrUnknownOutcome (the connection broke during
// COMMIT) or another error (nothing written).
func (s *Store) classify(conn *pgxpool.Conn, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		s.abort(conn)
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	if conn.Conn().IsClosed() {
		return fmt.Errorf("%w: %v", eventstore.ErrUnknownOutcome, err)
	}
	s.abort(conn)
	return fmt.Errorf("postgres: append: %w", err)
}

// answer sends each request its outcome: the batch error if any, else
// what decide settled.
func answer(batch []*appendReq, err error) {
	for _, r := range batch {
		if err != nil {
			r.done <- appendResult{err: err}
		} else {
			r.done <- appendResult{res: r.result, err: r.err}
		}
	}
}

// commitSlow writes a batch on the slow path and answers it.
func (s *Store) commitSlow(batch []*appendReq) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	next, err := s.slowPath(ctx, batch)
	if err != nil {
		s.cacheHead, s.frontier, s.streamCache = eventstore.Head{}, nil, nil
		s.log.Error("ledger append batch failed", "requests", len(batch), "err", err)
	} else if next.Position > 0 {
		s.observe(next)
	}
	answer(batch, err)
}

// decide settles each request of the batch, in order, against the given
// head, tree and stream versions plus the requests accepted before it, and
// returns what to write. existing holds records already stored with the
// batch's event IDs. It sets each request's result or error.
func (s *Store) decide(batch []*appendReq, head eventstore.Head, frontier *merkle.Frontier, versions map[string]uint64,
	existing map[eventstore.ID]*eventstore.Record) plan {
	p := plan{rows: &s.rows, next: head, frontier: frontier.Clone(), versions: versions}
	p.rows.reset()
	now := eventstore.TruncateTime(s.opts.Now())
	if now.Before(head.RecordedAt) {
		now = head.RecordedAt
	}
	n := 0
	for _, r := range batch {
		n += len(r.events)
	}
	recs := make([]eventstore.Record, 0, n) // never grows: inBatch points into it
	inBatch := make(map[eventstore.ID]*eventstore.Record, n)
	treeBuf := s.treeBuf[:0]
	defer func() { s.treeBuf = treeBuf }()
	for _, r := range batch {
		r.result, r.err = eventstore.Appended{}, nil
		stored := make([]*eventstore.Record, len(r.events))
		for i := range r.events {
			if rec, ok := existing[r.events[i].ID]; ok {
				stored[i] = rec
			} else if rec, ok := inBatch[r.events[i].ID]; ok {
				stored[i] = rec
			}
		}
		if res, retry, err := eventstore.MatchRetry(r.stream, r.events, stored); err != nil || retry {
			r.result, r.err = res, err
			continue
		}
		actual := versions[r.stream]
		if !r.expected.Matches(actual) {
			r.err = &eventstore.ConflictError{StreamID: r.stream, Expected: r.expected, Actual: actual}
			continue
		}
		r.result = eventstore.Appended{StreamID: r.stream, FirstVersion: actual + 1, FirstPosition: p.next.Position + 1}
		for i := range r.events {
			e := &r.events[i]
			recs = append(recs, eventstore.Record{
				Position:      p.next.Position + 1,
				StreamID:      r.stream,
				StreamVersion: actual + uint64(i) + 1,
				ID:            e.ID,
				Type:          e.Type,
				Data:          e.Data,
				Metadata:      e.Metadata,
				RecordedAt:    now,
				PrevHash:      p.next.Hash,
			})
			rec := &recs[len(recs)-1]
			if rec.Data == nil {
				rec.Data = []byte{}
			}
			rec.Hash = s.hasher.Hash(rec)
			treeBuf = p.frontier.Append(treeBuf[:0], rec.Hash)
			p.rows.add(rec, treeBuf)
			inBatch[e.ID] = rec
			p.next = eventstore.Head{Position: rec.Position, Hash: rec.Hash, RecordedAt: now}
		}
		versions[r.stream] = actual + uint64(len(r.events))
		r.result.LastVersion = versions[r.stream]
		r.result.LastPosition = p.next.Position
		r.result.LastHash = p.next.Hash
	}
	return p
}

// slowPath locks the head, reads the streams' versions and any stored
// records with the batch's event IDs, decides, and writes: two round
// trips. It returns the new head, or the zero Head when nothing needed
// writing.
func (s *Store) slowPath(ctx context.Context, batch []*appendReq) (eventstore.Head, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return eventstore.Head{}, fmt.Errorf("postgres: append: %w", err)
	}
	defer conn.Release()
	streams := make([]string, 0, len(batch))
	seenStream := map[string]bool{}
	var ids [][16]byte
	for _, r := range batch {
		if !seenStream[r.stream] {
			seenStream[r.stream] = true
			streams = append(streams, r.stream)
		}
		for i := range r.events {
			ids = append(ids, r.events[i].ID)
		}
	}

	// Round trip 1: open the transaction, take the chain head lock, read
	// the streams' versions and any records already holding these IDs.
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SELECT position, hash, recorded_at FROM ledger_head FOR UPDATE`)
	b.Queue(`SELECT s.id, (SELECT e.stream_version FROM ledger_events e WHERE e.stream_id = s.id
		ORDER BY e.stream_version DESC LIMIT 1) FROM unnest($1::text[]) AS s(id)`, streams)
	b.Queue(`SELECT `+recordColumns+` FROM ledger_events WHERE event_id = ANY($1::uuid[])`, ids)
	br := conn.SendBatch(ctx, b)
	head, versions, existing, err := readLockResults(br)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.abort(conn)
		return eventstore.Head{}, fmt.Errorf("postgres: append: %w", err)
	}
	if s.frontier == nil || s.cacheHead.Position != head.Position || s.cacheHead.Hash != head.Hash {
		f, err := merkle.LoadFrontier(ctx, treeReader{conn}, head.Position)
		if err != nil {
			s.abort(conn)
			return eventstore.Head{}, fmt.Errorf("postgres: append: %w", err)
		}
		s.cacheHead, s.frontier, s.streamCache = head, f, nil
	}
	p := s.decide(batch, head, s.frontier, versions, existing)
	if p.rows.rows == 0 {
		if _, err := conn.Exec(ctx, `ROLLBACK`); err != nil {
			conn.Conn().Close(ctx)
		}
		s.remember(p)
		return eventstore.Head{}, nil
	}

	// Round trip 2: insert, move the head, notify, commit.
	err = s.execAppend(ctx, conn, head, nil, nil, &p, true)
	if err != nil {
		if cerr := s.classify(conn, err); !errors.Is(cerr, errRefused) {
			return eventstore.Head{}, cerr
		}
		return eventstore.Head{}, fmt.Errorf("postgres: append: %w", err)
	}
	s.remember(p)
	s.stats.slow.Add(1)
	s.stats.events.Add(uint64(p.rows.rows))
	return p.next, nil
}

// remember makes p's outcome the writer's view for the next batch.
func (s *Store) remember(p plan) {
	s.cacheHead, s.frontier = p.next, p.frontier
	if s.streamCache == nil || len(s.streamCache) > maxCachedStreams {
		s.streamCache = make(map[string]uint64, len(p.versions))
	}
	for k, v := range p.versions {
		s.streamCache[k] = v
	}
}

func readLockResults(br pgx.BatchResults) (eventstore.Head, map[string]uint64, map[eventstore.ID]*eventstore.Record, error) {
	var head eventstore.Head
	if _, err := br.Exec(); err != nil {
		return head, nil, nil, err
	}
	var pos int64
	var hash []byte
	var at *time.Time
	if err := br.QueryRow().Scan(&pos, &hash, &at); err != nil {
		return head, nil, nil, fmt.Errorf("lock head: %w", err)
	}
	head.Position = uint64(pos)
	copy(head.Hash[:], hash)
	if at != nil {
		head.RecordedAt = at.UTC()
	}
	versions := map[string]uint64{}
	rs, err := br.Query()
	if err != nil {
		return head, nil, nil, err
	}
	for rs.Next() {
		var id string
		var v *int64
		if err := rs.Scan(&id, &v); err != nil {
			rs.Close()
			return head, nil, nil, err
		}
		if v != nil {
			versions[id] = uint64(*v)
		}
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return head, nil, nil, err
	}
	rs, err = br.Query()
	if err != nil {
		return head, nil, nil, err
	}
	recs, err := collectRecords(rs, 0)
	if err != nil {
		return head, nil, nil, err
	}
	existing := make(map[eventstore.ID]*eventstore.Record, len(recs))
	for i := range recs {
		existing[recs[i].ID] = &recs[i]
	}
	return head, versions, existing, nil
}

// abort ends a failed transaction, or closes the connection if it cannot.
func (s *Store) abort(conn *pgxpool.Conn) {
	if conn.Conn().IsClosed() {
		return
	}
	if conn.Conn().PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `ROLLBACK`); err != nil {
		conn.Conn().Close(ctx)
	}
}

// notifyPayload carries the new head to listeners: position, hash and
// recorded time in microseconds, space separated.
func notifyPayload(h eventstore.Head) string {
	return strconv.FormatUint(h.Position, 10) + " " + h.Hash.String() + " " + strconv.FormatInt(h.RecordedAt.UnixMicro(), 10)
}

// treeReader reads stored tree hashes on one connection (inside the
// append transaction).
type treeReader struct{ conn *pgxpool.Conn }

func (t treeReader) TreeHashes(ctx context.Context, indexes []int64) ([]eventstore.Hash, error) {
	return treeHashes(ctx, t.conn, indexes)
}
