package postgres

import (
	"context"
	"errors"
	"fmt"
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

// rows are the columns of the events being inserted, as arrays for unnest.
type rows struct {
	position, version                                           []int64
	stream, typ, actor, tenant, reqID, addr, cause, correlation []string
	id                                                          [][16]byte
	data, prev, hash, tree                                      [][]byte
	recordedAt                                                  []time.Time
}

func (w *rows) add(r *eventstore.Record, tree []eventstore.Hash) {
	m := &r.Metadata
	w.position = append(w.position, int64(r.Position))
	w.version = append(w.version, int64(r.StreamVersion))
	w.stream = append(w.stream, r.StreamID)
	w.typ = append(w.typ, r.Type)
	w.actor = append(w.actor, m.Actor)
	w.tenant = append(w.tenant, m.Tenant)
	w.reqID = append(w.reqID, m.RequestID)
	w.addr = append(w.addr, m.ClientAddr)
	w.cause = append(w.cause, m.CausationID)
	w.correlation = append(w.correlation, m.CorrelationID)
	w.id = append(w.id, r.ID)
	w.data = append(w.data, r.Data)
	w.prev = append(w.prev, r.PrevHash[:])
	w.hash = append(w.hash, r.Hash[:])
	w.tree = append(w.tree, joinHashes(tree))
	w.recordedAt = append(w.recordedAt, r.RecordedAt)
}

// plan is the outcome of deciding a batch: the rows to insert and the
// state after them.
type plan struct {
	rows     rows
	next     eventstore.Head
	frontier *merkle.Frontier
	versions map[string]uint64
}

// maxCachedStreams bounds the writer's stream version cache; past it the
// cache starts again empty.
const maxCachedStreams = 200_000

// commitFast decides batch on top of the writer's view and writes it in
// one round trip: one call of ledger_append, which locks the head and
// checks it is where the view says, checks the versions of streams the
// writer has not seen, inserts, moves the head, notifies and commits. It
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
	b := &pgx.Batch{}
	s.queueAppend(b, s.cacheHead, checkStreams, checkVersions, &p)
	err = conn.SendBatch(ctx, b).Close()
	if err == nil && conn.Conn().PgConn().TxStatus() != 'I' {
		err = errors.New("transaction still open after the append")
	}
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
	s.stats.events.Add(uint64(len(p.rows.position)))
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
	p := plan{next: head, frontier: frontier.Clone(), versions: versions}
	now := eventstore.TruncateTime(s.opts.Now())
	if now.Before(head.RecordedAt) {
		now = head.RecordedAt
	}
	inBatch := map[eventstore.ID]*eventstore.Record{}
	var treeBuf []eventstore.Hash
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
			rec := &eventstore.Record{
				Position:      p.next.Position + 1,
				StreamID:      r.stream,
				StreamVersion: actual + uint64(i) + 1,
				ID:            e.ID,
				Type:          e.Type,
				Data:          e.Data,
				Metadata:      e.Metadata,
				RecordedAt:    now,
				PrevHash:      p.next.Hash,
			}
			if rec.Data == nil {
				rec.Data = []byte{}
			}
			rec.Hash = eventstore.ComputeHash(rec)
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
	if len(p.rows.position) == 0 {
		if _, err := conn.Exec(ctx, `ROLLBACK`); err != nil {
			conn.Conn().Close(ctx)
		}
		s.remember(p)
		return eventstore.Head{}, nil
	}

	// Round trip 2: insert, move the head, notify, commit.
	b = &pgx.Batch{}
	s.queueAppend(b, head, nil, nil, &p)
	b.Queue(`COMMIT`)
	err = conn.SendBatch(ctx, b).Close()
	if err == nil && conn.Conn().PgConn().TxStatus() != 'I' {
		err = errors.New("transaction still open after COMMIT")
	}
	if err != nil {
		if cerr := s.classify(conn, err); !errors.Is(cerr, errRefused) {
			return eventstore.Head{}, cerr
		}
		return eventstore.Head{}, fmt.Errorf("postgres: append: %w", err)
	}
	s.remember(p)
	s.stats.slow.Add(1)
	s.stats.events.Add(uint64(len(p.rows.position)))
	return p.next, nil
}

// queueAppend queues the call of ledger_append that writes p on top of
// base (see migrations/001_ledger.sql). Outside a transaction it is one
// implicit transaction.
func (s *Store) queueAppend(b *pgx.Batch, base eventstore.Head, checkStreams []string, checkVersions []int64, p *plan) {
	w := &p.rows
	next := p.next
	if checkStreams == nil {
		checkStreams, checkVersions = []string{}, []int64{}
	}
	b.Queue(`SELECT ledger_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)`,
		int64(base.Position), base.Hash[:], checkStreams, checkVersions,
		int64(next.Position), next.Hash[:], next.RecordedAt, s.channel, notifyPayload(next),
		w.position, w.stream, w.version, w.id, w.typ, w.data, w.actor, w.tenant, w.reqID,
		w.addr, w.cause, w.correlation, w.recordedAt, w.prev, w.hash, w.tree)
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
