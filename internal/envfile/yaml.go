package envfile

import (
	"bytes"
	"errors"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ParseYAML reads a YAML mapping of variables, in mapping order. An empty
// document has no variables.
func ParseYAML(data []byte) ([]Entry, error) {
	if err := checkUTF8(YAML, data); err != nil {
		return nil, err
	}
	fail := func(line int, msg string) error { return &SyntaxError{Format: YAML, Line: line, Msg: msg} }
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		// The parser's messages may quote the input; say only where.
		return nil, fail(yamlErrorLine(err), "malformed YAML")
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fail(extra.Line, "more than one YAML document")
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	m := doc.Content[0]
	if m.Kind == yaml.ScalarNode && m.Tag == "!!null" {
		return nil, nil
	}
	if m.Kind != yaml.MappingNode {
		return nil, fail(m.Line, "want one mapping of NAME: value")
	}
	var out []Entry
	names := seen{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode || !ValidName(k.Value) {
			return nil, fail(k.Line, "a key is not an environment variable name (a letter or '_', then letters, digits or '_')")
		}
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if v.Kind != yaml.ScalarNode {
			return nil, fail(v.Line, "the value of "+k.Value+" is a mapping or sequence; want a string")
		}
		var value string
		switch v.Tag {
		case "!!str", "!!int", "!!float", "!!bool", "":
			value = v.Value
		case "!!null":
			value = ""
		default:
			return nil, fail(v.Line, "the value of "+k.Value+" has tag "+v.Tag+"; want a string")
		}
		if err := names.add(YAML, k.Value, k.Line); err != nil {
			return nil, err
		}
		out = append(out, Entry{Name: k.Value, Value: value, Line: k.Line})
	}
	return out, nil
}

// yamlErrorLine is the line a YAML error names, or 0.
func yamlErrorLine(err error) int {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return 0
	}
	// Messages read "yaml: line N: …".
	var line int
	msg := err.Error()
	const prefix = "yaml: line "
	if i := strings.Index(msg, prefix); i >= 0 {
		for _, c := range msg[i+len(prefix):] {
			if c < '0' || c > '9' {
				break
			}
			line = line*10 + int(c-'0')
		}
	}
	return line
}

// needsDoubleQuotes reports whether v holds control or line-breaking
// characters, which only YAML's double-quoted style escapes reliably.
func needsDoubleQuotes(v string) bool {
	for _, r := range v {
		if r < 0x20 || r == 0x7f || r == 0x85 || r == 0x2028 || r == 0x2029 || r == 0xfeff {
			return true
		}
	}
	return false
}

// FormatYAML writes entries as one YAML mapping, in entry order. Every
// value is a string: those that would read as another type are quoted.
func FormatYAML(entries []Entry) ([]byte, error) {
	if err := checkOut(entries); err != nil {
		return nil, err
	}
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, e := range entries {
		v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: e.Value}
		if needsDoubleQuotes(e.Value) {
			// The emitter's other styles cannot carry every such value
			// (a line starting with a tab, for one) back to its parser.
			v.Style = yaml.DoubleQuotedStyle
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: e.Name}, v)
	}
	if len(entries) == 0 {
		return []byte("{}\n"), nil
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{m}}); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
