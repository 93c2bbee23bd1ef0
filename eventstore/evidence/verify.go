package evidence

import (
	"crypto/sha256"
	"errors"
	"io"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/merkle"
)

// Report describes a verified (or partly verified) evidence file.
type Report struct {
	Org string
	// From and To are the range the file was asked for (zero when open).
	From, To time.Time
	// Origin, TreeSize and Root are what the checkpoint signs; Note is
	// the signed note.
	Origin   string
	TreeSize uint64
	Root     eventstore.Hash
	Note     []byte
	// Events counts the events verified; the positions and recorded
	// times of the first and last are given.
	Events                      uint64
	FirstPosition, LastPosition uint64
	FirstRecorded, LastRecorded time.Time
	// Streams counts the streams the events belong to; Actors and Types
	// count the events per actor and per event type.
	Streams int
	Actors  map[string]uint64
	Types   map[string]uint64
}

// Verify reads an evidence file and checks, with the log's verifier key:
// the checkpoint's signature and origin; for each event, that the record
// parses, that its SHA-256 is the hash given, that the inclusion proof
// leads from that hash to the checkpoint's root at the event's position,
// that positions increase and recorded times do not decrease, that the
// event is the file's organization's and lies in the file's range, that
// adjacent events are chained, and that each stream's versions are
// contiguous (from 1 when the range is open at its start); and the end
// line's event count and digest. It returns what was verified and the
// first failure, an error matching ErrFailed.
func Verify(r io.Reader, key *checkpoint.Verifier) (Report, error) {
	rep := Report{Actors: map[string]uint64{}, Types: map[string]uint64{}}
	if key == nil {
		return rep, errors.New("evidence: a verifier key is needed")
	}
	rd, err := NewReader(r)
	if err != nil {
		return rep, err
	}
	h := rd.Header()
	rep.Org, rep.From, rep.To = h.Org, h.From, h.To
	size, root, err := key.Open(h.Note)
	if err != nil {
		return rep, failf(h.NoteLine, 0, CheckCheckpoint, "the checkpoint does not verify with the key %s: %v", key, err)
	}
	rep.Origin, rep.TreeSize, rep.Root, rep.Note = key.Origin(), size, root, h.Note
	var prevPos uint64
	var prevHash eventstore.Hash
	var prevTime time.Time
	versions := map[string]uint64{}
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, err
		}
		fail := func(check, format string, args ...any) (Report, error) {
			return rep, failf(e.Line, e.Position, check, format, args...)
		}
		rec, err := eventstore.ParseCanonical(e.Record)
		if err != nil {
			return fail(CheckFormat, "the record does not parse: %v", err)
		}
		if rec.Position != e.Position {
			return fail(CheckFormat, "the line gives position %d, the record holds %d", e.Position, rec.Position)
		}
		if got := eventstore.Hash(sha256.Sum256(e.Record)); got != e.Hash {
			return fail(CheckHash, "the record hashes to %s, the line gives %s (the record was changed)", short(got), short(e.Hash))
		}
		if e.Position <= prevPos {
			return fail(CheckOrder, "position %d comes after %d: positions must increase (an event repeated or moved)", e.Position, prevPos)
		}
		if rec.Metadata.Tenant != h.Org {
			return fail(CheckTenant, "the event belongs to tenant %q, not to %q", rec.Metadata.Tenant, h.Org)
		}
		if !inRange(rec.RecordedAt, h.From, h.To) {
			return fail(CheckRange, "recorded at %s, outside the file's range", rec.RecordedAt.Format(time.RFC3339Nano))
		}
		if rec.RecordedAt.Before(prevTime) {
			return fail(CheckOrder, "recorded at %s, before the previous event (%s)", rec.RecordedAt.Format(time.RFC3339Nano), prevTime.Format(time.RFC3339Nano))
		}
		if e.Position > size {
			return fail(CheckInclusion, "position %d is beyond the checkpoint's %d events (the line comes from another export)", e.Position, size)
		}
		if err := merkle.VerifyInclusion(e.Proof, size, root, e.Position-1, e.Hash); err != nil {
			return fail(CheckInclusion, "the proof does not lead from the event's hash to the checkpoint's root of %d events: the event is not at this position in the signed log (the line comes from another export, or the log was rewritten)", size)
		}
		if prevPos > 0 && e.Position == prevPos+1 && rec.PrevHash != prevHash {
			return fail(CheckChain, "its previous hash %s is not the hash %s of the event before it", short(rec.PrevHash), short(prevHash))
		}
		last, seen := versions[rec.StreamID]
		switch {
		case seen && rec.StreamVersion <= last:
			return fail(CheckStream, "stream %q: version %d after version %d", rec.StreamID, rec.StreamVersion, last)
		case seen && rec.StreamVersion != last+1:
			return fail(CheckStream, "stream %q goes from version %d to %d: its events in between are missing from the file", rec.StreamID, last, rec.StreamVersion)
		case !seen && h.From.IsZero() && rec.StreamVersion != 1:
			return fail(CheckStream, "stream %q starts at version %d, but the file starts at the beginning of the log: its versions 1 to %d are missing", rec.StreamID, rec.StreamVersion, rec.StreamVersion-1)
		}
		versions[rec.StreamID] = rec.StreamVersion
		if rep.Events == 0 {
			rep.FirstPosition, rep.FirstRecorded = e.Position, rec.RecordedAt
		}
		rep.Events++
		rep.LastPosition, rep.LastRecorded = e.Position, rec.RecordedAt
		rep.Streams = len(versions)
		rep.Actors[rec.Metadata.Actor]++
		rep.Types[rec.Type]++
		prevPos, prevHash, prevTime = e.Position, e.Hash, rec.RecordedAt
	}
	return rep, nil
}

func short(h eventstore.Hash) string { return h.String()[:16] }
