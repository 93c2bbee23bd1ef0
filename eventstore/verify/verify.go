// Package verify checks a whole ledger: every event's hash against its
// content, the hash chain, positions and stream versions, the recorded
// times, the Merkle tree and every signed checkpoint. It reads a live
// store (Store) or is fed records one by one (Verifier), as the export
// file reader does.
package verify

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unsafe"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/merkle"
)

// ErrFailed matches every verification failure; errors are *Error.
var ErrFailed = errors.New("ledger verification failed")

// Error names the first position at which verification failed, and why.
// A checkpoint failure is reported at the number of events checked before
// it; Position 0 means the failure is not about one event (the head, the
// log's end, or a checkpoint of size 0).
type Error struct {
	Position uint64 `json:"position"`
	Reason   string `json:"reason"`
}

func (e *Error) Error() string {
	if e.Position == 0 {
		return "ledger verification failed: " + e.Reason
	}
	return fmt.Sprintf("ledger verification failed at position %d: %s", e.Position, e.Reason)
}

// Is makes errors.Is(err, ErrFailed) true.
func (e *Error) Is(target error) bool { return target == ErrFailed }

func fail(pos uint64, format string, args ...any) error {
	return &Error{Position: pos, Reason: fmt.Sprintf(format, args...)}
}

// Report summarises a successful (or partial) verification.
type Report struct {
	// Events is the number of events verified, from position 1.
	Events uint64 `json:"events"`
	// Head is the hash of the last verified event.
	Head eventstore.Hash `json:"-"`
	// Root is the Merkle root over the verified events.
	Root eventstore.Hash `json:"-"`
	// TreeHashes counts stored Merkle hashes compared with recomputed ones.
	TreeHashes uint64 `json:"tree_hashes"`
	// Checkpoints counts signed checkpoints checked; LastCheckpoint is the
	// largest size among them.
	Checkpoints    int    `json:"checkpoints"`
	LastCheckpoint uint64 `json:"last_checkpoint"`
	// Signed is false when no key was given, so checkpoint signatures were
	// not checked (their roots still were).
	Signed bool `json:"signatures_checked"`
	// Trusted is the size of the trusted checkpoint checked, if any.
	Trusted uint64 `json:"trusted_checkpoint,omitempty"`
	// First and Last are the recorded times of the first and last event.
	First time.Time `json:"first_recorded_at"`
	Last  time.Time `json:"last_recorded_at"`
	// Duration is how long verification took.
	Duration time.Duration `json:"-"`
}

// EventsPerSecond is Events divided by Duration.
func (r Report) EventsPerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Events) / r.Duration.Seconds()
}

// Options say what to check beyond the log's own consistency.
type Options struct {
	// Key checks checkpoint signatures; without it only their roots are
	// checked against the recomputed tree.
	Key *checkpoint.Verifier
	// Trusted is a signed checkpoint kept outside the log (by an auditor,
	// a witness or the server's state file). The log must contain at
	// least Trusted's size events and match its root: this is what catches
	// a tail rewritten together with its checkpoints. Requires Key.
	Trusted []byte
}

// Verifier checks records fed in position order. It is the engine of
// Store and of export verification; use those unless you read records
// yourself.
type Verifier struct {
	opts     Options
	trusted  *eventstore.Checkpoint
	next     uint64
	prev     eventstore.Hash
	last     int64 // recorded time of the last event, µs since 1970
	frontier merkle.Frontier
	streams  map[string]*uint64 // last version of each stream
	tree     []eventstore.Hash
	report   Report

	treeBytes []byte // Record's stored tree hashes, concatenated
}

// NewVerifier returns a Verifier expecting position 1.
func NewVerifier(opts Options) (*Verifier, error) {
	v := &Verifier{opts: opts, next: 1, last: math.MinInt64, streams: map[string]*uint64{}}
	v.report.Signed = opts.Key != nil
	if len(opts.Trusted) > 0 {
		if opts.Key == nil {
			return nil, errors.New("verify: a trusted checkpoint needs the log's public key")
		}
		size, root, err := opts.Key.Open(opts.Trusted)
		if err != nil {
			return nil, fmt.Errorf("verify: trusted checkpoint: %w", err)
		}
		v.trusted = &eventstore.Checkpoint{Size: size, Root: root, Note: opts.Trusted}
		if size == 0 {
			if err := v.checkTrusted(); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}

// Size returns the number of records verified so far.
func (v *Verifier) Size() uint64 { return v.frontier.Size() }

// Record checks the next record. computed is the SHA-256 of the record's
// canonical encoding, computed by the caller (possibly in parallel);
// r.Hash is the hash the log stored. tree, if not nil, holds the Merkle
// hashes the log stored for this record.
func (v *Verifier) Record(r *eventstore.Record, computed eventstore.Hash, tree []eventstore.Hash) error {
	v.treeBytes = v.treeBytes[:0]
	for i := range tree {
		v.treeBytes = append(v.treeBytes, tree[i][:]...)
	}
	return v.check(r.Position, r.PrevHash, r.Hash, computed, r.RecordedAt.UnixMicro(), r.StreamID, r.StreamVersion, v.treeBytes, tree != nil, nil)
}

// Stored checks the next event, read as the store holds it. computed is
// the SHA-256 of e.Canonical, computed by the caller (possibly in
// parallel). The encoding must be well formed (eventstore.CheckCanonical).
// e.Tree is compared with the recomputed Merkle hashes unless it is nil.
func (v *Verifier) Stored(e *eventstore.StoredEvent, computed eventstore.Hash) error {
	return v.stored(e, computed, nil)
}

// stored is Stored with, if leaf is not nil, the Merkle leaf hash of
// e.Hash computed beforehand.
func (v *Verifier) stored(e *eventstore.StoredEvent, computed eventstore.Hash, leaf *eventstore.Hash) error {
	pos, prev, version, at, stream := e.Header()
	var name string // a view of the bytes: check copies it before keeping it
	if len(stream) > 0 {
		name = unsafe.String(&stream[0], len(stream))
	}
	return v.check(pos, prev, e.Hash, computed, at, name, version, e.Tree, e.Tree != nil, leaf)
}

// check checks the next event and, if it passes, makes it the last one.
// tree holds the stored Merkle hashes (compared only if hasTree). stream
// may alias a buffer: check keeps a copy. leaf, if not nil, is the Merkle
// leaf hash of stored, computed beforehand.
func (v *Verifier) check(pos uint64, prev, stored, computed eventstore.Hash, at int64, stream string, version uint64, tree []byte, hasTree bool, leaf *eventstore.Hash) error {
	switch {
	case pos < v.next:
		return fail(v.next, "position %d appears again after position %d (events reordered or duplicated)", pos, v.next-1)
	case pos > v.next:
		return fail(v.next, "event missing: the next stored event is at position %d", pos)
	}
	if prev != v.prev {
		return fail(pos, "previous hash %s does not match the hash %s of position %d (an event was changed, removed, inserted or reordered)",
			short(prev), short(v.prev), pos-1)
	}
	if computed != stored {
		return fail(pos, "stored hash %s differs from the hash of the event's content %s (the event was changed)", short(stored), short(computed))
	}
	if at < v.last {
		return fail(pos, "recorded at %s, before the previous event (%s)", micros(at).Format(time.RFC3339Nano), micros(v.last).Format(time.RFC3339Nano))
	}
	cur := v.streams[stream]
	want := uint64(1)
	if cur != nil {
		want = *cur + 1
	}
	if version != want {
		return fail(pos, "stream %q version %d, want %d", stream, version, want)
	}
	if hasTree && len(tree)%eventstore.HashSize != 0 {
		return fail(pos, "stored Merkle hashes of %d bytes, not a multiple of %d", len(tree), eventstore.HashSize)
	}
	if leaf != nil {
		v.tree = v.frontier.AppendLeaf(v.tree[:0], *leaf)
	} else {
		v.tree = v.frontier.Append(v.tree[:0], stored)
	}
	if hasTree {
		if n := len(tree) / eventstore.HashSize; n != len(v.tree) {
			return fail(pos, "%d stored Merkle hashes, want %d", n, len(v.tree))
		}
		for i := range v.tree {
			if string(tree[i*eventstore.HashSize:(i+1)*eventstore.HashSize]) != string(v.tree[i][:]) {
				var got eventstore.Hash
				copy(got[:], tree[i*eventstore.HashSize:])
				return fail(pos, "stored Merkle hash %d is %s, recomputed %s", i, short(got), short(v.tree[i]))
			}
		}
		v.report.TreeHashes += uint64(len(v.tree))
	}
	if cur != nil {
		*cur = version
	} else {
		v.streams[strings.Clone(stream)] = &version
	}
	v.prev, v.last = stored, at
	v.next++
	if v.report.Events == 0 {
		v.report.First = micros(at)
	}
	v.report.Events++
	if v.trusted != nil && v.trusted.Size == v.frontier.Size() {
		return v.checkTrusted()
	}
	return nil
}

func micros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// Checkpoint checks a stored checkpoint. It must be given once every
// record up to its size has been given, and before any later record.
func (v *Verifier) Checkpoint(note []byte, size uint64, root eventstore.Hash) error {
	at := v.frontier.Size()
	if size != at {
		return fail(at, "checkpoint of size %d found after position %d (checkpoints out of place)", size, at)
	}
	if v.opts.Key != nil {
		nsize, nroot, err := v.opts.Key.Open(note)
		if err != nil {
			return fail(at, "checkpoint at size %d: %v", size, err)
		}
		if nsize != size || nroot != root {
			return fail(at, "checkpoint at size %d: its signed note says size %d root %s", size, nsize, short(nroot))
		}
	}
	if got := v.frontier.Root(); got != root {
		return fail(at, "checkpoint at size %d commits to root %s, but the events give %s (history was rewritten)", size, short(root), short(got))
	}
	v.report.Checkpoints++
	v.report.LastCheckpoint = size
	return nil
}

func (v *Verifier) checkTrusted() error {
	if got := v.frontier.Root(); got != v.trusted.Root {
		return fail(0, "the trusted checkpoint at size %d commits to root %s, but the log gives %s (history was rewritten)",
			v.trusted.Size, short(v.trusted.Root), short(got))
	}
	v.report.Trusted = v.trusted.Size
	return nil
}

// Finish checks what can only be checked at the end and returns the report.
func (v *Verifier) Finish() (Report, error) {
	if v.report.Events > 0 {
		v.report.Last = micros(v.last)
	}
	v.report.Head = v.prev
	v.report.Root = v.frontier.Root()
	if v.trusted != nil && v.trusted.Size > v.frontier.Size() {
		return v.report, fail(0, "the log ends at position %d, but the trusted checkpoint covers %d events (events were removed)",
			v.frontier.Size(), v.trusted.Size)
	}
	return v.report, nil
}

func short(h eventstore.Hash) string { return h.String()[:16] }
