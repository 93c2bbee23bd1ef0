package crypto_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"stele.dev/stele/crypto"
)

// A keyset for an environment: create it, wrap it with the master key for
// storage, and encrypt a secret value bound to its place.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "stele-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	uri, err := crypto.CreateLocalMasterKey(filepath.Join(dir, "master.key"))
	if err != nil {
		log.Fatal(err)
	}
	kek, err := crypto.OpenKEK(ctx, uri)
	if err != nil {
		log.Fatal(err)
	}

	ks, err := crypto.NewKeyset()
	if err != nil {
		log.Fatal(err)
	}
	wrapped, err := ks.Wrap(kek, crypto.KeysetAD("acme", "billing", "prod"))
	if err != nil {
		log.Fatal(err)
	}
	store := crypto.NewMemoryMaterialStore()
	_ = store.Put(ctx, crypto.Material{EnvID: "prod", Version: 1, KEKURI: kek.URI(), Wrapped: wrapped})

	// Later, perhaps in another process: unwrap and decrypt.
	m, _ := store.Get(ctx, "prod", 1)
	ks2, err := crypto.UnwrapKeyset(m.Wrapped, kek, crypto.KeysetAD("acme", "billing", "prod"))
	if err != nil {
		log.Fatal(err)
	}
	c, _, err := ks.Encrypt([]byte("postgres://app:s3cret@db/billing"), crypto.ValueAD("acme", "billing", "prod", "DATABASE_URL", 1))
	if err != nil {
		log.Fatal(err)
	}
	p, err := ks2.Decrypt(c, crypto.ValueAD("acme", "billing", "prod", "DATABASE_URL", 1))
	fmt.Printf("%s %v\n", p, err)
	_, err = ks2.Decrypt(c, crypto.ValueAD("acme", "billing", "prod", "DATABASE_URL", 2))
	fmt.Println(errors.Is(err, crypto.ErrDecrypt))
	// Output:
	// postgres://app:s3cret@db/billing <nil>
	// true
}

// Rotation adds a key and makes it primary; old ciphertexts stay readable
// until their key is disabled or destroyed.
func ExampleKeyset_Rotate() {
	k1, _ := crypto.NewKeyset()
	ad := crypto.ValueAD("acme", "billing", "prod", "API_KEY", 1)
	old, oldKey, _ := k1.Encrypt([]byte("v1"), ad)

	k2, newKey, _ := k1.Rotate()
	fmt.Println(len(k2.Keys()), k2.Primary() == newKey)
	p, _ := k2.Decrypt(old, ad)
	fmt.Printf("%s\n", p)

	k3, _ := k2.Disable(oldKey)
	_, err := k3.Decrypt(old, ad)
	fmt.Println(errors.Is(err, crypto.ErrKeyDisabled))

	k4, _ := k3.Destroy(oldKey)
	_, err = k4.Decrypt(old, ad)
	fmt.Println(errors.Is(err, crypto.ErrKeyNotFound))

	_, err = k4.Destroy(newKey)
	fmt.Println(errors.Is(err, crypto.ErrPrimaryKey))
	// Output:
	// 2 true
	// v1
	// true
	// true
	// true
}

// A CLI makes a one-time key pair; the server seals the approved secrets to
// it.
func ExampleSealTo() {
	pub, priv, _ := crypto.GenerateBoxKeyPair() // CLI: keep priv in memory only
	box, _ := crypto.SealTo(pub, []byte(`{"API_KEY":"sk_live_…"}`))
	msg, err := crypto.OpenSealed(box, pub, priv)
	fmt.Printf("%s %v\n", msg, err)
	// Output: {"API_KEY":"sk_live_…"} <nil>
}
