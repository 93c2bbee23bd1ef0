// Package memstore is an in-memory eventstore.Store for tests and tools
// that need a ledger without a database. It keeps nothing on disk and
// satisfies the same contract and conformance suite as the PostgreSQL
// backend.
package memstore

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

// Store is an in-memory ledger. The zero value is not usable; call New.
type Store struct {
	now func() time.Time

	mu          sync.Mutex
	records     []eventstore.Record // records[i] is position i+1
	tree        [][]eventstore.Hash // tree[i] holds the hashes stored by position i+1
	stored      []eventstore.Hash   // every stored tree hash, by tlog index
	frontier    merkle.Frontier
	streams     map[string][]uint64 // stream → positions, in version order
	ids         map[eventstore.ID]uint64
	checkpoints []eventstore.Checkpoint
	changed     chan struct{} // closed and replaced on every append
}

var _ eventstore.Store = (*Store)(nil)

// New returns an empty store. now supplies recorded times; time.Now when nil.
func New(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{
		now:     now,
		streams: map[string][]uint64{},
		ids:     map[eventstore.ID]uint64{},
		changed: make(chan struct{}),
	}
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.Appended, error) {
	if err := eventstore.ValidateAppend(stream, expected, events); err != nil {
		return eventstore.Appended{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.Appended{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	if res, done, err := s.replay(stream, events); done || err != nil {
		return res, err
	}
	positions := s.streams[stream]
	actual := uint64(len(positions))
	if !expected.Matches(actual) {
		return eventstore.Appended{}, &eventstore.ConflictError{StreamID: stream, Expected: expected, Actual: actual}
	}
	now := eventstore.TruncateTime(s.now())
	var prev eventstore.Hash
	if n := len(s.records); n > 0 {
		prev = s.records[n-1].Hash
		if last := s.records[n-1].RecordedAt; now.Before(last) {
			now = last
		}
	}
	res := eventstore.Appended{StreamID: stream, FirstVersion: actual + 1, FirstPosition: uint64(len(s.records)) + 1}
	for i, e := range events {
		r := eventstore.Record{
			Position:      uint64(len(s.records)) + 1,
			StreamID:      stream,
			StreamVersion: actual + uint64(i) + 1,
			ID:            e.ID,
			Type:          e.Type,
			Data:          bytes.Clone(e.Data),
			Metadata:      e.Metadata,
			RecordedAt:    now,
			PrevHash:      prev,
		}
		if r.Data == nil {
			r.Data = []byte{}
		}
		r.Hash = eventstore.ComputeHash(&r)
		prev = r.Hash
		hs := s.frontier.Append(nil, r.Hash)
		s.stored = append(s.stored, hs...)
		s.tree = append(s.tree, hs)
		s.records = append(s.records, r)
		s.ids[e.ID] = r.Position
		positions = append(positions, r.Position)
	}
	s.streams[stream] = positions
	res.LastVersion = uint64(len(positions))
	res.LastPosition = uint64(len(s.records))
	res.LastHash = prev
	close(s.changed)
	s.changed = make(chan struct{})
	return res, nil
}

func (s *Store) replay(stream string, events []eventstore.Event) (eventstore.Appended, bool, error) {
	stored := make([]*eventstore.Record, len(events))
	for i, e := range events {
		if pos, ok := s.ids[e.ID]; ok {
			stored[i] = &s.records[pos-1]
		}
	}
	return eventstore.MatchRetry(stream, events, stored)
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, fromVersion uint64, limit int) ([]eventstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	positions, ok := s.streams[stream]
	if !ok {
		return nil, eventstore.ErrStreamNotFound
	}
	if fromVersion == 0 {
		fromVersion = 1
	}
	var out []eventstore.Record
	for v := fromVersion; v <= uint64(len(positions)); v++ {
		if limit > 0 && len(out) == limit {
			break
		}
		out = append(out, clone(s.records[positions[v-1]-1]))
	}
	return out, nil
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, from uint64, limit int) ([]eventstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 1000
	}
	if from == 0 {
		from = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []eventstore.Record{}
	for p := from; p <= uint64(len(s.records)) && len(out) < limit; p++ {
		out = append(out, clone(s.records[p-1]))
	}
	return out, nil
}

func clone(r eventstore.Record) eventstore.Record {
	r.Data = bytes.Clone(r.Data)
	return r
}

// ReadByID implements eventstore.Store.
func (s *Store) ReadByID(ctx context.Context, id eventstore.ID) (eventstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Record{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pos, ok := s.ids[id]
	if !ok {
		return eventstore.Record{}, eventstore.ErrNotFound
	}
	return clone(s.records[pos-1]), nil
}

// Head implements eventstore.Store.
func (s *Store) Head(ctx context.Context) (eventstore.Head, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Head{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headLocked(), nil
}

func (s *Store) headLocked() eventstore.Head {
	n := len(s.records)
	if n == 0 {
		return eventstore.Head{}
	}
	r := &s.records[n-1]
	return eventstore.Head{Position: r.Position, Hash: r.Hash, RecordedAt: r.RecordedAt}
}

// Wait implements eventstore.Store.
func (s *Store) Wait(ctx context.Context, position uint64) (eventstore.Head, error) {
	for {
		s.mu.Lock()
		h, ch := s.headLocked(), s.changed
		s.mu.Unlock()
		if h.Position >= position {
			return h, nil
		}
		select {
		case <-ctx.Done():
			return eventstore.Head{}, ctx.Err()
		case <-ch:
		}
	}
}

// TreeHashes implements eventstore.Store.
func (s *Store) TreeHashes(ctx context.Context, indexes []int64) ([]eventstore.Hash, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]eventstore.Hash, len(indexes))
	for i, ix := range indexes {
		if ix < 0 || ix >= int64(len(s.stored)) {
			return nil, &eventstore.InvalidError{Field: "tree index", Reason: "beyond the stored tree"}
		}
		out[i] = s.stored[ix]
	}
	return out, nil
}

// ReadTree implements eventstore.Store.
func (s *Store) ReadTree(ctx context.Context, from uint64, limit int) ([]eventstore.TreeEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 1000
	}
	if from == 0 {
		from = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []eventstore.TreeEntry{}
	for p := from; p <= uint64(len(s.tree)) && len(out) < limit; p++ {
		out = append(out, eventstore.TreeEntry{Position: p, Hashes: append([]eventstore.Hash(nil), s.tree[p-1]...)})
	}
	return out, nil
}

// AddCheckpoint implements eventstore.Store.
func (s *Store) AddCheckpoint(ctx context.Context, cp eventstore.Checkpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.checkpoints), func(i int) bool { return s.checkpoints[i].Size >= cp.Size })
	if i < len(s.checkpoints) && s.checkpoints[i].Size == cp.Size {
		if s.checkpoints[i].Root == cp.Root && bytes.Equal(s.checkpoints[i].Note, cp.Note) {
			return nil
		}
		return fmt.Errorf("%w: another checkpoint of size %d is stored", eventstore.ErrConflict, cp.Size)
	}
	cp.Note = bytes.Clone(cp.Note)
	cp.CreatedAt = eventstore.TruncateTime(cp.CreatedAt)
	s.checkpoints = append(s.checkpoints, eventstore.Checkpoint{})
	copy(s.checkpoints[i+1:], s.checkpoints[i:])
	s.checkpoints[i] = cp
	return nil
}

// Checkpoints implements eventstore.Store.
func (s *Store) Checkpoints(ctx context.Context, fromSize uint64, limit int) ([]eventstore.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []eventstore.Checkpoint{}
	for _, cp := range s.checkpoints {
		if cp.Size >= fromSize && (limit <= 0 || len(out) < limit) {
			cp.Note = bytes.Clone(cp.Note)
			out = append(out, cp)
		}
	}
	return out, nil
}

// LatestCheckpoint implements eventstore.Store.
func (s *Store) LatestCheckpoint(ctx context.Context) (eventstore.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Checkpoint{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.checkpoints) == 0 {
		return eventstore.Checkpoint{}, eventstore.ErrNotFound
	}
	cp := s.checkpoints[len(s.checkpoints)-1]
	cp.Note = bytes.Clone(cp.Note)
	return cp, nil
}
