package eventstore

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// EventTag opens every canonical event encoding. It separates event hashes
// from every other SHA-256 in the system (Merkle leaves start with 0x00,
// interior nodes with 0x01) and names the layout's version.
const EventTag = "stele.event.v1\x00"

// fixedLen is the size of the fixed-width prefix of the canonical encoding:
// tag, previous hash, position, stream version, recorded time and event id.
const fixedLen = len(EventTag) + HashSize + 8 + 8 + 8 + 16

// AppendCanonical appends r's canonical encoding to dst and returns the
// extended slice. The encoding is the input of the event hash; its layout
// is specified in docs/ledger-format.md:
//
//	tag            15 bytes  "stele.event.v1" 0x00
//	prev_hash      32 bytes
//	position        8 bytes  unsigned, big-endian
//	stream_version  8 bytes  unsigned, big-endian
//	recorded_at     8 bytes  signed, big-endian, microseconds since 1970-01-01T00:00:00Z
//	event_id       16 bytes
//	then nine byte strings, each a 4-byte big-endian length and the bytes:
//	stream_id, type, actor, tenant, request_id, client_addr,
//	causation_id, correlation_id, data
//
// Hash is not part of the encoding.
func AppendCanonical(dst []byte, r *Record) []byte {
	dst = append(dst, EventTag...)
	dst = append(dst, r.PrevHash[:]...)
	dst = binary.BigEndian.AppendUint64(dst, r.Position)
	dst = binary.BigEndian.AppendUint64(dst, r.StreamVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.RecordedAt.UnixMicro()))
	dst = append(dst, r.ID[:]...)
	dst = appendString(dst, r.StreamID)
	dst = appendString(dst, r.Type)
	m := &r.Metadata
	dst = appendString(dst, m.Actor)
	dst = appendString(dst, m.Tenant)
	dst = appendString(dst, m.RequestID)
	dst = appendString(dst, m.ClientAddr)
	dst = appendString(dst, m.CausationID)
	dst = appendString(dst, m.CorrelationID)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(r.Data)))
	dst = append(dst, r.Data...)
	return dst
}

// CanonicalSize returns the length of r's canonical encoding.
func CanonicalSize(r *Record) int {
	m := &r.Metadata
	return fixedLen + 9*4 + len(r.StreamID) + len(r.Type) + len(m.Actor) + len(m.Tenant) +
		len(m.RequestID) + len(m.ClientAddr) + len(m.CausationID) + len(m.CorrelationID) + len(r.Data)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// ComputeHash returns the SHA-256 of r's canonical encoding. It reads every
// field but Hash. It is safe for concurrent use.
func ComputeHash(r *Record) Hash {
	bp := bufPool.Get().(*[]byte)
	b := AppendCanonical((*bp)[:0], r)
	h := sha256.Sum256(b)
	if cap(b) <= 1<<20 { // do not pin huge buffers in the pool
		*bp = b
		bufPool.Put(bp)
	}
	return h
}

// Hasher computes event hashes with a buffer of its own, for hot loops run
// by one goroutine. The zero Hasher is ready to use.
type Hasher struct{ buf []byte }

// Hash returns the SHA-256 of r's canonical encoding.
func (h *Hasher) Hash(r *Record) Hash {
	h.buf = AppendCanonical(h.buf[:0], r)
	return sha256.Sum256(h.buf)
}

// ErrMalformed means bytes are not a canonical event encoding.
var ErrMalformed = errors.New("eventstore: malformed canonical encoding")

// ParseCanonical decodes a canonical event encoding (as written by
// AppendCanonical) and returns the record. Its Hash is left zero: the
// event hash is the SHA-256 of b itself. The returned Data aliases b. The encoding must be exact: a wrong tag,
// a length running past the end, or trailing bytes are errors matching
// ErrMalformed.
func ParseCanonical(b []byte) (Record, error) {
	var r Record
	if len(b) < fixedLen {
		return r, fmt.Errorf("%w: %d bytes, shorter than the %d-byte fixed part", ErrMalformed, len(b), fixedLen)
	}
	if string(b[:len(EventTag)]) != EventTag {
		return r, fmt.Errorf("%w: unknown tag %q", ErrMalformed, b[:len(EventTag)])
	}
	p := b[len(EventTag):]
	copy(r.PrevHash[:], p[:HashSize])
	p = p[HashSize:]
	r.Position = binary.BigEndian.Uint64(p)
	r.StreamVersion = binary.BigEndian.Uint64(p[8:])
	r.RecordedAt = time.UnixMicro(int64(binary.BigEndian.Uint64(p[16:]))).UTC()
	copy(r.ID[:], p[24:40])
	p = p[40:]
	var fields [9][]byte
	for i := range fields {
		if len(p) < 4 {
			return r, fmt.Errorf("%w: field %d: missing length", ErrMalformed, i)
		}
		n := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)) {
			return r, fmt.Errorf("%w: field %d: length %d runs past the end", ErrMalformed, i, n)
		}
		fields[i], p = p[:n], p[n:]
	}
	if len(p) != 0 {
		return r, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(p))
	}
	r.StreamID = string(fields[0])
	r.Type = string(fields[1])
	r.Metadata = Metadata{
		Actor:         string(fields[2]),
		Tenant:        string(fields[3]),
		RequestID:     string(fields[4]),
		ClientAddr:    string(fields[5]),
		CausationID:   string(fields[6]),
		CorrelationID: string(fields[7]),
	}
	r.Data = fields[8]
	return r, nil
}
