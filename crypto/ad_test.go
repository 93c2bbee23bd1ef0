package crypto_test

import (
	"bytes"
	"encoding/hex"
	"testing"

	"stele.dev/stele/crypto"
)

// TestADLayout pins the documented byte layouts (docs/crypto.md quotes
// these examples).
func TestADLayout(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"KeysetAD(acme, billing, prod)", crypto.KeysetAD("acme", "billing", "prod"),
			"0000000f" + hex.EncodeToString([]byte("stele/keyset/v1")) +
				"00000004" + hex.EncodeToString([]byte("acme")) +
				"00000007" + hex.EncodeToString([]byte("billing")) +
				"00000004" + hex.EncodeToString([]byte("prod"))},
		{"ValueAD(acme, billing, prod, DATABASE_URL, 3)", crypto.ValueAD("acme", "billing", "prod", "DATABASE_URL", 3),
			"0000000e" + hex.EncodeToString([]byte("stele/value/v1")) +
				"00000004" + hex.EncodeToString([]byte("acme")) +
				"00000007" + hex.EncodeToString([]byte("billing")) +
				"00000004" + hex.EncodeToString([]byte("prod")) +
				"0000000c" + hex.EncodeToString([]byte("DATABASE_URL")) +
				"0000000000000003"},
		{"KeysetAD of empty fields", crypto.KeysetAD("", "", ""),
			"0000000f" + hex.EncodeToString([]byte("stele/keyset/v1")) + "000000000000000000000000"},
	} {
		if g := hex.EncodeToString(tc.got); g != tc.want {
			t.Errorf("%s =\n%s\nwant\n%s", tc.name, g, tc.want)
		}
	}
}

// TestADUnambiguous checks that different field values never give the
// same bytes, in particular when text moves across a field boundary.
func TestADUnambiguous(t *testing.T) {
	seen := map[string]string{}
	add := func(desc string, b []byte) {
		if prev, ok := seen[string(b)]; ok {
			t.Errorf("%s and %s have the same associated data %x", prev, desc, b)
		}
		seen[string(b)] = desc
	}
	add("keyset a|bc|d", crypto.KeysetAD("a", "bc", "d"))
	add("keyset ab|c|d", crypto.KeysetAD("ab", "c", "d"))
	add("keyset a|b|cd", crypto.KeysetAD("a", "b", "cd"))
	add("keyset a|\\x00|d", crypto.KeysetAD("a", "\x00", "d"))
	add("keyset a||d", crypto.KeysetAD("a", "", "d"))
	add("value a|b|c|d|1", crypto.ValueAD("a", "b", "c", "d", 1))
	add("value a|b|c|d|256", crypto.ValueAD("a", "b", "c", "d", 256))
	add("value a|b|c|d\\x00|1", crypto.ValueAD("a", "b", "c", "d\x00", 1))
	add("value a|b|cd||1", crypto.ValueAD("a", "b", "cd", "", 1))
	add("value a|b|c|d|0", crypto.ValueAD("a", "b", "c", "d", 0))
	// A value's AD never starts like a keyset's: the tags differ in length.
	if bytes.HasPrefix(crypto.ValueAD("a", "b", "c", "d", 1), crypto.KeysetAD("a", "b", "c")[:4]) {
		t.Error("value and keyset AD share a tag length")
	}
}
