package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
)

var _ eventstore.Scanner = (*Store)(nil)

// scanBatch is how many events ScanLog hands over at a time.
const scanBatch = 4096

// scanColumns are the columns ScanLog copies, in this order: the fixed
// fields of the canonical encoding, the stored hashes, then the nine
// strings in the encoding's order, so that the binary COPY's
// length-prefixed fields are the encoding's tail byte for byte.
const scanColumns = `position, stream_version, recorded_at, event_id, prev_hash, hash, tree,
	stream_id, type, actor, tenant, request_id, client_addr, causation_id, correlation_id, data`

const scanFields = 16

// scanBlock is how many positions each connection copies in turn when
// ScanLog reads on two (a variable for tests).
var scanBlock uint64 = 16384

// ScanLog implements eventstore.Scanner: binary COPY … TO STDOUT, the
// rows turned into canonical encodings as they arrive. A long range is
// read on two connections at once, taking turns by blocks of positions
// (so that PostgreSQL sends on both while the caller works through the
// batches), from one snapshot exported by the first to the second; a
// short one, or one for which the pool has no connection to spare, on one.
func (s *Store) ScanLog(ctx context.Context, from, to uint64, fn func([]eventstore.StoredEvent) error) error {
	to = min(to, 1<<63-1)
	if from > to {
		return nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: scan: %w", err)
	}
	defer conn.Release()
	var second *pgxpool.Conn
	if to-from >= 2*scanBlock {
		second = s.spareConn(ctx)
	}
	if second == nil {
		return copyLog(ctx, conn, from, to, fn)
	}
	defer second.Release()
	var last int64
	err = shareSnapshot(ctx, conn, second)
	if err == nil {
		// The blocks past the last stored position would all be empty.
		err = conn.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM ledger_events`).Scan(&last)
	}
	if err != nil {
		s.abort(conn)
		s.abort(second)
		return fmt.Errorf("postgres: scan: %w", err)
	}
	if to = min(to, uint64(last)); from <= to {
		err = scanTwo(ctx, [2]*pgxpool.Conn{conn, second}, from, to, fn)
	}
	for _, c := range []*pgxpool.Conn{conn, second} {
		if c.Conn().PgConn().TxStatus() != 'I' {
			s.abort(c)
		}
	}
	return err
}

// spareConn returns a second connection if the pool has one to spare
// (one more stays free for others), else nil.
func (s *Store) spareConn(ctx context.Context) *pgxpool.Conn {
	st := s.pool.Stat()
	if st.MaxConns()-st.AcquiredConns() < 2 {
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	c, err := s.pool.Acquire(actx)
	if err != nil {
		return nil
	}
	return c
}

// shareSnapshot opens a repeatable-read transaction on a and one on b
// that sees the same snapshot.
func shareSnapshot(ctx context.Context, a, b *pgxpool.Conn) error {
	var snap string
	if _, err := a.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
		return err
	}
	if err := a.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&snap); err != nil {
		return err
	}
	if _, err := b.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
		return err
	}
	_, err := b.Exec(ctx, `SET TRANSACTION SNAPSHOT '`+strings.ReplaceAll(snap, "'", "''")+`'`)
	return err
}

// copyLog copies positions from to to on conn and hands the batches to fn.
func copyLog(ctx context.Context, conn *pgxpool.Conn, from, to uint64, fn func([]eventstore.StoredEvent) error) error {
	sql := `COPY (SELECT ` + scanColumns + ` FROM ledger_events WHERE position BETWEEN ` +
		strconv.FormatUint(from, 10) + ` AND ` + strconv.FormatUint(to, 10) + ` ORDER BY position) TO STDOUT (FORMAT binary)`
	w := &scanWriter{fn: fn}
	if _, err := conn.Conn().PgConn().CopyTo(ctx, w, sql); err != nil {
		if w.err != nil {
			return w.err
		}
		return fmt.Errorf("postgres: scan: %w", err)
	}
	if !w.done {
		return errors.New("postgres: scan: the COPY stream ended early")
	}
	return w.flush()
}

// scanTwo reads positions from to to on two connections, each copying
// every other block of scanBlock positions, and hands the batches to fn
// in position order.
func scanTwo(ctx context.Context, conns [2]*pgxpool.Conn, from, to uint64, fn func([]eventstore.StoredEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type item struct {
		batch    []eventstore.StoredEvent
		blockEnd bool
		err      error
	}
	var feeds [2]chan item
	var wg sync.WaitGroup
	for k := range feeds {
		feeds[k] = make(chan item, int(scanBlock/scanBatch)+2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(feeds[k])
			send := func(it item) bool {
				select {
				case feeds[k] <- it:
					return true
				case <-ctx.Done():
					return false
				}
			}
			for lo := from + uint64(k)*scanBlock; lo <= to && lo >= from; lo += 2 * scanBlock {
				err := copyLog(ctx, conns[k], lo, min(lo+scanBlock-1, to), func(b []eventstore.StoredEvent) error {
					if !send(item{batch: b}) {
						return ctx.Err()
					}
					return nil
				})
				if err != nil {
					send(item{err: err})
					return
				}
				if !send(item{blockEnd: true}) {
					return
				}
			}
		}()
	}
	defer func() {
		cancel() // readers blocked on a full feed give up
		wg.Wait()
	}()
	for k := 0; ; k = 1 - k {
		for {
			it, ok := <-feeds[k]
			if !ok {
				return ctx.Err()
			}
			if it.err != nil {
				return it.err
			}
			if it.blockEnd {
				break
			}
			if err := fn(it.batch); err != nil {
				return err
			}
		}
	}
}

// scanWriter parses a binary COPY stream of scanColumns into batches of
// stored events.
type scanWriter struct {
	fn      func([]eventstore.StoredEvent) error
	pending []byte // an incomplete tuple carried to the next write
	header  bool   // the stream's header was read
	done    bool   // the trailer was read
	err     error  // the first error, from parsing or fn

	// The batch being filled: its events' canonical encodings and trees,
	// back to back in buf, at the offsets in ends.
	buf  []byte
	evs  []scanned
	last int // len(buf) of the previous batch, to size the next
}

type scanned struct {
	canonEnd, treeEnd int
	hash              eventstore.Hash
}

var errScanFormat = errors.New("postgres: scan: unexpected COPY data")

func (w *scanWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	data := p
	if len(w.pending) > 0 {
		w.pending = append(w.pending, p...)
		data = w.pending
	}
	n, err := w.parse(data)
	if err != nil {
		w.err = err
		return 0, err
	}
	rest := data[n:]
	if len(w.pending) > 0 {
		w.pending = append(w.pending[:0], rest...)
	} else if len(rest) > 0 {
		w.pending = append(w.pending, rest...)
	}
	return len(p), nil
}

// parse consumes whole tuples from b and returns how many bytes it used.
func (w *scanWriter) parse(b []byte) (int, error) {
	used := 0
	if !w.header {
		const sig = "PGCOPY\n\xff\r\n\x00"
		if len(b) < len(sig)+8 {
			return 0, nil
		}
		if string(b[:len(sig)]) != sig {
			return 0, errScanFormat
		}
		ext := int(binary.BigEndian.Uint32(b[len(sig)+4:]))
		if len(b) < len(sig)+8+ext {
			return 0, nil
		}
		used = len(sig) + 8 + ext
		w.header = true
	}
	for used < len(b) {
		if w.done {
			return 0, errScanFormat
		}
		t := b[used:]
		if len(t) < 2 {
			return used, nil
		}
		fields := int16(binary.BigEndian.Uint16(t))
		if fields == -1 {
			w.done = true
			used += 2
			continue
		}
		if fields != scanFields {
			return 0, errScanFormat
		}
		// Find the fields; the last nine, with their lengths, are the
		// tail of the canonical encoding.
		var f [scanFields][]byte
		off, tail := 2, 0
		for i := range f {
			if i == 7 {
				tail = off
			}
			if len(t) < off+4 {
				return used, nil
			}
			n := int32(binary.BigEndian.Uint32(t[off:]))
			if n < 0 {
				return 0, fmt.Errorf("%w: a NULL field", errScanFormat)
			}
			if len(t) < off+4+int(n) {
				return used, nil
			}
			f[i] = t[off+4 : off+4+int(n)]
			off += 4 + int(n)
		}
		if err := w.add(&f, t[tail:off]); err != nil {
			return 0, err
		}
		used += off
		if len(w.evs) == scanBatch {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return used, nil
}

// add appends one row to the batch. tail is the nine string fields with
// their lengths, as the COPY stream has them.
func (w *scanWriter) add(f *[scanFields][]byte, tail []byte) error {
	if len(f[0]) != 8 || len(f[1]) != 8 || len(f[2]) != 8 || len(f[3]) != 16 ||
		len(f[4]) != eventstore.HashSize || len(f[5]) != eventstore.HashSize || len(f[6])%eventstore.HashSize != 0 {
		return fmt.Errorf("%w: a field of the wrong size", errScanFormat)
	}
	if w.buf == nil {
		w.buf = make([]byte, 0, max(w.last, 64<<10))
	}
	var prev eventstore.Hash
	var id eventstore.ID
	copy(prev[:], f[4])
	copy(id[:], f[3])
	at := int64(binary.BigEndian.Uint64(f[2])) + pgEpochMicros
	w.buf = eventstore.AppendCanonicalHeader(w.buf, &prev, binary.BigEndian.Uint64(f[0]), binary.BigEndian.Uint64(f[1]), at, &id)
	w.buf = append(w.buf, tail...)
	e := scanned{canonEnd: len(w.buf)}
	w.buf = append(w.buf, f[6]...)
	e.treeEnd = len(w.buf)
	copy(e.hash[:], f[5])
	w.evs = append(w.evs, e)
	return nil
}

// flush hands the batch to fn.
func (w *scanWriter) flush() error {
	if len(w.evs) == 0 {
		return nil
	}
	batch := make([]eventstore.StoredEvent, len(w.evs))
	start := 0
	for i, e := range w.evs {
		batch[i] = eventstore.StoredEvent{
			Canonical: w.buf[start:e.canonEnd:e.canonEnd],
			Hash:      e.hash,
			Tree:      w.buf[e.canonEnd:e.treeEnd:e.treeEnd],
		}
		start = e.treeEnd
	}
	w.last = len(w.buf)
	w.buf, w.evs = nil, w.evs[:0]
	return w.fn(batch)
}
