package eventstore

import "bytes"

// MatchRetry decides whether an append is a retry of one already stored.
// stored[i] is the record already in the log with events[i].ID, or nil.
// It returns retry=false when no ID is stored; the original result with
// retry=true when every event is stored in this stream, in order, with the
// same type and data; and an error matching ErrDuplicateEvent otherwise.
// Backends call it, under the append lock, before writing.
func MatchRetry(stream string, events []Event, stored []*Record) (res Appended, retry bool, err error) {
	found := 0
	var some *Record
	for _, r := range stored {
		if r != nil {
			found++
			some = r
		}
	}
	if found == 0 {
		return res, false, nil
	}
	if found != len(events) {
		return res, false, &DuplicateEventError{ID: some.ID, Position: some.Position, Reason: "only part of this append was stored before"}
	}
	first := stored[0]
	for i, e := range events {
		r := stored[i]
		switch {
		case r.StreamID != stream:
			return res, false, &DuplicateEventError{ID: e.ID, Position: r.Position, Reason: "it belongs to stream " + r.StreamID}
		case r.Type != e.Type || !bytes.Equal(r.Data, e.Data):
			return res, false, &DuplicateEventError{ID: e.ID, Position: r.Position, Reason: "the stored event has other content"}
		case r.Position != first.Position+uint64(i) || r.StreamVersion != first.StreamVersion+uint64(i):
			return res, false, &DuplicateEventError{ID: e.ID, Position: r.Position, Reason: "the stored events are in another order"}
		}
	}
	last := stored[len(stored)-1]
	return Appended{
		StreamID:      stream,
		FirstVersion:  first.StreamVersion,
		LastVersion:   last.StreamVersion,
		FirstPosition: first.Position,
		LastPosition:  last.Position,
		LastHash:      last.Hash,
		Replayed:      true,
	}, true, nil
}
