package envfile_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"stele.dev/stele/internal/aptget"
	"stele.dev/stele/internal/envfile"
)

// shellValue is one value of testdata/shell-values.json.
type shellValue struct {
	Description string `json:"description"`
	Value       string `json:"value"`
	Base64      []byte `json:"base64"` // raw bytes, for values that are not UTF-8
	Repeat      int    `json:"repeat"`
}

// pwnedMarker in a value is replaced by the path of a file that a shell
// creates only if it runs a command it was meant to store.
const pwnedMarker = "{{PWNED}}"

// shellValues reads the adversarial values as entries named V_000,
// V_001…, with their descriptions by name, and the path that no shell
// may create. Two entries follow them: a path list (fish splits names
// that end in PATH on colons) and, last, a value that ends in newlines,
// which "$(…)" would strip if they were outside the quotes.
func shellValues(t testing.TB) (entries []envfile.Entry, about map[string]string, pwned string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "shell-values.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Values []shellValue }
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	pwned = filepath.Join(os.TempDir(), "pwned-"+rand.Text())
	about = map[string]string{}
	for i, v := range doc.Values {
		value := v.Value
		if v.Base64 != nil {
			value = string(v.Base64)
		}
		if v.Repeat > 0 {
			value = strings.Repeat(value, v.Repeat)
		}
		value = strings.ReplaceAll(value, pwnedMarker, pwned)
		name := fmt.Sprintf("V_%03d", i)
		entries = append(entries, envfile.Entry{Name: name, Value: value})
		about[name] = v.Description
	}
	entries = append(entries,
		envfile.Entry{Name: "STELE_TEST_PATH", Value: "/a:/b c::/d:"},
		envfile.Entry{Name: "V_LAST", Value: "the last value ends in newlines\n\n"})
	about["STELE_TEST_PATH"] = "a colon-separated list in a variable whose name ends in PATH"
	about["V_LAST"] = "the last value, ending in newlines"
	return entries, about, pwned
}

// randomValues are n values of random bytes (but NUL), named R_000,
// R_001…, from a fixed seed; they mix in what quoting cares about and
// what fish encodes specially: its private-use range, U+F600–U+F6FF.
func randomValues(n int) []envfile.Entry {
	r := mrand.New(mrand.NewPCG(7, 11))
	pieces := []string{"'", `\`, `"`, "$", "`", "!", "\n", "\r", "-", "\uf600", "\uf6ff", "\uf680", "\xed\xa0\x80", "é", "日", "🎉"}
	out := make([]envfile.Entry, n)
	for i := range out {
		var b []byte
		for range r.IntN(40) {
			if r.IntN(2) == 0 {
				b = append(b, pieces[r.IntN(len(pieces))]...)
			} else {
				b = append(b, byte(1+r.IntN(255)))
			}
		}
		out[i] = envfile.Entry{Name: fmt.Sprintf("R_%03d", i), Value: string(b)}
	}
	return out
}

// utf8Only keeps the entries whose values are UTF-8 text.
func utf8Only(entries []envfile.Entry) []envfile.Entry {
	var out []envfile.Entry
	for _, e := range entries {
		if utf8.ValidString(e.Value) {
			out = append(out, e)
		}
	}
	return out
}

// A shell to test against.
type shell struct {
	name string
	bin  string   // the program on PATH
	args []string // its arguments before the script's path
	pkg  string   // the Debian package that has it
	fish bool     // fish, not a POSIX shell
	// modes are ways to load the export file: a prelude, then the command
	// that loads the file (%s: its quoted path).
	modes []shellMode
}

type shellMode struct{ name, prelude, load string }

var (
	posixModes = []shellMode{
		{"source", "", ". %s"},
		{"eval", "", `eval "$(cat %s)"`},
	}
	shells = []shell{
		{name: "bash", bin: "bash", pkg: "bash", modes: append(posixModes,
			shellMode{"posix", "set -o posix\n", ". %s"})},
		{name: "dash", bin: "dash", pkg: "dash", modes: posixModes},
		{name: "zsh", bin: "zsh", args: []string{"-f"}, pkg: "zsh", modes: append(posixModes,
			// In quotes, '' is a quote when RC_QUOTES is set.
			shellMode{"rcquotes", "setopt rc_quotes\n", ". %s"},
			shellMode{"sh-emulation", "emulate sh\n", ". %s"})},
		{name: "busybox", bin: "busybox", args: []string{"sh"}, pkg: "busybox", modes: posixModes},
		{name: "fish", bin: "fish", args: []string{"--no-config"}, pkg: "fish", fish: true, modes: []shellMode{
			{"source", "", "source %s"},
			{"pipe", "", "cat %s | source"},
		}},
	}
)

// shellPath is the path of sh's program, which it installs with apt-get
// when it is missing and the test runs as root; otherwise it skips.
func shellPath(t *testing.T, sh shell) string {
	t.Helper()
	path, installed, err := aptget.Find(sh.bin, sh.pkg)
	if err != nil {
		t.Skip(err)
	}
	if installed {
		t.Logf("installed %s (Debian package %s) with apt-get", sh.bin, sh.pkg)
	}
	return path
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// quotePath quotes a path of the test's own for a script.
func quotePath(t *testing.T, p string) string {
	t.Helper()
	if strings.ContainsAny(p, `'\`) {
		t.Fatalf("the path %q cannot be quoted simply", p)
	}
	return "'" + p + "'"
}

// Each shell sources (or evaluates) the export and gets every value byte
// for byte, both as its own variable and in the environment of the
// programs it runs, in a UTF-8 locale and in the C locale; and no value
// runs a command.
func TestShellExport(t *testing.T) {
	entries, about, pwned := shellValues(t)
	t.Cleanup(func() { os.Remove(pwned) })
	entries = append(entries, randomValues(300)...)
	envBin, err := exec.LookPath("env")
	if err != nil {
		t.Fatal("no env program to dump the environment with:", err)
	}
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			path := shellPath(t, sh)
			format, ext := envfile.FormatSh, "sh"
			if sh.fish {
				format, ext = envfile.FormatFish, "fish"
			}
			out, err := format(entries)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			exportFile := filepath.Join(dir, "export."+ext)
			if err := os.WriteFile(exportFile, out, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, mode := range sh.modes {
				for _, locale := range []string{"C.UTF-8", "C"} {
					t.Run(mode.name+"/"+locale, func(t *testing.T) {
						got := runShell(t, sh, path, envBin, mode, locale, exportFile, entries)
						for _, e := range entries {
							if v, ok := got.vars[e.Name]; !ok || v != e.Value {
								t.Errorf("%s (%s): the shell's variable is %s, want %s", e.Name, about[e.Name], short(v), short(e.Value))
							}
							if v, ok := got.env[e.Name]; !ok || v != e.Value {
								t.Errorf("%s (%s): exported as %s (exported: %v), want %s", e.Name, about[e.Name], short(v), ok, short(e.Value))
							}
						}
						if _, err := os.Lstat(pwned); !errors.Is(err, os.ErrNotExist) {
							t.Fatalf("a value ran a command: %s exists (%v)", pwned, err)
						}
					})
				}
			}
		})
	}
}

type shellResult struct {
	vars map[string]string // as the shell's printf prints them
	env  map[string]string // as env prints the environment
}

// runShell loads exportFile in sh and reads back each entry's variable
// and the environment it passes to a child.
func runShell(t *testing.T, sh shell, path, envBin string, mode shellMode, locale, exportFile string, entries []envfile.Entry) shellResult {
	t.Helper()
	dir := t.TempDir()
	var script strings.Builder
	if !sh.fish {
		script.WriteString("set -e\n")
	}
	script.WriteString(mode.prelude)
	fmt.Fprintf(&script, mode.load+"\n", quotePath(t, exportFile))
	if sh.fish {
		script.WriteString("or exit 97\n")
	}
	for _, e := range entries {
		fmt.Fprintf(&script, "printf '%%s' \"$%s\" > %s\n", e.Name, quotePath(t, filepath.Join(dir, e.Name)))
	}
	fmt.Fprintf(&script, "%s -0 > %s\n", quotePath(t, envBin), quotePath(t, filepath.Join(dir, "ENV")))
	scriptFile := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(scriptFile, []byte(script.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append(sh.args, scriptFile)...)
	home := t.TempDir()
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"LC_ALL=" + locale,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
		"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
		"TERM=dumb",
	}
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", sh.name, err, lastLines(stderr.Bytes(), 10))
	}
	if stderr.Len() > 0 {
		t.Errorf("%s wrote to stderr:\n%s", sh.name, lastLines(stderr.Bytes(), 10))
	}
	res := shellResult{vars: map[string]string{}, env: map[string]string{}}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name))
		if err != nil {
			t.Fatal(err)
		}
		res.vars[e.Name] = string(b)
	}
	dump, err := os.ReadFile(filepath.Join(dir, "ENV"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(strings.TrimSuffix(string(dump), "\x00"), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			res.env[k] = v
		}
	}
	return res
}

// short shows a value in a failure message, cut if it is long.
func short(v string) string {
	if len(v) > 80 {
		return fmt.Sprintf("%q… (%d bytes)", v[:80], len(v))
	}
	return fmt.Sprintf("%q", v)
}

func TestFormatShOutput(t *testing.T) {
	got, err := envfile.FormatSh([]envfile.Entry{
		{Name: "A", Value: "x y"},
		{Name: "B", Value: "$HOME `id` \\n"},
		{Name: "C", Value: "it's"},
		{Name: "D", Value: "l1\nl2\n"},
		{Name: "E", Value: ""},
		{Name: "F", Value: "''"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `export A='x y'
export B='$HOME ` + "`id`" + ` \n'
export C='it'\''s'
export D='l1
l2
'
export E=''
export F=''\'''\'''
`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if got, err := envfile.FormatSh(nil); err != nil || len(got) != 0 {
		t.Fatalf("no entries: %q, %v", got, err)
	}
}

func TestFormatFishOutput(t *testing.T) {
	got, err := envfile.FormatFish([]envfile.Entry{
		{Name: "A", Value: "x y"},
		{Name: "B", Value: "$HOME (id) \\n"},
		{Name: "C", Value: "it's"},
		{Name: "D", Value: "l1\nl2\n"},
		{Name: "E", Value: ""},
		{Name: "F", Value: `\'\`},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `set -gx A 'x y'
set -gx B '$HOME (id) \\n'
set -gx C 'it\'s'
set -gx D 'l1
l2
'
set -gx E ''
set -gx F '\\\'\\'
`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// The shell formats refuse what a shell cannot hold, naming the variable
// and never quoting its value.
func TestFormatShellRefuses(t *testing.T) {
	const secret = "hunter2-S3CRET"
	for _, tc := range []struct {
		e        []envfile.Entry
		sh, fish string // what the error says; "" if it is accepted
		named    string // what the error must name the variable by
	}{
		{[]envfile.Entry{{Name: "A-B", Value: secret}}, "not an environment variable name", "not an environment variable name", "entry 1"},
		{[]envfile.Entry{{Name: "OK", Value: "x"}, {Name: "", Value: secret}}, "not an environment variable name", "not an environment variable name", "entry 2"},
		{[]envfile.Entry{{Name: "9A", Value: secret}}, "not an environment variable name", "not an environment variable name", "entry 1"},
		{[]envfile.Entry{{Name: "A", Value: "x"}, {Name: "A", Value: secret}}, "twice", "twice", "A"},
		{[]envfile.Entry{{Name: "NUL", Value: secret + "\x00" + secret}}, "NUL byte", "NUL byte", "NUL"},
		{[]envfile.Entry{{Name: "BIN", Value: secret + "\xff"}}, "", "", "BIN"},
	} {
		for _, f := range []struct {
			format envfile.Format
			msg    string
		}{{envfile.Sh, tc.sh}, {envfile.Fish, tc.fish}} {
			_, err := f.format.Format(tc.e)
			switch {
			case f.msg == "" && err != nil:
				t.Errorf("%s %+v: %v, want it written", f.format, tc.e, err)
			case f.msg == "":
			case err == nil || !strings.Contains(err.Error(), f.msg) || !strings.Contains(err.Error(), tc.named):
				t.Errorf("%s %+v: %v, want an error naming %s and saying %q", f.format, tc.e, err, tc.named, f.msg)
			case strings.Contains(err.Error(), "hunter2"):
				t.Errorf("%s: the error quotes the value: %v", f.format, err)
			}
		}
	}
}

func TestOutputFormats(t *testing.T) {
	for _, f := range []envfile.Format{envfile.Sh, envfile.Fish} {
		if _, err := envfile.Parse(f, []byte("export A='1'\n")); !errors.Is(err, envfile.ErrOutputOnly) || !strings.Contains(err.Error(), "output-only") {
			t.Errorf("Parse(%s): %v, want an output-only error", f, err)
		}
		if _, err := envfile.ParseFormat(string(f)); !errors.Is(err, envfile.ErrOutputOnly) || !strings.Contains(err.Error(), "want dotenv, json or yaml") {
			t.Errorf("ParseFormat(%s): %v, want an output-only error", f, err)
		}
		if f.ContentType() != "text/plain; charset=utf-8" {
			t.Errorf("%s: content type %s", f, f.ContentType())
		}
	}
	wantExt := map[envfile.Format]string{envfile.Dotenv: "env", envfile.JSON: "json", envfile.YAML: "yaml", envfile.Sh: "sh", envfile.Fish: "fish"}
	for _, f := range envfile.OutputFormats {
		if g, err := envfile.ParseOutputFormat(string(f)); err != nil || g != f {
			t.Errorf("ParseOutputFormat(%s) = %s, %v", f, g, err)
		}
		if f.Extension() != wantExt[f] {
			t.Errorf("%s: extension %q, want %q", f, f.Extension(), wantExt[f])
		}
		if _, err := f.Format([]envfile.Entry{{Name: "A", Value: "1"}}); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if len(envfile.OutputFormats) != len(wantExt) {
		t.Errorf("OutputFormats = %v", envfile.OutputFormats)
	}
	for _, s := range []string{"toml", "bash", "SH", ""} {
		if _, err := envfile.ParseOutputFormat(s); err == nil || errors.Is(err, envfile.ErrOutputOnly) {
			t.Errorf("ParseOutputFormat(%q): %v, want unknown", s, err)
		}
	}
}

// The adversarial values that are UTF-8 text survive every file format
// too.
func TestShellValuesRoundTripFiles(t *testing.T) {
	all, about, _ := shellValues(t)
	in := utf8Only(all)
	for _, f := range envfile.Formats {
		data, err := f.Format(in)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out, err := envfile.Parse(f, data)
		if err != nil {
			t.Fatalf("%s: parsing what was written: %v", f, err)
		}
		if len(out) != len(in) {
			t.Fatalf("%s: %d entries back, want %d", f, len(out), len(in))
		}
		for i := range in {
			if out[i].Name != in[i].Name || out[i].Value != in[i].Value {
				t.Errorf("%s: %s (%s) came back as %s=%s, want %s", f, in[i].Name, about[in[i].Name], out[i].Name, short(out[i].Value), short(in[i].Value))
			}
		}
	}
}

// readSh reads back FormatSh's output with the POSIX shell's quoting
// rules: in single quotes every byte is literal, and outside them \' is a
// quote.
func readSh(out string) ([]envfile.Entry, error) {
	var entries []envfile.Entry
	for out != "" {
		rest, ok := strings.CutPrefix(out, "export ")
		if !ok {
			return nil, fmt.Errorf("a line does not start with export: %q", out)
		}
		name, rest, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, fmt.Errorf("no '=' in %q", out)
		}
		var b strings.Builder
		for {
			switch {
			case strings.HasPrefix(rest, "'"):
				i := strings.IndexByte(rest[1:], '\'')
				if i < 0 {
					return nil, fmt.Errorf("unclosed quote in %q", rest)
				}
				b.WriteString(rest[1 : 1+i])
				rest = rest[2+i:]
				continue
			case strings.HasPrefix(rest, `\'`):
				b.WriteByte('\'')
				rest = rest[2:]
				continue
			case strings.HasPrefix(rest, "\n"):
			default:
				return nil, fmt.Errorf("unquoted text in %q", rest)
			}
			break
		}
		entries = append(entries, envfile.Entry{Name: name, Value: b.String()})
		out = rest[1:]
	}
	return entries, nil
}

// readFish reads back FormatFish's output with fish's quoting rules: in
// single quotes, \\ and \' are escapes and every other character is
// literal.
func readFish(out string) ([]envfile.Entry, error) {
	var entries []envfile.Entry
	for out != "" {
		rest, ok := strings.CutPrefix(out, "set -gx ")
		if !ok {
			return nil, fmt.Errorf("a line does not start with set -gx: %q", out)
		}
		name, rest, ok := strings.Cut(rest, " '")
		if !ok {
			return nil, fmt.Errorf("no quote in %q", out)
		}
		var b strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '\''; i++ {
			if rest[i] == '\\' && i+1 < len(rest) && (rest[i+1] == '\\' || rest[i+1] == '\'') {
				i++
			}
			b.WriteByte(rest[i])
		}
		if !strings.HasPrefix(rest[i:], "'\n") {
			return nil, fmt.Errorf("no closing quote and newline in %q", rest)
		}
		entries = append(entries, envfile.Entry{Name: name, Value: b.String()})
		out = rest[i+2:]
	}
	return entries, nil
}

// Whatever the value, the shell formats write one quoted word that the
// shell's quoting rules read back as the value.
func FuzzFormatShell(f *testing.F) {
	for _, v := range hostile {
		f.Add(v)
	}
	f.Add("'\\''")
	f.Add("\xff'\\")
	f.Add("x'\nexport AFTER='")
	f.Fuzz(func(t *testing.T, v string) {
		in := []envfile.Entry{{Name: "BEFORE", Value: "b"}, {Name: "V", Value: v}, {Name: "AFTER", Value: "a"}}
		for _, tc := range []struct {
			format func([]envfile.Entry) ([]byte, error)
			read   func(string) ([]envfile.Entry, error)
		}{{envfile.FormatSh, readSh}, {envfile.FormatFish, readFish}} {
			out, err := tc.format(in)
			if strings.IndexByte(v, 0) >= 0 {
				if err == nil {
					t.Fatalf("%q written", v)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			back, err := tc.read(string(out))
			if err != nil {
				t.Fatalf("%v\n%q", err, out)
			}
			if len(back) != len(in) {
				t.Fatalf("%d entries back, want %d\n%q", len(back), len(in), out)
			}
			for i := range in {
				if back[i].Name != in[i].Name || back[i].Value != in[i].Value {
					t.Fatalf("%s=%q came back as %s=%q\n%q", in[i].Name, in[i].Value, back[i].Name, back[i].Value, out)
				}
			}
		}
	})
}

func BenchmarkFormatSh(b *testing.B) {
	r := mrand.New(mrand.NewPCG(1, 2))
	entries := make([]envfile.Entry, 100)
	size := 0
	for i := range entries {
		v := make([]byte, 100)
		for j := range v {
			v[j] = byte(' ' + r.IntN(95)) // printable ASCII, quotes included
		}
		entries[i] = envfile.Entry{Name: fmt.Sprintf("SECRET_%03d", i), Value: string(v)}
		size += len(v)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envfile.FormatSh(entries); err != nil {
			b.Fatal(err)
		}
	}
}
