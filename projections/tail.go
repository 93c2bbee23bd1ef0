package projections

import (
	"context"
	"fmt"
	"sync"

	"stele.dev/stele/eventstore"
)

// tail keeps the most recent events of the log in memory, decoded and
// checked (each event's hash against its content, each previous hash
// against the event before), so that the projections following the log,
// usually at about the same place, read and decode each event once
// between them rather than once each.
type tail struct {
	store eventstore.Store
	max   int

	mu     sync.Mutex
	events []Event // consecutive positions
}

func newTail(store eventstore.Store, max int) *tail { return &tail{store: store, max: max} }

// get returns up to limit events from position from on, in order.
func (t *tail) get(ctx context.Context, from uint64, limit int) ([]Event, error) {
	if evs := t.cached(from, limit); evs != nil {
		return evs, nil
	}
	recs, err := t.store.ReadAll(ctx, from, limit)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	t.mu.Lock()
	var prev *eventstore.Hash
	if n := len(t.events); n > 0 && t.events[n-1].Position+1 == from {
		prev = &t.events[n-1].Hash
	}
	t.mu.Unlock()
	evs, err := decodeChecked(recs, prev)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.events)
	switch {
	case n > 0 && t.events[n-1].Position+1 == from:
		t.events = append(t.events, evs...)
	case n == 0 || from > t.events[n-1].Position+1 || from < t.events[0].Position:
		t.events = append(t.events[:0:0], evs...)
	}
	if over := len(t.events) - t.max; over > 0 {
		t.events = append(t.events[:0:0], t.events[over:]...)
	}
	return evs, nil
}

// cached returns the events [from, from+limit) held in memory, or nil.
func (t *tail) cached(from uint64, limit int) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.events)
	if n == 0 || from < t.events[0].Position || from > t.events[n-1].Position {
		return nil
	}
	i := int(from - t.events[0].Position)
	j := min(n, i+limit)
	return append([]Event(nil), t.events[i:j]...)
}

// decodeChecked decodes records and checks each one's hash and its link
// to the one before (to *prev when given, for the first).
func decodeChecked(recs []eventstore.Record, prev *eventstore.Hash) ([]Event, error) {
	out := make([]Event, len(recs))
	var h eventstore.Hasher
	for i := range recs {
		r := &recs[i]
		if i > 0 && r.PrevHash != recs[i-1].Hash {
			return nil, &integrityError{fmt.Sprintf("position %d: previous hash %s does not match the hash %s of position %d", r.Position, r.PrevHash, recs[i-1].Hash, r.Position-1)}
		}
		if i == 0 && prev != nil && r.PrevHash != *prev {
			return nil, &integrityError{fmt.Sprintf("position %d: previous hash %s does not match the hash %s of position %d", r.Position, r.PrevHash, *prev, r.Position-1)}
		}
		if got := h.Hash(r); got != r.Hash {
			return nil, &integrityError{fmt.Sprintf("position %d: stored hash %s differs from the hash of its content %s", r.Position, r.Hash, got)}
		}
		ev, err := decodeEvent(r)
		if err != nil {
			return nil, err
		}
		out[i] = ev
	}
	return out, nil
}

// rangeOf returns exactly the events [first, last].
func (t *tail) rangeOf(ctx context.Context, first, last uint64) ([]Event, error) {
	var out []Event
	for from := first; from <= last; {
		evs, err := t.get(ctx, from, int(last-from+1))
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 || evs[0].Position != from {
			return nil, fmt.Errorf("projections: events %d to %d are not in the log", from, last)
		}
		for _, e := range evs {
			if e.Position > last {
				break
			}
			out = append(out, e)
		}
		from = out[len(out)-1].Position + 1
	}
	return out, nil
}
