// Package witnesstest is a transparency-log witness for tests: an HTTP
// handler that implements add-checkpoint as C2SP tlog-witness specifies
// it, independently of the client in package witness. It keeps the latest
// checkpoint it cosigned for each log it trusts, checks signatures with
// golang.org/x/mod/sumdb/note and checkpoints with
// transparency-dev/formats/log, verifies consistency proofs with
// transparency-dev/merkle, and cosigns with transparency-dev/formats/note's
// cosignature/v1 signer. Tests can take it down, make it sign with a key
// other than the one it publishes, or corrupt its signatures.
package witnesstest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Mode changes how the witness behaves.
type Mode int

const (
	// Normal follows the spec.
	Normal Mode = iota
	// Down drops every connection without an answer, as a witness that
	// is unreachable.
	Down
	// Unavailable answers 503.
	Unavailable
	// WrongKey cosigns with another key of the same name than the one it
	// publishes.
	WrongKey
	// Corrupt cosigns with its key but flips a bit of each signature.
	Corrupt
)

func (m Mode) String() string {
	switch m {
	case Normal:
		return "normal"
	case Down:
		return "down"
	case Unavailable:
		return "unavailable"
	case WrongKey:
		return "wrong-key"
	case Corrupt:
		return "corrupt"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

type logState struct {
	verifier note.Verifier
	size     uint64
	root     []byte
}

// Witness is one witness. It is safe for concurrent use.
type Witness struct {
	name   string
	vkey   string
	signer note.Signer
	wrong  note.Signer

	mu       sync.Mutex
	mode     Mode
	logs     map[string]*logState
	requests int
	statuses []int
}

// New makes a witness with a fresh Ed25519 key named name.
func New(name string) (*Witness, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, err
	}
	signer, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, err
	}
	cosigKey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		return nil, err
	}
	wrongKey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, err
	}
	wrong, err := fnote.NewSignerForCosignatureV1(wrongKey)
	if err != nil {
		return nil, err
	}
	return &Witness{name: name, vkey: cosigKey, signer: signer, wrong: wrong, logs: map[string]*logState{}}, nil
}

// Name returns the witness's key name.
func (w *Witness) Name() string { return w.name }

// VerifierKey returns the witness's cosignature/v1 verifier key.
func (w *Witness) VerifierKey() string { return w.vkey }

// Trust adds a log whose checkpoints are signed by the note verifier key
// vkey (its name is the log's origin).
func (w *Witness) Trust(vkey string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logs[v.Name()] = &logState{verifier: v}
	return nil
}

// SetMode changes how the witness answers from now on.
func (w *Witness) SetMode(m Mode) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mode = m
}

// Size returns the size of the latest checkpoint of the log with this
// origin that the witness cosigned.
func (w *Witness) Size(origin string) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l, ok := w.logs[origin]; ok {
		return l.size
	}
	return 0
}

// Statuses returns the status of every answer given so far (0 for a
// dropped connection).
func (w *Witness) Statuses() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int(nil), w.statuses...)
}

func (w *Witness) record(status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.requests++
	w.statuses = append(w.statuses, status)
}

// ServeHTTP serves <prefix>/add-checkpoint at any path ending in
// /add-checkpoint.
func (w *Witness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	mode := w.mode
	w.mu.Unlock()
	switch mode {
	case Down:
		w.record(0)
		if hj, ok := rw.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case Unavailable:
		w.answer(rw, http.StatusServiceUnavailable, "text/plain", "down for maintenance\n")
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/add-checkpoint") {
		w.answer(rw, http.StatusNotFound, "text/plain", "no such endpoint\n")
		return
	}
	if r.Method != http.MethodPost {
		w.answer(rw, http.StatusMethodNotAllowed, "text/plain", "POST only\n")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		w.answer(rw, http.StatusBadRequest, "text/plain", "reading the body\n")
		return
	}
	status, ctype, answer := w.addCheckpoint(body, mode)
	w.answer(rw, status, ctype, answer)
}

func (w *Witness) answer(rw http.ResponseWriter, status int, ctype, body string) {
	w.record(status)
	rw.Header().Set("Content-Type", ctype)
	rw.WriteHeader(status)
	io.WriteString(rw, body)
}

// addCheckpoint implements the add-checkpoint call on a request body.
func (w *Witness) addCheckpoint(body []byte, mode Mode) (int, string, string) {
	bad := func(format string, args ...any) (int, string, string) {
		return http.StatusBadRequest, "text/plain", fmt.Sprintf(format, args...) + "\n"
	}
	br := bufio.NewReader(bytes.NewReader(body))
	line, err := br.ReadString('\n')
	if err != nil {
		return bad("no old size line")
	}
	oldStr, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "old ")
	old, err := strconv.ParseUint(oldStr, 10, 64)
	if !ok || err != nil || strconv.FormatUint(old, 10) != oldStr {
		return bad("malformed old size line %q", line)
	}
	var hashes [][]byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return bad("no empty line before the checkpoint")
		}
		if line == "\n" {
			break
		}
		h, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(line, "\n"))
		if err != nil || len(h) != 32 {
			return bad("malformed proof line %q", line)
		}
		if hashes = append(hashes, h); len(hashes) > 63 {
			return bad("more than 63 proof lines")
		}
	}
	raw, _ := io.ReadAll(br)
	origin, _, _ := strings.Cut(string(raw), "\n")

	// The state check and its update are atomic (the spec's race).
	w.mu.Lock()
	defer w.mu.Unlock()
	l, ok := w.logs[origin]
	if !ok {
		return http.StatusNotFound, "text/plain", "unknown log\n"
	}
	n, err := note.Open(raw, note.VerifierList(l.verifier))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return http.StatusForbidden, "text/plain", "no signature by a trusted key\n"
		}
		return bad("malformed note: %v", err)
	}
	cp, _, _, err := log.ParseCheckpoint(raw, origin, l.verifier)
	if err != nil {
		return bad("malformed checkpoint: %v", err)
	}
	if old > cp.Size {
		return bad("old size %d is above the checkpoint's size %d", old, cp.Size)
	}
	if old != l.size {
		return http.StatusConflict, "text/x.tlog.size", strconv.FormatUint(l.size, 10) + "\n"
	}
	switch {
	case old == 0:
		if len(hashes) != 0 {
			return bad("a proof from size 0")
		}
	case old == cp.Size:
		if !bytes.Equal(l.root, cp.Hash) {
			return http.StatusConflict, "text/plain", "another root at this size\n"
		}
	default:
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old, cp.Size, hashes, l.root, cp.Hash); err != nil {
			return http.StatusUnprocessableEntity, "text/plain", "the consistency proof does not verify\n"
		}
	}
	l.size, l.root = cp.Size, cp.Hash

	signer := w.signer
	if mode == WrongKey {
		signer = w.wrong
	}
	signed, err := note.Sign(&note.Note{Text: n.Text}, signer)
	if err != nil {
		return http.StatusInternalServerError, "text/plain", "signing failed\n"
	}
	_, sigs, _ := strings.Cut(string(signed), "\n\n")
	if mode == Corrupt {
		sigs = corrupt(sigs)
	}
	return http.StatusOK, "text/plain; charset=utf-8", sigs
}

// corrupt flips the last bit of each signature line's signature.
func corrupt(lines string) string {
	var out strings.Builder
	for _, line := range strings.SplitAfter(lines, "\n") {
		if line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		sig, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(line[i+1:], "\n"))
		if i < 0 || err != nil || len(sig) == 0 {
			out.WriteString(line)
			continue
		}
		sig[len(sig)-1] ^= 1
		out.WriteString(line[:i+1] + base64.StdEncoding.EncodeToString(sig) + "\n")
	}
	return out.String()
}
