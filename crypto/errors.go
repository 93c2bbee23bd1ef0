package crypto

import "errors"

// Errors that callers branch on. Functions wrap them with context; match
// with errors.Is.
var (
	// ErrDecrypt means a ciphertext did not authenticate: it was tampered
	// with, truncated, or decrypted with other associated data than it was
	// made with (for a value: another organization, project, environment,
	// secret name or version).
	ErrDecrypt = errors.New("crypto: decryption failed")

	// ErrMalformed means a ciphertext is too short or lacks the 5-byte Tink
	// prefix (0x01 and a key ID), so it was not made by a Keyset. Decrypt
	// returns it together with ErrDecrypt.
	ErrMalformed = errors.New("crypto: malformed ciphertext")

	// ErrKeyNotFound means the key a ciphertext names is not in the keyset:
	// it was destroyed, or the ciphertext belongs to another keyset. It is
	// also returned when a key ID passed to Disable, Enable or Destroy is
	// not in the keyset.
	ErrKeyNotFound = errors.New("crypto: key not found in keyset")

	// ErrKeyDisabled means the key a ciphertext names is in the keyset but
	// disabled. Enabling it makes the ciphertext readable again.
	ErrKeyDisabled = errors.New("crypto: key is disabled")

	// ErrPrimaryKey means the operation would disable or destroy the
	// keyset's primary key. Rotate first.
	ErrPrimaryKey = errors.New("crypto: operation not allowed on the primary key")

	// ErrTooLarge means a plaintext value is larger than MaxValueSize.
	ErrTooLarge = errors.New("crypto: value too large")

	// ErrUnwrap means a wrapped keyset could not be unwrapped: wrong KEK,
	// other associated data than it was wrapped with, corrupted bytes, or a
	// KMS that refused or could not be reached (the KMS's error is wrapped
	// too, so errors.Is also matches, for example,
	// context.DeadlineExceeded).
	ErrUnwrap = errors.New("crypto: cannot unwrap keyset")

	// ErrKEKURI means a KEK URI is malformed or its scheme is not one of
	// local://, env://, aws-kms:// and gcp-kms://.
	ErrKEKURI = errors.New("crypto: invalid KEK URI")

	// ErrInsecureKeyFile means a local master key file can be read or
	// written by group or others (like ssh, Stele refuses such a key).
	ErrInsecureKeyFile = errors.New("crypto: key file permissions too open")

	// ErrKEKUnavailable means a KEK could not be loaded or used: the file
	// or variable is missing or does not hold a keyset, or a cloud KMS
	// refused the probe (no credentials, no permission, unknown key,
	// unreachable).
	ErrKEKUnavailable = errors.New("crypto: KEK unavailable")

	// ErrExists means a MaterialStore already holds material for that
	// environment and version.
	ErrExists = errors.New("crypto: key material already stored")

	// ErrNotFound means a MaterialStore holds no material for that
	// environment and version.
	ErrNotFound = errors.New("crypto: key material not found")
)
