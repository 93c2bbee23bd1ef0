// Package witness has the ledger's checkpoints cosigned by transparency-log
// witnesses. After each new checkpoint it sends the witnesses an
// add-checkpoint request (C2SP tlog-witness: the size of the last
// checkpoint the witness saw, a consistency proof from it, and the new
// checkpoint), checks each cosignature the witness returns (C2SP
// tlog-cosignature, cosignature/v1) with that witness's key, and keeps the
// ones that verify in PostgreSQL (table witness_cosignatures, its own
// migrations). The API appends them to the checkpoint note it serves and
// lists which checkpoints were witnessed, by whom and when.
//
// A witness holds only the latest checkpoint of the log it cosigned and
// cosigns a new one only if it extends that one, so a log that shows one
// history to some and another to others (a split view) is caught as soon
// as both histories reach the same witness; an auditor who requires a
// witness's cosignature on a checkpoint knows that the witness checked it.
package witness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/transparency-dev/formats/note"
	sumdbnote "golang.org/x/mod/sumdb/note"

	"stele.dev/stele/eventstore"
)

// ErrBadCosignature means a witness's answer holds no valid cosignature of
// the checkpoint by that witness's key.
var ErrBadCosignature = errors.New("witness: no valid cosignature")

// Witness is one witness: its verifier key and where it takes
// add-checkpoint requests.
type Witness struct {
	// Name is the witness key's name.
	Name string
	// Key is its cosignature verifier key, "<name>+<key hash>+<base64 key>"
	// (an Ed25519 key of type 0x04, cosignature/v1, or 0x01).
	Key string
	// URL is the witness's submission prefix: requests go to
	// URL + "/add-checkpoint".
	URL string

	verifier sumdbnote.Verifier
}

// New returns the witness with verifier key vkey that takes requests at
// the submission prefix rawURL (http or https).
func New(vkey, rawURL string) (Witness, error) {
	vkey = strings.TrimSpace(vkey)
	v, err := note.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		return Witness{}, fmt.Errorf("witness: verifier key %q: %v", vkey, err)
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return Witness{}, fmt.Errorf("witness %s: URL %q: want http(s)://host/prefix", v.Name(), rawURL)
	}
	return Witness{Name: v.Name(), Key: vkey, URL: strings.TrimRight(u.String(), "/"), verifier: v}, nil
}

// Parse reads a witness as configured: "<verifier key>@<URL>", for
// example "witness.example/w1+3c2d1e0f+BK…@https://witness.example/w1".
func Parse(spec string) (Witness, error) {
	spec = strings.TrimSpace(spec)
	i := strings.Index(spec, "@http://")
	if j := strings.Index(spec, "@https://"); j >= 0 && (i < 0 || j < i) {
		i = j
	}
	if i <= 0 {
		return Witness{}, fmt.Errorf("witness %q: want <name>+<key hash>+<base64 key>@<http(s) URL>", spec)
	}
	return New(spec[:i], spec[i+1:])
}

// String returns the witness as Parse reads it.
func (w Witness) String() string { return w.Key + "@" + w.URL }

// Verifier returns the note verifier of the witness's cosignatures.
func (w Witness) Verifier() sumdbnote.Verifier { return w.verifier }

// Cosignature is a witness's verified cosignature of one checkpoint.
type Cosignature struct {
	// Witness is the witness key's name, Key its verifier key.
	Witness string
	Key     string
	// Size and Root are the checkpoint's.
	Size uint64
	Root eventstore.Hash
	// Signature is the base64 of the signature line: key hash, timestamp
	// and Ed25519 signature.
	Signature string
	// CosignedAt is the witness's timestamp in the cosignature (whole
	// seconds), ReceivedAt when this server received it.
	CosignedAt time.Time
	ReceivedAt time.Time
}

// Line returns the cosignature as a signed-note signature line, ending in
// a newline.
func (c Cosignature) Line() string { return "— " + c.Witness + " " + c.Signature + "\n" }

// AppendCosignatures returns the signed note signed with the cosignatures'
// lines added after its own signatures. Clients that do not know a
// witness's key ignore its line (C2SP signed-note).
func AppendCosignatures(signed []byte, cs []Cosignature) []byte {
	out := make([]byte, 0, len(signed)+len(cs)*160)
	out = append(out, signed...)
	for _, c := range cs {
		out = append(out, c.Line()...)
	}
	return out
}

// Open checks a witness's answer to add-checkpoint (signature lines) for
// the checkpoint cp: it appends the lines to cp's note and opens the note
// with the witness's key only, as C2SP tlog-witness says. It returns the
// witness's cosignature, or an error matching ErrBadCosignature if no line
// by the witness's key verifies, or one by that key does not.
func Open(cp eventstore.Checkpoint, answer []byte, w Witness, now time.Time) (Cosignature, error) {
	if w.verifier == nil {
		return Cosignature{}, errors.New("witness: not made by New or Parse")
	}
	signed := make([]byte, 0, len(cp.Note)+len(answer))
	signed = append(append(signed, cp.Note...), answer...)
	n, err := sumdbnote.Open(signed, sumdbnote.VerifierList(w.verifier))
	if err != nil {
		return Cosignature{}, fmt.Errorf("%w from %s: %v", ErrBadCosignature, w.Name, err)
	}
	if body, _, ok := bytes.Cut(cp.Note, []byte("\n\n")); !ok || n.Text != string(body)+"\n" {
		return Cosignature{}, fmt.Errorf("%w from %s: the answer changes the checkpoint", ErrBadCosignature, w.Name)
	}
	for _, s := range n.Sigs {
		if s.Name != w.verifier.Name() || s.Hash != w.verifier.KeyHash() {
			continue
		}
		at, err := note.CoSigV1Timestamp(s)
		if err != nil {
			return Cosignature{}, fmt.Errorf("%w from %s: %v", ErrBadCosignature, w.Name, err)
		}
		if _, err := base64.StdEncoding.DecodeString(s.Base64); err != nil {
			return Cosignature{}, fmt.Errorf("%w from %s: %v", ErrBadCosignature, w.Name, err)
		}
		return Cosignature{Witness: w.Name, Key: w.Key, Size: cp.Size, Root: cp.Root, Signature: s.Base64,
			CosignedAt: at.UTC(), ReceivedAt: eventstore.TruncateTime(now)}, nil
	}
	return Cosignature{}, fmt.Errorf("%w from %s", ErrBadCosignature, w.Name)
}
