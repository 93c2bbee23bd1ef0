// Package export writes and verifies ledger export files: the whole log
// with its signed checkpoints in one file that an auditor can verify with
// nothing but the log's public key. The layout is specified in
// docs/ledger-format.md ("Export file"):
//
//	header  "stele-ledger-export/v1\n"
//	frames  kind (1 byte) | length (4 bytes, big-endian) | payload
//	  'M'  metadata, JSON (first frame; informative, not trusted)
//	  'E'  event: stored hash (32 bytes) | canonical encoding
//	  'C'  signed checkpoint note, right after the event at its size
//	  'Z'  end: event count and checkpoint count, 8 bytes each, big-endian
package export

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/transparency-dev/formats/log"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/verify"
)

// Header opens every export file.
const Header = "stele-ledger-export/v1\n"

// Frame kinds.
const (
	KindMeta       = 'M'
	KindEvent      = 'E'
	KindCheckpoint = 'C'
	KindEnd        = 'Z'
)

// MaxFrame is the largest frame payload a reader accepts.
const MaxFrame = 64 << 20

// Meta is the informative metadata frame. Verification never trusts it:
// the auditor supplies the public key.
type Meta struct {
	Origin      string    `json:"origin"`
	VerifierKey string    `json:"verifier_key"`
	ExportedAt  time.Time `json:"exported_at"`
	Events      uint64    `json:"events"`
}

// Summary describes a written export.
type Summary struct {
	Events      uint64
	Checkpoints int
	Bytes       int64
}

// ErrNoCheckpoint means the log has no signed checkpoint to anchor an export.
var ErrNoCheckpoint = errors.New("export: the log has no signed checkpoint; sign one first (stele ledger checkpoint)")

// Write exports the log in s up to its latest signed checkpoint: every
// event from position 1 to the checkpoint's size and every checkpoint up
// to it, so that everything in the file is covered by a signature. meta
// is written as given, with Events filled in.
func Write(ctx context.Context, w io.Writer, s eventstore.Store, meta Meta) (Summary, error) {
	var sum Summary
	latest, err := s.LatestCheckpoint(ctx)
	if errors.Is(err, eventstore.ErrNotFound) {
		return sum, ErrNoCheckpoint
	}
	if err != nil {
		return sum, err
	}
	cps, err := s.Checkpoints(ctx, 0, 0)
	if err != nil {
		return sum, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &countWriter{w: bw}
	meta.Events = latest.Size
	mb, err := json.Marshal(meta)
	if err != nil {
		return sum, err
	}
	if _, err := io.WriteString(cw, Header); err != nil {
		return sum, err
	}
	if err := writeFrame(cw, KindMeta, mb); err != nil {
		return sum, err
	}
	writeCheckpoints := func(size uint64) error {
		for len(cps) > 0 && cps[0].Size <= size {
			if cps[0].Size == size {
				if err := writeFrame(cw, KindCheckpoint, cps[0].Note); err != nil {
					return err
				}
				sum.Checkpoints++
			}
			cps = cps[1:]
		}
		return nil
	}
	if err := writeCheckpoints(0); err != nil {
		return sum, err
	}
	var buf []byte
	for from := uint64(1); from <= latest.Size; {
		recs, err := s.ReadAll(ctx, from, int(min(5000, latest.Size-from+1)))
		if err != nil {
			return sum, err
		}
		if len(recs) == 0 {
			return sum, fmt.Errorf("export: the log ends at position %d, before its checkpoint at %d", from-1, latest.Size)
		}
		for i := range recs {
			r := &recs[i]
			if r.Position != from {
				return sum, fmt.Errorf("export: expected position %d, read %d", from, r.Position)
			}
			buf = append(buf[:0], r.Hash[:]...)
			buf = eventstore.AppendCanonical(buf, r)
			if err := writeFrame(cw, KindEvent, buf); err != nil {
				return sum, err
			}
			sum.Events++
			if err := writeCheckpoints(r.Position); err != nil {
				return sum, err
			}
			from++
		}
	}
	var end [16]byte
	binary.BigEndian.PutUint64(end[:8], sum.Events)
	binary.BigEndian.PutUint64(end[8:], uint64(sum.Checkpoints))
	if err := writeFrame(cw, KindEnd, end[:]); err != nil {
		return sum, err
	}
	if err := bw.Flush(); err != nil {
		return sum, err
	}
	sum.Bytes = cw.n
	return sum, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeFrame(w io.Writer, kind byte, payload []byte) error {
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// ErrFormat means the file is not a well-formed export.
var ErrFormat = errors.New("export: malformed file")

// Verify reads an export file and verifies it completely (see package
// verify): every event's hash, the chain, the tree, every checkpoint's
// signature and root, and that the last checkpoint covers the last
// event. It returns the metadata frame, the report, and an error matching
// verify.ErrFailed (tampering) or ErrFormat (not an export file).
func Verify(r io.Reader, opts verify.Options) (Meta, verify.Report, error) {
	start := time.Now()
	var meta Meta
	v, err := verify.NewVerifier(opts)
	if err != nil {
		return meta, verify.Report{}, err
	}
	br := bufio.NewReaderSize(r, 1<<20)
	finish := func(err error) (Meta, verify.Report, error) {
		rep, ferr := v.Finish()
		rep.Duration = time.Since(start)
		if err == nil {
			err = ferr
		}
		return meta, rep, err
	}
	h := make([]byte, len(Header))
	if _, err := io.ReadFull(br, h); err != nil || string(h) != Header {
		return finish(fmt.Errorf("%w: missing header %q", ErrFormat, Header[:len(Header)-1]))
	}
	kind, payload, err := readFrame(br, nil)
	if err != nil {
		return finish(err)
	}
	if kind != KindMeta {
		return finish(fmt.Errorf("%w: first frame is %q, want 'M'", ErrFormat, kind))
	}
	if err := json.Unmarshal(payload, &meta); err != nil {
		return finish(fmt.Errorf("%w: metadata: %v", ErrFormat, err))
	}

	// Events are hashed in parallel, a block at a time, then checked in order.
	const block = 4096
	workers := runtime.GOMAXPROCS(0)
	items := make([]item, 0, block)
	evs := make([]eventstore.StoredEvent, block)
	computed := make([]eventstore.Hash, block)
	var checkpoints, lastCheckpoint uint64
	var sawCheckpointAtEnd bool

	flush := func() error {
		evs = evs[:len(items)]
		errs := checkAndHash(items, evs, computed, workers)
		for i, it := range items {
			if it.raw == nil {
				size, root, err := openCheckpoint(opts, it.checkpoint)
				if err != nil {
					return &verify.Error{Position: v.Size(), Reason: fmt.Sprintf("checkpoint after position %d: %v", v.Size(), err)}
				}
				if checkpoints > 0 && size <= lastCheckpoint {
					return &verify.Error{Position: v.Size(), Reason: fmt.Sprintf("checkpoint of size %d after one of size %d: checkpoints must grow", size, lastCheckpoint)}
				}
				if err := v.Checkpoint(it.checkpoint, size, root); err != nil {
					return err
				}
				checkpoints++
				lastCheckpoint = size
				continue
			}
			if errs[i] != nil {
				return fmt.Errorf("%w: event after position %d: %v", ErrFormat, v.Size(), errs[i])
			}
			if err := v.Stored(&evs[i], computed[i]); err != nil {
				return err
			}
		}
		items = items[:0]
		return nil
	}

	var buf []byte
	for {
		kind, payload, err := readFrame(br, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: the file ends without its end frame (truncated)", ErrFormat)
			}
			return finish(err)
		}
		switch kind {
		case KindEvent:
			items = append(items, item{raw: payload})
			buf = nil
		case KindCheckpoint:
			items = append(items, item{checkpoint: payload})
			buf = nil
		case KindEnd:
			if err := flush(); err != nil {
				return finish(err)
			}
			if len(payload) != 16 {
				return finish(fmt.Errorf("%w: end frame of %d bytes", ErrFormat, len(payload)))
			}
			nEvents := binary.BigEndian.Uint64(payload[:8])
			nCps := binary.BigEndian.Uint64(payload[8:])
			if nEvents != v.Size() || nCps != checkpoints {
				return finish(&verify.Error{Reason: fmt.Sprintf("the end frame counts %d events and %d checkpoints, the file holds %d and %d (frames were removed or added)",
					nEvents, nCps, v.Size(), checkpoints)})
			}
			sawCheckpointAtEnd = checkpoints > 0 && lastCheckpoint == v.Size()
			if !sawCheckpointAtEnd {
				return finish(&verify.Error{Position: lastCheckpoint + 1, Reason: fmt.Sprintf("events %d to %d are not covered by a signed checkpoint", lastCheckpoint+1, v.Size())})
			}
			if _, err := br.ReadByte(); err != io.EOF {
				return finish(fmt.Errorf("%w: bytes after the end frame", ErrFormat))
			}
			return finish(nil)
		case KindMeta:
			return finish(fmt.Errorf("%w: a second metadata frame", ErrFormat))
		default:
			return finish(fmt.Errorf("%w: unknown frame kind 0x%02x", ErrFormat, kind))
		}
		if len(items) == block {
			if err := flush(); err != nil {
				return finish(err)
			}
		}
	}
}

// openCheckpoint returns the size and root a checkpoint note commits to,
// checking its signature when a key is given.
func openCheckpoint(opts verify.Options, note []byte) (uint64, eventstore.Hash, error) {
	if opts.Key != nil {
		return opts.Key.Open(note)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal(note); err != nil {
		return 0, eventstore.Hash{}, err
	}
	var root eventstore.Hash
	if len(cp.Hash) != len(root) {
		return 0, root, fmt.Errorf("root hash of %d bytes", len(cp.Hash))
	}
	copy(root[:], cp.Hash)
	return cp.Size, root, nil
}

func readFrame(br *bufio.Reader, buf []byte) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("%w: truncated frame header", ErrFormat)
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes is over the %d-byte limit", ErrFormat, n, MaxFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		return 0, nil, fmt.Errorf("%w: truncated frame", ErrFormat)
	}
	return h[0], buf, nil
}

// item is one frame of a block: an event (raw) or a checkpoint note.
type item struct {
	raw        []byte // stored hash | canonical encoding
	checkpoint []byte
}

// checkAndHash checks that each event item is well formed, points evs[i]
// at its canonical bytes and stored hash, and sets computed[i] to the
// SHA-256 of those bytes, in parallel: the exact bytes in the file are
// hashed, never re-encoded, and nothing is decoded into strings. It
// returns per-item errors, or a slice of nils when there are none.
func checkAndHash(items []item, evs []eventstore.StoredEvent, computed []eventstore.Hash, workers int) []error {
	chunk := max((len(items)+workers-1)/workers, 256)
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for lo := 0; lo < len(items); lo += chunk {
		hi := min(lo+chunk, len(items))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				raw := items[i].raw
				if raw == nil {
					continue
				}
				var err error
				if len(raw) < eventstore.HashSize {
					err = fmt.Errorf("event frame of %d bytes", len(raw))
				} else if err = eventstore.CheckCanonical(raw[eventstore.HashSize:]); err == nil {
					evs[i] = eventstore.StoredEvent{Canonical: raw[eventstore.HashSize:]}
					copy(evs[i].Hash[:], raw[:eventstore.HashSize])
					computed[i] = sha256.Sum256(evs[i].Canonical)
				}
				if err != nil {
					mu.Lock()
					if errs == nil {
						errs = make([]error, len(items))
					}
					errs[i] = err
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if errs == nil {
		return make([]error, len(items))
	}
	return errs
}
