// Package envfile reads and writes the files that carry environment
// variables: dotenv (.env), JSON objects and YAML mappings. It also
// writes, without reading, shell code that exports them (sh and fish).
// The server imports and exports secrets with it, and the CLI reuses it.
//
// # Dotenv
//
// The dotenv grammar read here is the common one (docker compose,
// python-dotenv, godotenv), without any substitution:
//
//   - One NAME=value per line; whitespace around '=' is ignored, and a
//     leading "export " is allowed. Names are environment variable names:
//     a letter or '_', then letters, digits or '_'.
//   - Blank lines and lines whose first non-blank character is '#' are
//     comments. After an unquoted value, a '#' preceded by a space or tab
//     starts a comment; after a quoted value, so does any '#'.
//   - An unquoted value runs to the end of its line, with surrounding
//     blanks removed; backslashes, quotes and '$' in it are literal.
//   - A value in single quotes or backticks is literal up to the next
//     quote of the same kind, newlines included.
//   - A value in double quotes may span lines and knows the escapes \n,
//     \r, \t, \\, \", \$ and \`; a backslash before a newline removes
//     both (a continuation, as in the shell); a backslash before any other
//     character stays as it is.
//   - "$NAME", "${NAME}" and "$(…)" are never expanded, whatever the
//     quoting: a value is exactly what the file says.
//   - CRLF line endings and a UTF-8 byte order mark are accepted.
//
// The existing Go parsers do not fit: joho/godotenv expands $VAR inside
// unquoted and double-quoted values (so "pa$HOME" reads as "pa"), and
// hashicorp/go-envparse refuses values that span lines. A value that a
// secrets store hands back must be byte for byte what was put in, so
// this package has its own small tokenizer.
//
// FormatDotenv writes each value in single quotes, where nothing is
// special, unless it holds a single quote, a carriage return or a
// newline; those values go in double quotes with every special character
// escaped. What it writes parses back to the same values.
//
// # JSON and YAML
//
// JSON files are one object whose members are the variables; YAML files
// are one mapping. Values are strings; numbers and booleans are taken as
// the text they are written as ("8080", "true"), and null as the empty
// string. Nested objects, arrays and sequences are refused.
//
// # Shell code
//
// FormatSh and FormatFish write one line per variable that sets and
// exports it, for `. file` or `eval "$(stele export --format sh)"` in a
// POSIX shell and `source file` in fish. Every value is in single quotes,
// so the shell sets it byte for byte and expands nothing. Values need not
// be UTF-8 (every shell tested keeps any byte but NUL). These formats
// are output only: Parse refuses them (ErrOutputOnly), and ParseFormat,
// which names the formats an import or a file may be in, does not know
// them; ParseOutputFormat does.
//
// # Errors
//
// Every file is checked whole: invalid UTF-8, a malformed line, an
// invalid or repeated name fails the parse with a *SyntaxError naming the
// line. Errors never quote the file's text (it may hold secret values),
// only names that are known to be names.
package envfile

import (
	"errors"
	"fmt"
	"regexp"
	"unicode/utf8"
)

// Entry is one variable: its name, its value, and the line of the file it
// starts on (1-based; 0 when not read from a file).
type Entry struct {
	Name  string
	Value string
	Line  int
}

// Format is a file format, or an output-only format of shell code.
type Format string

// The formats this package reads and writes.
const (
	Dotenv Format = "dotenv"
	JSON   Format = "json"
	YAML   Format = "yaml"
)

// The formats this package writes but does not read: shell code that
// exports the variables (see FormatSh and FormatFish).
const (
	Sh   Format = "sh"
	Fish Format = "fish"
)

// Formats lists every format this package reads and writes, in a stable
// order.
var Formats = []Format{Dotenv, JSON, YAML}

// OutputFormats lists every format this package writes, those of Formats
// first, in a stable order.
var OutputFormats = []Format{Dotenv, JSON, YAML, Sh, Fish}

// ErrOutputOnly is matched (errors.Is) by the errors of Parse and
// ParseFormat for a format this package writes but does not read.
var ErrOutputOnly = errors.New("envfile: output-only format")

// ParseFormat returns the format named s, one this package reads and
// writes: dotenv, json or yaml. The output-only formats sh and fish fail
// with an error that matches ErrOutputOnly; use ParseOutputFormat where
// they are welcome.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Dotenv, JSON, YAML:
		return f, nil
	case Sh, Fish:
		return "", fmt.Errorf("%w: %s is shell code to source, written but never read: want dotenv, json or yaml", ErrOutputOnly, f)
	}
	return "", fmt.Errorf("envfile: unknown format %q: want dotenv, json or yaml", s)
}

// ParseOutputFormat returns the format named s, one this package writes:
// dotenv, json, yaml, sh or fish.
func ParseOutputFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Dotenv, JSON, YAML, Sh, Fish:
		return f, nil
	}
	return "", fmt.Errorf("envfile: unknown format %q: want dotenv, json, yaml, sh or fish", s)
}

// ContentType is the media type of a format. Shell code is served as
// text/plain: nothing should run it but the shell it is piped to.
func (f Format) ContentType() string {
	switch f {
	case JSON:
		return "application/json"
	case YAML:
		return "application/yaml"
	}
	return "text/plain; charset=utf-8"
}

// Extension is the usual file name extension of a format, without the
// dot: env, json, yaml, sh or fish ("" for an unknown format).
func (f Format) Extension() string {
	switch f {
	case Dotenv:
		return "env"
	case JSON, YAML, Sh, Fish:
		return string(f)
	}
	return ""
}

// ErrSyntax is matched (errors.Is) by every *SyntaxError.
var ErrSyntax = errors.New("envfile: syntax error")

// SyntaxError says where a file is malformed.
type SyntaxError struct {
	Format Format
	// Line is the 1-based line where the problem is (0: the whole file).
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s line %d: %s", e.Format, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Format, e.Msg)
}

// Is makes errors.Is(err, ErrSyntax) true.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidName reports whether s is an environment variable name: a letter
// or '_', then letters, digits or '_'.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Parse reads a file in format f.
func Parse(f Format, data []byte) ([]Entry, error) {
	switch f {
	case Dotenv:
		return ParseDotenv(data)
	case JSON:
		return ParseJSON(data)
	case YAML:
		return ParseYAML(data)
	case Sh, Fish:
		return nil, fmt.Errorf("%w: %s is shell code to source, which this package writes but does not read", ErrOutputOnly, f)
	}
	return nil, fmt.Errorf("envfile: unknown format %q", f)
}

// Format writes entries in format f, any of OutputFormats.
func (f Format) Format(entries []Entry) ([]byte, error) {
	switch f {
	case Dotenv:
		return FormatDotenv(entries)
	case JSON:
		return FormatJSON(entries)
	case YAML:
		return FormatYAML(entries)
	case Sh:
		return FormatSh(entries)
	case Fish:
		return FormatFish(entries)
	}
	return nil, fmt.Errorf("envfile: unknown format %q", f)
}

// checkUTF8 fails unless data is valid UTF-8, naming the first bad line.
func checkUTF8(f Format, data []byte) error {
	if utf8.Valid(data) {
		return nil
	}
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		if r == '\n' {
			line++
		}
		i += size
	}
	return &SyntaxError{Format: f, Line: line, Msg: "the file is not valid UTF-8 text"}
}

// seen detects repeated names.
type seen map[string]int

func (s seen) add(f Format, name string, line int) error {
	if first, ok := s[name]; ok {
		return &SyntaxError{Format: f, Line: line, Msg: fmt.Sprintf("%s is defined twice (first on line %d)", name, first)}
	}
	s[name] = line
	return nil
}

// checkOut validates what is about to be written to a text file.
func checkOut(entries []Entry) error {
	return checkEntries(entries, func(e Entry) error {
		if !utf8.ValidString(e.Value) {
			return fmt.Errorf("envfile: the value of %s is not UTF-8 text", e.Name)
		}
		return nil
	})
}

// checkEntries fails on an invalid or repeated name, or on the first
// error of checkValue, which is called for each entry whose name is valid.
// Its errors name variables but never quote values or invalid names.
func checkEntries(entries []Entry, checkValue func(Entry) error) error {
	names := make(map[string]bool, len(entries))
	for i, e := range entries {
		if !ValidName(e.Name) {
			return fmt.Errorf("envfile: entry %d: the name is not an environment variable name", i+1)
		}
		if names[e.Name] {
			return fmt.Errorf("envfile: %s appears twice", e.Name)
		}
		names[e.Name] = true
		if err := checkValue(e); err != nil {
			return err
		}
	}
	return nil
}
