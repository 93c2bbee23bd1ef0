package crypto_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"stele.dev/stele/crypto"
)

func newKeyset(t testing.TB) *crypto.Keyset {
	t.Helper()
	k, err := crypto.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newKEK(t testing.TB) crypto.KEK {
	t.Helper()
	uri, err := crypto.CreateLocalMasterKey(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenKEK(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

func encrypt(t testing.TB, k *crypto.Keyset, plaintext, ad []byte) ([]byte, crypto.KeyID) {
	t.Helper()
	c, id, err := k.Encrypt(plaintext, ad)
	if err != nil {
		t.Fatal(err)
	}
	return c, id
}

func mustDecrypt(t testing.TB, k *crypto.Keyset, c, ad, want []byte) {
	t.Helper()
	got, err := k.Decrypt(c, ad)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Decrypt = %q, want %q", got, want)
	}
}

func TestNewKeyset(t *testing.T) {
	k := newKeyset(t)
	keys := k.Keys()
	if len(keys) != 1 || keys[0].ID != k.Primary() || !keys[0].Primary || keys[0].Status != crypto.KeyEnabled {
		t.Fatalf("Keys = %+v, primary %d", keys, k.Primary())
	}
	if other := newKeyset(t); other.Primary() == k.Primary() {
		t.Fatal("two new keysets share a key ID") // 1 in 2^32 by chance
	}
}

func TestRoundTrip(t *testing.T) {
	k := newKeyset(t)
	ad := crypto.ValueAD("org", "proj", "prod", "DATABASE_URL", 1)
	for _, size := range []int{0, 1, 64, 4096, crypto.MaxValueSize} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			p := bytes.Repeat([]byte{'x'}, size)
			c, id := encrypt(t, k, p, ad)
			if id != k.Primary() {
				t.Fatalf("Encrypt used key %d, primary is %d", id, k.Primary())
			}
			if got, err := crypto.KeyIDOf(c); err != nil || got != id {
				t.Fatalf("KeyIDOf = %d, %v; want %d", got, err, id)
			}
			if len(c) != size+5+12+16 {
				t.Fatalf("ciphertext is %d bytes for %d of plaintext", len(c), size)
			}
			mustDecrypt(t, k, c, ad, p)
			c2, _ := encrypt(t, k, p, ad)
			if bytes.Equal(c, c2) {
				t.Fatal("two encryptions of one value are equal (nonce reuse)")
			}
		})
	}
}

func TestEncryptTooLarge(t *testing.T) {
	k := newKeyset(t)
	_, _, err := k.Encrypt(make([]byte, crypto.MaxValueSize+1), nil)
	if !errors.Is(err, crypto.ErrTooLarge) {
		t.Fatalf("Encrypt of MaxValueSize+1 bytes = %v, want ErrTooLarge", err)
	}
}

// TestValueADBinding moves a ciphertext to every other place, one field at
// a time: each must fail with ErrDecrypt.
func TestValueADBinding(t *testing.T) {
	k := newKeyset(t)
	type place struct {
		org, project, env, name string
		version                 uint64
	}
	home := place{"acme", "billing", "prod", "DATABASE_URL", 3}
	ad := func(p place) []byte { return crypto.ValueAD(p.org, p.project, p.env, p.name, p.version) }
	c, _ := encrypt(t, k, []byte("postgres://secret"), ad(home))
	mustDecrypt(t, k, c, ad(home), []byte("postgres://secret"))
	for _, tc := range []struct {
		mutation string
		to       place
	}{
		{"org acme → globex", place{"globex", "billing", "prod", "DATABASE_URL", 3}},
		{"project billing → shipping", place{"acme", "shipping", "prod", "DATABASE_URL", 3}},
		{"env prod → staging", place{"acme", "billing", "staging", "DATABASE_URL", 3}},
		{"name DATABASE_URL → API_KEY", place{"acme", "billing", "prod", "API_KEY", 3}},
		{"version 3 → 4", place{"acme", "billing", "prod", "DATABASE_URL", 4}},
		{"version 3 → 2", place{"acme", "billing", "prod", "DATABASE_URL", 2}},
		{"field boundary moved: project billing → billingp, env prod → rod", place{"acme", "billingp", "rod", "DATABASE_URL", 3}},
		{"name case DATABASE_URL → database_url", place{"acme", "billing", "prod", "database_url", 3}},
	} {
		t.Run(tc.mutation, func(t *testing.T) {
			if _, err := k.Decrypt(c, ad(tc.to)); !errors.Is(err, crypto.ErrDecrypt) {
				t.Fatalf("Decrypt with %s = %v, want ErrDecrypt", tc.mutation, err)
			}
		})
	}
	t.Run("keyset AD in place of value AD", func(t *testing.T) {
		if _, err := k.Decrypt(c, crypto.KeysetAD("acme", "billing", "prod")); !errors.Is(err, crypto.ErrDecrypt) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestDecryptTampered(t *testing.T) {
	k := newKeyset(t)
	ad := []byte("ad")
	c, _ := encrypt(t, k, []byte("value"), ad)
	flip := func(i int) []byte { d := bytes.Clone(c); d[i] ^= 1; return d }
	for _, tc := range []struct {
		mutation string
		c        []byte
		want     []error
	}{
		{"bit flipped in the nonce", flip(5), []error{crypto.ErrDecrypt}},
		{"bit flipped in the body", flip(5 + 12), []error{crypto.ErrDecrypt}},
		{"bit flipped in the tag", flip(len(c) - 1), []error{crypto.ErrDecrypt}},
		{"tag truncated", c[:len(c)-1], []error{crypto.ErrDecrypt}},
		{"byte appended", append(bytes.Clone(c), 0), []error{crypto.ErrDecrypt}},
		{"only the prefix", c[:5], []error{crypto.ErrDecrypt}},
		{"prefix cut", c[:4], []error{crypto.ErrDecrypt, crypto.ErrMalformed}},
		{"empty", nil, []error{crypto.ErrDecrypt, crypto.ErrMalformed}},
		{"prefix byte 0x01 → 0x00 (legacy prefix)", func() []byte { d := bytes.Clone(c); d[0] = 0; return d }(), []error{crypto.ErrDecrypt, crypto.ErrMalformed}},
		{"key ID changed", flip(4), []error{crypto.ErrKeyNotFound}},
	} {
		t.Run(tc.mutation, func(t *testing.T) {
			_, err := k.Decrypt(tc.c, ad)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("Decrypt = %v, want %v", err, w)
				}
			}
		})
	}
}

func TestKeyIDOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want crypto.KeyID
		err  error
	}{
		{"prefix only", []byte{1, 0x12, 0x34, 0x56, 0x78}, 0x12345678, nil},
		{"prefix and body", []byte{1, 0, 0, 0, 7, 9, 9}, 7, nil},
		{"short", []byte{1, 0, 0, 0}, 0, crypto.ErrMalformed},
		{"legacy prefix", []byte{0, 0, 0, 0, 7}, 0, crypto.ErrMalformed},
		{"raw", []byte{0x42, 0, 0, 0, 7}, 0, crypto.ErrMalformed},
		{"nil", nil, 0, crypto.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := crypto.KeyIDOf(tc.in)
			if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("KeyIDOf(%x) = %d, %v; want %d, %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestRotateKeepsOldCiphertextsReadable(t *testing.T) {
	k1 := newKeyset(t)
	ad := []byte("ad")
	c1, id1 := encrypt(t, k1, []byte("one"), ad)
	k2, id2, err := k1.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if id2 == id1 || k2.Primary() != id2 {
		t.Fatalf("Rotate: new key %d, primary %d, old %d", id2, k2.Primary(), id1)
	}
	want := []crypto.KeyInfo{{ID: id1, Status: crypto.KeyEnabled, Primary: false}, {ID: id2, Status: crypto.KeyEnabled, Primary: true}}
	slices.SortFunc(want, func(a, b crypto.KeyInfo) int { return int(int64(a.ID) - int64(b.ID)) })
	if got := k2.Keys(); !slices.Equal(got, want) {
		t.Fatalf("Keys after Rotate = %+v, want %+v", got, want)
	}
	c2, id := encrypt(t, k2, []byte("two"), ad)
	if id != id2 {
		t.Fatalf("Encrypt after Rotate used key %d, want %d", id, id2)
	}
	mustDecrypt(t, k2, c1, ad, []byte("one"))
	mustDecrypt(t, k2, c2, ad, []byte("two"))
	// k1 is unchanged and does not know the new key.
	if k1.Primary() != id1 || len(k1.Keys()) != 1 {
		t.Fatalf("Rotate changed its receiver: %+v", k1.Keys())
	}
	if _, err := k1.Decrypt(c2, ad); !errors.Is(err, crypto.ErrKeyNotFound) {
		t.Fatalf("old keyset decrypting the new key's ciphertext = %v, want ErrKeyNotFound", err)
	}
}

func TestDisableEnable(t *testing.T) {
	k1 := newKeyset(t)
	ad := []byte("ad")
	c1, id1 := encrypt(t, k1, []byte("one"), ad)
	k2, id2, err := k1.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := encrypt(t, k2, []byte("two"), ad)
	k3, err := k2.Disable(id1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k3.Decrypt(c1, ad); !errors.Is(err, crypto.ErrKeyDisabled) {
		t.Fatalf("Decrypt under a disabled key = %v, want ErrKeyDisabled", err)
	}
	mustDecrypt(t, k3, c2, ad, []byte("two"))
	mustDecrypt(t, k2, c1, ad, []byte("one")) // k2 untouched
	if keys := k3.Keys(); !slices.Contains(keys, crypto.KeyInfo{ID: id1, Status: crypto.KeyDisabled}) {
		t.Fatalf("Keys = %+v", keys)
	}
	again, err := k3.Disable(id1)
	if err != nil {
		t.Fatalf("disabling a disabled key: %v", err)
	}
	k4, err := again.Enable(id1)
	if err != nil {
		t.Fatal(err)
	}
	mustDecrypt(t, k4, c1, ad, []byte("one"))
	if _, err := k4.Enable(id2); err != nil {
		t.Fatalf("enabling an enabled key: %v", err)
	}
}

func TestDestroy(t *testing.T) {
	k1 := newKeyset(t)
	ad := []byte("ad")
	c1, id1 := encrypt(t, k1, []byte("one"), ad)
	k2, id2, err := k1.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := encrypt(t, k2, []byte("two"), ad)
	k3, _, err := k2.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := encrypt(t, k3, []byte("three"), ad)
	k4, err := k3.Destroy(id1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k4.Decrypt(c1, ad); !errors.Is(err, crypto.ErrKeyNotFound) {
		t.Fatalf("Decrypt under a destroyed key = %v, want ErrKeyNotFound", err)
	}
	mustDecrypt(t, k4, c2, ad, []byte("two"))
	mustDecrypt(t, k4, c3, ad, []byte("three"))
	for _, ki := range k4.Keys() {
		if ki.ID == id1 {
			t.Fatalf("destroyed key still listed: %+v", k4.Keys())
		}
	}
	if _, err := k4.Enable(id1); !errors.Is(err, crypto.ErrKeyNotFound) {
		t.Fatalf("Enable of a destroyed key = %v, want ErrKeyNotFound", err)
	}
	// A disabled key can be destroyed too.
	k5, err := k4.Disable(id2)
	if err != nil {
		t.Fatal(err)
	}
	k6, err := k5.Destroy(id2)
	if err != nil {
		t.Fatal(err)
	}
	if len(k6.Keys()) != 1 {
		t.Fatalf("Keys = %+v", k6.Keys())
	}
	// Destroyed material is gone from the wrapped form too.
	kek := newKEK(t)
	w, err := k6.Wrap(kek, []byte("ks"))
	if err != nil {
		t.Fatal(err)
	}
	back, err := crypto.UnwrapKeyset(w, kek, []byte("ks"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := back.Decrypt(c1, ad); !errors.Is(err, crypto.ErrKeyNotFound) {
		t.Fatalf("after wrap/unwrap: %v", err)
	}
	mustDecrypt(t, back, c3, ad, []byte("three"))
}

func TestLifecycleRefusals(t *testing.T) {
	k1 := newKeyset(t)
	k2, primary, err := k1.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	absent := primary + 1
	for _, ki := range k2.Keys() {
		if ki.ID == absent {
			absent += 2
		}
	}
	for _, tc := range []struct {
		name string
		op   func() (*crypto.Keyset, error)
		want error
	}{
		{"disable the primary", func() (*crypto.Keyset, error) { return k2.Disable(primary) }, crypto.ErrPrimaryKey},
		{"destroy the primary", func() (*crypto.Keyset, error) { return k2.Destroy(primary) }, crypto.ErrPrimaryKey},
		{"disable an absent key", func() (*crypto.Keyset, error) { return k2.Disable(absent) }, crypto.ErrKeyNotFound},
		{"destroy an absent key", func() (*crypto.Keyset, error) { return k2.Destroy(absent) }, crypto.ErrKeyNotFound},
		{"enable an absent key", func() (*crypto.Keyset, error) { return k2.Enable(absent) }, crypto.ErrKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := tc.op()
			if !errors.Is(err, tc.want) || k != nil {
				t.Fatalf("= %v, %v; want nil, %v", k, err, tc.want)
			}
		})
	}
}

// TestConcurrentUse encrypts and decrypts from many goroutines with one
// keyset while others derive new keysets from it (run with -race).
func TestConcurrentUse(t *testing.T) {
	k := newKeyset(t)
	k, old, err := func() (*crypto.Keyset, crypto.KeyID, error) {
		old := k.Primary()
		n, _, err := k.Rotate()
		return n, old, err
	}()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				ad := crypto.ValueAD("o", "p", "e", fmt.Sprint("S", g), uint64(i))
				p := []byte(fmt.Sprintf("value %d/%d", g, i))
				c, _, err := k.Encrypt(p, ad)
				if err != nil {
					errs <- err
					return
				}
				got, err := k.Decrypt(c, ad)
				if err != nil || !bytes.Equal(got, p) {
					errs <- fmt.Errorf("round trip %d/%d: %q, %v", g, i, got, err)
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if _, _, err := k.Rotate(); err != nil {
					errs <- err
				}
				if _, err := k.Disable(old); err != nil {
					errs <- err
				}
				_ = k.Keys()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestWrapUnwrap(t *testing.T) {
	k := newKeyset(t)
	k, _, err := k.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	kek, otherKEK := newKEK(t), newKEK(t)
	ad := crypto.KeysetAD("acme", "billing", "prod")
	w, err := k.Wrap(kek, ad)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := k.Wrap(kek, ad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(w, w2) {
		t.Fatal("two wrappings are equal")
	}
	c, _ := encrypt(t, k, []byte("v"), []byte("ad"))
	flipped := bytes.Clone(w)
	flipped[20] ^= 1
	for _, tc := range []struct {
		name    string
		wrapped []byte
		kek     crypto.KEK
		ad      []byte
		ok      bool
	}{
		{"right KEK and AD", w, kek, ad, true},
		{"second wrapping", w2, kek, ad, true},
		{"wrong KEK", w, otherKEK, ad, false},
		{"AD env prod → staging", w, kek, crypto.KeysetAD("acme", "billing", "staging"), false},
		{"AD org acme → globex", w, kek, crypto.KeysetAD("globex", "billing", "prod"), false},
		{"no AD", w, kek, nil, false},
		{"bit flipped inside the encrypted keyset", flipped, kek, ad, false},
		{"truncated", w[:len(w)/2], kek, ad, false},
		{"not a wrapped keyset", []byte("garbage"), kek, ad, false},
		{"empty", nil, kek, ad, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			back, err := crypto.UnwrapKeyset(tc.wrapped, tc.kek, tc.ad)
			if !tc.ok {
				if !errors.Is(err, crypto.ErrUnwrap) {
					t.Fatalf("UnwrapKeyset = %v, want ErrUnwrap", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(back.Keys(), k.Keys()) || back.Primary() != k.Primary() {
				t.Fatalf("unwrapped keys %+v, want %+v", back.Keys(), k.Keys())
			}
			mustDecrypt(t, back, c, []byte("ad"), []byte("v"))
		})
	}
}

// failingKEK fails every call with err.
type failingKEK struct{ err error }

func (f failingKEK) URI() string                         { return "test://failing" }
func (f failingKEK) Encrypt(_, _ []byte) ([]byte, error) { return nil, f.err }
func (f failingKEK) Decrypt(_, _ []byte) ([]byte, error) { return nil, f.err }

var _ crypto.KEK = failingKEK{}

// TestKEKErrorsAreWrapped checks that a KMS error (here a deadline) can be
// matched through Wrap and UnwrapKeyset.
func TestKEKErrorsAreWrapped(t *testing.T) {
	k := newKeyset(t)
	kek := newKEK(t)
	w, err := k.Wrap(kek, nil)
	if err != nil {
		t.Fatal(err)
	}
	sentinel := errors.New("kms: throttled")
	if _, err := k.Wrap(failingKEK{sentinel}, nil); !errors.Is(err, sentinel) {
		t.Fatalf("Wrap = %v, want the KEK's error", err)
	}
	_, err = crypto.UnwrapKeyset(w, failingKEK{sentinel}, nil)
	if !errors.Is(err, sentinel) || !errors.Is(err, crypto.ErrUnwrap) {
		t.Fatalf("UnwrapKeyset = %v, want ErrUnwrap and the KEK's error", err)
	}
}
