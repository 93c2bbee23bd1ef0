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

// writer is the one goroutine that commits appends.
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
		if len(batch) > 0 {
			s.commit(batch)
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

const insertSQL = `INSERT INTO ledger_events (position, stream_id, stream_version, event_id, type, data,
	actor, tenant, request_id, client_addr, causation_id, correlation_id, recorded_at, prev_hash, hash, tree)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::bytea[],
	$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[],
	$14::bytea[], $15::bytea[], $16::bytea[])`

// commit decides and writes one batch in one transaction, then answers
// every request in it.
func (s *Store) commit(batch []*appendReq) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	newHead, err := s.commitBatch(ctx, batch)
	if err != nil {
		s.cacheHead, s.frontier = eventstore.Head{}, nil // reload under the lock next time
		s.log.Error("ledger append batch failed", "requests", len(batch), "err", err)
	} else if newHead.Position > 0 {
		s.observe(newHead)
	}
	for _, r := range batch {
		if err != nil {
			r.done <- appendResult{err: err}
		} else {
			r.done <- appendResult{res: r.result, err: r.err}
		}
	}
}

// commitBatch runs the transaction. It returns the new head, or the zero
// Head when nothing needed writing.
func (s *Store) commitBatch(ctx context.Context, batch []*appendReq) (eventstore.Head, error) {
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
		s.frontier = f
	}
	frontier := s.frontier.Clone()

	// Decide each request in order against the committed state plus the
	// requests accepted before it in this batch.
	now := eventstore.TruncateTime(s.opts.Now())
	if now.Before(head.RecordedAt) {
		now = head.RecordedAt
	}
	var w rows
	next := head
	inBatch := map[eventstore.ID]*eventstore.Record{}
	var treeBuf []eventstore.Hash
	for _, r := range batch {
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
		r.result = eventstore.Appended{StreamID: r.stream, FirstVersion: actual + 1, FirstPosition: next.Position + 1}
		for i := range r.events {
			e := &r.events[i]
			rec := &eventstore.Record{
				Position:      next.Position + 1,
				StreamID:      r.stream,
				StreamVersion: actual + uint64(i) + 1,
				ID:            e.ID,
				Type:          e.Type,
				Data:          e.Data,
				Metadata:      e.Metadata,
				RecordedAt:    now,
				PrevHash:      next.Hash,
			}
			if rec.Data == nil {
				rec.Data = []byte{}
			}
			rec.Hash = eventstore.ComputeHash(rec)
			treeBuf = frontier.Append(treeBuf[:0], rec.Hash)
			w.add(rec, treeBuf)
			inBatch[e.ID] = rec
			next = eventstore.Head{Position: rec.Position, Hash: rec.Hash, RecordedAt: now}
		}
		versions[r.stream] = actual + uint64(len(r.events))
		r.result.LastVersion = versions[r.stream]
		r.result.LastPosition = next.Position
		r.result.LastHash = next.Hash
	}

	if len(w.position) == 0 {
		if _, err := conn.Exec(ctx, `ROLLBACK`); err != nil {
			conn.Conn().Close(ctx)
		}
		return eventstore.Head{}, nil
	}

	// Round trip 2: insert, move the head, notify, commit.
	b = &pgx.Batch{}
	b.Queue(insertSQL, w.position, w.stream, w.version, w.id, w.typ, w.data, w.actor, w.tenant, w.reqID,
		w.addr, w.cause, w.correlation, w.recordedAt, w.prev, w.hash, w.tree)
	b.Queue(`UPDATE ledger_head SET position = $1, hash = $2, recorded_at = $3`, int64(next.Position), next.Hash[:], next.RecordedAt)
	b.Queue(`SELECT pg_notify($1, $2)`, s.channel, notifyPayload(next))
	b.Queue(`COMMIT`)
	err = conn.SendBatch(ctx, b).Close()
	if err == nil && conn.Conn().PgConn().TxStatus() != 'I' {
		err = errors.New("transaction still open after COMMIT")
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) && conn.Conn().IsClosed() {
			return eventstore.Head{}, fmt.Errorf("%w: %v", eventstore.ErrUnknownOutcome, err)
		}
		s.abort(conn)
		return eventstore.Head{}, fmt.Errorf("postgres: append: %w", err)
	}
	s.cacheHead, s.frontier = next, frontier
	return next, nil
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
