package eventstore

import (
	"unicode/utf8"
)

// Limits on what one append may carry. Backends MUST refuse input over
// them with an error matching ErrInvalid, writing nothing.
const (
	// MaxStreamIDLen is the longest stream id, in bytes.
	MaxStreamIDLen = 400
	// MaxTypeLen is the longest event type name, in bytes.
	MaxTypeLen = 100
	// MaxMetadataLen is the longest value of one metadata field, in bytes.
	MaxMetadataLen = 1024
	// MaxDataSize is the largest event payload, in bytes (256 KiB).
	MaxDataSize = 256 << 10
	// MaxAppendEvents is the most events one append may carry.
	MaxAppendEvents = 1000
	// MaxAppendSize is the largest total payload of one append (4 MiB).
	MaxAppendSize = 4 << 20
)

// ValidStreamID reports whether s is a well-formed stream id: 1 to
// MaxStreamIDLen bytes of ASCII letters, digits and . _ : / - starting with
// a letter or digit.
func ValidStreamID(s string) bool {
	if len(s) == 0 || len(s) > MaxStreamIDLen || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '/' && c != '-' {
			return false
		}
	}
	return true
}

// ValidType reports whether s is a well-formed event type name: two or
// more dot-separated segments, each a lowercase letter followed by
// lowercase letters, digits or underscores, at most MaxTypeLen bytes in
// all ("secret.created", "keyset.key_added").
func ValidType(s string) bool {
	if len(s) == 0 || len(s) > MaxTypeLen {
		return false
	}
	segments, start := 0, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case start:
			if c < 'a' || c > 'z' {
				return false
			}
			start = false
			segments++
		case c == '.':
			start = true
		case (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_':
		default:
			return false
		}
	}
	return !start && segments >= 2
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// ValidateAppend checks an append's input against the rules and limits of
// the contract. It returns an error matching ErrInvalid naming the first
// problem, or nil. Backends call it before writing anything.
func ValidateAppend(stream string, expected ExpectedVersion, events []Event) error {
	if !ValidStreamID(stream) {
		return invalid("stream id", "%q: want 1-%d characters of letters, digits and . _ : / - starting with a letter or digit", clip(stream), MaxStreamIDLen)
	}
	if expected < StreamExists {
		return invalid("expected version", "%d is not a version, NoStream, Any or StreamExists", int64(expected))
	}
	if len(events) == 0 {
		return invalid("events", "an append needs at least one event")
	}
	if len(events) > MaxAppendEvents {
		return invalid("events", "%d events in one append; the limit is %d", len(events), MaxAppendEvents)
	}
	total := 0
	seen := make(map[ID]struct{}, len(events))
	for i := range events {
		e := &events[i]
		if e.ID.IsZero() {
			return invalid("event id", "event %d has the zero id", i)
		}
		if _, dup := seen[e.ID]; dup {
			return invalid("event id", "event %d repeats id %s within one append", i, e.ID)
		}
		seen[e.ID] = struct{}{}
		if !ValidType(e.Type) {
			return invalid("event type", "%q: want dot-separated lowercase segments such as \"secret.created\", at most %d bytes", clip(e.Type), MaxTypeLen)
		}
		if len(e.Data) > MaxDataSize {
			return invalid("event data", "event %d carries %d bytes; the limit is %d", i, len(e.Data), MaxDataSize)
		}
		total += len(e.Data)
		if err := validateMetadata(&e.Metadata); err != nil {
			return err
		}
	}
	if total > MaxAppendSize {
		return invalid("events", "%d bytes of data in one append; the limit is %d", total, MaxAppendSize)
	}
	return nil
}

func validateMetadata(m *Metadata) error {
	for _, f := range [...]struct{ name, v string }{
		{"metadata actor", m.Actor},
		{"metadata tenant", m.Tenant},
		{"metadata request id", m.RequestID},
		{"metadata client address", m.ClientAddr},
		{"metadata causation id", m.CausationID},
		{"metadata correlation id", m.CorrelationID},
	} {
		if len(f.v) > MaxMetadataLen {
			return invalid(f.name, "%d bytes; the limit is %d", len(f.v), MaxMetadataLen)
		}
		if !utf8.ValidString(f.v) {
			return invalid(f.name, "not valid UTF-8")
		}
	}
	return nil
}

// clip shortens s for an error message; the input may be long or hostile.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
