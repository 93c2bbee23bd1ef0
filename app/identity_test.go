package app_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

func TestAuthenticateTokens(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	tok, _ := ok2(f.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web", TTL: time.Hour}))
	if app.CredentialKind(tok.Secret) != "token" {
		t.Fatalf("kind of %q", tok.Secret)
	}
	id := ok(f.svc.Authenticate(ctx, tok.Secret))
	if id.Actor != (domain.Actor{Kind: domain.ActorToken, ID: tok.ID}) || id.Org != "acme" || !id.ExpiresAt.Equal(tok.ExpiresAt) {
		t.Fatalf("identity %+v", id)
	}
	bad := []string{
		"",
		"Bearer " + tok.Secret,
		tok.Secret + "x",
		strings.Replace(tok.Secret, "acme.", "other.", 1),
		strings.Replace(tok.Secret, "stele_tok_", "stele_ses_", 1),
		"stele_tok_acme." + tok.ID,
		"stele_tok_../etc." + tok.ID + ".x",
		strings.Repeat("a", 400),
	}
	for _, c := range bad {
		if _, err := f.svc.Authenticate(ctx, c); !errors.Is(err, app.ErrUnauthenticated) {
			t.Errorf("%q: %v", c, err)
		}
	}
	f.clock.Add(time.Hour)
	if _, err := f.svc.Authenticate(ctx, tok.Secret); !errors.Is(err, app.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired token: %v", err)
	}
	tok2, _ := ok2(f.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "ci2", Role: domain.RoleViewer, TTL: time.Hour}))
	ok(f.svc.RevokeToken(ctx, ada, "acme", tok2.ID, "leaked"))
	if _, err := f.svc.Authenticate(ctx, tok2.Secret); !errors.Is(err, app.ErrUnauthenticated) {
		t.Fatalf("a revoked token: %v", err)
	}
}

func TestSessions(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	grace := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "grace@example.com"}}
	s, res := ok2(f.svc.StartSession(ctx, grace, app.SessionSpec{User: "grace@example.com", Method: domain.SessionOIDC,
		Issuer: "https://id.example.com", TTL: 12 * time.Hour}))
	if res.Position == 0 || app.CredentialKind(s.Credential) != "session" {
		t.Fatalf("session %+v at %d", s, res.Position)
	}
	id := ok(f.svc.Authenticate(ctx, s.Credential))
	if id.Actor != grace.Actor || id.SessionID != s.ID || id.Method != domain.SessionOIDC {
		t.Fatalf("identity %+v", id)
	}
	// Only a hash of the credential is in the log.
	recs := ok(f.store.ReadStream(ctx, domain.SessionStream(s.ID), 1, 10))
	if len(recs) != 1 || strings.Contains(string(recs[0].Data), s.Credential[len("stele_ses_"+s.ID+"."):]) {
		t.Fatalf("the log holds %s", recs[0].Data)
	}
	if _, _, err := f.svc.StartSession(ctx, grace, app.SessionSpec{User: "ada", Method: domain.SessionDev, TTL: time.Hour}); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("signing someone else in: %v", err)
	}
	if _, err := f.svc.EndSession(ctx, ada, s.ID, "signed out"); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("ending another person's session: %v", err)
	}
	ok(f.svc.EndSession(ctx, grace, s.ID, "signed out"))
	if _, err := f.svc.Authenticate(ctx, s.Credential); !errors.Is(err, app.ErrUnauthenticated) {
		t.Fatalf("after signing out: %v", err)
	}
	s2, _ := ok2(f.svc.StartSession(ctx, grace, app.SessionSpec{User: "grace@example.com", Method: domain.SessionDev, TTL: time.Hour}))
	f.clock.Add(time.Hour)
	if _, err := f.svc.Authenticate(ctx, s2.Credential); !errors.Is(err, app.ErrUnauthenticated) {
		t.Fatalf("an expired session: %v", err)
	}
}

func TestAuthorizeAndBootstrap(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	tok, created := ok2(f.svc.Bootstrap(ctx, "acme", "Acme", "ada@example.com", 24*time.Hour))
	if !created || tok.Secret == "" {
		t.Fatalf("bootstrap: %+v %v", tok, created)
	}
	if _, again := ok2(f.svc.Bootstrap(ctx, "acme", "Acme", "ada@example.com", 24*time.Hour)); again {
		t.Fatal("bootstrapped a ledger that holds events")
	}
	id := ok(f.svc.Authenticate(ctx, tok.Secret))
	p := ok(f.svc.Authorize(ctx, id.Actor, "acme", "", "", domain.PermDestroyKey))
	if p.Role != domain.RoleOwner {
		t.Fatalf("the bootstrap token is %s", p.Role)
	}
	ada := domain.Actor{Kind: domain.ActorUser, ID: "ada@example.com"}
	if p := ok(f.svc.Authorize(ctx, ada, "acme", "", "", domain.PermManageMembers)); p.Role != domain.RoleOwner {
		t.Fatalf("the bootstrap owner is %s", p.Role)
	}
	tokReq := app.Request{Actor: id.Actor}
	ok(f.svc.GrantRole(ctx, tokReq, "acme", "bob@example.com", domain.RoleViewer, ""))
	bob := domain.Actor{Kind: domain.ActorUser, ID: "bob@example.com"}
	var fe *domain.ForbiddenError
	if _, err := f.svc.Authorize(ctx, bob, "acme", "", "", domain.PermRevealValue); !errors.As(err, &fe) || fe.Outsider {
		t.Fatalf("a viewer revealing: %v (want forbidden, not an outsider)", err)
	}
	for _, org := range []string{"other", "Not A Slug"} {
		if _, err := f.svc.Authorize(ctx, bob, org, "", "", domain.PermReadMetadata); !errors.As(err, &fe) || !fe.Outsider {
			t.Fatalf("another organization %q: %v (want an outsider)", org, err)
		}
	}
}

func ok2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic("unexpected error: " + err.Error())
	}
	return a, b
}
