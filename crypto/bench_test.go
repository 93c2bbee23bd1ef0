package crypto_test

import (
	"fmt"
	"testing"

	"stele.dev/stele/crypto"
)

func BenchmarkEncrypt(b *testing.B) {
	k := newKeyset(b)
	ad := crypto.ValueAD("acme", "billing", "prod", "DATABASE_URL", 3)
	for _, size := range []int{64, 4 << 10} {
		p := make([]byte, size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, _, err := k.Encrypt(p, ad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypt(b *testing.B) {
	k := newKeyset(b)
	ad := crypto.ValueAD("acme", "billing", "prod", "DATABASE_URL", 3)
	for _, size := range []int{64, 4 << 10} {
		c, _ := encrypt(b, k, make([]byte, size), ad)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := k.Decrypt(c, ad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnwrapKeyset measures a cold read of a keyset: unwrapping with
// a local KEK and preparing the AEAD, as on the first use of an
// environment after a start.
func BenchmarkUnwrapKeyset(b *testing.B) {
	kek := newKEK(b)
	k := newKeyset(b)
	k, _, err := k.Rotate()
	if err != nil {
		b.Fatal(err)
	}
	ad := crypto.KeysetAD("acme", "billing", "prod")
	w, err := k.Wrap(kek, ad)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := crypto.UnwrapKeyset(w, kek, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRotate(b *testing.B) {
	k := newKeyset(b)
	for b.Loop() {
		if _, _, err := k.Rotate(); err != nil {
			b.Fatal(err)
		}
	}
}
