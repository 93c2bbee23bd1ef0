package crypto_test

import (
	"bytes"
	"errors"
	"testing"

	"stele.dev/stele/crypto"
)

func TestSealedBox(t *testing.T) {
	pub, priv, err := crypto.GenerateBoxKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, otherPriv, err := crypto.GenerateBoxKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"DATABASE_URL":"postgres://app:s3cret@db/prod"}`)
	sealed, err := crypto.SealTo(pub, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(msg)+crypto.BoxOverhead {
		t.Fatalf("box is %d bytes for a %d-byte message", len(sealed), len(msg))
	}
	if bytes.Contains(sealed, msg[:16]) {
		t.Fatal("the box holds the message in clear")
	}
	got, err := crypto.OpenSealed(sealed, pub, priv)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("OpenSealed = %q, %v", got, err)
	}
	again, _ := crypto.SealTo(pub, msg)
	if bytes.Equal(again, sealed) {
		t.Fatal("two boxes of one message are equal")
	}
	flip := func(i int) []byte { b := bytes.Clone(sealed); b[i] ^= 1; return b }
	for _, tc := range []struct {
		mutation  string
		box       []byte
		pub, priv *[32]byte
	}{
		{"another recipient's key pair", sealed, otherPub, otherPriv},
		{"right private key, wrong public key", sealed, otherPub, priv},
		{"bit flipped in the ephemeral public key", flip(0), pub, priv},
		{"bit flipped in the tag", flip(32), pub, priv},
		{"bit flipped in the body", flip(len(sealed) - 1), pub, priv},
		{"truncated", sealed[:len(sealed)-1], pub, priv},
		{"shorter than the overhead", sealed[:crypto.BoxOverhead-1], pub, priv},
		{"empty", nil, pub, priv},
	} {
		t.Run(tc.mutation, func(t *testing.T) {
			if m, err := crypto.OpenSealed(tc.box, tc.pub, tc.priv); !errors.Is(err, crypto.ErrDecrypt) || m != nil {
				t.Fatalf("OpenSealed = %q, %v; want ErrDecrypt", m, err)
			}
		})
	}
}
