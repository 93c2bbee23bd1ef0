package crypto_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"slices"
	"testing"

	"stele.dev/stele/crypto"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors.json (new random keys and nonces)")

const vectorsFile = "testdata/vectors.json"

// Vectors is the layout of testdata/vectors.json, described in
// docs/crypto.md. Tink's nonces are random, so the file cannot be derived
// again byte for byte: it was generated once (go test ./crypto -run
// TestVectors -update) and every run checks that its ciphertexts still
// decrypt, or fail, as recorded.
type Vectors struct {
	Comment     string         `json:"comment"`
	MasterKeys  []MasterKey    `json:"master_keys"`
	Keysets     []KeysetVector `json:"keysets"`
	Unwrap      []UnwrapVector `json:"unwrap"`
	Values      []ValueVector  `json:"values"`
	SealedBoxes []BoxVector    `json:"sealed_boxes"`
}

// MasterKey is a KEK: a Tink cleartext JSON keyset, opened here as
// env://STELE_VECTOR_<NAME>.
type MasterKey struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	KeysetJSON  json.RawMessage `json:"keyset_json"`
}

// ADFields are the inputs of KeysetAD (Name empty, no version) or ValueAD.
type ADFields struct {
	Org     string  `json:"org"`
	Project string  `json:"project"`
	Env     string  `json:"env"`
	Name    string  `json:"name,omitempty"`
	Version *uint64 `json:"version,omitempty"`
}

func (a ADFields) bytes() []byte {
	if a.Version == nil {
		return crypto.KeysetAD(a.Org, a.Project, a.Env)
	}
	return crypto.ValueAD(a.Org, a.Project, a.Env, a.Name, *a.Version)
}

// KeysetVector is one environment keyset version: its cleartext (for
// independent implementations) and its wrapping under a master key with
// KeysetAD.
type KeysetVector struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	KEK         string          `json:"kek"`
	AD          ADFields        `json:"ad"`
	ADHex       string          `json:"ad_hex"`
	WrappedHex  string          `json:"wrapped_hex"`
	Keys        []KeyVector     `json:"keys"`
	KeysetJSON  json.RawMessage `json:"cleartext_keyset_json"`
}

type KeyVector struct {
	ID      uint32 `json:"id"`
	Status  string `json:"status"`
	Primary bool   `json:"primary,omitempty"`
}

// UnwrapVector unwraps a keyset's wrapped bytes (possibly mutated) with a
// master key and associated data.
type UnwrapVector struct {
	Description string   `json:"description"`
	Mutation    string   `json:"mutation,omitempty"`
	Keyset      string   `json:"keyset"`
	KEK         string   `json:"kek"`
	AD          ADFields `json:"ad"`
	ADHex       string   `json:"ad_hex"`
	WrappedHex  string   `json:"wrapped_hex"`
	Expect      string   `json:"expect"` // "ok" or an error name
}

// ValueVector decrypts a value ciphertext with a keyset and associated
// data.
type ValueVector struct {
	Description   string   `json:"description"`
	Mutation      string   `json:"mutation,omitempty"`
	Keyset        string   `json:"keyset"`
	AD            ADFields `json:"ad"`
	ADHex         string   `json:"ad_hex"`
	CiphertextHex string   `json:"ciphertext_hex"`
	KeyID         uint32   `json:"key_id"`
	Expect        string   `json:"expect"`
	Plaintext     string   `json:"plaintext,omitempty"`
}

// BoxVector opens a sealed box with a key pair.
type BoxVector struct {
	Description  string `json:"description"`
	Mutation     string `json:"mutation,omitempty"`
	PublicKeyHex string `json:"public_key_hex"`
	PrivateHex   string `json:"private_key_hex"`
	BoxHex       string `json:"box_hex"`
	Expect       string `json:"expect"`
	Plaintext    string `json:"plaintext,omitempty"`
}

var errorNames = map[string]error{
	"ErrDecrypt":     crypto.ErrDecrypt,
	"ErrMalformed":   crypto.ErrMalformed,
	"ErrKeyNotFound": crypto.ErrKeyNotFound,
	"ErrKeyDisabled": crypto.ErrKeyDisabled,
	"ErrUnwrap":      crypto.ErrUnwrap,
}

func expect(t *testing.T, desc, want string, err error) bool {
	t.Helper()
	if want == "ok" {
		if err != nil {
			t.Errorf("%s: %v, want success", desc, err)
			return false
		}
		return true
	}
	target, ok := errorNames[want]
	if !ok {
		t.Fatalf("%s: unknown expected result %q", desc, want)
	}
	if !errors.Is(err, target) {
		t.Errorf("%s: got %v, want %s", desc, err, want)
	}
	return false
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectors(t *testing.T) {
	if *update {
		v := generateVectors(t)
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var v Vectors
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	checkVectors(t, &v)
}

func openVectorKEKs(t *testing.T, v *Vectors) map[string]crypto.KEK {
	keks := map[string]crypto.KEK{}
	for _, m := range v.MasterKeys {
		name := "STELE_VECTOR_" + m.Name
		t.Setenv(name, base64.StdEncoding.EncodeToString(m.KeysetJSON))
		kek, err := crypto.OpenKEK(t.Context(), "env://"+name)
		if err != nil {
			t.Fatalf("master key %s: %v", m.Name, err)
		}
		keks[m.Name] = kek
	}
	return keks
}

func checkVectors(t *testing.T, v *Vectors) {
	keks := openVectorKEKs(t, v)
	// Every keyset, twice: unwrapped, and from its cleartext JSON.
	unwrapped := map[string]*crypto.Keyset{}
	clear := map[string]*crypto.Keyset{}
	for _, kv := range v.Keysets {
		if got := hex.EncodeToString(kv.AD.bytes()); got != kv.ADHex {
			t.Errorf("keyset %s: KeysetAD = %s, vector says %s", kv.Name, got, kv.ADHex)
		}
		ks, err := crypto.UnwrapKeyset(mustHex(t, kv.WrappedHex), keks[kv.KEK], mustHex(t, kv.ADHex))
		if err != nil {
			t.Fatalf("keyset %s: %v", kv.Name, err)
		}
		var want []crypto.KeyInfo
		for _, k := range kv.Keys {
			want = append(want, crypto.KeyInfo{ID: crypto.KeyID(k.ID), Status: crypto.KeyStatus(k.Status), Primary: k.Primary})
		}
		if got := ks.Keys(); !slices.Equal(got, want) {
			t.Errorf("keyset %s: keys %+v, vector says %+v", kv.Name, got, want)
		}
		unwrapped[kv.Name] = ks
		c, err := crypto.KeysetFromJSON(kv.KeysetJSON)
		if err != nil {
			t.Fatalf("keyset %s cleartext: %v", kv.Name, err)
		}
		if !slices.Equal(c.Keys(), want) {
			t.Errorf("keyset %s: cleartext keys %+v, vector says %+v", kv.Name, c.Keys(), want)
		}
		clear[kv.Name] = c
	}
	for _, u := range v.Unwrap {
		desc := "unwrap: " + u.Description
		if got := hex.EncodeToString(u.AD.bytes()); got != u.ADHex {
			t.Errorf("%s: AD = %s, vector says %s", desc, got, u.ADHex)
		}
		_, err := crypto.UnwrapKeyset(mustHex(t, u.WrappedHex), keks[u.KEK], mustHex(t, u.ADHex))
		expect(t, desc, u.Expect, err)
	}
	for _, vv := range v.Values {
		desc := "value: " + vv.Description
		if got := hex.EncodeToString(vv.AD.bytes()); got != vv.ADHex {
			t.Errorf("%s: AD = %s, vector says %s", desc, got, vv.ADHex)
		}
		c := mustHex(t, vv.CiphertextHex)
		if id, err := crypto.KeyIDOf(c); err == nil && uint32(id) != vv.KeyID {
			t.Errorf("%s: KeyIDOf = %d, vector says %d", desc, id, vv.KeyID)
		}
		for _, ks := range []struct {
			how string
			k   *crypto.Keyset
		}{{"unwrapped", unwrapped[vv.Keyset]}, {"cleartext", clear[vv.Keyset]}} {
			if ks.k == nil {
				t.Fatalf("%s: no keyset %q", desc, vv.Keyset)
			}
			p, err := ks.k.Decrypt(c, mustHex(t, vv.ADHex))
			if expect(t, desc+" ("+ks.how+")", vv.Expect, err) && string(p) != vv.Plaintext {
				t.Errorf("%s: plaintext %q, vector says %q", desc, p, vv.Plaintext)
			}
		}
	}
	for _, b := range v.SealedBoxes {
		desc := "sealed box: " + b.Description
		pub, priv := (*[32]byte)(mustHex(t, b.PublicKeyHex)), (*[32]byte)(mustHex(t, b.PrivateHex))
		p, err := crypto.OpenSealed(mustHex(t, b.BoxHex), pub, priv)
		if expect(t, desc, b.Expect, err) && string(p) != b.Plaintext {
			t.Errorf("%s: plaintext %q, vector says %q", desc, p, b.Plaintext)
		}
	}
	if len(v.Values) == 0 || len(v.Unwrap) == 0 || len(v.SealedBoxes) == 0 {
		t.Fatal("vector file has empty sections")
	}
}

// generateVectors makes new keys and ciphertexts. Only with -update.
func generateVectors(t *testing.T) *Vectors {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	v := &Vectors{Comment: "Stele key and ciphertext test vectors; see docs/crypto.md. " +
		"Keys here are test keys, published on purpose. Generated once by `go test ./crypto -run TestVectors -update` " +
		"(Tink's nonces are random, so regenerating changes every byte); every test run checks that they decrypt, or fail, as recorded."}
	for _, m := range []struct{ name, desc string }{
		{"master", "the master key (KEK) that wraps every keyset below"},
		{"other_master", "another master key, for the wrong-KEK vector"},
	} {
		k, err := crypto.GenerateMasterKey()
		must(err)
		var compact bytes.Buffer
		must(json.Compact(&compact, k))
		v.MasterKeys = append(v.MasterKeys, MasterKey{Name: m.name, Description: m.desc, KeysetJSON: compact.Bytes()})
	}
	keks := openVectorKEKs(t, v)

	u64 := func(n uint64) *uint64 { return &n }
	prodAD := ADFields{Org: "acme", Project: "billing", Env: "prod"}
	stagingAD := ADFields{Org: "acme", Project: "billing", Env: "staging"}
	keysets := map[string]*crypto.Keyset{}
	wrapped := map[string][]byte{}
	addKeyset := func(name, desc string, ad ADFields, ks *crypto.Keyset) {
		w, err := ks.Wrap(keks["master"], ad.bytes())
		must(err)
		clearJSON, err := ks.CleartextJSON()
		must(err)
		var compact bytes.Buffer
		must(json.Compact(&compact, clearJSON))
		kv := KeysetVector{Name: name, Description: desc, KEK: "master", AD: ad, ADHex: hex.EncodeToString(ad.bytes()),
			WrappedHex: hex.EncodeToString(w), KeysetJSON: compact.Bytes()}
		for _, k := range ks.Keys() {
			kv.Keys = append(kv.Keys, KeyVector{ID: uint32(k.ID), Status: string(k.Status), Primary: k.Primary})
		}
		v.Keysets = append(v.Keysets, kv)
		keysets[name], wrapped[name] = ks, w
	}
	v1, err := crypto.NewKeyset()
	must(err)
	keyA := v1.Primary()
	addKeyset("prod-v1", "acme/billing/prod, first version: key A, primary", prodAD, v1)
	v2, keyB, err := v1.Rotate()
	must(err)
	addKeyset("prod-v2", "prod-v1 rotated: key A, and key B primary", prodAD, v2)
	v3, err := v2.Disable(keyA)
	must(err)
	addKeyset("prod-v3", "prod-v2 with key A disabled", prodAD, v3)
	v4, err := v3.Destroy(keyA)
	must(err)
	addKeyset("prod-v4", "prod-v3 with key A destroyed: key B alone", prodAD, v4)
	st, err := crypto.NewKeyset()
	must(err)
	addKeyset("staging-v1", "acme/billing/staging: its own key C", stagingAD, st)

	// Unwrap vectors.
	flipped := bytes.Clone(wrapped["prod-v1"])
	if flipped[0] != 0x12 { // field 2 (encrypted_keyset), length-delimited, comes first
		t.Fatalf("unexpected wrapped keyset layout: %x", flipped[:4])
	}
	flipped[20] ^= 0x01
	for _, u := range []UnwrapVector{
		{Description: "prod-v1 with its master key and AD", Keyset: "prod-v1", KEK: "master", AD: prodAD, Expect: "ok"},
		{Description: "prod-v1 with another master key", Mutation: "kek: master → other_master", Keyset: "prod-v1", KEK: "other_master", AD: prodAD, Expect: "ErrUnwrap"},
		{Description: "prod-v1 unwrapped as staging's keyset", Mutation: "ad.env: prod → staging", Keyset: "prod-v1", KEK: "master", AD: stagingAD, Expect: "ErrUnwrap"},
		{Description: "prod-v1 unwrapped in another organization", Mutation: "ad.org: acme → globex", Keyset: "prod-v1", KEK: "master", AD: ADFields{Org: "globex", Project: "billing", Env: "prod"}, Expect: "ErrUnwrap"},
		{Description: "prod-v1 with one bit flipped in the encrypted keyset", Mutation: "wrapped byte 20 (inside encrypted_keyset) xor 0x01", Keyset: "prod-v1", KEK: "master", AD: prodAD, WrappedHex: hex.EncodeToString(flipped), Expect: "ErrUnwrap"},
		{Description: "prod-v1 cut short", Mutation: "wrapped truncated to its first 40 bytes", Keyset: "prod-v1", KEK: "master", AD: prodAD, WrappedHex: hex.EncodeToString(wrapped["prod-v1"][:40]), Expect: "ErrUnwrap"},
	} {
		u.ADHex = hex.EncodeToString(u.AD.bytes())
		if u.WrappedHex == "" {
			u.WrappedHex = hex.EncodeToString(wrapped[u.Keyset])
		}
		v.Unwrap = append(v.Unwrap, u)
	}

	// Value vectors.
	dbURL := "postgres://app:correct-horse-battery@db.internal:5432/billing"
	apiKey := "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
	dbAD := ADFields{Org: "acme", Project: "billing", Env: "prod", Name: "DATABASE_URL", Version: u64(3)}
	apiAD := ADFields{Org: "acme", Project: "billing", Env: "prod", Name: "API_KEY", Version: u64(1)}
	stAD := ADFields{Org: "acme", Project: "billing", Env: "staging", Name: "DATABASE_URL", Version: u64(3)}
	cA, id, err := v1.Encrypt([]byte(dbURL), dbAD.bytes())
	must(err)
	if id != keyA {
		t.Fatal("prod-v1 encrypted with another key")
	}
	cB, id, err := v2.Encrypt([]byte(apiKey), apiAD.bytes())
	must(err)
	if id != keyB {
		t.Fatal("prod-v2 encrypted with another key than its new primary")
	}
	cC, _, err := st.Encrypt([]byte(dbURL), stAD.bytes())
	must(err)
	with := func(a ADFields, f func(*ADFields)) ADFields { f(&a); return a }
	mutate := func(c []byte, f func([]byte)) []byte { d := bytes.Clone(c); f(d); return d }
	otherID := mutate(cA, func(d []byte) { d[4] ^= 0x01 })
	for _, vv := range []ValueVector{
		{Description: "DATABASE_URL v3 made by key A, read with prod-v1", Keyset: "prod-v1", AD: dbAD, Expect: "ok", Plaintext: dbURL},
		{Description: "AD binding: the same ciphertext read in another organization", Mutation: "ad.org: acme → globex", Keyset: "prod-v1", AD: with(dbAD, func(a *ADFields) { a.Org = "globex" }), Expect: "ErrDecrypt"},
		{Description: "AD binding: the same ciphertext read in another project", Mutation: "ad.project: billing → shipping", Keyset: "prod-v1", AD: with(dbAD, func(a *ADFields) { a.Project = "shipping" }), Expect: "ErrDecrypt"},
		{Description: "AD binding: text moved across a field boundary", Mutation: "ad.project: billing → billingp, ad.env: prod → rod", Keyset: "prod-v1", AD: with(dbAD, func(a *ADFields) { a.Project, a.Env = "billingp", "rod" }), Expect: "ErrDecrypt"},
		{Description: "moved ciphertext: stored as another secret", Mutation: "ad.name: DATABASE_URL → API_KEY", Keyset: "prod-v1", AD: with(dbAD, func(a *ADFields) { a.Name = "API_KEY" }), Expect: "ErrDecrypt"},
		{Description: "moved ciphertext: stored as another version of the secret", Mutation: "ad.version: 3 → 4", Keyset: "prod-v1", AD: with(dbAD, func(a *ADFields) { a.Version = u64(4) }), Expect: "ErrDecrypt"},
		{Description: "moved ciphertext: read as staging's value with prod's keyset", Mutation: "ad.env: prod → staging", Keyset: "prod-v1", AD: stAD, Expect: "ErrDecrypt"},
		{Description: "moved ciphertext: copied into staging, whose keyset lacks key A", Mutation: "ad.env: prod → staging, keyset: prod-v1 → staging-v1", Keyset: "staging-v1", AD: stAD, Expect: "ErrKeyNotFound"},
		{Description: "staging's own DATABASE_URL, made by key C", Keyset: "staging-v1", AD: stAD, CiphertextHex: hex.EncodeToString(cC), Expect: "ok", Plaintext: dbURL},
		{Description: "tampered: one bit flipped in the GCM tag", Mutation: "ciphertext last byte xor 0x01", Keyset: "prod-v1", AD: dbAD, CiphertextHex: hex.EncodeToString(mutate(cA, func(d []byte) { d[len(d)-1] ^= 0x01 })), Expect: "ErrDecrypt"},
		{Description: "tampered: one bit flipped in the encrypted body", Mutation: "ciphertext byte 17 (first body byte) xor 0x01", Keyset: "prod-v1", AD: dbAD, CiphertextHex: hex.EncodeToString(mutate(cA, func(d []byte) { d[17] ^= 0x01 })), Expect: "ErrDecrypt"},
		{Description: "tampered: the prefix names a key the keyset lacks", Mutation: "ciphertext byte 4 (last key ID byte) xor 0x01", Keyset: "prod-v1", AD: dbAD, CiphertextHex: hex.EncodeToString(otherID), Expect: "ErrKeyNotFound"},
		{Description: "tampered: the Tink prefix removed", Mutation: "first 5 bytes removed", Keyset: "prod-v1", AD: dbAD, CiphertextHex: hex.EncodeToString(cA[5:]), Expect: "ErrDecrypt"},
		{Description: "rotation: key A's ciphertext read with prod-v2 (A and B)", Keyset: "prod-v2", AD: dbAD, Expect: "ok", Plaintext: dbURL},
		{Description: "rotation: API_KEY v1 made by key B, read with prod-v2", Keyset: "prod-v2", AD: apiAD, CiphertextHex: hex.EncodeToString(cB), Expect: "ok", Plaintext: apiKey},
		{Description: "rotation: key B's ciphertext read with the older prod-v1", Keyset: "prod-v1", AD: apiAD, CiphertextHex: hex.EncodeToString(cB), Expect: "ErrKeyNotFound"},
		{Description: "disabled: key A's ciphertext read with prod-v3", Keyset: "prod-v3", AD: dbAD, Expect: "ErrKeyDisabled"},
		{Description: "disabled: key B's ciphertext still readable with prod-v3", Keyset: "prod-v3", AD: apiAD, CiphertextHex: hex.EncodeToString(cB), Expect: "ok", Plaintext: apiKey},
		{Description: "destroyed: key A's ciphertext read with prod-v4", Keyset: "prod-v4", AD: dbAD, Expect: "ErrKeyNotFound"},
		{Description: "destroyed: key B's ciphertext still readable with prod-v4", Keyset: "prod-v4", AD: apiAD, CiphertextHex: hex.EncodeToString(cB), Expect: "ok", Plaintext: apiKey},
	} {
		vv.ADHex = hex.EncodeToString(vv.AD.bytes())
		if vv.CiphertextHex == "" {
			vv.CiphertextHex = hex.EncodeToString(cA)
		}
		if id, err := crypto.KeyIDOf(mustHex(t, vv.CiphertextHex)); err == nil {
			vv.KeyID = uint32(id)
		}
		v.Values = append(v.Values, vv)
	}

	// Sealed boxes.
	pub, priv, err := crypto.GenerateBoxKeyPair()
	must(err)
	otherPub, otherPriv, err := crypto.GenerateBoxKeyPair()
	must(err)
	msg := `{"DATABASE_URL":"` + dbURL + `"}`
	box, err := crypto.SealTo(pub, []byte(msg))
	must(err)
	h := hex.EncodeToString
	v.SealedBoxes = []BoxVector{
		{Description: "a bundle sealed to the CLI's one-time key", PublicKeyHex: h(pub[:]), PrivateHex: h(priv[:]), BoxHex: h(box), Expect: "ok", Plaintext: msg},
		{Description: "the same box opened with another key pair", Mutation: "recipient key pair replaced", PublicKeyHex: h(otherPub[:]), PrivateHex: h(otherPriv[:]), BoxHex: h(box), Expect: "ErrDecrypt"},
		{Description: "the box with one bit flipped in the ephemeral public key", Mutation: "box byte 0 xor 0x01", PublicKeyHex: h(pub[:]), PrivateHex: h(priv[:]), BoxHex: h(mutate(box, func(d []byte) { d[0] ^= 1 })), Expect: "ErrDecrypt"},
		{Description: "the box with one bit flipped in the message", Mutation: "box last byte xor 0x01", PublicKeyHex: h(pub[:]), PrivateHex: h(priv[:]), BoxHex: h(mutate(box, func(d []byte) { d[len(d)-1] ^= 1 })), Expect: "ErrDecrypt"},
	}
	return v
}
