package crypto

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/aead/aesgcm"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// MaxValueSize is the largest plaintext secret value, in bytes: 64 KiB.
// Keyset.Encrypt refuses larger plaintexts with ErrTooLarge.
const MaxValueSize = 64 << 10

// KeyID identifies a key in a keyset. It is the Tink key ID, which every
// ciphertext carries in its 5-byte prefix (see KeyIDOf).
type KeyID uint32

// KeyStatus is the state of a key in a keyset.
type KeyStatus string

// Key states. A destroyed key has no state: it is no longer in the keyset.
const (
	// KeyEnabled keys decrypt; the primary key, always enabled, also
	// encrypts.
	KeyEnabled KeyStatus = "enabled"
	// KeyDisabled keys stay in the keyset but decrypt nothing
	// (ErrKeyDisabled) until enabled again.
	KeyDisabled KeyStatus = "disabled"
)

// KeyInfo describes one key of a keyset. It holds no key material.
type KeyInfo struct {
	ID      KeyID
	Status  KeyStatus
	Primary bool
}

// Keyset is one environment's unwrapped AES-256-GCM Tink keyset: the data
// keys of its secret values. It lives only in memory; it is stored only
// wrapped (Wrap, UnwrapKeyset).
//
// A Keyset is immutable: Rotate, Disable, Enable and Destroy return a new
// Keyset and leave the receiver as it was, so a Keyset may be shared by any
// number of goroutines calling Encrypt and Decrypt while another derives
// the next one.
type Keyset struct {
	handle  *keyset.Handle
	aead    tink.AEAD // over the enabled keys
	keys    []KeyInfo // sorted by ID
	primary KeyID
}

// keyTemplate is the template of every data key: AES-256-GCM, 12-byte
// random nonce, 16-byte tag, TINK output prefix (0x01 || key ID).
var keyTemplate = aead.AES256GCMKeyTemplate

// NewKeyset returns a new keyset with one AES-256-GCM key, its primary.
func NewKeyset() (*Keyset, error) {
	h, err := keyset.NewHandle(keyTemplate())
	if err != nil {
		return nil, fmt.Errorf("crypto: new keyset: %v", err)
	}
	return newKeyset(h)
}

// newKeyset checks that h is a keyset Stele can use (AES-256-GCM keys with
// the TINK prefix, each enabled or disabled, an enabled primary) and
// prepares its AEAD.
func newKeyset(h *keyset.Handle) (*Keyset, error) {
	k := &Keyset{handle: h}
	hasPrimary := false
	for i := range h.Len() {
		e, err := h.Entry(i)
		if err != nil {
			return nil, fmt.Errorf("crypto: keyset: %v", err)
		}
		if err := checkAES256GCM(e); err != nil {
			return nil, err
		}
		info := KeyInfo{ID: KeyID(e.KeyID()), Primary: e.IsPrimary()}
		switch e.KeyStatus() {
		case keyset.Enabled:
			info.Status = KeyEnabled
		case keyset.Disabled:
			info.Status = KeyDisabled
		default:
			return nil, fmt.Errorf("crypto: keyset: key %d has status %v", e.KeyID(), e.KeyStatus())
		}
		if info.Primary {
			if info.Status != KeyEnabled {
				return nil, fmt.Errorf("crypto: keyset: primary key %d is not enabled", e.KeyID())
			}
			k.primary, hasPrimary = info.ID, true
		}
		k.keys = append(k.keys, info)
	}
	if !hasPrimary {
		return nil, errors.New("crypto: keyset: no primary key")
	}
	slices.SortFunc(k.keys, func(a, b KeyInfo) int { return cmp.Compare(a.ID, b.ID) })
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("crypto: keyset: %v", err)
	}
	k.aead = a
	return k, nil
}

// checkAES256GCM refuses any key that is not AES-256-GCM with the TINK
// prefix. A keyset only ever holds such keys; this guards against a keyset
// written by something else.
func checkAES256GCM(e *keyset.Entry) error {
	key, ok := e.Key().(*aesgcm.Key)
	if !ok {
		return fmt.Errorf("crypto: keyset: key %d is %T, not AES-GCM", e.KeyID(), e.Key())
	}
	p, ok := key.Parameters().(*aesgcm.Parameters)
	if !ok || p.KeySizeInBytes() != 32 || p.Variant() != aesgcm.VariantTink {
		return fmt.Errorf("crypto: keyset: key %d is not AES-256-GCM with the TINK prefix", e.KeyID())
	}
	return nil
}

// Keys describes the keyset's keys, sorted by ID.
func (k *Keyset) Keys() []KeyInfo { return slices.Clone(k.keys) }

// Primary returns the ID of the key Encrypt uses.
func (k *Keyset) Primary() KeyID { return k.primary }

// status returns the status of key id, and false if it is not in the
// keyset.
func (k *Keyset) status(id KeyID) (KeyStatus, bool) {
	i, ok := slices.BinarySearchFunc(k.keys, id, func(ki KeyInfo, id KeyID) int { return cmp.Compare(ki.ID, id) })
	if !ok {
		return "", false
	}
	return k.keys[i].Status, true
}

// Rotate returns a new Keyset holding k's keys and a new AES-256-GCM key,
// which is its primary, and the new key's ID. New ciphertexts use the new
// key; the old keys keep decrypting.
func (k *Keyset) Rotate() (*Keyset, KeyID, error) {
	m := keyset.NewManagerFromHandle(k.handle)
	id, err := m.Add(keyTemplate())
	if err != nil {
		return nil, 0, fmt.Errorf("crypto: rotate: %v", err)
	}
	if err := m.SetPrimary(id); err != nil {
		return nil, 0, fmt.Errorf("crypto: rotate: %v", err)
	}
	n, err := k.derive(m)
	if err != nil {
		return nil, 0, err
	}
	return n, KeyID(id), nil
}

// Disable returns a new Keyset in which key id is disabled: ciphertexts
// made with it fail with ErrKeyDisabled until it is enabled again. It
// returns ErrPrimaryKey for the primary key and ErrKeyNotFound for a key
// not in the keyset. Disabling a disabled key is allowed.
func (k *Keyset) Disable(id KeyID) (*Keyset, error) {
	if err := k.checkChange(id); err != nil {
		return nil, fmt.Errorf("crypto: disable key %d: %w", id, err)
	}
	m := keyset.NewManagerFromHandle(k.handle)
	if err := m.Disable(uint32(id)); err != nil {
		return nil, fmt.Errorf("crypto: disable key %d: %v", id, err)
	}
	return k.derive(m)
}

// Enable returns a new Keyset in which key id is enabled. It returns
// ErrKeyNotFound for a key not in the keyset (a destroyed key cannot come
// back). Enabling an enabled key is allowed.
func (k *Keyset) Enable(id KeyID) (*Keyset, error) {
	if _, ok := k.status(id); !ok {
		return nil, fmt.Errorf("crypto: enable key %d: %w", id, ErrKeyNotFound)
	}
	m := keyset.NewManagerFromHandle(k.handle)
	if err := m.Enable(uint32(id)); err != nil {
		return nil, fmt.Errorf("crypto: enable key %d: %v", id, err)
	}
	return k.derive(m)
}

// Destroy returns a new Keyset from which key id and its material are
// removed entirely: ciphertexts made with it fail with ErrKeyNotFound, for
// good. It returns ErrPrimaryKey for the primary key and ErrKeyNotFound for
// a key not in the keyset.
//
// Destroy changes only the in-memory keyset. The key is erased once the
// new keyset is wrapped and stored and every stored material version that
// still holds it is deleted (MaterialStore.Delete); see docs/crypto.md.
func (k *Keyset) Destroy(id KeyID) (*Keyset, error) {
	if err := k.checkChange(id); err != nil {
		return nil, fmt.Errorf("crypto: destroy key %d: %w", id, err)
	}
	m := keyset.NewManagerFromHandle(k.handle)
	if err := m.Delete(uint32(id)); err != nil {
		return nil, fmt.Errorf("crypto: destroy key %d: %v", id, err)
	}
	return k.derive(m)
}

// checkChange returns ErrKeyNotFound or ErrPrimaryKey if key id may not be
// disabled or destroyed.
func (k *Keyset) checkChange(id KeyID) error {
	if _, ok := k.status(id); !ok {
		return ErrKeyNotFound
	}
	if id == k.primary {
		return ErrPrimaryKey
	}
	return nil
}

func (k *Keyset) derive(m *keyset.Manager) (*Keyset, error) {
	h, err := m.Handle()
	if err != nil {
		return nil, fmt.Errorf("crypto: keyset: %v", err)
	}
	return newKeyset(h)
}

// Encrypt encrypts plaintext with the primary key, binding it to
// associatedData (for a secret value, ValueAD), and returns the ciphertext
// and the ID of the key that made it. The ciphertext is the Tink format:
// 0x01, the key ID (4 bytes big-endian), a 12-byte random nonce, the
// AES-GCM ciphertext and its 16-byte tag. It returns ErrTooLarge if
// plaintext is longer than MaxValueSize.
func (k *Keyset) Encrypt(plaintext, associatedData []byte) ([]byte, KeyID, error) {
	if len(plaintext) > MaxValueSize {
		return nil, 0, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(plaintext), MaxValueSize)
	}
	c, err := k.aead.Encrypt(plaintext, associatedData)
	if err != nil {
		return nil, 0, fmt.Errorf("crypto: encrypt: %v", err)
	}
	return c, k.primary, nil
}

// Decrypt decrypts a ciphertext made by Encrypt with the same associated
// data. It returns an error matching ErrKeyNotFound if the ciphertext's key
// is not in the keyset (destroyed, or another keyset's), ErrKeyDisabled if
// that key is disabled, and ErrDecrypt if the ciphertext does not
// authenticate: other associated data, or tampered (a malformed ciphertext
// matches ErrMalformed too). Error messages hold no plaintext.
func (k *Keyset) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	id, err := KeyIDOf(ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	switch st, ok := k.status(id); {
	case !ok:
		return nil, fmt.Errorf("%w: key %d", ErrKeyNotFound, id)
	case st == KeyDisabled:
		return nil, fmt.Errorf("%w: key %d", ErrKeyDisabled, id)
	}
	p, err := k.aead.Decrypt(ciphertext, associatedData)
	if err != nil {
		return nil, fmt.Errorf("%w (key %d)", ErrDecrypt, id)
	}
	return p, nil
}

// tinkPrefixSize is the size of the TINK output prefix: 0x01 and the key
// ID.
const tinkPrefixSize = 5

// KeyIDOf returns the ID of the key that made a Keyset ciphertext, read
// from its 5-byte prefix (0x01 and the key ID, big-endian) without
// decrypting. It returns ErrMalformed if the prefix is missing.
func KeyIDOf(ciphertext []byte) (KeyID, error) {
	if len(ciphertext) < tinkPrefixSize || ciphertext[0] != 0x01 {
		return 0, ErrMalformed
	}
	return KeyID(binary.BigEndian.Uint32(ciphertext[1:tinkPrefixSize])), nil
}

// Wrap encrypts the keyset, material included, with kek, binding it to
// associatedData (KeysetAD), and returns the bytes to store: a Tink
// EncryptedKeyset in its binary (protobuf) form, whose one field is the
// KEK's ciphertext of the serialized keyset. Wrapping the same keyset twice
// gives different bytes (the KEK's nonces are random).
func (k *Keyset) Wrap(kek KEK, associatedData []byte) ([]byte, error) {
	rec := &recordingAEAD{AEAD: kek}
	var buf bytes.Buffer
	if err := k.handle.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), rec, associatedData); err != nil {
		if rec.err != nil {
			return nil, fmt.Errorf("crypto: wrap keyset with %s: %w", kek.URI(), rec.err)
		}
		return nil, fmt.Errorf("crypto: wrap keyset: %v", err)
	}
	return buf.Bytes(), nil
}

// UnwrapKeyset decrypts a keyset made by Wrap with the same KEK (or a KEK
// keyset holding that key) and associated data. It returns an error
// matching ErrUnwrap if the KEK cannot decrypt it (wrong KEK, other
// associated data, corrupted bytes, a KMS error, which is wrapped too) or
// if the bytes are not a wrapped keyset Stele can use.
func UnwrapKeyset(wrapped []byte, kek KEK, associatedData []byte) (*Keyset, error) {
	rec := &recordingAEAD{AEAD: kek}
	h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wrapped)), rec, associatedData)
	if err != nil {
		if rec.err != nil {
			return nil, fmt.Errorf("%w with %s: %w", ErrUnwrap, kek.URI(), rec.err)
		}
		return nil, fmt.Errorf("%w: %v", ErrUnwrap, err)
	}
	k, err := newKeyset(h)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnwrap, err)
	}
	return k, nil
}

// recordingAEAD keeps the error of the KEK it wraps: Tink's keyset
// functions report it only as text, and callers need to match it (a
// context deadline, a KMS error).
type recordingAEAD struct {
	tink.AEAD
	err error
}

func (r *recordingAEAD) Encrypt(p, ad []byte) ([]byte, error) {
	c, err := r.AEAD.Encrypt(p, ad)
	r.err = err
	return c, err
}

func (r *recordingAEAD) Decrypt(c, ad []byte) ([]byte, error) {
	p, err := r.AEAD.Decrypt(c, ad)
	r.err = err
	return p, err
}
