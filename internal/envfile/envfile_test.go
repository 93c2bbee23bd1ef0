package envfile_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"stele.dev/stele/internal/envfile"
)

// hostile are values that break naive writers and readers.
var hostile = []string{
	"",
	"plain",
	"with spaces",
	"  leading and trailing  ",
	"\ttabbed\t",
	`double "quoted" inside`,
	`single 'quoted' inside`,
	`both ' and " quotes`,
	"'",
	`"`,
	"`backticks` and `whoami`",
	"$HOME",
	"pa$HOME",
	"${HOME}",
	"$(rm -rf /)",
	`\$HOME`,
	`back\slash`,
	`trailing backslash\`,
	`\\double\\`,
	`\n is not a newline`,
	"line one\nline two",
	"trailing newline\n",
	"\n\nleading newlines",
	"crlf\r\ninside",
	"lone\rcarriage return",
	"-rf --no-preserve-root",
	"--",
	"# not a comment",
	"value # with a hash",
	"a=b=c",
	"=",
	"ünïcödé ✓ 日本語 🎉",
	"\u2028line separator\u2029",
	"null",
	"true",
	"~",
	"0123",
	"1e3",
	"yes",
	"- item",
	"key: value",
	"{braces}",
	"[brackets]",
	"&anchor *alias !tag %directive @at",
	"'\"`$\\\n\r\t#=",
	"\x00nul\x01control\x7f",
	strings.Repeat("long-", 2000),
}

func entriesOf(values []string) []envfile.Entry {
	out := make([]envfile.Entry, len(values))
	for i, v := range values {
		out[i] = envfile.Entry{Name: "V_" + strings.Repeat("X", i%3) + string(rune('A'+i%26)) + "_" + itoa(i), Value: v}
	}
	return out
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// Every format writes what it reads back, byte for byte.
func TestRoundTrip(t *testing.T) {
	in := entriesOf(hostile)
	for _, f := range envfile.Formats {
		t.Run(string(f), func(t *testing.T) {
			data, err := f.Format(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := envfile.Parse(f, data)
			if err != nil {
				t.Fatalf("parsing what was written: %v\n%s", err, data)
			}
			if len(out) != len(in) {
				t.Fatalf("%d entries back, want %d\n%s", len(out), len(in), data)
			}
			for i := range in {
				if out[i].Name != in[i].Name || out[i].Value != in[i].Value {
					t.Errorf("entry %d: %q=%q, want %q=%q", i, out[i].Name, out[i].Value, in[i].Name, in[i].Value)
				}
				if out[i].Line == 0 {
					t.Errorf("entry %d: no line number", i)
				}
			}
		})
	}
}

// Windows line endings in the file itself are line ends, not part of
// values.
func TestRoundTripCRLF(t *testing.T) {
	in := entriesOf([]string{"a", "it's", "x\ny", "$HOME"})
	for _, f := range envfile.Formats {
		data, err := f.Format(in)
		if err != nil {
			t.Fatal(err)
		}
		crlf := strings.ReplaceAll(string(data), "\n", "\r\n")
		out, err := envfile.Parse(f, []byte(crlf))
		if err != nil {
			t.Fatalf("%s: %v\n%q", f, err, crlf)
		}
		for i := range in {
			if out[i].Value != in[i].Value {
				t.Errorf("%s: entry %d read %q, want %q", f, i, out[i].Value, in[i].Value)
			}
		}
	}
}

func TestFormatDotenvOutput(t *testing.T) {
	got, err := envfile.FormatDotenv([]envfile.Entry{
		{Name: "A", Value: "x y"},
		{Name: "B", Value: "$HOME `id`"},
		{Name: "C", Value: "it's"},
		{Name: "D", Value: "l1\nl2 $X \"q\" \\"},
		{Name: "E", Value: ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `A='x y'
B='$HOME ` + "`id`" + `'
C="it's"
D="l1\nl2 \$X \"q\" \\"
E=''
`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestParseDotenv(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     [][2]string
	}{
		{"simple", "A=1\nB=two", [][2]string{{"A", "1"}, {"B", "two"}}},
		{"export", "export A=1\nexport\tB = 2\n", [][2]string{{"A", "1"}, {"B", "2"}}},
		{"a variable named export", "export=1\n", [][2]string{{"export", "1"}}},
		{"export without a name", "export =2\n", nil},
		{"comments and blanks", "# head\n\n  # indented\nA=1 # trailing\nB=2#not a comment\nC=#literal\nD= # only a comment\n", [][2]string{{"A", "1"}, {"B", "2#not a comment"}, {"C", "#literal"}, {"D", ""}}},
		{"empty values", "A=\nB=''\nC=\"\"\nD=``\nE=   \n", [][2]string{{"A", ""}, {"B", ""}, {"C", ""}, {"D", ""}, {"E", ""}}},
		{"spaces", "  A  =  spaced out  \t\n", [][2]string{{"A", "spaced out"}}},
		{"no expansion unquoted", "A=pa$HOME\nB=${HOME}\nC=$(id)\nD=x`id`", [][2]string{{"A", "pa$HOME"}, {"B", "${HOME}"}, {"C", "$(id)"}, {"D", "x`id`"}}},
		{"no expansion double", `A="pa$HOME ${HOME} $(id) ` + "`id`" + `"`, [][2]string{{"A", "pa$HOME ${HOME} $(id) `id`"}}},
		{"no expansion single", `A='pa$HOME \n'`, [][2]string{{"A", `pa$HOME \n`}}},
		{"backticks literal", "A=`it's \"x\" \\n $Y`", [][2]string{{"A", `it's "x" \n $Y`}}},
		{"double escapes", `A="a\nb\rc\td\\e\"f\$g\` + "`" + `h\qi\'"`, [][2]string{{"A", "a\nb\rc\td\\e\"f$g`h\\qi\\'"}}},
		{"continuation", "A=\"one \\\ntwo\"", [][2]string{{"A", "one two"}}},
		{"multiline double", "A=\"line 1\nline 2\n\"\nB=after", [][2]string{{"A", "line 1\nline 2\n"}, {"B", "after"}}},
		{"multiline single", "A='line 1\n# not a comment\nline 3'\nB=after", [][2]string{{"A", "line 1\n# not a comment\nline 3"}, {"B", "after"}}},
		{"comment after quote", "A='x' # note\nB=\"y\"#note\n", [][2]string{{"A", "x"}, {"B", "y"}}},
		{"unquoted keeps inner quotes and backslashes", `A=it's a "b" \n c`, [][2]string{{"A", `it's a "b" \n c`}}},
		{"equals in values", "A=a=b\nB='=c='", [][2]string{{"A", "a=b"}, {"B", "=c="}}},
		{"crlf", "A=1\r\nB='x\r\ny'\r\nC=\"z\"\r\n", [][2]string{{"A", "1"}, {"B", "x\ny"}, {"C", "z"}}},
		{"bom", "\ufeffA=1", [][2]string{{"A", "1"}}},
		{"unicode", "NAME=ünïcödé ✓\n", [][2]string{{"NAME", "ünïcödé ✓"}}},
		{"leading dashes", "A=-rf\nB=--x", [][2]string{{"A", "-rf"}, {"B", "--x"}}},
		{"no final newline", "A='x'", [][2]string{{"A", "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := envfile.ParseDotenv([]byte(tc.in))
			if tc.want == nil { // the case expects an error
				if err == nil {
					t.Fatalf("parsed %q, want an error", tc.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var pairs [][2]string
			for _, e := range got {
				pairs = append(pairs, [2]string{e.Name, e.Value})
			}
			if !reflect.DeepEqual(pairs, tc.want) {
				t.Fatalf("got %q, want %q", pairs, tc.want)
			}
		})
	}
}

func TestParseDotenvLines(t *testing.T) {
	got, err := envfile.ParseDotenv([]byte("# c\nA=1\nB='x\ny\nz'\n\nC=\"p\nq\"\nD=4\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"A": 2, "B": 3, "C": 7, "D": 9}
	for _, e := range got {
		if want[e.Name] != e.Line {
			t.Errorf("%s on line %d, want %d", e.Name, e.Line, want[e.Name])
		}
	}
}

// Errors say where, and never repeat the file's text.
func TestParseErrors(t *testing.T) {
	const secret = "hunter2-S3CRET"
	for _, tc := range []struct {
		f    envfile.Format
		in   string
		line int
		msg  string
	}{
		{envfile.Dotenv, "A=1\nB='" + secret + "\nC=3", 2, "never closed"},
		{envfile.Dotenv, "A=1\n\nB=\"" + secret, 3, "never closed"},
		{envfile.Dotenv, "A=`" + secret, 1, "never closed"},
		{envfile.Dotenv, "A=1\n" + secret + "\n", 2, "expected '='"},
		{envfile.Dotenv, "A=1\n9" + secret + "=x\n", 2, "expected NAME=value"},
		{envfile.Dotenv, "A.B=" + secret, 1, "expected '='"},
		{envfile.Dotenv, "=" + secret, 1, "expected NAME=value"},
		{envfile.Dotenv, "A='x'" + secret, 1, "after the closing quote"},
		{envfile.Dotenv, "A=1\nB=2\nA=" + secret, 3, "A is defined twice (first on line 1)"},
		{envfile.Dotenv, "A=1\nB=" + secret + "\xff\n", 2, "not valid UTF-8"},
		{envfile.Dotenv, "export " + secret, 1, "expected '='"},
		{envfile.JSON, `["` + secret + `"]`, 1, "want one object"},
		{envfile.JSON, "{\n\"A\": \"1\",\n\"A\": \"" + secret + "\"}", 3, "A is defined twice"},
		{envfile.JSON, `{"A": {"x": "` + secret + `"}}`, 1, "object or array"},
		{envfile.JSON, `{"A": ["` + secret + `"]}`, 1, "object or array"},
		{envfile.JSON, `{"` + secret + `-x": "1"}`, 1, "not an environment variable name"},
		{envfile.JSON, "{\n\"A\": \"" + secret + "\",\n}", 3, "malformed JSON"},
		{envfile.JSON, `{"A": "` + secret + `"} {}`, 1, "data after the object"},
		{envfile.JSON, `{"A": "` + secret, 1, "ends too early"},
		{envfile.JSON, "", 1, "ends too early"},
		{envfile.YAML, "A: 1\nB:\n  - " + secret, 3, "mapping or sequence"},
		{envfile.YAML, "A: 1\nA: " + secret, 2, "A is defined twice"},
		{envfile.YAML, "- " + secret, 1, "want one mapping"},
		{envfile.YAML, secret + "-x: 1", 1, "not an environment variable name"},
		{envfile.YAML, "A: 1\n---\nB: " + secret, 2, "more than one YAML document"},
		{envfile.YAML, "A: !!binary aGVsbG8=", 1, "has tag !!binary"},
		{envfile.YAML, "A: '" + secret + "\nB: [", 0, "malformed YAML"},
	} {
		_, err := envfile.Parse(tc.f, []byte(tc.in))
		var se *envfile.SyntaxError
		if !errors.As(err, &se) || !errors.Is(err, envfile.ErrSyntax) {
			t.Errorf("%s %q: error %v, want a *SyntaxError", tc.f, tc.in, err)
			continue
		}
		if tc.line > 0 && se.Line != tc.line {
			t.Errorf("%s %q: line %d, want %d (%v)", tc.f, tc.in, se.Line, tc.line, err)
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s %q: %q does not say %q", tc.f, tc.in, err, tc.msg)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error quotes the file: %v", tc.f, err)
		}
	}
}

func TestParseJSON(t *testing.T) {
	got, err := envfile.ParseJSON([]byte(`{"PORT": 8080, "RATIO": 1.50, "ON": true, "OFF": false, "EMPTY": null, "S": "x\u00e9\n", "HTML": "<&>"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []envfile.Entry{{Name: "PORT", Value: "8080"}, {Name: "RATIO", Value: "1.50"}, {Name: "ON", Value: "true"}, {Name: "OFF", Value: "false"},
		{Name: "EMPTY", Value: ""}, {Name: "S", Value: "xé\n"}, {Name: "HTML", Value: "<&>"}}
	for i := range want {
		want[i].Line = 1
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	if got, err := envfile.ParseJSON([]byte(" {} ")); err != nil || len(got) != 0 {
		t.Fatalf("empty object: %v %v", got, err)
	}
	out, err := envfile.FormatJSON([]envfile.Entry{{Name: "B", Value: "<x> & \"y\""}, {Name: "A", Value: "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "{\n  \"B\": \"<x> & \\\"y\\\"\",\n  \"A\": \"1\"\n}\n" {
		t.Fatalf("FormatJSON wrote %s", out)
	}
}

func TestParseYAML(t *testing.T) {
	got, err := envfile.ParseYAML([]byte(`# settings
PORT: 8080
RATIO: 1.50
ON: true
YES_STR: yes
EMPTY:
TILDE: ~
QUOTED: "it's \"x\""
SINGLE: 'a''b'
BLOCK: |
  line 1
  line 2
FOLDED: >-
  folded
  text
BASE: &b shared
ALIAS: *b
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"PORT": "8080", "RATIO": "1.50", "ON": "true", "YES_STR": "yes", "EMPTY": "", "TILDE": "",
		"QUOTED": `it's "x"`, "SINGLE": "a'b", "BLOCK": "line 1\nline 2\n", "FOLDED": "folded text", "BASE": "shared", "ALIAS": "shared"}
	if len(got) != len(want) {
		t.Fatalf("got %d entries: %+v", len(got), got)
	}
	for _, e := range got {
		if want[e.Name] != e.Value {
			t.Errorf("%s=%q, want %q", e.Name, e.Value, want[e.Name])
		}
	}
	if got[0].Name != "PORT" || got[0].Line != 2 {
		t.Errorf("first entry %+v", got[0])
	}
	for _, empty := range []string{"", "# nothing\n", "{}", "~"} {
		if got, err := envfile.ParseYAML([]byte(empty)); err != nil || len(got) != 0 {
			t.Errorf("%q: %v %v", empty, got, err)
		}
	}
	// Values that read as other types are quoted when written.
	out, err := envfile.FormatYAML(entriesOf([]string{"true", "null", "0123", "~", "1e3"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		_, v, _ := strings.Cut(line, ": ")
		if !strings.HasPrefix(v, `"`) && !strings.HasPrefix(v, `'`) {
			t.Errorf("unquoted: %s", line)
		}
	}
}

func TestFormatRefuses(t *testing.T) {
	for _, tc := range []struct {
		e   []envfile.Entry
		msg string
	}{
		{[]envfile.Entry{{Name: "A-B", Value: "x"}}, "not an environment variable name"},
		{[]envfile.Entry{{Name: "", Value: "x"}}, "not an environment variable name"},
		{[]envfile.Entry{{Name: "A", Value: "x"}, {Name: "A", Value: "y"}}, "twice"},
		{[]envfile.Entry{{Name: "A", Value: "bin\xff"}}, "not UTF-8"},
	} {
		for _, f := range envfile.Formats {
			if _, err := f.Format(tc.e); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s %+v: %v, want %q", f, tc.e, err, tc.msg)
			}
		}
	}
	if _, err := envfile.ParseFormat("toml"); err == nil {
		t.Error("toml accepted")
	}
	for _, f := range envfile.Formats {
		if g, err := envfile.ParseFormat(string(f)); err != nil || g != f {
			t.Errorf("ParseFormat(%s) = %s, %v", f, g, err)
		}
	}
}

// Any UTF-8 value survives every format.
func FuzzRoundTrip(f *testing.F) {
	for _, v := range hostile {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !utf8.ValidString(v) {
			t.Skip("values written to text files are UTF-8")
		}
		in := []envfile.Entry{{Name: "BEFORE", Value: "b"}, {Name: "V", Value: v}, {Name: "AFTER", Value: "a"}}
		for _, format := range envfile.Formats {
			data, err := format.Format(in)
			if err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			out, err := envfile.Parse(format, data)
			if err != nil {
				t.Fatalf("%s: %v\n%q", format, err, data)
			}
			if len(out) != 3 || out[1].Value != v || out[0].Value != "b" || out[2].Value != "a" {
				t.Fatalf("%s: %q came back as %+v\n%q", format, v, out, data)
			}
		}
	})
}

// Whatever a file holds, parsing it does not panic, and what parses
// writes back to the same entries.
func FuzzParse(f *testing.F) {
	f.Add("A=1\nexport B='x\ny'\nC=\"\\$z\" # c\n")
	f.Add(`{"A": "1", "B": 2}`)
	f.Add("A: |\n  x\nB: ~\n")
	f.Fuzz(func(t *testing.T, data string) {
		for _, format := range envfile.Formats {
			in, err := envfile.Parse(format, []byte(data))
			if err != nil {
				continue
			}
			out, err := format.Format(in)
			if err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			back, err := envfile.Parse(format, out)
			if err != nil || len(back) != len(in) {
				t.Fatalf("%s: %v, %d entries of %d\n%q", format, err, len(back), len(in), out)
			}
			for i := range in {
				if back[i].Name != in[i].Name || back[i].Value != in[i].Value {
					t.Fatalf("%s: %+v came back as %+v", format, in[i], back[i])
				}
			}
		}
	})
}
