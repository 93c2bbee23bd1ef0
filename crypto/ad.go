package crypto

import "encoding/binary"

// Version tags that open every associated data. A new layout gets a new
// tag; the tags also keep a keyset's associated data from ever equalling a
// value's.
const (
	keysetADTag = "stele/keyset/v1"
	valueADTag  = "stele/value/v1"
)

// KeysetAD returns the associated data that binds a wrapped keyset to its
// environment. Pass it to Keyset.Wrap and UnwrapKeyset.
//
// Layout (docs/crypto.md has a worked example): four fields, each a 4-byte
// big-endian length followed by that many bytes:
//
//	"stele/keyset/v1" | org | project | env
//
// The arguments should be stable identifiers (IDs, not display names):
// renaming would otherwise make every ciphertext unreadable.
func KeysetAD(org, project, env string) []byte {
	b := make([]byte, 0, 16+len(keysetADTag)+len(org)+len(project)+len(env))
	b = appendField(b, keysetADTag)
	b = appendField(b, org)
	b = appendField(b, project)
	return appendField(b, env)
}

// ValueAD returns the associated data that binds a secret value's
// ciphertext to its place: organization, project, environment, secret name
// and the secret's version. Pass it to Keyset.Encrypt and Keyset.Decrypt.
//
// Layout: five length-prefixed fields as in KeysetAD, then the version as
// 8 bytes big-endian:
//
//	"stele/value/v1" | org | project | env | name | version (uint64)
func ValueAD(org, project, env, name string, version uint64) []byte {
	b := make([]byte, 0, 28+len(valueADTag)+len(org)+len(project)+len(env)+len(name))
	b = appendField(b, valueADTag)
	b = appendField(b, org)
	b = appendField(b, project)
	b = appendField(b, env)
	b = appendField(b, name)
	return binary.BigEndian.AppendUint64(b, version)
}

// appendField appends s with its length as a 4-byte big-endian prefix.
// Identifiers are far shorter than 4 GiB; a longer one would be a
// programming error.
func appendField(b []byte, s string) []byte {
	if uint64(len(s)) > 1<<32-1 {
		panic("crypto: associated data field longer than 4 GiB")
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
