package domain

import (
	"crypto/subtle"
	"encoding/hex"
	"time"
)

// SessionStream is the stream of one sign-in session.
func SessionStream(id string) string { return "session/" + id }

// SessionMethod says how a person signed in.
type SessionMethod string

const (
	// SessionOIDC: through the configured OpenID Connect provider, in a
	// browser (the session lives in a cookie).
	SessionOIDC SessionMethod = "oidc"
	// SessionCLI: a CLI sign-in request that the person approved while
	// signed in; the credential was sealed to the CLI's one-time key.
	SessionCLI SessionMethod = "cli"
	// SessionDev: the development sign-in, which trusts the name typed in
	// and exists only when the server runs with it explicitly enabled.
	SessionDev SessionMethod = "dev"
)

// MaxSessionLifetime is the longest a session may last.
const MaxSessionLifetime = 90 * 24 * time.Hour

// Session events.
type (
	// SessionStarted signs a person in. Only the SHA-256 of the session's
	// secret is recorded.
	SessionStarted struct {
		SessionID string        `json:"session_id"`
		User      string        `json:"user"`
		Method    SessionMethod `json:"method"`
		// Issuer is the OpenID provider that vouched for the person (oidc).
		Issuer string `json:"issuer,omitempty"`
		// ApprovalID is the sign-in request the person approved (cli).
		ApprovalID string    `json:"approval_id,omitempty"`
		ExpiresAt  time.Time `json:"expires_at"`
		SecretHash string    `json:"secret_hash"`
	}
	SessionEnded struct {
		By     string `json:"by"`
		Reason string `json:"reason,omitempty"`
	}
)

func (SessionStarted) EventType() string { return "session.started" }
func (SessionEnded) EventType() string   { return "session.ended" }

func init() {
	register[SessionStarted]()
	register[SessionEnded]()
}

// Session commands.
type (
	StartSession struct {
		SessionID  string
		User       string
		Method     SessionMethod
		Issuer     string
		ApprovalID string
		ExpiresAt  time.Time
		SecretHash string // hex SHA-256 of the session's secret
		Now        time.Time
	}
	EndSession struct {
		Reason string
	}
)

// Session is the aggregate of one sign-in.
type Session struct {
	started SessionStarted
	ended   bool
	version uint64
}

// NewSession returns the state of a session with no history.
func NewSession() *Session { return &Session{} }

func (s *Session) Exists() bool            { return s.started.SessionID != "" }
func (s *Session) Version() uint64         { return s.version }
func (s *Session) Started() SessionStarted { return s.started }
func (s *Session) Ended() bool             { return s.ended }

// Apply folds one event into the state.
func (s *Session) Apply(e Event) {
	s.version++
	switch e := e.(type) {
	case SessionStarted:
		s.started = e
	case SessionEnded:
		s.ended = true
	}
}

// Check tells whether secretHash (hex SHA-256 of a presented secret)
// opens this session at now; the comparison takes constant time.
func (s *Session) Check(secretHash string, now time.Time) error {
	switch {
	case !s.Exists():
		return stateErr(ErrNotFound, "no such session")
	case subtle.ConstantTimeCompare([]byte(secretHash), []byte(s.started.SecretHash)) != 1:
		return stateErr(ErrNotFound, "no such session")
	case s.ended:
		return stateErr(ErrExpired, "the session has ended")
	case !now.Before(s.started.ExpiresAt):
		return stateErr(ErrExpired, "the session expired at %s", s.started.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// Handle decides a session command. A person starts their own session
// (the server acts for them once the provider or an approval vouched for
// them) and may end it; Stele itself may end any session.
func (s *Session) Handle(actor Actor, cmd any) ([]Event, error) {
	switch c := cmd.(type) {
	case StartSession:
		if s.Exists() {
			return nil, stateErr(ErrAlreadyExists, "session %s already exists", c.SessionID)
		}
		if actor.Kind != ActorSystem && (actor.Kind != ActorUser || actor.ID != c.User) {
			return nil, &ForbiddenError{Actor: actor, Permission: "start a session", Reason: "only the person signing in"}
		}
		if err := checkID("session id", c.SessionID); err != nil {
			return nil, err
		}
		if err := checkUserID("user", c.User); err != nil {
			return nil, err
		}
		switch c.Method {
		case SessionOIDC:
			if c.Issuer == "" || len(c.Issuer) > 500 {
				return nil, invalid("issuer", "an OpenID Connect session names its issuer")
			}
		case SessionCLI:
			if err := checkID("approval id", c.ApprovalID); err != nil {
				return nil, err
			}
		case SessionDev:
		default:
			return nil, invalid("method", "%q: want oidc, cli or dev", c.Method)
		}
		if !c.ExpiresAt.After(c.Now) || c.ExpiresAt.Sub(c.Now) > MaxSessionLifetime {
			return nil, invalid("expires at", "must be in the future and within %d days", int(MaxSessionLifetime.Hours()/24))
		}
		if b, err := hex.DecodeString(c.SecretHash); err != nil || len(b) != 32 {
			return nil, invalid("secret hash", "want 64 hex digits (SHA-256)")
		}
		return []Event{SessionStarted{SessionID: c.SessionID, User: c.User, Method: c.Method, Issuer: c.Issuer,
			ApprovalID: c.ApprovalID, ExpiresAt: c.ExpiresAt.UTC(), SecretHash: c.SecretHash}}, nil
	case EndSession:
		if !s.Exists() {
			return nil, stateErr(ErrNotFound, "no such session")
		}
		if actor.Kind != ActorSystem && (actor.Kind != ActorUser || actor.ID != s.started.User) {
			return nil, &ForbiddenError{Actor: actor, Permission: "end a session", Reason: "only its person", Outsider: true}
		}
		if err := checkText("reason", c.Reason, MaxReasonLen); err != nil {
			return nil, err
		}
		if s.ended {
			return nil, nil
		}
		return []Event{SessionEnded{By: actor.String(), Reason: c.Reason}}, nil
	}
	return nil, invalid("command", "%T is not a session command", cmd)
}
