package cli

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// maskAll writes input to a masker in the given chunk sizes (cycled) and
// returns what came out.
func maskAll(t *testing.T, values []string, input string, chunks ...int) string {
	t.Helper()
	var out bytes.Buffer
	m := NewMasker(&out, values)
	for i, k := 0, 0; i < len(input); k++ {
		n := len(input) - i
		if len(chunks) > 0 {
			n = min(n, chunks[k%len(chunks)])
		}
		if w, err := m.Write([]byte(input[i : i+n])); err != nil || w != n {
			t.Fatalf("Write: %d, %v", w, err)
		}
		i += n
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestMasker(t *testing.T) {
	values := []string{"s3cr3t-value", "hunter2!", "abcd", "abcdefgh", "on"}
	cases := []struct{ name, in, want string }{
		{"whole", "password is s3cr3t-value.\n", "password is ****.\n"},
		{"twice on a line", "hunter2!hunter2! x", "******** x"},
		{"longest wins", "abcdefgh abcd abcdef", "**** **** ****ef"},
		{"short values stay", "on and on", "on and on"},
		{"prefix at the end", "ends with s3cr3t", "ends with s3cr3t"},
		{"a shorter value inside a held prefix", "xabcdefg", "x****efg"},
		{"nothing", "plain output\n", "plain output\n"},
		{"empty", "", ""},
		{"unicode around", "é s3cr3t-value 日本", "é **** 日本"},
	}
	for _, c := range cases {
		for _, chunk := range [][]int{nil, {1}, {2}, {3, 5}, {7}} {
			if got := maskAll(t, values, c.in, chunk...); got != c.want {
				t.Errorf("%s, chunks %v: got %q, want %q", c.name, chunk, got, c.want)
			}
		}
	}
}

// No byte sequence of random output split at random places ever lets a
// whole value through, and output without values passes unchanged.
func TestMaskerRandomSplits(t *testing.T) {
	values := []string{"tok_9f8e7d", "9f8e7dXYZ", "pa$$w0rd\nline2"}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "tok_9f8e7dXYZpa$w0rd\nline2 "
	for n := 0; n < 2000; n++ {
		var b strings.Builder
		for range r.IntN(80) {
			if r.IntN(10) == 0 {
				b.WriteString(values[r.IntN(len(values))])
			} else {
				b.WriteByte(alphabet[r.IntN(len(alphabet))])
			}
		}
		in := b.String()
		chunks := []int{1 + r.IntN(9), 1 + r.IntN(9)}
		got := maskAll(t, values, in, chunks...)
		for _, v := range values {
			if strings.Contains(got, v) {
				t.Fatalf("value %q passed through: in %q, out %q (chunks %v)", v, in, got, chunks)
			}
		}
		if whole := maskAll(t, values, in); got != whole {
			t.Fatalf("the split changed the result: %q vs %q (chunks %v)", got, whole, chunks)
		}
	}
	if got := maskAll(t, values, "nothing secret here\n", 3); got != "nothing secret here\n" {
		t.Fatalf("got %q", got)
	}
}
