package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// aggregate is what every domain aggregate does: fold events into state.
type aggregate interface{ Apply(domain.Event) }

// entry is one aggregate kept in memory: its state as of stream version
// version. Its mutex is held for a whole command (load, decide, append),
// so commands on one stream run one at a time in this process and do not
// conflict with each other; other processes are caught by the expected
// version.
type entry struct {
	mu      sync.Mutex
	agg     aggregate
	version uint64
	last    uint64 // log position of the last applied event
}

// cache holds entries, bounded.
type cache struct {
	mu  sync.Mutex
	m   map[string]*entry
	max int
}

func newCache(max int) *cache { return &cache{m: map[string]*entry{}, max: max} }

// get returns the entry of stream, making one with mk if none is cached.
func (c *cache) get(stream string, mk func() aggregate) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[stream]; ok {
		return e
	}
	if len(c.m) >= c.max {
		// Drop about a tenth, skipping entries in use.
		n := c.max / 10
		for k, e := range c.m {
			if n <= 0 {
				break
			}
			if e.mu.TryLock() {
				delete(c.m, k)
				e.mu.Unlock()
				n--
			}
		}
	}
	e := &entry{agg: mk()}
	c.m[stream] = e
	return e
}

// refresh brings e up to date with stream. When the catalog follows the
// log and has seen nothing newer than e, it trusts e without asking the
// database: state may then lag the log by the catalog's delay (a few
// milliseconds), which every write catches through its expected version.
func (s *Service) refresh(ctx context.Context, e *entry, stream string) error {
	if s.catalog != nil {
		if v, ready := s.catalog.StreamVersion(stream); ready && e.version >= v {
			return nil
		}
	}
	return s.reload(ctx, e, stream)
}

// reload reads the events appended to stream since e was last read.
func (s *Service) reload(ctx context.Context, e *entry, stream string) error {
	for {
		recs, err := s.store.ReadStream(ctx, stream, e.version+1, 500)
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			return unavailable(err)
		}
		for _, r := range recs {
			ev, err := domain.Decode(r.Type, r.Data)
			if err != nil {
				return fmt.Errorf("app: %s v%d: %w", stream, r.StreamVersion, err)
			}
			e.agg.Apply(ev)
			e.version, e.last = r.StreamVersion, r.Position
		}
		if len(recs) < 500 {
			return nil
		}
	}
}

// view runs fn on the current state of stream, under its lock. fn must
// only read.
func (s *Service) view(ctx context.Context, stream string, mk func() aggregate, fn func(aggregate) error) error {
	e := s.aggs.get(stream, mk)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := s.refresh(ctx, e, stream); err != nil {
		return err
	}
	return fn(e.agg)
}

// command is one load-decide-append on one stream.
type command struct {
	stream string
	tenant string
	// name, target and params identify the command for idempotency: a
	// retry with the same key must repeat them. secret is a part of the
	// command that must match too but never reach the log, even hashed
	// (a value): it enters the fingerprint through an HMAC keyed by the
	// key's seed, which the log does not hold.
	name, target string
	params       []byte
	secret       []byte
	mk           func() aggregate
	// decide returns the events to append; it runs again, on fresh state,
	// after a concurrent write, so anything it seals it seals afresh.
	decide func(aggregate) ([]domain.Event, error)
}

// maxAttempts bounds re-deciding after concurrent writes.
const maxAttempts = 10

// execute runs c for req: it refreshes the aggregate, decides, and
// appends with the expected version, re-deciding after a concurrent
// write. It returns the result and the events appended (or, for a
// replayed idempotent request, the events the first attempt appended).
func (s *Service) execute(ctx context.Context, req Request, c command) (Result, []domain.Event, error) {
	var idem *idempotency
	if req.IdempotencyKey != "" {
		idem = newIdempotency(c.tenant, req, c.name, c.target, c.params, c.secret)
		if res, evs, found, err := s.replay(ctx, idem); found || err != nil {
			return res, evs, err
		}
	}
	e := s.aggs.get(c.stream, c.mk)
	e.mu.Lock()
	defer e.mu.Unlock()
	for attempt := 1; ; attempt++ {
		refresh := s.refresh
		if attempt > 1 {
			refresh = s.reload // the database said we were behind
		}
		if err := refresh(ctx, e, c.stream); err != nil {
			return Result{}, nil, err
		}
		events, err := c.decide(e.agg)
		if err != nil {
			return Result{Position: e.last}, nil, err
		}
		if len(events) == 0 {
			return Result{Position: e.last, Unchanged: true}, nil, nil
		}
		res, err := s.appendDecided(ctx, req, e, c.stream, c.tenant, events, idem)
		switch {
		case err == nil:
			return res, events, nil
		case errors.Is(err, errReplayed):
			return s.replayOrErr(ctx, idem)
		case errors.Is(err, errConflict) && attempt < maxAttempts:
			// Another process wrote this stream: decide again on fresh state.
			time.Sleep(time.Duration(rand.IntN(1<<attempt)) * 100 * time.Microsecond)
			continue
		case errors.Is(err, errConflict):
			return Result{}, nil, fmt.Errorf("%w (%s)", ErrBusy, c.stream)
		default:
			return Result{}, nil, err
		}
	}
}

var (
	// errConflict: the stream moved since it was read (another process).
	errConflict = errors.New("app: concurrent write")
	// errReplayed: the events were appended before under the same
	// idempotency key.
	errReplayed = errors.New("app: already appended")
)

// appendDecided appends events decided on e's state to stream, with e's
// version as the expected version, and applies them to e. The caller
// holds e.mu. It returns errConflict when another writer got there first,
// and errReplayed when an idempotent earlier attempt is in the log.
func (s *Service) appendDecided(ctx context.Context, req Request, e *entry, stream, tenant string, events []domain.Event, idem *idempotency) (Result, error) {
	batch := make([]eventstore.Event, len(events))
	for i, ev := range events {
		data, err := domain.Encode(ev)
		if err != nil {
			return Result{}, err
		}
		batch[i] = eventstore.Event{ID: eventstore.NewID(), Type: ev.EventType(), Data: data, Metadata: s.metadata(req, tenant)}
		if idem != nil {
			batch[i].ID = idem.id(i)
			batch[i].Metadata.CausationID = idem.causation()
		}
	}
	res, err := s.store.Append(ctx, stream, eventstore.Exactly(e.version), batch...)
	switch {
	case err == nil && res.Replayed:
		return Result{}, errReplayed
	case err == nil:
		for _, ev := range events {
			e.agg.Apply(ev)
		}
		e.version, e.last = res.LastVersion, res.LastPosition
		return Result{Position: res.LastPosition}, nil
	case errors.Is(err, eventstore.ErrDuplicateEvent) && idem != nil:
		return Result{}, errReplayed
	case errors.Is(err, eventstore.ErrConflict):
		return Result{}, fmt.Errorf("%w: %v", errConflict, err)
	}
	return Result{}, unavailable(err)
}

// unavailable marks an error of the store as the ledger being unable to
// serve, unless the caller gave up first.
func unavailable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, eventstore.ErrInvalid) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func (s *Service) metadata(req Request, tenant string) eventstore.Metadata {
	return eventstore.Metadata{
		Actor:         req.Actor.String(),
		Tenant:        tenant,
		RequestID:     req.RequestID,
		ClientAddr:    req.ClientAddr,
		CorrelationID: req.CorrelationID,
		CausationID:   req.CausationID,
	}
}

// idempotency derives a command's event ids from its idempotency key, so
// a retried command finds what the first attempt appended.
type idempotency struct {
	seed        [32]byte
	fingerprint string
}

func newIdempotency(tenant string, req Request, name, target string, params, secret []byte) *idempotency {
	h := sha256.New()
	for _, s := range []string{"stele/idempotency/v1", tenant, req.Actor.String(), req.IdempotencyKey} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var seed [32]byte
	h.Sum(seed[:0])
	// The fingerprint is stored (in the causation id of the events); what
	// a log reader could learn from it must not include a secret value,
	// so the value is mixed in as an HMAC under the whole seed, whose
	// source (the client's key) is never stored.
	fp := sha256.New()
	fp.Write([]byte(name + "\x00" + target + "\x00"))
	fp.Write(params)
	if secret != nil {
		mac := hmac.New(sha256.New, seed[:])
		mac.Write(secret)
		fp.Write([]byte{0})
		fp.Write(mac.Sum(nil))
	}
	sum := fp.Sum(nil)
	return &idempotency{seed: seed, fingerprint: hex.EncodeToString(sum[:8])}
}

// id returns the id of the command's i-th event: a UUID version 8 made
// from the seed.
func (k *idempotency) id(i int) eventstore.ID {
	var b [36]byte
	copy(b[:], k.seed[:])
	binary.BigEndian.PutUint32(b[32:], uint32(i))
	sum := sha256.Sum256(b[:])
	var id eventstore.ID
	copy(id[:], sum[:16])
	id[6] = 0x80 | (id[6] & 0x0f)
	id[8] = 0x80 | (id[8] & 0x3f)
	return id
}

// causation names the key (hashed) and the command in event metadata.
func (k *idempotency) causation() string {
	return "idempotency:" + hex.EncodeToString(k.seed[:8]) + ":" + k.fingerprint
}

// replay looks for events a first attempt appended under the same key.
func (s *Service) replay(ctx context.Context, k *idempotency) (Result, []domain.Event, bool, error) {
	first, err := s.store.ReadByID(ctx, k.id(0))
	if errors.Is(err, eventstore.ErrNotFound) {
		return Result{}, nil, false, nil
	}
	if err != nil {
		return Result{}, nil, true, err
	}
	if first.Metadata.CausationID != k.causation() {
		return Result{}, nil, true, ErrIdempotencyKeyReused
	}
	recs, err := s.store.ReadStream(ctx, first.StreamID, first.StreamVersion, 64)
	if err != nil {
		return Result{}, nil, true, err
	}
	res := Result{Position: first.Position, Replayed: true}
	var evs []domain.Event
	for i, r := range recs {
		if r.ID != k.id(i) {
			break
		}
		ev, err := domain.Decode(r.Type, r.Data)
		if err != nil {
			return Result{}, nil, true, err
		}
		evs = append(evs, ev)
		res.Position = r.Position
	}
	return res, evs, true, nil
}

func (s *Service) replayOrErr(ctx context.Context, k *idempotency) (Result, []domain.Event, error) {
	if k == nil {
		return Result{}, nil, errors.New("app: replayed append without an idempotency key")
	}
	res, evs, found, err := s.replay(ctx, k)
	if err == nil && !found {
		err = errors.New("app: idempotent append vanished")
	}
	return res, evs, err
}
