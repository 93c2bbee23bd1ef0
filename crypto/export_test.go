package crypto

import (
	"bytes"

	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

// Test-only access to cleartext keysets, for the test vectors: the
// package's API never exposes key material.

// KeysetFromJSON reads a cleartext Tink JSON keyset.
func KeysetFromJSON(data []byte) (*Keyset, error) {
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(data)))
	if err != nil {
		return nil, err
	}
	return newKeyset(h)
}

// CleartextJSON writes k, key material included, as Tink JSON.
func (k *Keyset) CleartextJSON() ([]byte, error) {
	var buf bytes.Buffer
	err := insecurecleartextkeyset.Write(k.handle, keyset.NewJSONWriter(&buf))
	return buf.Bytes(), err
}
