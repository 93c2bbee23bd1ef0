package eventstore

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// HashSize is the size in bytes of an event hash (SHA-256).
const HashSize = 32

// Hash is the SHA-256 hash of an event's canonical encoding (see
// AppendCanonical). The zero Hash is the previous hash of the first event.
type Hash [HashSize]byte

// String returns the hash in lowercase hexadecimal.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is all zero bytes.
func (h Hash) IsZero() bool { return h == Hash{} }

// ParseHash parses 64 hexadecimal digits.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*HashSize {
		return h, fmt.Errorf("hash %q: want %d hex digits", s, 2*HashSize)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("hash %q: %w", s, err)
	}
	return h, nil
}

// ID identifies one event for all time. Appending an event whose ID is
// already in the log is how a retry is recognised (see Store.Append). IDs
// are 16 bytes, written as a UUID.
type ID [16]byte

// NewID returns a fresh random ID in the UUID version 7 layout: a
// millisecond timestamp followed by random bits, so IDs made close in time
// sort close together (kind to B-tree indexes).
func NewID() ID {
	var id ID
	if _, err := rand.Read(id[6:]); err != nil {
		panic("eventstore: crypto/rand failed: " + err.Error())
	}
	ms := uint64(time.Now().UnixMilli())
	id[0] = byte(ms >> 40)
	id[1] = byte(ms >> 32)
	id[2] = byte(ms >> 24)
	id[3] = byte(ms >> 16)
	id[4] = byte(ms >> 8)
	id[5] = byte(ms)
	id[6] = 0x70 | (id[6] & 0x0f) // version 7
	id[8] = 0x80 | (id[8] & 0x3f) // RFC 9562 variant
	return id
}

// IsZero reports whether id is all zero bytes. The zero ID is never valid
// in an event.
func (id ID) IsZero() bool { return id == ID{} }

// String returns id in the UUID text form, 8-4-4-4-12 lowercase hex digits.
func (id ID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return string(b[:])
}

// ParseID parses the UUID text form written by ID.String (upper or lower
// case hex digits).
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, fmt.Errorf("event id %q: not a UUID", s)
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(id[:], []byte(h)); err != nil {
		return id, fmt.Errorf("event id %q: not a UUID", s)
	}
	return id, nil
}

// Metadata says who caused an event and in which context. Every field is
// covered by the event's hash. None of them may carry a secret value.
type Metadata struct {
	// Actor is the principal that caused the event, for example
	// "user:<id>" or "token:<id>", or "system:<job>".
	Actor string
	// Tenant is the organization the event belongs to; empty for events
	// that belong to no tenant.
	Tenant string
	// RequestID is the id of the request that caused the event.
	RequestID string
	// ClientAddr is the network address of the client, as the server saw it.
	ClientAddr string
	// CausationID is the id of the command or event that caused this event.
	CausationID string
	// CorrelationID ties together every event of one conversation.
	CorrelationID string
}

// Event is an event to be appended. The store assigns its position, stream
// version, recorded time and hashes.
type Event struct {
	// ID MUST be unique across the log and MUST NOT be zero; reuse it only
	// to retry the same append.
	ID ID
	// Type is the event's fixed wire name, such as "secret.created". It
	// never changes once events of that type exist.
	Type string
	// Data is the event's payload, opaque to the store (JSON by
	// convention). The store keeps and hashes these exact bytes.
	Data     []byte
	Metadata Metadata
}

// Record is an event as stored in the log.
type Record struct {
	// Position is the event's place in the global log, contiguous from 1.
	Position uint64
	// StreamID names the stream (usually one aggregate) the event belongs to.
	StreamID string
	// StreamVersion is the event's place in its stream, contiguous from 1.
	StreamVersion uint64
	ID            ID
	Type          string
	Data          []byte
	Metadata      Metadata
	// RecordedAt is when the store appended the event, in UTC with
	// microsecond precision. It never decreases along the log.
	RecordedAt time.Time
	// PrevHash is the Hash of the record at Position-1, or the zero hash for
	// Position 1.
	PrevHash Hash
	// Hash is the SHA-256 of the record's canonical encoding.
	Hash Hash
}

// Head describes the end of the log: the last position and its hash. The
// head of an empty log has Position 0 and the zero Hash.
type Head struct {
	Position   uint64
	Hash       Hash
	RecordedAt time.Time
}

// ExpectedVersion is the stream version an append expects to find: an
// exact version (1 or more), or one of NoStream, Any and StreamExists.
type ExpectedVersion int64

const (
	// NoStream expects the stream not to exist yet.
	NoStream ExpectedVersion = 0
	// Any skips the version check.
	Any ExpectedVersion = -1
	// StreamExists expects the stream to hold at least one event.
	StreamExists ExpectedVersion = -2
)

// Exactly returns the ExpectedVersion that expects a stream to be at
// version v (0 meaning the stream does not exist).
func Exactly(v uint64) ExpectedVersion { return ExpectedVersion(v) }

// String describes the expectation for error messages.
func (e ExpectedVersion) String() string {
	switch {
	case e == NoStream:
		return "no stream"
	case e == Any:
		return "any"
	case e == StreamExists:
		return "stream exists"
	case e > 0:
		return fmt.Sprintf("version %d", int64(e))
	default:
		return fmt.Sprintf("invalid (%d)", int64(e))
	}
}

// Matches reports whether a stream at version actual satisfies e.
func (e ExpectedVersion) Matches(actual uint64) bool {
	switch {
	case e == Any:
		return true
	case e == StreamExists:
		return actual > 0
	case e >= 0:
		return uint64(e) == actual
	default:
		return false
	}
}

// Appended is the result of a successful append.
type Appended struct {
	StreamID string
	// FirstVersion and LastVersion are the stream versions of the first
	// and last appended event.
	FirstVersion, LastVersion uint64
	// FirstPosition and LastPosition are the log positions of the first
	// and last appended event. A reader that must see this write asks for
	// LastPosition (read-your-writes).
	FirstPosition, LastPosition uint64
	// LastHash is the hash of the last appended event.
	LastHash Hash
	// Replayed is true when every event had been appended before (a retry
	// with the same event IDs): nothing new was written and the other
	// fields describe the original append.
	Replayed bool
}

// Checkpoint is a signed statement of the log's Merkle tree at one size:
// Note holds the signed note (C2SP tlog-checkpoint) whose body commits to
// Size and Root. Stores keep checkpoints as given; package
// eventstore/checkpoint makes and checks them.
type Checkpoint struct {
	Size      uint64
	Root      Hash
	Note      []byte
	CreatedAt time.Time
}

// TreeEntry holds the Merkle tree hashes stored when the event at Position
// was appended: in the order golang.org/x/mod/sumdb/tlog.StoredHashes
// returns them, the leaf hash first, then each interior node completed by
// that leaf.
type TreeEntry struct {
	Position uint64
	Hashes   []Hash
}

// TruncateTime returns t in UTC, truncated to whole microseconds: the
// precision the log keeps.
func TruncateTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Bytes returns a copy of the hash as a byte slice.
func (h Hash) Bytes() []byte { return append([]byte(nil), h[:]...) }
