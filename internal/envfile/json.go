package envfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ParseJSON reads a JSON object of variables, in member order.
func ParseJSON(data []byte) ([]Entry, error) {
	if err := checkUTF8(JSON, data); err != nil {
		return nil, err
	}
	lineAt := func(off int64) int { return 1 + bytes.Count(data[:min(int(off), len(data))], []byte("\n")) }
	fail := func(off int64, msg string) error { return &SyntaxError{Format: JSON, Line: lineAt(off), Msg: msg} }
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonError(err, lineAt, dec.InputOffset())
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fail(dec.InputOffset(), "want one object of NAME: value members")
	}
	var out []Entry
	names := seen{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(err, lineAt, dec.InputOffset())
		}
		line := lineAt(dec.InputOffset())
		name, _ := tok.(string)
		if !ValidName(name) {
			return nil, fail(dec.InputOffset(), "a member name is not an environment variable name (a letter or '_', then letters, digits or '_')")
		}
		tok, err = dec.Token()
		if err != nil {
			return nil, jsonError(err, lineAt, dec.InputOffset())
		}
		var value string
		switch v := tok.(type) {
		case string:
			value = v
		case json.Number:
			value = v.String()
		case bool:
			value = fmt.Sprint(v)
		case nil:
			value = ""
		default:
			return nil, fail(dec.InputOffset(), "the value of "+name+" is an object or array; want a string")
		}
		if err := names.add(JSON, name, line); err != nil {
			return nil, err
		}
		out = append(out, Entry{Name: name, Value: value, Line: line})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, jsonError(err, lineAt, dec.InputOffset())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fail(dec.InputOffset(), "data after the object")
	}
	return out, nil
}

// jsonError describes a decoding error without quoting the input.
func jsonError(err error, lineAt func(int64) int, off int64) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset
	}
	msg := "malformed JSON"
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		msg = "the JSON ends too early"
	}
	return &SyntaxError{Format: JSON, Line: lineAt(off), Msg: msg}
}

// FormatJSON writes entries as one JSON object, a member per line, in
// entry order.
func FormatJSON(entries []Entry) ([]byte, error) {
	if err := checkOut(entries); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if len(entries) == 0 {
		return []byte("{}\n"), nil
	}
	b.WriteString("{\n")
	for i, e := range entries {
		b.WriteString("  ")
		writeJSONString(&b, e.Name)
		b.WriteString(": ")
		writeJSONString(&b, e.Value)
		if i < len(entries)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}
