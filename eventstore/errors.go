package eventstore

import (
	"errors"
	"fmt"
)

var (
	// ErrConflict means the stream was not at the version an append
	// expected. Errors matching it are *ConflictError.
	ErrConflict = errors.New("eventstore: wrong expected stream version")
	// ErrStreamNotFound means a stream holds no events.
	ErrStreamNotFound = errors.New("eventstore: stream not found")
	// ErrNotFound means a requested item (such as a checkpoint) does not exist.
	ErrNotFound = errors.New("eventstore: not found")
	// ErrInvalid means the caller's input is malformed or over a limit;
	// nothing was written. Errors matching it are *InvalidError.
	ErrInvalid = errors.New("eventstore: invalid input")
	// ErrDuplicateEvent means an event ID is already in the log but the
	// append is not an exact retry of the append that wrote it. Errors
	// matching it are *DuplicateEventError.
	ErrDuplicateEvent = errors.New("eventstore: event id already used")
	// ErrUnknownOutcome means the store lost its connection while
	// committing an append: the events may or may not be in the log.
	// Retrying the append with the same event IDs settles it.
	ErrUnknownOutcome = errors.New("eventstore: append outcome unknown (connection lost while committing); retry with the same event ids")
	// ErrClosed means the store has been closed.
	ErrClosed = errors.New("eventstore: store closed")
)

// ConflictError reports an append whose expected version did not match.
type ConflictError struct {
	StreamID string
	Expected ExpectedVersion
	Actual   uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("eventstore: stream %q: expected %s, stream is at version %d", e.StreamID, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// InvalidError reports malformed input: which field and why.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("eventstore: invalid %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// DuplicateEventError reports an event ID that is already in the log, at
// Position, in a way that is not an exact retry.
type DuplicateEventError struct {
	ID       ID
	Position uint64
	Reason   string
}

func (e *DuplicateEventError) Error() string {
	return fmt.Sprintf("eventstore: event %s is already at position %d: %s", e.ID, e.Position, e.Reason)
}

// Is makes errors.Is(err, ErrDuplicateEvent) true.
func (e *DuplicateEventError) Is(target error) bool { return target == ErrDuplicateEvent }
