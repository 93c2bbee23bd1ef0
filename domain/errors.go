package domain

import (
	"errors"
	"fmt"
)

// Sentinel errors that callers branch on. Each typed error below matches
// one of them with errors.Is.
var (
	ErrInvalid       = errors.New("invalid")
	ErrForbidden     = errors.New("forbidden")
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrVersionMismatch: a check-and-set expected another version.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrDestroyed: the secret version (or its key) was destroyed.
	ErrDestroyed = errors.New("destroyed")
	// ErrDeleted: the secret is deleted (restore it first).
	ErrDeleted = errors.New("deleted")
	// ErrExpired: the approval request or token has expired.
	ErrExpired = errors.New("expired")
	// ErrState: the command does not fit the aggregate's state (an
	// approval already decided or delivered, a key that is the primary, …).
	ErrState = errors.New("not allowed in the current state")
	// ErrApprovalRequired: the environment's policy lets this happen only
	// through an approved request (errors matching it also match
	// ErrForbidden).
	ErrApprovalRequired = errors.New("approval required")
)

// ValidationError names the field of a command that is malformed.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return "invalid " + e.Field + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(t error) bool { return t == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ForbiddenError says which actor lacked which permission.
type ForbiddenError struct {
	Actor      Actor
	Permission Permission
	Reason     string
	// Outsider is true when the actor has no access at all to the scope
	// (another tenant's organization, a project or environment its token
	// does not cover): an API answers as if the scope did not exist, so
	// that its existence does not leak.
	Outsider bool
}

func (e *ForbiddenError) Error() string {
	msg := fmt.Sprintf("%s may not %s", e.Actor, e.Permission)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Is makes errors.Is(err, ErrForbidden) true.
func (e *ForbiddenError) Is(t error) bool { return t == ErrForbidden }

// VersionMismatchError reports a failed check-and-set.
type VersionMismatchError struct {
	Expected, Actual uint64
}

func (e *VersionMismatchError) Error() string {
	return fmt.Sprintf("expected version %d, the secret is at version %d", e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrVersionMismatch) true.
func (e *VersionMismatchError) Is(t error) bool { return t == ErrVersionMismatch }

// StateError explains why a command does not fit the aggregate's state.
type StateError struct {
	Sentinel error // ErrState, ErrExpired, ErrDeleted, ErrDestroyed, ErrNotFound or ErrAlreadyExists
	Reason   string
}

func (e *StateError) Error() string { return e.Reason }

// Is matches the sentinel.
func (e *StateError) Is(t error) bool { return t == e.Sentinel }

func stateErr(sentinel error, format string, args ...any) error {
	return &StateError{Sentinel: sentinel, Reason: fmt.Sprintf(format, args...)}
}
