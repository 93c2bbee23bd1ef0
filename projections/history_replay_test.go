package projections_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/projections"
)

// accessModel is an organization's grants and tokens, folded here from
// the log's events, independently of domain.Organization and History.
type accessModel struct {
	exists bool
	grants map[string]map[string]domain.Role // project ("" for the organization) → user → role
	tokens map[string]domain.TokenIssued
	revoke map[string]bool
}

// foldAccess replays the records of org's stream among recs.
func foldAccess(t *testing.T, recs []eventstore.Record, org string) *accessModel {
	t.Helper()
	m := &accessModel{grants: map[string]map[string]domain.Role{}, tokens: map[string]domain.TokenIssued{}, revoke: map[string]bool{}}
	for _, r := range recs {
		if r.StreamID != "org/"+org {
			continue
		}
		switch ev := ok(domain.Decode(r.Type, r.Data)).(type) {
		case domain.OrganizationCreated:
			m.exists = true
		case domain.RoleGranted:
			if m.grants[ev.Project] == nil {
				m.grants[ev.Project] = map[string]domain.Role{}
			}
			m.grants[ev.Project][ev.UserID] = ev.Role
		case domain.RoleRevoked:
			delete(m.grants[ev.Project], ev.UserID)
		case domain.TokenIssued:
			m.tokens[ev.TokenID] = ev
		case domain.TokenRevoked:
			m.revoke[ev.TokenID] = true
		}
	}
	return m
}

// access is what History.AccessAt should answer.
func (m *accessModel) access() ([]projections.Grant, []projections.TokenAt) {
	var grants []projections.Grant
	for project, users := range m.grants {
		for u, r := range users {
			grants = append(grants, projections.Grant{UserID: u, Project: project, Role: r})
		}
	}
	slices.SortFunc(grants, func(a, b projections.Grant) int {
		if c := strings.Compare(a.UserID, b.UserID); c != 0 {
			return c
		}
		return strings.Compare(a.Project, b.Project)
	})
	var tokens []projections.TokenAt
	for id, ev := range m.tokens {
		tokens = append(tokens, projections.TokenAt{ID: id, Name: ev.Name, Role: ev.Role, Project: ev.Project, Environments: ev.Environments,
			ExpiresAt: ev.ExpiresAt.UTC(), Revoked: m.revoke[id]})
	}
	slices.SortFunc(tokens, func(a, b projections.TokenAt) int { return strings.Compare(a.ID, b.ID) })
	return grants, tokens
}

// couldRead is what History.WhoCouldRead should answer for ref at time
// now: members whose higher role (organization or the secret's project)
// may reveal values, and tokens neither revoked nor expired at now whose
// project and environments cover the secret and whose role may.
func (m *accessModel) couldRead(ref domain.SecretRef, now time.Time) []projections.CouldRead {
	var out []projections.CouldRead
	if !m.exists {
		return nil
	}
	users := map[string]bool{}
	for _, g := range m.grants {
		for u := range g {
			users[u] = true
		}
	}
	for u := range users {
		org, proj := m.grants[""][u], m.grants[ref.Project][u]
		role, via := org, "organization"
		if !org.AtLeast(proj) {
			role, via = proj, "project"
		}
		if role.Can(domain.PermRevealValue) {
			out = append(out, projections.CouldRead{Actor: "user:" + u, Role: role, Via: via})
		}
	}
	for id, ev := range m.tokens {
		if m.revoke[id] || !now.Before(ev.ExpiresAt) || (ev.Project != "" && ev.Project != ref.Project) ||
			(len(ev.Environments) > 0 && !slices.Contains(ev.Environments, ref.Env)) || !ev.Role.Can(domain.PermRevealValue) {
			continue
		}
		out = append(out, projections.CouldRead{Actor: "token:" + id, Role: ev.Role, Via: "token"})
	}
	slices.SortFunc(out, func(a, b projections.CouldRead) int { return strings.Compare(a.Actor, b.Actor) })
	return out
}

// whoRead is what History.WhoRead should answer: the secret.viewed
// events of ref's stream recorded in [from, to).
func whoRead(t *testing.T, recs []eventstore.Record, ref domain.SecretRef, from, to time.Time) []projections.Read {
	t.Helper()
	var out []projections.Read
	for _, r := range recs {
		if r.StreamID != ref.Stream() || r.RecordedAt.Before(from) || !r.RecordedAt.Before(to) {
			continue
		}
		if v, isView := ok(domain.Decode(r.Type, r.Data)).(domain.SecretViewed); isView {
			out = append(out, projections.Read{Actor: r.Metadata.Actor, Version: v.Version, Channel: string(v.Channel), Reason: v.Reason,
				At: r.RecordedAt.UTC(), Position: r.Position})
		}
	}
	return out
}

func sameReads(a, b []projections.Read) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// Memberships, roles and tokens as of a position, who could read a secret
// then, and who read it in a window, equal a replay of the log up to that
// position folded here, at every position of a history of grants,
// revocations, role changes, tokens issued, revoked and expired, and
// reads by people and tokens, beside another organization's.
func TestAccessHistoryEqualsReplay(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	user := func(id string) app.Request {
		return app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: id}, RequestID: "h-" + id}
	}
	token := func(id string) app.Request {
		return app.Request{Actor: domain.Actor{Kind: domain.ActorToken, ID: id}, RequestID: "h-token"}
	}
	webProd := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB_URL"}
	webStaging := domain.SecretRef{Org: "acme", Project: "web", Env: "staging", Name: "DB_URL"}
	apiProd := domain.SecretRef{Org: "acme", Project: "api", Env: "production", Name: "API_KEY"}
	globexRef := domain.SecretRef{Org: "globex", Project: "web", Env: "production", Name: "DB_URL"}
	set := func(ref domain.SecretRef, v string) {
		owner := ada
		if ref.Org == "globex" {
			owner = user("olga")
		}
		ok(e.svc.SetSecret(ctx, owner, ref, app.SetSecret{Value: []byte(v)}))
	}
	reveal := func(req app.Request, ref domain.SecretRef, reason string) {
		t.Helper()
		if _, err := e.svc.RevealSecret(ctx, req, ref, 0, reason, domain.ChannelAPI); err != nil {
			t.Fatalf("%s reveals %s: %v", req.Actor, ref.Stream(), err)
		}
	}

	ok(e.svc.CreateOrganization(ctx, ada, "acme", "Acme"))
	ok(e.svc.CreateOrganization(ctx, user("olga"), "globex", "Globex"))
	for _, p := range []string{"web", "api"} {
		ok(e.svc.CreateProject(ctx, ada, "acme", p, p))
		ok(e.svc.CreateEnvironment(ctx, ada, app.Env{Org: "acme", Project: p, Env: "production"}, app.EnvSpec{Production: true}))
	}
	ok(e.svc.CreateEnvironment(ctx, ada, app.Env{Org: "acme", Project: "web", Env: "staging"}, app.EnvSpec{}))
	ok(e.svc.CreateProject(ctx, user("olga"), "globex", "web", "web"))
	ok(e.svc.CreateEnvironment(ctx, user("olga"), app.Env{Org: "globex", Project: "web", Env: "production"}, app.EnvSpec{}))
	set(webProd, "p1")
	set(webStaging, "s1")
	set(apiProd, "a1")
	set(globexRef, "g1")

	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleDeveloper, ""))
	ok(e.svc.GrantRole(ctx, ada, "acme", "carol", domain.RoleViewer, ""))
	ok(e.svc.GrantRole(ctx, ada, "acme", "carol", domain.RoleDeveloper, "web")) // more in one project
	ok(e.svc.GrantRole(ctx, ada, "acme", "dave", domain.RoleDeveloper, "api"))  // only in another project
	ok(e.svc.GrantRole(ctx, ada, "acme", "erin", domain.RoleAdmin, ""))
	ok(e.svc.GrantRole(ctx, user("olga"), "globex", "bob", domain.RoleOwner, ""))
	reveal(bob, webProd, "deploy")
	reveal(user("carol"), webProd, "debug")
	reveal(user("dave"), apiProd, "rotate")
	ci, _ := ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web", TTL: time.Hour}))
	stage, _ := ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "stage", Role: domain.RoleDeveloper, Project: "web",
		Environments: []string{"staging"}, TTL: time.Hour}))
	ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "audit", Role: domain.RoleViewer, TTL: time.Hour}))
	ops, _ := ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "ops", Role: domain.RoleAdmin, TTL: time.Hour}))
	brief, _ := ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "brief", Role: domain.RoleDeveloper, Project: "web",
		Environments: []string{"production"}, ExpiresAt: time.Now().Add(2 * time.Second)}))
	reveal(token(ci.ID), webProd, "")
	reveal(token(stage.ID), webStaging, "smoke test")
	reveal(token(brief.ID), webProd, "one-off")
	reveal(token(ops.ID), apiProd, "")
	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleAdmin, "")) // a role changed in place
	ok(e.svc.RevokeRole(ctx, ada, "acme", "carol", "web"))
	ok(e.svc.RevokeToken(ctx, ada, "acme", ops.ID, "rotated"))
	ok(e.svc.RevokeRole(ctx, ada, "acme", "erin", ""))
	// The brief token expires; the log goes on.
	time.Sleep(time.Until(brief.ExpiresAt) + 100*time.Millisecond)
	ok(e.svc.GrantRole(ctx, ada, "acme", "frank", domain.RoleViewer, "web"))
	ok(e.svc.GrantRole(ctx, ada, "acme", "carol", domain.RoleOwner, "api"))
	reveal(bob, webStaging, "after")
	reveal(user("carol"), apiProd, "owner now")
	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleViewer, "")) // lowered
	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleDeveloper, "web"))
	reveal(bob, webProd, "via the project")
	ok(e.svc.RevokeToken(ctx, ada, "acme", ci.ID, "done"))
	e.caughtUp(t)

	h := projections.History{Pool: e.pool, Store: e.store, Wait: time.Second}
	all := readAll(t, e)
	refs := []domain.SecretRef{webProd, webStaging, apiProd}
	var sawExpired, sawRevoked, sawProjectVia bool
	for p := uint64(1); p <= uint64(len(all)); p++ {
		upTo := all[:p]
		at := all[p-1].RecordedAt
		m := foldAccess(t, upTo, "acme")

		got := ok(h.AccessAt(ctx, "acme", p))
		grants, tokens := m.access()
		for i := range got.Tokens {
			got.Tokens[i].ExpiresAt = got.Tokens[i].ExpiresAt.UTC()
		}
		if !reflect.DeepEqual(got.Grants, grants) || !reflect.DeepEqual(got.Tokens, tokens) {
			t.Fatalf("access at %d:\n got  %+v\n      %+v\n want %+v\n      %+v", p, got.Grants, got.Tokens, grants, tokens)
		}
		if !got.Time.Equal(at) {
			t.Fatalf("access at %d stands for %s, want %s", p, got.Time, at)
		}

		for _, ref := range refs {
			could := ok(h.WhoCouldRead(ctx, ref, p))
			want := m.couldRead(ref, at)
			if !reflect.DeepEqual(could, want) {
				t.Fatalf("who could read %s at %d:\n got  %+v\n want %+v", ref.Stream(), p, could, want)
			}
			for _, c := range could {
				sawProjectVia = sawProjectVia || c.Via == "project"
			}
			if tok, issued := m.tokens[brief.ID]; issued && ref == webProd && !at.Before(tok.ExpiresAt) {
				sawExpired = true
			}
			sawRevoked = sawRevoked || m.revoke[ops.ID]

			// Who read it: from the beginning to this event, and from this
			// event on.
			first := all[0].RecordedAt
			end := at.Add(time.Nanosecond)
			if reads := ok(h.WhoRead(ctx, ref, first, end)); !sameReads(reads, whoRead(t, all, ref, first, end)) {
				t.Fatalf("who read %s in [%s, %s): %+v, want %+v", ref.Stream(), first, end, reads, whoRead(t, all, ref, first, end))
			}
			later := all[len(all)-1].RecordedAt.Add(time.Second)
			if reads := ok(h.WhoRead(ctx, ref, at, later)); !sameReads(reads, whoRead(t, all, ref, at, later)) {
				t.Fatalf("who read %s in [%s, %s): %+v, want %+v", ref.Stream(), at, later, reads, whoRead(t, all, ref, at, later))
			}
		}
	}
	if !sawExpired || !sawRevoked || !sawProjectVia {
		t.Fatalf("the history does not exercise an expired token (%v), a revoked one (%v) or a project role (%v)", sawExpired, sawRevoked, sawProjectVia)
	}
	// The whole log's reads, and none of another organization's.
	everything := ok(h.WhoRead(ctx, webProd, all[0].RecordedAt, all[len(all)-1].RecordedAt.Add(time.Second)))
	var actors []string
	for _, r := range everything {
		actors = append(actors, r.Actor)
	}
	if want := []string{"user:bob", "user:carol", "token:" + ci.ID, "token:" + brief.ID, "user:bob"}; !slices.Equal(actors, want) {
		t.Fatalf("reads of %s: %v, want %v", webProd.Stream(), actors, want)
	}
	for _, c := range ok(h.WhoCouldRead(ctx, webProd, uint64(len(all)))) {
		if c.Actor == "user:olga" {
			t.Fatal("another organization's owner could read acme's secret")
		}
	}
}
