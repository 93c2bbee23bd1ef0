// Package crypto holds Stele's keys and the operations on them.
//
// Every project environment has its own [Keyset]: Tink AES-256-GCM keys
// (the data keys) that encrypt secret values. A keyset is kept only wrapped
// (encrypted) by a key-encryption key, a [KEK], which is a local master key
// or a key in a cloud KMS ([OpenKEK]). Wrapped keysets are stored, outside
// the immutable event log, by a [MaterialStore], so that a destroyed key can
// really be erased; the log records each wrapped version's [MaterialHash].
//
// Ciphertexts are bound to where they belong through AEAD associated data:
// [KeysetAD] for a wrapped keyset and [ValueAD] for a secret value. A
// ciphertext decrypted with any other associated data fails with
// [ErrDecrypt], so it cannot be moved to another organization, project,
// environment, secret or version.
//
// Values delivered to a CLI are sealed with [SealTo] to a one-time X25519
// key the CLI made with [GenerateBoxKeyPair].
//
// The byte layouts, the KEK URIs, the key lifecycle and the test vectors in
// testdata/vectors.json are documented in docs/crypto.md.
//
// Nothing in this package implements a cryptographic primitive: AEAD and
// keysets come from Tink (github.com/tink-crypto/tink-go/v2), sealed boxes
// from golang.org/x/crypto/nacl/box.
package crypto
