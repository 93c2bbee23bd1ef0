package crypto_test

import (
	"encoding/hex"
	"testing"

	"stele.dev/stele/crypto"
	"stele.dev/stele/crypto/materialtest"
)

func TestMemoryMaterialStore(t *testing.T) {
	materialtest.Run(t, func(*testing.T) crypto.MaterialStore { return crypto.NewMemoryMaterialStore() })
}

func TestMaterialHash(t *testing.T) {
	// SHA-256("abc"), FIPS 180-2 appendix B.1.
	h := crypto.MaterialHash([]byte("abc"))
	if got := hex.EncodeToString(h[:]); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("MaterialHash(abc) = %s", got)
	}
}
