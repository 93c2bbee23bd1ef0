package eventstore

import (
	"context"
	"encoding/binary"
	"fmt"
)

// StoredEvent is one stored event as a verifier reads the whole log: its
// canonical encoding, taken from the stored fields, and what the store
// keeps beside it. It carries no decoded strings, so reading it allocates
// nothing per event.
type StoredEvent struct {
	// Canonical is the event's canonical encoding (AppendCanonical); its
	// hash is the event's hash.
	Canonical []byte
	// Hash is the hash the store holds for the event.
	Hash Hash
	// Tree holds the Merkle hashes the store keeps with the event (see
	// TreeEntry), 32 bytes each; nil if the store keeps none.
	Tree []byte
}

// Header returns the fields of the canonical encoding that verification
// checks beyond the hash: position, previous hash, stream version,
// recorded time in microseconds, and the stream ID (aliasing e.Canonical).
// The encoding must be well formed (see CheckCanonical).
func (e *StoredEvent) Header() (position uint64, prev Hash, version uint64, recordedAt int64, stream []byte) {
	b := e.Canonical[len(EventTag):]
	copy(prev[:], b[:HashSize])
	b = b[HashSize:]
	position = binary.BigEndian.Uint64(b)
	version = binary.BigEndian.Uint64(b[8:])
	recordedAt = int64(binary.BigEndian.Uint64(b[16:]))
	b = b[40:]
	n := binary.BigEndian.Uint32(b)
	return position, prev, version, recordedAt, b[4 : 4+n]
}

// CheckCanonical reports whether b is a well-formed canonical encoding,
// by the same rules as ParseCanonical (an error matching ErrMalformed
// otherwise), without decoding it.
func CheckCanonical(b []byte) error {
	if len(b) < fixedLen {
		return fmt.Errorf("%w: %d bytes, shorter than the %d-byte fixed part", ErrMalformed, len(b), fixedLen)
	}
	if string(b[:len(EventTag)]) != EventTag {
		return fmt.Errorf("%w: unknown tag %q", ErrMalformed, b[:len(EventTag)])
	}
	p := b[fixedLen:]
	for i := range 9 {
		if len(p) < 4 {
			return fmt.Errorf("%w: field %d: missing length", ErrMalformed, i)
		}
		n := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)) {
			return fmt.Errorf("%w: field %d: length %d runs past the end", ErrMalformed, i, n)
		}
		p = p[n:]
	}
	if len(p) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(p))
	}
	return nil
}

// AppendCanonicalHeader appends the fixed-width prefix of a canonical
// encoding (tag, previous hash, position, stream version, recorded time in
// microseconds, event ID) to dst. The nine length-prefixed strings follow
// it (see AppendCanonical).
func AppendCanonicalHeader(dst []byte, prev *Hash, position, version uint64, recordedAt int64, id *ID) []byte {
	dst = append(dst, EventTag...)
	dst = append(dst, prev[:]...)
	dst = binary.BigEndian.AppendUint64(dst, position)
	dst = binary.BigEndian.AppendUint64(dst, version)
	dst = binary.BigEndian.AppendUint64(dst, uint64(recordedAt))
	return append(dst, id[:]...)
}

// Scanner is implemented by stores that can stream the whole log for
// verification faster than paging through ReadAll and ReadTree.
// eventstore/verify uses it when the store has it.
type Scanner interface {
	// ScanLog calls fn with the stored events at positions from to to
	// (inclusive) that the store holds, in position order, a batch at a
	// time, from one consistent view of the log. fn owns each batch (and
	// the bytes it points into) once called. ScanLog stops at the first
	// error fn returns and returns it.
	ScanLog(ctx context.Context, from, to uint64, fn func([]StoredEvent) error) error
}
