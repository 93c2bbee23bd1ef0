package envfile

import (
	"bytes"
	"strings"
)

// ParseDotenv reads a dotenv file (see the package documentation for the
// grammar). It returns the variables in file order.
func ParseDotenv(data []byte) ([]Entry, error) {
	if err := checkUTF8(Dotenv, data); err != nil {
		return nil, err
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	src := strings.ReplaceAll(string(data), "\r\n", "\n")
	p := &dotenvParser{s: src, line: 1}
	var out []Entry
	names := seen{}
	for {
		e, ok, err := p.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		if err := names.add(Dotenv, e.Name, e.Line); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
}

type dotenvParser struct {
	s    string
	pos  int
	line int
}

func (p *dotenvParser) fail(line int, msg string) error {
	return &SyntaxError{Format: Dotenv, Line: line, Msg: msg}
}

func (p *dotenvParser) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

func (p *dotenvParser) eof() bool { return p.pos >= len(p.s) }

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

func (p *dotenvParser) skipBlanks() {
	for !p.eof() && isBlank(p.s[p.pos]) {
		p.pos++
	}
}

// skipLine moves past the end of the current line.
func (p *dotenvParser) skipLine() {
	if i := strings.IndexByte(p.s[p.pos:], '\n'); i >= 0 {
		p.pos += i + 1
		p.line++
		return
	}
	p.pos = len(p.s)
}

func isNameStart(c byte) bool { return c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
func isNameByte(c byte) bool  { return isNameStart(c) || c >= '0' && c <= '9' }

// name reads a name at the current position ("" if there is none).
func (p *dotenvParser) name() string {
	start := p.pos
	if p.eof() || !isNameStart(p.s[p.pos]) {
		return ""
	}
	for !p.eof() && isNameByte(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

// next reads the next variable; ok is false at the end of the file.
func (p *dotenvParser) next() (e Entry, ok bool, err error) {
	for {
		p.skipBlanks()
		switch {
		case p.eof():
			return Entry{}, false, nil
		case p.peek() == '\n':
			p.pos++
			p.line++
			continue
		case p.peek() == '#':
			p.skipLine()
			continue
		}
		break
	}
	line := p.line
	name := p.name()
	if name == "export" && isBlank(p.peek()) {
		p.skipBlanks()
		name = p.name()
	}
	if name == "" {
		return Entry{}, false, p.fail(line, "expected NAME=value, with NAME a letter or '_' followed by letters, digits or '_'")
	}
	p.skipBlanks()
	if p.peek() != '=' {
		return Entry{}, false, p.fail(line, "expected '=' after the name")
	}
	p.pos++
	p.skipBlanks()
	var value string
	switch q := p.peek(); q {
	case '\'', '`':
		value, err = p.literal(q, line)
	case '"':
		value, err = p.doubleQuoted(line)
	default:
		value = p.unquoted()
		return Entry{Name: name, Value: value, Line: line}, true, nil
	}
	if err != nil {
		return Entry{}, false, err
	}
	// After a closing quote: blanks, then a comment or the end of the line.
	p.skipBlanks()
	switch {
	case p.eof():
	case p.peek() == '\n' || p.peek() == '#':
		p.skipLine()
	default:
		return Entry{}, false, p.fail(p.line, "unexpected text after the closing quote")
	}
	return Entry{Name: name, Value: value, Line: line}, true, nil
}

// unquoted reads a value up to the end of the line or a comment.
func (p *dotenvParser) unquoted() string {
	start := p.pos
	end := len(p.s)
	if i := strings.IndexByte(p.s[start:], '\n'); i >= 0 {
		end = start + i
	}
	v := p.s[start:end]
	for i := 0; i < len(v); i++ {
		if v[i] == '#' && (i > 0 && isBlank(v[i-1]) || i == 0 && start > 0 && isBlank(p.s[start-1])) {
			v = v[:i]
			break
		}
	}
	p.pos = end
	if end < len(p.s) {
		p.pos++
		p.line++
	}
	return strings.TrimRight(v, " \t")
}

// literal reads a value in single quotes or backticks, taken as it is.
func (p *dotenvParser) literal(q byte, line int) (string, error) {
	p.pos++ // the opening quote
	i := strings.IndexByte(p.s[p.pos:], q)
	if i < 0 {
		return "", p.fail(line, "the quoted value is never closed")
	}
	v := p.s[p.pos : p.pos+i]
	p.line += strings.Count(v, "\n")
	p.pos += i + 1
	return v, nil
}

// doubleQuoted reads a value in double quotes, with its escapes.
func (p *dotenvParser) doubleQuoted(line int) (string, error) {
	p.pos++ // the opening quote
	var b strings.Builder
	for {
		if p.eof() {
			return "", p.fail(line, "the quoted value is never closed")
		}
		c := p.s[p.pos]
		switch c {
		case '"':
			p.pos++
			return b.String(), nil
		case '\n':
			p.line++
			b.WriteByte(c)
			p.pos++
		case '\\':
			if p.pos+1 >= len(p.s) {
				return "", p.fail(line, "the quoted value is never closed")
			}
			n := p.s[p.pos+1]
			p.pos += 2
			switch n {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '\\', '"', '$', '`':
				b.WriteByte(n)
			case '\n': // a continuation: both go
				p.line++
			default:
				b.WriteByte('\\')
				b.WriteByte(n)
			}
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
}

// FormatDotenv writes entries as a dotenv file, one line per variable
// unless a value spans lines (then it is written with \n escapes, still
// on one line). It fails on a name that is not an environment variable
// name, a repeated name or a value that is not UTF-8 text.
func FormatDotenv(entries []Entry) ([]byte, error) {
	if err := checkOut(entries); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, e := range entries {
		b.WriteString(e.Name)
		b.WriteByte('=')
		writeDotenvValue(&b, e.Value)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

func writeDotenvValue(b *bytes.Buffer, v string) {
	if !strings.ContainsAny(v, "'\r\n") {
		b.WriteByte('\'')
		b.WriteString(v)
		b.WriteByte('\'')
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\', '"', '$', '`':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}
