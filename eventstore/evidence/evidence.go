// Package evidence writes, reads and verifies evidence files: the events
// of one tenant (organization) in a time range, each with its full
// canonical record and an RFC 6962 inclusion proof against one signed
// checkpoint, and that checkpoint. An auditor checks such a file offline
// with nothing but the log's public key, and it holds nothing of other
// tenants' events but the Merkle hashes the proofs need. The layout is
// specified in docs/ledger-format.md ("Evidence file"):
//
//	stele-evidence/v1
//	org <org>
//	from <RFC 3339 time or ->
//	to <RFC 3339 time or ->
//	checkpoint <n>
//	<the signed checkpoint note, n bytes>
//	event <position> <hash hex> <canonical record base64> [<proof hash hex> ...]
//	...
//	end <events> <SHA-256 hex of every byte before this line>
package evidence

import (
	"errors"
	"fmt"
	"time"
)

// Magic is the first line of every evidence file (without its newline).
const Magic = "stele-evidence/v1"

// MaxLine bounds a line of an evidence file: an event line holds a
// canonical record (at most about 270 KB, 360 KB in base64) and at most
// 64 proof hashes.
const MaxLine = 1 << 20

// MaxNote bounds the signed checkpoint note.
const MaxNote = 64 << 10

// Checks name what failed, in Error.Check.
const (
	CheckFormat     = "format"     // the file is not a well-formed evidence file
	CheckCheckpoint = "checkpoint" // the checkpoint's signature or origin
	CheckHash       = "hash"       // an event's hash against its content
	CheckInclusion  = "inclusion"  // an inclusion proof against the checkpoint's root
	CheckOrder      = "order"      // positions increase, recorded times do not decrease
	CheckTenant     = "tenant"     // every event is the file's organization's
	CheckRange      = "range"      // every event lies in the file's time range
	CheckChain      = "chain"      // adjacent events are linked by their previous hash
	CheckStream     = "stream"     // stream versions are contiguous
	CheckEnd        = "end"        // the end line: present, event count and digest
)

// ErrFailed matches every verification failure; errors are *Error.
var ErrFailed = errors.New("evidence verification failed")

// Error names the first thing in an evidence file that failed, where.
type Error struct {
	// Line is the 1-based line of the file (0 when not about one line).
	Line int `json:"line,omitempty"`
	// Position is the log position of the event concerned (0 when the
	// failure is not about one event).
	Position uint64 `json:"position,omitempty"`
	// Check is one of the Check constants.
	Check  string `json:"check"`
	Reason string `json:"reason"`
}

func (e *Error) Error() string {
	where := ""
	switch {
	case e.Line > 0 && e.Position > 0:
		where = fmt.Sprintf(" at line %d (event at position %d)", e.Line, e.Position)
	case e.Line > 0:
		where = fmt.Sprintf(" at line %d", e.Line)
	case e.Position > 0:
		where = fmt.Sprintf(" at the event at position %d", e.Position)
	}
	return fmt.Sprintf("evidence verification failed%s: %s: %s", where, e.Check, e.Reason)
}

// Is makes errors.Is(err, ErrFailed) true.
func (e *Error) Is(target error) bool { return target == ErrFailed }

func failf(line int, pos uint64, check, format string, args ...any) *Error {
	return &Error{Line: line, Position: pos, Check: check, Reason: fmt.Sprintf(format, args...)}
}

// formatTime writes a range bound: RFC 3339 in UTC, "-" when open.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// parseTime reads a range bound written by formatTime.
func parseTime(s string) (time.Time, error) {
	if s == "-" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	if t.IsZero() {
		return time.Time{}, errors.New("the zero time is not a bound; write - for an open range")
	}
	return t.UTC(), nil
}

// ValidOrg checks that org can name a tenant in a file: 1 to 1024 bytes
// of printable ASCII without spaces.
func ValidOrg(org string) error {
	if org == "" || len(org) > 1024 {
		return errors.New("evidence: the organization must be 1 to 1024 bytes")
	}
	for i := 0; i < len(org); i++ {
		if c := org[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("evidence: organization %q: use printable ASCII without spaces", org)
		}
	}
	return nil
}

// inRange reports whether t lies in [from, to), a zero bound being open.
func inRange(t, from, to time.Time) bool {
	return (from.IsZero() || !t.Before(from)) && (to.IsZero() || t.Before(to))
}
