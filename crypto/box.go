package crypto

import (
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/nacl/box"
)

// BoxOverhead is how much longer a sealed box is than its message: an
// ephemeral X25519 public key (32 bytes) and a Poly1305 tag (16 bytes).
const BoxOverhead = box.AnonymousOverhead

// GenerateBoxKeyPair returns a new X25519 key pair for sealed boxes. A CLI
// makes one per request, sends pub to the server and keeps priv only in
// memory until the sealed answer is opened.
func GenerateBoxKeyPair() (pub, priv *[32]byte, err error) {
	pub, priv, err = box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("crypto: generate box key: %w", err)
	}
	return pub, priv, nil
}

// SealTo encrypts message to recipient's public key as an anonymous NaCl
// sealed box (libsodium's crypto_box_seal): only the holder of the
// matching private key can open it, and the box does not say who sealed
// it. The box is len(message)+BoxOverhead bytes.
func SealTo(recipient *[32]byte, message []byte) ([]byte, error) {
	b, err := box.SealAnonymous(nil, message, recipient, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("crypto: seal: %w", err)
	}
	return b, nil
}

// OpenSealed opens a box made by SealTo for the key pair pub, priv. It
// returns ErrDecrypt if the box was made for another key, was tampered
// with or is too short.
func OpenSealed(sealed []byte, pub, priv *[32]byte) ([]byte, error) {
	m, ok := box.OpenAnonymous(nil, sealed, pub, priv)
	if !ok {
		return nil, fmt.Errorf("%w: sealed box", ErrDecrypt)
	}
	return m, nil
}
