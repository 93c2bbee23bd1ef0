package app

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"stele.dev/stele/domain"
)

// Credentials are bearer secrets: a service token of an organization or
// a person's session (a browser cookie, or a CLI signed in through an
// approved sign-in request). Their text forms are
//
//	stele_tok_<org>.<token id>.<secret>
//	stele_ses_<session id>.<secret>
//
// where secret is 32 random bytes in unpadded base64url. Slugs, ids and
// base64url hold no '.', so the form splits unambiguously; the prefixes
// make leaked credentials easy for secret scanners to recognise. The
// ledger keeps only the SHA-256 of the whole credential.
const (
	tokenPrefix   = "stele_tok_"
	sessionPrefix = "stele_ses_"
)

// ErrUnauthenticated: a credential is malformed, unknown, wrong, revoked
// or expired. Its message never says which, beyond expiry.
var ErrUnauthenticated = errors.New("unauthenticated")

// authError keeps the reason for the server's own logs.
type authError struct{ reason string }

func (e *authError) Error() string        { return "unauthenticated: " + e.reason }
func (e *authError) Is(target error) bool { return target == ErrUnauthenticated }

// Identity is who a credential stands for.
type Identity struct {
	Actor domain.Actor
	// Org is the organization a service token belongs to ("" for people).
	Org string
	// SessionID is the session a person is signed in with.
	SessionID string
	// Method is how the person signed in (sessions only).
	Method domain.SessionMethod
	// ExpiresAt is when the credential stops working.
	ExpiresAt time.Time
}

func newSecret() (id, secret string, err error) {
	var idb [12]byte
	var raw [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", err
	}
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", err
	}
	return hex.EncodeToString(idb[:]), base64.RawURLEncoding.EncodeToString(raw[:]), nil
}

// CredentialKind tells a token from a session by its prefix, without
// checking anything else ("" for neither).
func CredentialKind(credential string) string {
	switch {
	case strings.HasPrefix(credential, tokenPrefix):
		return "token"
	case strings.HasPrefix(credential, sessionPrefix):
		return "session"
	}
	return ""
}

// Authenticate checks a credential against the ledger's state and says
// whose it is. Every failure matches ErrUnauthenticated.
func (s *Service) Authenticate(ctx context.Context, credential string) (Identity, error) {
	if len(credential) > 300 {
		return Identity{}, &authError{"credential too long"}
	}
	hash := TokenSecretHash(credential)
	now := s.now()
	switch {
	case strings.HasPrefix(credential, tokenPrefix):
		parts := strings.Split(credential[len(tokenPrefix):], ".")
		if len(parts) != 3 || !domain.ValidSlug(parts[0]) || !domain.ValidID(parts[1]) || parts[2] == "" {
			return Identity{}, &authError{"malformed token"}
		}
		org, id := parts[0], parts[1]
		var tok domain.Token
		var found bool
		err := s.view(ctx, domain.OrgStream(org), newOrgAgg, func(a aggregate) error {
			tok, found = a.(*domain.Organization).Token(id)
			return nil
		})
		if err != nil {
			return Identity{}, err
		}
		switch {
		case !found || subtle.ConstantTimeCompare([]byte(hash), []byte(tok.SecretHash)) != 1:
			return Identity{}, &authError{"unknown token"}
		case tok.Revoked:
			return Identity{}, &authError{"token revoked"}
		case !now.Before(tok.ExpiresAt):
			return Identity{}, &authError{"token expired"}
		}
		return Identity{Actor: domain.Actor{Kind: domain.ActorToken, ID: id}, Org: org, ExpiresAt: tok.ExpiresAt}, nil
	case strings.HasPrefix(credential, sessionPrefix):
		parts := strings.Split(credential[len(sessionPrefix):], ".")
		if len(parts) != 2 || !domain.ValidID(parts[0]) || parts[1] == "" {
			return Identity{}, &authError{"malformed session"}
		}
		var st domain.SessionStarted
		err := s.view(ctx, domain.SessionStream(parts[0]), newSessionAgg, func(a aggregate) error {
			x := a.(*domain.Session)
			if err := x.Check(hash, now); err != nil {
				return &authError{err.Error()}
			}
			st = x.Started()
			return nil
		})
		if err != nil {
			return Identity{}, err
		}
		return Identity{Actor: domain.Actor{Kind: domain.ActorUser, ID: st.User}, SessionID: st.SessionID, Method: st.Method, ExpiresAt: st.ExpiresAt}, nil
	}
	return Identity{}, &authError{"not a Stele credential"}
}

func newSessionAgg() aggregate { return domain.NewSession() }

// SessionSpec describes a sign-in.
type SessionSpec struct {
	User       string
	Method     domain.SessionMethod
	Issuer     string // OpenID provider (oidc)
	ApprovalID string // the approved sign-in request (cli)
	TTL        time.Duration
}

// Session is a new sign-in; Credential is shown once and never stored.
type Session struct {
	ID         string
	Credential string
	ExpiresAt  time.Time
}

// StartSession signs a person in. The caller has verified who they are
// (through the OpenID provider, an approval or the development sign-in);
// req.Actor is that person, or Stele itself.
func (s *Service) StartSession(ctx context.Context, req Request, spec SessionSpec) (Session, Result, error) {
	id, secret, err := newSecret()
	if err != nil {
		return Session{}, Result{}, err
	}
	now := s.now()
	out := Session{ID: id, Credential: sessionPrefix + id + "." + secret, ExpiresAt: now.Add(spec.TTL).UTC().Truncate(time.Second)}
	cmd := domain.StartSession{SessionID: id, User: spec.User, Method: spec.Method, Issuer: spec.Issuer, ApprovalID: spec.ApprovalID,
		ExpiresAt: out.ExpiresAt, SecretHash: TokenSecretHash(out.Credential), Now: now}
	req.IdempotencyKey = "" // a retried sign-in is a new session
	res, _, err := s.execute(ctx, req, command{stream: domain.SessionStream(id), mk: newSessionAgg,
		decide: func(a aggregate) ([]domain.Event, error) { return a.(*domain.Session).Handle(req.Actor, cmd) }})
	if err != nil {
		return Session{}, res, err
	}
	return out, res, nil
}

// EndSession signs a session out.
func (s *Service) EndSession(ctx context.Context, req Request, sessionID, reason string) (Result, error) {
	if !domain.ValidID(sessionID) {
		return Result{}, &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no such session"}
	}
	res, _, err := s.execute(ctx, req, command{stream: domain.SessionStream(sessionID), mk: newSessionAgg,
		name: "end session", target: sessionID,
		decide: func(a aggregate) ([]domain.Event, error) {
			return a.(*domain.Session).Handle(req.Actor, domain.EndSession{Reason: reason})
		}})
	return res, err
}

// Authorize says whether actor may do perm in org (and, when given, a
// project and environment of it), and with which role. Reads that the
// projections answer are authorized here against the ledger's state.
func (s *Service) Authorize(ctx context.Context, actor domain.Actor, org, project, env string, perm domain.Permission) (domain.Principal, error) {
	if !domain.ValidSlug(org) {
		return domain.Principal{}, &domain.ForbiddenError{Actor: actor, Permission: perm, Reason: "no such organization", Outsider: true}
	}
	p, err := s.access(ctx, actor, org, project, env)
	if err != nil {
		return p, err
	}
	return p, p.Require(perm)
}

// Bootstrap prepares an empty ledger for its first users: it creates
// organization org, owned by owner (an e-mail address, or no person when
// empty), and issues it an owner token. It does nothing, and returns
// created false, when the ledger already holds events.
func (s *Service) Bootstrap(ctx context.Context, org, name, owner string, ttl time.Duration) (tok IssuedToken, created bool, err error) {
	h, err := s.store.Head(ctx)
	if err != nil || h.Position > 0 {
		return IssuedToken{}, false, err
	}
	req := systemRequest("bootstrap")
	if _, err := s.orgCommand(ctx, req, org, "create organization", domain.CreateOrganization{ID: org, Name: name, Owner: owner}); err != nil {
		if errors.Is(err, domain.ErrAlreadyExists) { // another server got there first
			return IssuedToken{}, false, nil
		}
		return IssuedToken{}, false, err
	}
	tok, _, err = s.IssueToken(ctx, req, org, TokenSpec{Name: "bootstrap", Role: domain.RoleOwner, TTL: ttl})
	return tok, err == nil, err
}

// Head returns the log's head position.
func (s *Service) Head(ctx context.Context) (uint64, error) {
	h, err := s.store.Head(ctx)
	if err != nil {
		return 0, unavailable(err)
	}
	return h.Position, nil
}
