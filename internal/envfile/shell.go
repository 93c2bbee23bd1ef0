package envfile

import (
	"bytes"
	"fmt"
	"strings"
)

// FormatSh writes entries as POSIX shell code that sets and exports
// them, for `. file` or `eval "$(…)"` in bash, dash, zsh or busybox sh:
// one line per variable, in entry order:
//
//	export NAME='value'
//	export QUOTE='it'\''s'
//
// A single quote in the value closes the quoted text, is written escaped
// and reopens it, as in the second line. Inside single quotes every other
// byte is literal, newlines included, so the shell sets exactly the
// value: no expansion of $, `…` or $(…), no history expansion of !, no
// escapes, and no option parsing of a value that starts with '-'. A
// value that ends in newlines still ends in a quote, so the trailing
// newlines that "$(…)" strips are never the value's.
//
// Values need not be UTF-8: bash, dash, zsh and busybox sh keep every
// byte but NUL as it is, in a UTF-8 locale or the C locale.
//
// It fails on a name that is not an environment variable name, a repeated
// name, or a value holding a NUL byte, which no environment can carry. A
// name a shell reserves (bash's UID, zsh's path) is written like any
// other, and the shell that reads the line refuses or reinterprets it.
func FormatSh(entries []Entry) ([]byte, error) {
	if err := checkShell(entries); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(shellSize(entries, len("export =''\n")))
	for _, e := range entries {
		b.WriteString("export ")
		b.WriteString(e.Name)
		b.WriteString("='")
		v := e.Value
		for {
			i := strings.IndexByte(v, '\'')
			if i < 0 {
				break
			}
			b.WriteString(v[:i])
			b.WriteString(`'\''`)
			v = v[i+1:]
		}
		b.WriteString(v)
		b.WriteString("'\n")
	}
	return b.Bytes(), nil
}

// FormatFish writes entries as fish code that sets and exports them,
// for `source file` or `… | source`: one line per variable, in entry
// order:
//
//	set -gx NAME 'value'
//	set -gx QUOTE 'it\'s \\o/'
//
// Inside fish's single quotes only \\ and \' are escapes, so each
// backslash in the value is written \\ and each single quote \'; every
// other byte is literal, newlines included, and nothing is expanded. The
// variables are global, so sourcing the file inside a function sets them
// for the whole session. Fish takes a name that ends in PATH as a list
// split on colons, and exports it joined with colons, as it was.
//
// Values need not be UTF-8: fish (3.6) keeps each byte of invalid UTF-8
// as a character of a private-use range and writes the byte back when it
// prints or exports the variable, so every byte but NUL survives, in a
// UTF-8 locale or the C locale. (Fish's string builtins count such a
// byte as one character.)
//
// It fails on a name that is not an environment variable name, a repeated
// name, or a value holding a NUL byte, which no environment can carry. A
// name fish reserves (status, PWD) is written like any other, and fish
// refuses it when it reads the line.
func FormatFish(entries []Entry) ([]byte, error) {
	if err := checkShell(entries); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(shellSize(entries, len("set -gx  ''\n")))
	for _, e := range entries {
		b.WriteString("set -gx ")
		b.WriteString(e.Name)
		b.WriteString(" '")
		v := e.Value
		for {
			i := strings.IndexAny(v, `\'`)
			if i < 0 {
				break
			}
			b.WriteString(v[:i])
			b.WriteByte('\\')
			b.WriteByte(v[i])
			v = v[i+1:]
		}
		b.WriteString(v)
		b.WriteString("'\n")
	}
	return b.Bytes(), nil
}

// shellSize is a guess at the size of a shell export of entries, for
// lines of overhead bytes besides the name and value.
func shellSize(entries []Entry, overhead int) int {
	n := 0
	for _, e := range entries {
		n += overhead + len(e.Name) + len(e.Value) + len(e.Value)/16
	}
	return n
}

// checkShell validates what is about to be written as shell code.
func checkShell(entries []Entry) error {
	return checkEntries(entries, func(e Entry) error {
		if strings.IndexByte(e.Value, 0) >= 0 {
			return fmt.Errorf("envfile: the value of %s holds a NUL byte, which no environment variable can hold", e.Name)
		}
		return nil
	})
}
