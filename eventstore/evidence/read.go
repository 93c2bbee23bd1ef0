package evidence

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"

	"stele.dev/stele/eventstore"
)

// Header is what an evidence file says before its events.
type Header struct {
	Org string
	// From and To are the range the file was asked for, [From, To); zero
	// when open.
	From, To time.Time
	// Note is the signed checkpoint note; NoteLine the line it starts on.
	Note     []byte
	NoteLine int
}

// Entry is one event line.
type Entry struct {
	// Line is the 1-based line of the file.
	Line     int
	Position uint64
	// Hash is the event hash the line gives; Record the canonical
	// encoding (its SHA-256 must be Hash).
	Hash   eventstore.Hash
	Record []byte
	// Proof is the inclusion proof of the event's leaf in the tree of the
	// checkpoint's size, bottom up.
	Proof []eventstore.Hash
}

// Reader reads an evidence file: its header, then its events one by one.
// It checks the file's form and, at the end line, the event count and
// the digest; Verify checks what the lines say.
type Reader struct {
	br     *bufio.Reader
	digest hash.Hash
	line   int
	header Header
	events uint64
	done   bool
	buf    []byte
}

// maxProof is the longest inclusion proof of a tree of up to 2^64 entries.
const maxProof = 64

// NewReader reads the header and the checkpoint note of an evidence file.
// Errors are *Error (CheckFormat) for a malformed file, or the reader's.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{br: bufio.NewReaderSize(r, 64<<10), digest: sha256.New()}
	first, err := rd.readLine()
	if err != nil {
		return nil, err
	}
	if string(first) != Magic {
		return nil, failf(1, 0, CheckFormat, "not an evidence file: the first line is not %q", Magic)
	}
	field := func(name string) (string, error) {
		l, err := rd.readLine()
		if err != nil {
			return "", err
		}
		v, ok := strings.CutPrefix(string(l), name+" ")
		if !ok || v == "" || strings.Contains(v, " ") {
			return "", failf(rd.line, 0, CheckFormat, "want the %q line of the header", name)
		}
		return v, nil
	}
	h := &rd.header
	if h.Org, err = field("org"); err != nil {
		return nil, err
	}
	if err := ValidOrg(h.Org); err != nil {
		return nil, failf(rd.line, 0, CheckFormat, "%v", err)
	}
	for _, b := range []struct {
		name string
		t    *time.Time
	}{{"from", &h.From}, {"to", &h.To}} {
		v, err := field(b.name)
		if err != nil {
			return nil, err
		}
		if *b.t, err = parseTime(v); err != nil {
			return nil, failf(rd.line, 0, CheckFormat, "%s: want an RFC 3339 time or -: %v", b.name, err)
		}
	}
	if !h.From.IsZero() && !h.To.IsZero() && !h.From.Before(h.To) {
		return nil, failf(rd.line, 0, CheckFormat, "the range is empty: from is not before to")
	}
	v, err := field("checkpoint")
	if err != nil {
		return nil, err
	}
	n, err := parseDecimal(v)
	if err != nil || n == 0 || n > MaxNote {
		return nil, failf(rd.line, 0, CheckFormat, "checkpoint: want the note's length in bytes, 1 to %d", MaxNote)
	}
	h.Note = make([]byte, n)
	if _, err := io.ReadFull(rd.br, h.Note); err != nil {
		return nil, failf(rd.line+1, 0, CheckFormat, "the file ends inside the checkpoint note (truncated)")
	}
	if h.Note[n-1] != '\n' {
		return nil, failf(rd.line+1, 0, CheckFormat, "the checkpoint note does not end with a line end where its length says")
	}
	rd.digest.Write(h.Note)
	h.NoteLine = rd.line + 1
	rd.line += bytes.Count(h.Note, []byte{'\n'})
	return rd, nil
}

// Header returns the file's header.
func (rd *Reader) Header() Header { return rd.header }

// Line returns the number of lines read so far.
func (rd *Reader) Line() int { return rd.line }

// Next returns the next event line. After the last one it reads the end
// line, checks the event count and the digest, requires the end of the
// file, and returns io.EOF.
func (rd *Reader) Next() (Entry, error) {
	if rd.done {
		return Entry{}, io.EOF
	}
	l, err := rd.readLine()
	if err != nil {
		return Entry{}, err
	}
	fields := strings.Split(string(l), " ")
	switch fields[0] {
	case "end":
		return Entry{}, rd.end(fields)
	case "event":
	default:
		return Entry{}, failf(rd.line, 0, CheckFormat, "want an event line or the end line")
	}
	e := Entry{Line: rd.line}
	if len(fields) < 4 {
		return e, failf(rd.line, 0, CheckFormat, "an event line has a position, a hash and a record")
	}
	if e.Position, err = parseDecimal(fields[1]); err != nil || e.Position == 0 {
		return e, failf(rd.line, 0, CheckFormat, "position %q: want a whole number, 1 or more", fields[1])
	}
	if e.Hash, err = parseHex(fields[2]); err != nil {
		return e, failf(rd.line, e.Position, CheckFormat, "event hash: %v", err)
	}
	if e.Record, err = base64.StdEncoding.Strict().DecodeString(fields[3]); err != nil {
		return e, failf(rd.line, e.Position, CheckFormat, "record: not base64: %v", err)
	}
	if len(fields)-4 > maxProof {
		return e, failf(rd.line, e.Position, CheckFormat, "a proof of %d hashes is longer than any tree's", len(fields)-4)
	}
	e.Proof = make([]eventstore.Hash, len(fields)-4)
	for i, f := range fields[4:] {
		if e.Proof[i], err = parseHex(f); err != nil {
			return e, failf(rd.line, e.Position, CheckFormat, "proof hash %d: %v", i+1, err)
		}
	}
	rd.events++
	return e, nil
}

// end checks the end line and that nothing follows it.
func (rd *Reader) end(fields []string) error {
	if len(fields) != 3 {
		return failf(rd.line, 0, CheckFormat, "the end line has an event count and a digest")
	}
	n, err := parseDecimal(fields[1])
	if err != nil {
		return failf(rd.line, 0, CheckFormat, "end: event count %q: want a whole number", fields[1])
	}
	want, err := parseHex(fields[2])
	if err != nil {
		return failf(rd.line, 0, CheckFormat, "end: digest: %v", err)
	}
	if n != rd.events {
		return failf(rd.line, 0, CheckEnd, "the end line counts %d events, the file holds %d (event lines were removed or added)", n, rd.events)
	}
	if got := rd.digest.Sum(nil); !bytes.Equal(got, want[:]) {
		return failf(rd.line, 0, CheckEnd, "the file's digest is %x, the end line says %x (the file was changed)", got[:8], want[:8])
	}
	if _, err := rd.br.ReadByte(); err != io.EOF {
		return failf(rd.line+1, 0, CheckFormat, "bytes after the end line")
	}
	rd.done = true
	return io.EOF
}

// readLine returns the next line without its line end. A file that ends
// before a line end is truncated.
func (rd *Reader) readLine() ([]byte, error) {
	rd.buf = rd.buf[:0]
	for {
		chunk, err := rd.br.ReadSlice('\n')
		rd.buf = append(rd.buf, chunk...)
		if len(rd.buf) > MaxLine {
			return nil, failf(rd.line+1, 0, CheckFormat, "a line longer than %d bytes", MaxLine)
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if rd.line == 0 && len(rd.buf) == 0 {
				return nil, failf(0, 0, CheckFormat, "the file is empty")
			}
			return nil, failf(rd.line+1, 0, CheckEnd, "the file ends without its end line (truncated)")
		}
		return nil, err
	}
	rd.line++
	if !bytes.HasPrefix(rd.buf, []byte("end ")) { // the digest covers every line before the end line
		rd.digest.Write(rd.buf)
	}
	l := rd.buf[:len(rd.buf)-1]
	if bytes.IndexByte(l, '\r') >= 0 {
		return nil, failf(rd.line, 0, CheckFormat, "a carriage return: lines end with a bare line feed")
	}
	return l, nil
}

// parseDecimal parses a decimal number written without leading zeros.
func parseDecimal(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if strconv.FormatUint(n, 10) != s {
		return 0, errors.New("not in canonical decimal form")
	}
	return n, nil
}

// parseHex parses 64 lowercase hex digits.
func parseHex(s string) (eventstore.Hash, error) {
	var h eventstore.Hash
	if len(s) != 2*eventstore.HashSize || strings.ToLower(s) != s {
		return h, errors.New("want 64 lowercase hex digits")
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, errors.New("want 64 lowercase hex digits")
	}
	return h, nil
}
