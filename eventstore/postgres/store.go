// Package postgres is the PostgreSQL backend of eventstore.Store, on pgx.
//
// Appends from every goroutine of a process go through one writer that
// commits them in batches: each batch is one transaction that locks the
// chain head row, checks expected versions and retries, assigns positions,
// hashes and Merkle tree hashes, inserts the rows and moves the head. The
// head lock orders batches from every process sharing the database, so
// positions are contiguous and committed in position order, and a reader
// never sees a gap that a later commit fills. A commit wakes waiting
// readers in every process through LISTEN/NOTIFY.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

// Options tune a Store. The zero value is ready to use.
type Options struct {
	// Now returns the time recorded in new events; time.Now when nil.
	Now func() time.Time
	// Logger receives operational messages; slog.Default() when nil.
	Logger *slog.Logger
	// MaxBatchEvents caps the events committed in one transaction
	// (default 4096).
	MaxBatchEvents int
	// MaxBatchBytes caps the event data committed in one transaction
	// (default 16 MiB).
	MaxBatchBytes int
	// CommitTimeout bounds one batch transaction (default 30 s).
	CommitTimeout time.Duration
	// PollInterval is how often Wait checks the head when no notification
	// arrives, a safety net for a lost listener connection (default 1 s).
	PollInterval time.Duration
}

// Store is the PostgreSQL ledger. Create it with Open after Migrate.
type Store struct {
	pool    *pgxpool.Pool
	opts    Options
	log     *slog.Logger
	channel string

	reqs    chan *appendReq
	closing chan struct{}
	closed  atomic.Bool
	wg      sync.WaitGroup

	// known is the newest head this process has seen (own commits and
	// notifications); changed is closed and replaced when it moves.
	mu      sync.Mutex
	known   eventstore.Head
	changed chan struct{}

	// The writer's view of the ledger after its last batch: head, Merkle
	// frontier and the versions of streams it has touched. Valid
	// (frontier != nil) only while no other writer has appended since; any
	// refusal by the database clears it and the slow path reloads it under
	// the head lock. Touched only by the writer goroutine.
	stats struct{ fast, slow, refused, events atomic.Uint64 }

	cacheHead   eventstore.Head
	frontier    *merkle.Frontier
	streamCache map[string]uint64 // versions as of cacheHead

	// Buffers the writer reuses from batch to batch.
	rows    copyRows
	treeBuf []eventstore.Hash
	hasher  eventstore.Hasher
}

var _ eventstore.Store = (*Store)(nil)

// Open starts a Store on pool, whose schema must have been migrated
// (Migrate). It starts the batch writer and the notification listener;
// Close stops them. It does not close the pool.
func Open(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxBatchEvents <= 0 {
		opts.MaxBatchEvents = 4096
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 16 << 20
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = 30 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	var schema string
	var ok bool
	err := pool.QueryRow(ctx, `SELECT current_schema(), to_regclass('ledger_head') IS NOT NULL`).Scan(&schema, &ok)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("postgres: no ledger tables in schema %q; run `stele migrate` first", schema)
	}
	s := &Store{
		pool:    pool,
		opts:    opts,
		log:     opts.Logger,
		channel: channelName(schema),
		reqs:    make(chan *appendReq, 8192),
		closing: make(chan struct{}),
		changed: make(chan struct{}),
	}
	h, err := s.Head(ctx)
	if err != nil {
		return nil, err
	}
	s.observe(h)
	lctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.listen(lctx, ready) }()
	go func() { defer s.wg.Done(); defer cancel(); s.writer() }()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		s.log.Warn("ledger listener not ready after 5s; waits fall back to polling")
	}
	return s, nil
}

// channelName is the NOTIFY channel for a schema, so that ledgers in
// different schemas of one database do not wake each other.
func channelName(schema string) string {
	name := "stele_ledger." + schema
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// Pool returns the pool the store uses.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close stops the writer after the batch in flight; appends still queued
// fail with ErrClosed. It does not close the pool.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.closing)
	s.wg.Wait()
	return nil
}

// Stats counts what the writer has done since Open.
type Stats struct {
	// FastBatches committed in one round trip; SlowBatches went through
	// the head lock first (the first batch, after another process
	// appended, for retries and conflicts).
	FastBatches, SlowBatches uint64
	// Refused counts fast-path attempts the database refused (and the
	// slow path then redid).
	Refused uint64
	// Events appended.
	Events uint64
}

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	return Stats{
		FastBatches: s.stats.fast.Load(),
		SlowBatches: s.stats.slow.Load(),
		Refused:     s.stats.refused.Load(),
		Events:      s.stats.events.Load(),
	}
}

// observe records a head seen by this process and wakes waiters.
func (s *Store) observe(h eventstore.Head) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.Position > s.known.Position || (h.Position == 0 && s.known.Position == 0) {
		s.known = h
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

const recordColumns = `position, stream_id, stream_version, event_id, type, data, actor, tenant, request_id,
	client_addr, causation_id, correlation_id, recorded_at, prev_hash, hash`

func scanRecord(row pgx.Row, r *eventstore.Record) error {
	var id [16]byte
	var prev, hash []byte
	var pos, ver int64
	m := &r.Metadata
	if err := row.Scan(&pos, &r.StreamID, &ver, &id, &r.Type, &r.Data, &m.Actor, &m.Tenant, &m.RequestID,
		&m.ClientAddr, &m.CausationID, &m.CorrelationID, &r.RecordedAt, &prev, &hash); err != nil {
		return err
	}
	r.Position, r.StreamVersion, r.ID = uint64(pos), uint64(ver), eventstore.ID(id)
	r.RecordedAt = r.RecordedAt.UTC()
	if r.Data == nil {
		r.Data = []byte{}
	}
	if len(prev) != eventstore.HashSize || len(hash) != eventstore.HashSize {
		return fmt.Errorf("postgres: position %d: stored hash has the wrong length", pos)
	}
	copy(r.PrevHash[:], prev)
	copy(r.Hash[:], hash)
	return nil
}

func collectRecords(rows pgx.Rows, capacity int) ([]eventstore.Record, error) {
	defer rows.Close()
	out := make([]eventstore.Record, 0, capacity)
	for rows.Next() {
		out = append(out, eventstore.Record{})
		if err := scanRecord(rows, &out[len(out)-1]); err != nil {
			return nil, err
		}
	}
	return out, rows.Err()
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, fromVersion uint64, limit int) ([]eventstore.Record, error) {
	if limit <= 0 {
		limit = 1 << 30
	}
	rows, err := s.pool.Query(ctx, `SELECT `+recordColumns+` FROM ledger_events
		WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3`, stream, int64(fromVersion), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: read stream: %w", err)
	}
	recs, err := collectRecords(rows, min(limit, 64))
	if err != nil {
		return nil, fmt.Errorf("postgres: read stream: %w", err)
	}
	if len(recs) == 0 {
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ledger_events WHERE stream_id = $1)`, stream).Scan(&exists); err != nil {
			return nil, fmt.Errorf("postgres: read stream: %w", err)
		}
		if !exists {
			return nil, eventstore.ErrStreamNotFound
		}
	}
	return recs, nil
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, from uint64, limit int) ([]eventstore.Record, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, `SELECT `+recordColumns+` FROM ledger_events
		WHERE position >= $1 ORDER BY position LIMIT $2`, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: read: %w", err)
	}
	recs, err := collectRecords(rows, min(limit, 1024))
	if err != nil {
		return nil, fmt.Errorf("postgres: read: %w", err)
	}
	return recs, nil
}

// ReadByID implements eventstore.Store.
func (s *Store) ReadByID(ctx context.Context, id eventstore.ID) (eventstore.Record, error) {
	var r eventstore.Record
	err := scanRecord(s.pool.QueryRow(ctx, `SELECT `+recordColumns+` FROM ledger_events WHERE event_id = $1`, [16]byte(id)), &r)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, eventstore.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("postgres: read by id: %w", err)
	}
	return r, nil
}

// Head implements eventstore.Store.
func (s *Store) Head(ctx context.Context) (eventstore.Head, error) {
	var h eventstore.Head
	var pos int64
	var hash []byte
	var at *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT position, hash, recorded_at FROM ledger_head`).Scan(&pos, &hash, &at); err != nil {
		return h, fmt.Errorf("postgres: head: %w", err)
	}
	h.Position = uint64(pos)
	copy(h.Hash[:], hash)
	if at != nil {
		h.RecordedAt = at.UTC()
	}
	return h, nil
}

// Wait implements eventstore.Store.
func (s *Store) Wait(ctx context.Context, position uint64) (eventstore.Head, error) {
	var poll *time.Timer
	for {
		s.mu.Lock()
		h, ch := s.known, s.changed
		s.mu.Unlock()
		if h.Position >= position {
			return h, nil
		}
		if poll == nil {
			poll = time.NewTimer(s.opts.PollInterval)
			defer poll.Stop()
		} else {
			poll.Reset(s.opts.PollInterval)
		}
		select {
		case <-ctx.Done():
			return eventstore.Head{}, ctx.Err()
		case <-ch:
		case <-poll.C:
			h, err := s.Head(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return eventstore.Head{}, ctx.Err()
				}
				s.log.Warn("ledger head poll failed", "err", err)
				continue
			}
			s.observe(h)
		}
	}
}

// TreeHashes implements eventstore.Store.
func (s *Store) TreeHashes(ctx context.Context, indexes []int64) ([]eventstore.Hash, error) {
	return treeHashes(ctx, s.pool, indexes)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func treeHashes(ctx context.Context, q querier, indexes []int64) ([]eventstore.Hash, error) {
	if len(indexes) == 0 {
		return []eventstore.Hash{}, nil
	}
	positions := make([]int64, len(indexes))
	offsets := make([]int, len(indexes))
	for i, ix := range indexes {
		if ix < 0 {
			return nil, &eventstore.InvalidError{Field: "tree index", Reason: "negative"}
		}
		p, off := merkle.Locate(ix)
		positions[i], offsets[i] = int64(p), off
	}
	rows, err := q.Query(ctx, `SELECT position, tree FROM ledger_events WHERE position = ANY($1)`, positions)
	if err != nil {
		return nil, fmt.Errorf("postgres: tree hashes: %w", err)
	}
	trees := make(map[int64][]byte, len(positions))
	for rows.Next() {
		var p int64
		var tree []byte
		if err := rows.Scan(&p, &tree); err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: tree hashes: %w", err)
		}
		trees[p] = tree
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: tree hashes: %w", err)
	}
	out := make([]eventstore.Hash, len(indexes))
	for i, p := range positions {
		tree, ok := trees[p]
		if !ok || len(tree) < (offsets[i]+1)*eventstore.HashSize {
			return nil, &eventstore.InvalidError{Field: "tree index", Reason: fmt.Sprintf("%d is beyond the stored tree", indexes[i])}
		}
		copy(out[i][:], tree[offsets[i]*eventstore.HashSize:])
	}
	return out, nil
}

// ReadTree implements eventstore.Store.
func (s *Store) ReadTree(ctx context.Context, from uint64, limit int) ([]eventstore.TreeEntry, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, `SELECT position, tree FROM ledger_events WHERE position >= $1 ORDER BY position LIMIT $2`, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: read tree: %w", err)
	}
	defer rows.Close()
	out := make([]eventstore.TreeEntry, 0, min(limit, 1024))
	for rows.Next() {
		var p int64
		var tree []byte
		if err := rows.Scan(&p, &tree); err != nil {
			return nil, fmt.Errorf("postgres: read tree: %w", err)
		}
		out = append(out, eventstore.TreeEntry{Position: uint64(p), Hashes: splitHashes(tree)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read tree: %w", err)
	}
	return out, nil
}

func splitHashes(b []byte) []eventstore.Hash {
	out := make([]eventstore.Hash, len(b)/eventstore.HashSize)
	for i := range out {
		copy(out[i][:], b[i*eventstore.HashSize:])
	}
	return out
}

// AddCheckpoint implements eventstore.Store.
func (s *Store) AddCheckpoint(ctx context.Context, cp eventstore.Checkpoint) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (size) DO NOTHING`, int64(cp.Size), cp.Root[:], cp.Note, eventstore.TruncateTime(cp.CreatedAt))
	if err != nil {
		return fmt.Errorf("postgres: add checkpoint: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var root, note []byte
	if err := s.pool.QueryRow(ctx, `SELECT root, note FROM ledger_checkpoints WHERE size = $1`, int64(cp.Size)).Scan(&root, &note); err != nil {
		return fmt.Errorf("postgres: add checkpoint: %w", err)
	}
	if string(root) == string(cp.Root[:]) && string(note) == string(cp.Note) {
		return nil
	}
	return fmt.Errorf("%w: another checkpoint of size %d is stored", eventstore.ErrConflict, cp.Size)
}

// Checkpoints implements eventstore.Store.
func (s *Store) Checkpoints(ctx context.Context, fromSize uint64, limit int) ([]eventstore.Checkpoint, error) {
	if limit <= 0 {
		limit = 1 << 30
	}
	rows, err := s.pool.Query(ctx, `SELECT size, root, note, created_at FROM ledger_checkpoints
		WHERE size >= $1 ORDER BY size LIMIT $2`, int64(fromSize), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: checkpoints: %w", err)
	}
	defer rows.Close()
	out := []eventstore.Checkpoint{}
	for rows.Next() {
		cp, err := scanCheckpoint(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: checkpoints: %w", err)
		}
		out = append(out, cp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: checkpoints: %w", err)
	}
	return out, nil
}

func scanCheckpoint(row pgx.Row) (eventstore.Checkpoint, error) {
	var cp eventstore.Checkpoint
	var size int64
	var root []byte
	if err := row.Scan(&size, &root, &cp.Note, &cp.CreatedAt); err != nil {
		return cp, err
	}
	cp.Size = uint64(size)
	copy(cp.Root[:], root)
	cp.CreatedAt = cp.CreatedAt.UTC()
	return cp, nil
}

// LatestCheckpoint implements eventstore.Store.
func (s *Store) LatestCheckpoint(ctx context.Context) (eventstore.Checkpoint, error) {
	cp, err := scanCheckpoint(s.pool.QueryRow(ctx, `SELECT size, root, note, created_at FROM ledger_checkpoints ORDER BY size DESC LIMIT 1`))
	if errors.Is(err, pgx.ErrNoRows) {
		return cp, eventstore.ErrNotFound
	}
	if err != nil {
		return cp, fmt.Errorf("postgres: latest checkpoint: %w", err)
	}
	return cp, nil
}

// VerifierKey returns the public key that signs this log's checkpoints,
// recorded on first start by SetVerifierKey; ok is false if none is
// recorded yet. The key's name is the log's origin.
func (s *Store) VerifierKey(ctx context.Context) (vkey string, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT value FROM ledger_meta WHERE key = 'verifier_key'`).Scan(&vkey)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("postgres: verifier key: %w", err)
	}
	return vkey, true, nil
}

// SetVerifierKey records the log's checkpoint verifier key if none is
// recorded yet, and returns the recorded key afterwards: the existing one
// when another process got there first. It is never replaced.
func (s *Store) SetVerifierKey(ctx context.Context, vkey string) (string, error) {
	_, err := s.pool.Exec(ctx, `INSERT INTO ledger_meta (key, value) VALUES ('verifier_key', $1) ON CONFLICT (key) DO NOTHING`, vkey)
	if err != nil {
		return "", fmt.Errorf("postgres: set verifier key: %w", err)
	}
	v, _, err := s.VerifierKey(ctx)
	return v, err
}
