package cli

import (
	"bytes"
	"io"
	"slices"
	"sync"
)

// MaskMinLen is the length below which a value is not masked: a value of
// one to three bytes ("1", "on", "yes") occurs in ordinary output all the
// time, and masking it would garble the output while hiding little.
const MaskMinLen = 4

// Mask is what a masked value is replaced with.
const Mask = "****"

// Masker is a writer that replaces every occurrence of the given values
// in what passes through it with Mask before passing it on. A value may
// arrive split across writes: the masker holds back the end of what it
// was given for as long as that end could be the start of a value, and
// never passes on any byte of a value. Close writes what is held back.
// It is safe for concurrent use.
type Masker struct {
	mu     sync.Mutex
	w      io.Writer
	values [][]byte // longest first, so the longest match wins
	buf    []byte   // held back: a suffix that may begin a value
	out    []byte
}

// NewMasker returns a Masker writing to w. Values shorter than MaskMinLen
// are not masked.
func NewMasker(w io.Writer, values []string) *Masker {
	m := &Masker{w: w}
	seen := map[string]bool{}
	for _, v := range values {
		if len(v) >= MaskMinLen && !seen[v] {
			seen[v] = true
			m.values = append(m.values, []byte(v))
		}
	}
	slices.SortFunc(m.values, func(a, b []byte) int { return len(b) - len(a) })
	return m
}

// Write masks p and writes what can be written. It reports len(p) unless
// the underlying writer fails.
func (m *Masker) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.values) == 0 {
		return m.w.Write(p)
	}
	m.buf = append(m.buf, p...)
	if err := m.flush(false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush masks the held-back bytes and writes them, but for a suffix that
// could still grow into a value (unless final).
func (m *Masker) flush(final bool) error {
	m.out = m.out[:0]
	data := m.buf
	i := 0
scan:
	for i < len(data) {
		// Hold back from here while more input could make a longer match.
		if !final && m.couldStart(data[i:]) {
			break
		}
		for _, v := range m.values {
			if bytes.HasPrefix(data[i:], v) {
				m.out = append(m.out, Mask...)
				i += len(v)
				continue scan
			}
		}
		m.out = append(m.out, data[i])
		i++
	}
	m.buf = m.buf[:copy(m.buf, data[i:])]
	if len(m.out) == 0 {
		return nil
	}
	_, err := m.w.Write(m.out)
	return err
}

// couldStart reports whether tail is a proper prefix of some value.
func (m *Masker) couldStart(tail []byte) bool {
	for _, v := range m.values {
		if len(tail) < len(v) && bytes.HasPrefix(v, tail) {
			return true
		}
	}
	return false
}

// Close masks and writes what is held back: at the end of the stream it
// cannot grow into a value any more.
func (m *Masker) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.values) == 0 {
		return nil
	}
	return m.flush(true)
}
