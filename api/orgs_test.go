package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/projections"
)

// dirWritten is the answer of a write of this area.
type dirWritten struct {
	Position  uint64 `json:"position"`
	Unchanged bool   `json:"unchanged"`
	Replayed  bool   `json:"replayed"`
	ID        string `json:"id"`
}

// dirWrite decodes a write's answer and checks that its body and its
// X-Stele-Position header agree.
func dirWrite(t *testing.T, r response) dirWritten {
	t.Helper()
	var w dirWritten
	r.decode(t, &w)
	if p := r.position(t); p != strconv.FormatUint(w.Position, 10) || w.Position == 0 {
		t.Fatalf("X-Stele-Position %s, body position %d", p, w.Position)
	}
	return w
}

// at appends min_position to a path.
func at(path string, pos uint64) string {
	return fmt.Sprintf("%s?min_position=%d", path, pos)
}

// dirHead is the log's head position.
func dirHead(t *testing.T, h *harness) uint64 {
	t.Helper()
	return must(h.App.Head(ctx))
}

// unchangedLog fails unless the log's head is still head: a refused
// request appended nothing.
func unchangedLog(t *testing.T, h *harness, head uint64) {
	t.Helper()
	if now := dirHead(t, h); now != head {
		t.Fatalf("a refused request appended %d events", now-head)
	}
}

// outsider404 fails unless r is the 404 a missing resource gets, word
// for word.
func outsider404(t *testing.T, r response) {
	t.Helper()
	r.expectProblem(t, http.StatusNotFound, "not_found")
	var p api.Problem
	r.decode(t, &p)
	if p.Detail != "no such resource" {
		t.Fatalf("an outsider's 404 says %q", p.Detail)
	}
}

type orgList struct {
	Items []api.Org `json:"items"`
}

func findOrg(items []api.Org, id string) (api.Org, bool) {
	i := slices.IndexFunc(items, func(o api.Org) bool { return o.ID == id })
	if i < 0 {
		return api.Org{}, false
	}
	return items[i], true
}

// The walk a new customer takes: an organization, a project, its
// environments and a bundle, members, a token that works and then does
// not.
func TestOrgsWalk(t *testing.T) {
	h := newHarness(t)
	idem := map[string]string{"Idempotency-Key": "create-initech-1"}
	first := dirWrite(t, h.do(call{method: "POST", path: "/v1/orgs", cred: h.Ada, header: idem,
		body: map[string]any{"id": "initech", "name": "Initech"}}).expect(t, 201))
	if first.ID != "initech" || first.Replayed {
		t.Fatalf("created %+v", first)
	}
	again := h.do(call{method: "POST", path: "/v1/orgs", cred: h.Ada, header: idem, body: map[string]any{"id": "initech", "name": "Initech"}}).expect(t, 201)
	if w := dirWrite(t, again); !w.Replayed || w.Position != first.Position {
		t.Fatalf("a retry with the same key: %+v (first at %d)", w, first.Position)
	}
	if loc := again.header.Get("Location"); loc != "/v1/orgs/initech" {
		t.Fatalf("Location %q", loc)
	}
	h.post("/v1/orgs", h.Ada, map[string]any{"id": "initech", "name": "Initech again"}).expectProblem(t, 409, "already_exists")

	var orgs orgList
	h.get(at("/v1/orgs", first.Position), h.Ada).expect(t, 200).decode(t, &orgs)
	if len(orgs.Items) != 2 || orgs.Items[0].ID != "acme" || orgs.Items[1].ID != "initech" {
		t.Fatalf("ada's organizations: %+v", orgs.Items)
	}
	if o := orgs.Items[1]; o.Name != "Initech" || len(o.Roles) != 1 || o.Roles[0] != (api.OrgRole{Role: "owner"}) || o.CreatedBy != "user:ada@example.com" {
		t.Fatalf("initech: %+v", o)
	}

	renamed := dirWrite(t, h.patch("/v1/orgs/initech", h.Ada, map[string]any{"name": "Initech Corp"}).expect(t, 200))
	var org api.Org
	h.get(at("/v1/orgs/initech", renamed.Position), h.Ada).expect(t, 200).decode(t, &org)
	if org.Name != "Initech Corp" || org.UpdatedBy != "user:ada@example.com" || len(org.Roles) != 1 || org.Roles[0].Role != "owner" {
		t.Fatalf("renamed: %+v", org)
	}
	if w := dirWrite(t, h.patch("/v1/orgs/initech", h.Ada, map[string]any{"name": "Initech Corp"}).expect(t, 200)); !w.Unchanged {
		t.Fatalf("the same name again: %+v", w)
	}

	p := dirWrite(t, h.post("/v1/orgs/initech/projects", h.Ada, map[string]any{"id": "billing", "name": "Billing"}).expect(t, 201))
	dirWrite(t, h.post("/v1/orgs/initech/projects/billing/envs", h.Ada, map[string]any{"id": "dev"}).expect(t, 201))
	prod := dirWrite(t, h.post("/v1/orgs/initech/projects/billing/envs", h.Ada, map[string]any{"id": "prod", "name": "Production",
		"production": true, "rotation_seconds": 7200, "approval": map[string]any{"reveal": true, "approvers": 2}}).expect(t, 201))
	b := dirWrite(t, h.post("/v1/orgs/initech/projects/billing/bundles", h.Ada, map[string]any{"id": "backend",
		"keys": []map[string]any{{"name": "DATABASE_URL", "required": true}, {"name": "API_KEY"}}}).expect(t, 201))
	if p.ID != "billing" || prod.ID != "prod" || b.ID != "backend" {
		t.Fatalf("ids %s %s %s", p.ID, prod.ID, b.ID)
	}
	var envs envList
	h.get(at("/v1/orgs/initech/projects/billing/envs", b.Position), h.Ada).expect(t, 200).decode(t, &envs)
	if len(envs.Items) != 2 || envs.Items[0].ID != "dev" || envs.Items[1].ID != "prod" {
		t.Fatalf("environments: %+v", envs.Items)
	}
	if e := envs.Items[0]; e.Name != "dev" || e.Production || e.RotationSeconds != 86400 || e.Approval != (api.EnvApproval{}) {
		t.Fatalf("dev: %+v", e)
	}
	if e := envs.Items[1]; e.Name != "Production" || !e.Production || e.RotationSeconds != 7200 || e.Approval != (api.EnvApproval{Reveal: true, Approvers: 2}) {
		t.Fatalf("prod: %+v", e)
	}
	// Each environment has its keyset from the start.
	if err := projections.WaitFor(ctx, h.Pool, b.Position, 5*time.Second, "keys"); err != nil {
		t.Fatal(err)
	}
	ks := must(h.Reader.Keysets(ctx, "initech"))
	if len(ks) != 2 || ks[0].Project != "billing" || ks[0].PrimaryKey == 0 {
		t.Fatalf("keysets: %+v", ks)
	}

	// Members: Bob develops in billing only; Carol administers the whole
	// organization.
	dirWrite(t, h.put("/v1/orgs/initech/projects/billing/members/bob@example.com", h.Ada, map[string]any{"role": "developer"}).expect(t, 200))
	g := dirWrite(t, h.put("/v1/orgs/initech/members/Carol@Example.COM", h.Ada, map[string]any{"role": "admin"}).expect(t, 200))
	var members memberList
	h.get(at("/v1/orgs/initech/members", g.Position), h.Ada).expect(t, 200).decode(t, &members)
	want := []api.Member{{User: "ada@example.com", Role: "owner"}, {User: "bob@example.com", Project: "billing", Role: "developer"}, {User: "carol@example.com", Role: "admin"}}
	if len(members.Items) != len(want) {
		t.Fatalf("members: %+v", members.Items)
	}
	for i, m := range members.Items {
		if m.User != want[i].User || m.Project != want[i].Project || m.Role != want[i].Role || m.GrantedAt.IsZero() || m.GrantedBy == "" {
			t.Fatalf("member %d: %+v, want %+v", i, m, want[i])
		}
	}
	// Bob, with a project role only, sees the organization and the project.
	h.get(at("/v1/orgs", g.Position), h.Bob).expect(t, 200).decode(t, &orgs)
	if o, ok := findOrg(orgs.Items, "initech"); !ok || len(o.Roles) != 1 || o.Roles[0] != (api.OrgRole{Project: "billing", Role: "developer"}) {
		t.Fatalf("bob's organizations: %+v", orgs.Items)
	}
	h.get("/v1/orgs/initech", h.Bob).expect(t, 200).decode(t, &org)
	if len(org.Roles) != 1 || org.Roles[0].Project != "billing" {
		t.Fatalf("bob's view of initech: %+v", org)
	}

	// A token for CI, limited to billing's dev environment.
	var tok api.IssuedServiceToken
	h.post("/v1/orgs/initech/tokens", h.Ada, map[string]any{"name": "ci", "role": "developer", "project": "billing",
		"environments": []string{"dev"}, "ttl_seconds": 3600}).expect(t, 201).decode(t, &tok)
	var me api.Me
	h.get(at("/v1/me", tok.Position), tok.Secret).expect(t, 200).decode(t, &me)
	if me.Kind != "token" || me.Org != "initech" || me.Token == nil || me.Token.ID != tok.ID || me.Token.Project != "billing" {
		t.Fatalf("the new token: %+v", me)
	}
	h.get("/v1/orgs/initech/projects/billing/envs/dev", tok.Secret).expect(t, 200)
	outsider404(t, h.get("/v1/orgs/initech/projects/billing/envs/prod", tok.Secret))
	rv := dirWrite(t, h.del("/v1/orgs/initech/tokens/"+tok.ID+"?reason=rotated", h.Ada).expect(t, 200))
	h.get("/v1/me", tok.Secret).expectProblem(t, 401, "unauthenticated")
	var st api.ServiceToken
	h.get(at("/v1/orgs/initech/tokens/"+tok.ID, rv.Position), h.Ada).expect(t, 200).decode(t, &st)
	if st.Status != "revoked" || st.RevokeReason != "rotated" || st.RevokedBy != "user:ada@example.com" || st.RevokedAt == nil {
		t.Fatalf("revoked token: %+v", st)
	}
}

type memberList struct {
	Items []api.Member `json:"items"`
}

func TestOrgsBadInput(t *testing.T) {
	h := newHarness(t)
	head := dirHead(t, h)
	for _, c := range []struct {
		body  any
		field string
	}{
		{map[string]any{"id": "Not A Slug", "name": "X"}, "id"},
		{map[string]any{"id": "-x", "name": "X"}, "id"},
		{map[string]any{"id": "ok", "name": ""}, "name"},
		{map[string]any{"name": "No id"}, "id"},
	} {
		r := h.do(call{method: "POST", path: "/v1/orgs", cred: h.Ada, body: c.body, invalid: true})
		r.expectProblem(t, 400, "invalid_request")
		var p api.Problem
		r.decode(t, &p)
		if p.Field != c.field {
			t.Errorf("%v: field %q, want %q", c.body, p.Field, c.field)
		}
	}
	h.do(call{method: "POST", path: "/v1/orgs", cred: h.Ada, body: map[string]any{"id": "x", "name": "X", "owner": "eve@example.com"}, invalid: true}).
		expectProblem(t, 400, "invalid_json")
	h.do(call{method: "POST", path: "/v1/orgs", cred: h.Ada, body: `{"id": "x", "name": "X"} {}`, contentType: "application/json", invalid: true}).
		expectProblem(t, 400, "invalid_json")
	h.do(call{method: "POST", path: "/v1/orgs", cred: h.Ada, body: "id=x", contentType: "text/plain", invalid: true}).
		expectProblem(t, 415, "unsupported_media_type")
	h.do(call{method: "PATCH", path: "/v1/orgs/acme", cred: h.Ada, body: map[string]any{}, invalid: true}).expectProblem(t, 400, "invalid_request")
	h.do(call{method: "PATCH", path: "/v1/orgs/acme", cred: h.Ada, body: map[string]any{"name": string(make([]byte, 101))}, invalid: true}).
		expectProblem(t, 400, "invalid_request")
	h.do(call{method: "GET", path: "/v1/orgs?min_position=later", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")
	// Only people create organizations; a viewer may not rename one.
	h.post("/v1/orgs", h.Owner, map[string]any{"id": "machines", "name": "Machines"}).expectProblem(t, 403, "forbidden")
	h.patch("/v1/orgs/acme", h.Eve, map[string]any{"name": "Eve's"}).expectProblem(t, 403, "forbidden")
	h.patch("/v1/orgs/acme", h.Bob, map[string]any{"name": "Bob's"}).expectProblem(t, 403, "forbidden")
	h.get("/v1/orgs", "").expectProblem(t, 401, "unauthenticated")
	unchangedLog(t, h, head)

	// The same idempotency key for another command is refused.
	key := map[string]string{"Idempotency-Key": "k-1"}
	h.do(call{method: "POST", path: "/v1/orgs/acme/projects", cred: h.Ada, header: key, body: map[string]any{"id": "one", "name": "One"}}).expect(t, 201)
	head = dirHead(t, h)
	h.do(call{method: "PATCH", path: "/v1/orgs/acme", cred: h.Ada, header: key, body: map[string]any{"name": "Acme Two"}}).
		expectProblem(t, 422, "idempotency_key_reused")
	unchangedLog(t, h, head)
}

// Another tenant's organization answers exactly as one that does not
// exist, on every endpoint of this area.
func TestOrgsOtherTenant(t *testing.T) {
	h := newHarness(t)
	pos := dirWrite(t, h.post("/v1/orgs/acme/projects", h.Owner, map[string]any{"id": "web", "name": "Web"}).expect(t, 201)).Position
	dirWrite(t, h.post("/v1/orgs/acme/projects/web/envs", h.Owner, map[string]any{"id": "dev"}).expect(t, 201))
	dirWrite(t, h.post("/v1/orgs/acme/projects/web/bundles", h.Owner, map[string]any{"id": "all", "keys": []map[string]any{{"name": "A"}}}).expect(t, 201))
	var tok api.IssuedServiceToken
	h.post("/v1/orgs/acme/tokens", h.Owner, map[string]any{"name": "deploy", "role": "viewer", "ttl_seconds": 600}).expect(t, 201).decode(t, &tok)
	head := dirHead(t, h)
	for _, org := range []string{"acme", "nosuch"} {
		base := "/v1/orgs/" + org
		for _, c := range []call{
			{method: "GET", path: at(base, pos)},
			{method: "PATCH", path: base, body: map[string]any{"name": "Mine"}},
			{method: "GET", path: base + "/members"},
			{method: "PUT", path: base + "/members/olga@example.com", body: map[string]any{"role": "owner"}},
			{method: "DELETE", path: base + "/members/ada@example.com"},
			{method: "PUT", path: base + "/projects/web/members/olga@example.com", body: map[string]any{"role": "viewer"}},
			{method: "DELETE", path: base + "/projects/web/members/ada@example.com"},
			{method: "GET", path: base + "/projects"},
			{method: "POST", path: base + "/projects", body: map[string]any{"id": "web2", "name": "Web"}},
			{method: "GET", path: base + "/projects/web"},
			{method: "PATCH", path: base + "/projects/web", body: map[string]any{"name": "Mine"}},
			{method: "GET", path: base + "/projects/web/envs"},
			{method: "POST", path: base + "/projects/web/envs", body: map[string]any{"id": "prod"}},
			{method: "GET", path: base + "/projects/web/envs/dev"},
			{method: "PATCH", path: base + "/projects/web/envs/dev", body: map[string]any{"production": true}},
			{method: "GET", path: base + "/projects/web/bundles"},
			{method: "POST", path: base + "/projects/web/bundles", body: map[string]any{"id": "b", "keys": []map[string]any{{"name": "A"}}}},
			{method: "GET", path: base + "/projects/web/bundles/all"},
			{method: "PUT", path: base + "/projects/web/bundles/all", body: map[string]any{"keys": []map[string]any{{"name": "B"}}}},
			{method: "DELETE", path: base + "/projects/web/bundles/all"},
			{method: "GET", path: base + "/tokens"},
			{method: "POST", path: base + "/tokens", body: map[string]any{"name": "mine", "role": "viewer", "ttl_seconds": 60}},
			{method: "GET", path: base + "/tokens/" + tok.ID},
			{method: "DELETE", path: base + "/tokens/" + tok.ID},
		} {
			c.cred = h.Olga
			t.Run(org+" "+c.method+" "+c.path, func(t *testing.T) { outsider404(t, h.do(c)) })
		}
	}
	unchangedLog(t, h, head)
	// Olga's own organization is hers to see; acme is not listed.
	var orgs orgList
	h.get("/v1/orgs", h.Olga).expect(t, 200).decode(t, &orgs)
	if len(orgs.Items) != 1 || orgs.Items[0].ID != "globex" {
		t.Fatalf("olga's organizations: %+v", orgs.Items)
	}
	// A token lists its own organization only.
	h.get("/v1/orgs", tok.Secret).expect(t, 200).decode(t, &orgs)
	if len(orgs.Items) != 1 || orgs.Items[0].ID != "acme" || len(orgs.Items[0].Roles) != 1 || orgs.Items[0].Roles[0].Role != "viewer" {
		t.Fatalf("a token's organizations: %+v", orgs.Items)
	}
}

// The rules of roles: who may grant what, and the last owner.
func TestMembersRoles(t *testing.T) {
	h := newHarness(t)
	dirWrite(t, h.post("/v1/orgs/acme/projects", h.Owner, map[string]any{"id": "web", "name": "Web"}).expect(t, 201))
	dirWrite(t, h.put("/v1/orgs/acme/members/dan@example.com", h.Ada, map[string]any{"role": "admin"}).expect(t, 200))
	dan := h.signIn("dan@example.com")
	head := dirHead(t, h)
	// A viewer or a developer grants nothing.
	h.put("/v1/orgs/acme/members/zed@example.com", h.Eve, map[string]any{"role": "viewer"}).expectProblem(t, 403, "forbidden")
	h.put("/v1/orgs/acme/members/zed@example.com", h.Bob, map[string]any{"role": "viewer"}).expectProblem(t, 403, "forbidden")
	h.put("/v1/orgs/acme/projects/web/members/zed@example.com", h.Bob, map[string]any{"role": "viewer"}).expectProblem(t, 403, "forbidden")
	// An admin grants no owner, and does not touch an owner.
	h.put("/v1/orgs/acme/members/zed@example.com", dan, map[string]any{"role": "owner"}).expectProblem(t, 403, "forbidden")
	h.put("/v1/orgs/acme/members/ada@example.com", dan, map[string]any{"role": "viewer"}).expectProblem(t, 403, "forbidden")
	h.del("/v1/orgs/acme/members/ada@example.com", dan).expectProblem(t, 403, "forbidden")
	// The last owner stays.
	h.del("/v1/orgs/acme/members/ada@example.com", h.Ada).expectProblem(t, 409, "conflict")
	h.put("/v1/orgs/acme/members/ada@example.com", h.Ada, map[string]any{"role": "admin"}).expectProblem(t, 409, "conflict")
	// Bad input.
	r := h.do(call{method: "PUT", path: "/v1/orgs/acme/members/zed@example.com", cred: h.Ada, body: map[string]any{"role": "god"}, invalid: true})
	r.expectProblem(t, 400, "invalid_request")
	var p api.Problem
	r.decode(t, &p)
	if p.Field != "role" {
		t.Fatalf("field %q", p.Field)
	}
	r = h.put("/v1/orgs/acme/members/not%20a%20user", h.Ada, map[string]any{"role": "viewer"})
	r.expectProblem(t, 400, "invalid_request")
	r.decode(t, &p)
	if p.Field != "user" {
		t.Fatalf("field %q", p.Field)
	}
	h.do(call{method: "PUT", path: "/v1/orgs/acme/members/zed@example.com", cred: h.Ada, body: map[string]any{}, invalid: true}).expectProblem(t, 400, "invalid_request")
	// Missing things.
	h.put("/v1/orgs/acme/projects/nope/members/zed@example.com", h.Ada, map[string]any{"role": "viewer"}).expectProblem(t, 404, "not_found")
	h.del("/v1/orgs/acme/members/zed@example.com", h.Ada).expectProblem(t, 404, "not_found")
	h.del("/v1/orgs/acme/projects/web/members/zed@example.com", h.Ada).expectProblem(t, 404, "not_found")
	unchangedLog(t, h, head)

	// An admin grants up to admin; an owner makes a second owner, after
	// which the first may leave. Addresses are taken in lowercase.
	dirWrite(t, h.put("/v1/orgs/acme/members/Zed@Example.com", dan, map[string]any{"role": "admin"}).expect(t, 200))
	if w := dirWrite(t, h.put("/v1/orgs/acme/members/zed@example.com", dan, map[string]any{"role": "admin"}).expect(t, 200)); !w.Unchanged {
		t.Fatalf("the same role again: %+v", w)
	}
	dirWrite(t, h.put("/v1/orgs/acme/members/dan@example.com", h.Ada, map[string]any{"role": "owner"}).expect(t, 200))
	gone := dirWrite(t, h.del("/v1/orgs/acme/members/ada@example.com", h.Ada).expect(t, 200))
	var members memberList
	h.get(at("/v1/orgs/acme/members", gone.Position), dan).expect(t, 200).decode(t, &members)
	users := map[string]string{}
	for _, m := range members.Items {
		users[m.User] = m.Role
	}
	if users["zed@example.com"] != "admin" || users["dan@example.com"] != "owner" || users["ada@example.com"] != "" {
		t.Fatalf("members after the changes: %v", users)
	}
	// Ada is no member any more: acme is a stranger to her.
	outsider404(t, h.get("/v1/orgs/acme", h.Ada))

	// A project admin manages the project's members, not the
	// organization's, and sees only the project's grants.
	dirWrite(t, h.put("/v1/orgs/acme/projects/web/members/pia@example.com", dan, map[string]any{"role": "admin"}).expect(t, 200))
	pia := h.signIn("pia@example.com")
	w := dirWrite(t, h.put("/v1/orgs/acme/projects/web/members/quinn@example.com", pia, map[string]any{"role": "developer"}).expect(t, 200))
	h.put("/v1/orgs/acme/members/quinn@example.com", pia, map[string]any{"role": "viewer"}).expect(t, 404)
	h.get(at("/v1/orgs/acme/members", w.Position), pia).expect(t, 200).decode(t, &members)
	if len(members.Items) != 2 || members.Items[0].User != "pia@example.com" || members.Items[1].User != "quinn@example.com" {
		t.Fatalf("a project admin's view of the members: %+v", members.Items)
	}
	for _, m := range members.Items {
		if m.Project != "web" {
			t.Fatalf("a project admin sees %+v", m)
		}
	}
	dirWrite(t, h.del("/v1/orgs/acme/projects/web/members/quinn@example.com", pia).expect(t, 200))
}
