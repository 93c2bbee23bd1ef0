// Package checkpoint signs and checks the ledger's checkpoints: C2SP
// tlog-checkpoint bodies (origin, tree size, base64 root hash) in signed
// notes (golang.org/x/mod/sumdb/note) with an Ed25519 key. A checkpoint
// commits to every event up to its size; whoever holds one can later prove
// that the log was only ever appended to, even against someone who can
// rewrite the database, because they cannot forge the signature.
package checkpoint

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"stele.dev/stele/eventstore"
)

// ErrInvalid means a checkpoint does not parse or its signature does not
// verify under the expected key.
var ErrInvalid = errors.New("checkpoint: invalid")

// GenerateKey makes a new Ed25519 key pair whose name is the log's origin.
// skey is the private key in note format ("PRIVATE+KEY+<origin>+…") and
// vkey the public verifier key ("<origin>+<key hash>+<base64 key>") that
// auditors use.
func GenerateKey(origin string) (skey, vkey string, err error) {
	if err := ValidOrigin(origin); err != nil {
		return "", "", err
	}
	return note.GenerateKey(rand.Reader, origin)
}

// ValidOrigin checks that origin can name a log and its key: not empty, no
// spaces, no '+', printable ASCII.
func ValidOrigin(origin string) error {
	if origin == "" {
		return errors.New("checkpoint: empty log origin")
	}
	for i := 0; i < len(origin); i++ {
		if c := origin[i]; c <= ' ' || c >= 0x7f || c == '+' {
			return fmt.Errorf("checkpoint: log origin %q: use printable ASCII without spaces or '+'", origin)
		}
	}
	return nil
}

// Signer signs checkpoints for one log.
type Signer struct {
	s        note.Signer
	verifier *Verifier
}

// NewSigner parses a private key in note format. The log's origin is the
// key's name.
func NewSigner(skey string) (*Signer, error) {
	skey = strings.TrimSpace(skey)
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: signing key: %w", err)
	}
	vkey, err := publicKey(skey)
	if err != nil {
		return nil, err
	}
	v, err := NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	return &Signer{s: s, verifier: v}, nil
}

// publicKey derives the verifier key from a note private key.
func publicKey(skey string) (string, error) {
	// "PRIVATE+KEY+<name>+<hash>+<base64(alg||seed)>"
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 {
		return "", errors.New("checkpoint: signing key: malformed")
	}
	_, vkey, err := noteKeyPair(parts[2], parts[4])
	return vkey, err
}

// Origin returns the log origin the signer signs for.
func (s *Signer) Origin() string { return s.s.Name() }

// Verifier returns the verifier for the signer's public key.
func (s *Signer) Verifier() *Verifier { return s.verifier }

// Sign returns a signed checkpoint note for the tree of the given size and
// root hash.
func (s *Signer) Sign(size uint64, root eventstore.Hash) ([]byte, error) {
	body := log.Checkpoint{Origin: s.Origin(), Size: size, Hash: root[:]}.Marshal()
	return note.Sign(&note.Note{Text: string(body)}, s.s)
}

// Verifier checks checkpoints of one log.
type Verifier struct {
	v    note.Verifier
	vkey string
}

// NewVerifier parses a verifier key ("<origin>+<hash>+<base64 key>"), as
// printed by `stele ledger key`.
func NewVerifier(vkey string) (*Verifier, error) {
	vkey = strings.TrimSpace(vkey)
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: verifier key %q: %w", vkey, err)
	}
	return &Verifier{v: v, vkey: vkey}, nil
}

// Origin returns the log origin the key belongs to.
func (v *Verifier) Origin() string { return v.v.Name() }

// String returns the verifier key.
func (v *Verifier) String() string { return v.vkey }

// Note returns the underlying note verifier.
func (v *Verifier) Note() note.Verifier { return v.v }

// Open checks a signed checkpoint note and returns the size and root it
// commits to. It returns an error matching ErrInvalid if the note does not
// parse, is not signed by this key, or names another origin.
func (v *Verifier) Open(signed []byte) (size uint64, root eventstore.Hash, err error) {
	cp, _, _, err := log.ParseCheckpoint(signed, v.Origin(), v.v)
	if err != nil {
		return 0, root, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(cp.Hash) != eventstore.HashSize {
		return 0, root, fmt.Errorf("%w: root hash has %d bytes", ErrInvalid, len(cp.Hash))
	}
	copy(root[:], cp.Hash)
	return cp.Size, root, nil
}

// noteKeyPair rebuilds the Ed25519 key pair from the name and key field of
// a note private key.
func noteKeyPair(name, b64 string) (ed25519.PrivateKey, string, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, "", errors.New("checkpoint: signing key: not an Ed25519 note key")
	}
	priv := ed25519.NewKeyFromSeed(raw[1:])
	vkey, err := note.NewEd25519VerifierKey(name, priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint: signing key: %w", err)
	}
	return priv, vkey, nil
}
