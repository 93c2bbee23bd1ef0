package api_test

import (
	"net/http"
	"slices"
	"testing"

	"stele.dev/stele/api"
)

type projectList struct {
	Items []api.Project `json:"items"`
}

type envList struct {
	Items []api.Environment `json:"items"`
}

type bundleList struct {
	Items []api.Bundle `json:"items"`
}

// dirProjects makes acme's projects web (environments dev and prod) and
// api (environment dev), and web's bundle backend, through the API as
// the owner token; it returns the position of the last write.
func dirProjects(t *testing.T, h *harness) uint64 {
	t.Helper()
	var last dirWritten
	for _, c := range []struct {
		path string
		body map[string]any
	}{
		{"/v1/orgs/acme/projects", map[string]any{"id": "web", "name": "Web"}},
		{"/v1/orgs/acme/projects", map[string]any{"id": "api", "name": "API"}},
		{"/v1/orgs/acme/projects/web/envs", map[string]any{"id": "dev"}},
		{"/v1/orgs/acme/projects/web/envs", map[string]any{"id": "prod", "production": true}},
		{"/v1/orgs/acme/projects/api/envs", map[string]any{"id": "dev"}},
		{"/v1/orgs/acme/projects/web/bundles", map[string]any{"id": "backend", "keys": []map[string]any{{"name": "DATABASE_URL", "required": true}, {"name": "API_KEY"}}}},
	} {
		last = dirWrite(t, h.post(c.path, h.Owner, c.body).expect(t, http.StatusCreated))
	}
	return last.Position
}

func projectIDs(items []api.Project) []string {
	var out []string
	for _, p := range items {
		out = append(out, p.ID)
	}
	return out
}

func envIDs(items []api.Environment) []string {
	var out []string
	for _, e := range items {
		out = append(out, e.ID)
	}
	return out
}

func TestProjectsAndEnvironments(t *testing.T) {
	h := newHarness(t)
	pos := dirProjects(t, h)
	var ps projectList
	h.get(at("/v1/orgs/acme/projects", pos), h.Eve).expect(t, 200).decode(t, &ps)
	if got := projectIDs(ps.Items); !slices.Equal(got, []string{"api", "web"}) {
		t.Fatalf("projects %v", got)
	}
	var p api.Project
	h.get("/v1/orgs/acme/projects/web", h.Eve).expect(t, 200).decode(t, &p)
	if p.Name != "Web" || p.CreatedAt.IsZero() || p.CreatedBy == "" {
		t.Fatalf("web: %+v", p)
	}
	h.get("/v1/orgs/acme/projects/nope", h.Eve).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/nope/envs", h.Eve).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/nope/bundles", h.Eve).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/web/envs/staging", h.Eve).expectProblem(t, 404, "not_found")

	w := dirWrite(t, h.patch("/v1/orgs/acme/projects/web", h.Ada, map[string]any{"name": "Website"}).expect(t, 200))
	h.get(at("/v1/orgs/acme/projects/web", w.Position), h.Eve).expect(t, 200).decode(t, &p)
	if p.Name != "Website" || p.UpdatedBy != "user:ada@example.com" {
		t.Fatalf("renamed: %+v", p)
	}

	// Change some settings of an environment; the others stay.
	w = dirWrite(t, h.patch("/v1/orgs/acme/projects/web/envs/prod", h.Ada, map[string]any{"rotation_seconds": 3600,
		"approval": map[string]any{"change": true, "reveal": true, "approvers": 2}}).expect(t, 200))
	var e api.Environment
	h.get(at("/v1/orgs/acme/projects/web/envs/prod", w.Position), h.Bob).expect(t, 200).decode(t, &e)
	if e.Name != "prod" || !e.Production || e.RotationSeconds != 3600 || e.Approval != (api.EnvApproval{Reveal: true, Change: true, Approvers: 2}) {
		t.Fatalf("prod after the change: %+v", e)
	}
	w = dirWrite(t, h.patch("/v1/orgs/acme/projects/web/envs/prod", h.Ada, map[string]any{"name": "Production", "production": false}).expect(t, 200))
	h.get(at("/v1/orgs/acme/projects/web/envs/prod", w.Position), h.Bob).expect(t, 200).decode(t, &e)
	if e.Name != "Production" || e.Production || e.RotationSeconds != 3600 || !e.Approval.Reveal {
		t.Fatalf("prod after the second change: %+v", e)
	}
	if w := dirWrite(t, h.patch("/v1/orgs/acme/projects/web/envs/prod", h.Ada, map[string]any{"name": "Production"}).expect(t, 200)); !w.Unchanged {
		t.Fatalf("the same settings again: %+v", w)
	}

	// Roles: a viewer or a developer creates and changes nothing.
	head := dirHead(t, h)
	h.post("/v1/orgs/acme/projects", h.Eve, map[string]any{"id": "new", "name": "New"}).expectProblem(t, 403, "forbidden")
	h.post("/v1/orgs/acme/projects", h.Bob, map[string]any{"id": "new", "name": "New"}).expectProblem(t, 403, "forbidden")
	h.patch("/v1/orgs/acme/projects/web", h.Bob, map[string]any{"name": "Bob's"}).expectProblem(t, 403, "forbidden")
	h.post("/v1/orgs/acme/projects/web/envs", h.Bob, map[string]any{"id": "qa"}).expectProblem(t, 403, "forbidden")
	h.patch("/v1/orgs/acme/projects/web/envs/prod", h.Eve, map[string]any{"production": true}).expectProblem(t, 403, "forbidden")
	// Bad input changes nothing either.
	for _, c := range []struct {
		path, method string
		body         any
		status       int
		code, field  string
	}{
		{"/v1/orgs/acme/projects", "POST", map[string]any{"id": "Web Site", "name": "X"}, 400, "invalid_request", "id"},
		{"/v1/orgs/acme/projects", "POST", map[string]any{"id": "web", "name": "Again"}, 409, "already_exists", ""},
		{"/v1/orgs/acme/projects", "POST", map[string]any{"id": "x"}, 400, "invalid_request", "name"},
		{"/v1/orgs/acme/projects/web", "PATCH", map[string]any{}, 400, "invalid_request", "name"},
		{"/v1/orgs/acme/projects/nope", "PATCH", map[string]any{"name": "Nope"}, 404, "not_found", ""},
		{"/v1/orgs/acme/projects/web/envs", "POST", map[string]any{"id": "dev"}, 409, "already_exists", ""},
		{"/v1/orgs/acme/projects/web/envs", "POST", map[string]any{"id": "qa", "rotation_seconds": 60}, 400, "invalid_request", "rotation_seconds"},
		{"/v1/orgs/acme/projects/web/envs", "POST", map[string]any{"id": "qa", "rotation_seconds": -1}, 400, "invalid_request", "rotation_seconds"},
		{"/v1/orgs/acme/projects/web/envs", "POST", map[string]any{"id": "qa", "rotation_seconds": 1 << 62}, 400, "invalid_request", "rotation_seconds"},
		{"/v1/orgs/acme/projects/web/envs", "POST", map[string]any{"id": "qa", "approval": map[string]any{"approvers": 9}}, 400, "invalid_request", "approval.approvers"},
		{"/v1/orgs/acme/projects/web/envs", "POST", map[string]any{"id": "qa", "approval": map[string]any{"quorum": 1}}, 400, "invalid_json", ""},
		{"/v1/orgs/acme/projects/web/envs", "POST", map[string]any{"id": "QA"}, 400, "invalid_request", "id"},
		{"/v1/orgs/acme/projects/nope/envs", "POST", map[string]any{"id": "qa"}, 404, "not_found", ""},
		{"/v1/orgs/acme/projects/web/envs/prod", "PATCH", map[string]any{"rotation_seconds": 10}, 400, "invalid_request", "rotation_seconds"},
		{"/v1/orgs/acme/projects/web/envs/prod", "PATCH", map[string]any{"name": ""}, 400, "invalid_request", "name"},
		{"/v1/orgs/acme/projects/web/envs/staging", "PATCH", map[string]any{"production": true}, 404, "not_found", ""},
	} {
		r := h.do(call{method: c.method, path: c.path, cred: h.Ada, body: c.body, invalid: c.status == 400})
		r.expectProblem(t, c.status, c.code)
		var pr api.Problem
		r.decode(t, &pr)
		if pr.Field != c.field {
			t.Errorf("%s %s %v: field %q, want %q", c.method, c.path, c.body, pr.Field, c.field)
		}
	}
	unchangedLog(t, h, head)
}

func TestBundles(t *testing.T) {
	h := newHarness(t)
	pos := dirProjects(t, h)
	var bs bundleList
	h.get(at("/v1/orgs/acme/projects/web/bundles", pos), h.Eve).expect(t, 200).decode(t, &bs)
	if len(bs.Items) != 1 || bs.Items[0].ID != "backend" || !slices.Equal(bs.Items[0].Keys, []api.BundleKey{{Name: "DATABASE_URL", Required: true}, {Name: "API_KEY"}}) {
		t.Fatalf("bundles %+v", bs.Items)
	}
	h.get("/v1/orgs/acme/projects/api/bundles", h.Eve).expect(t, 200).decode(t, &bs)
	if len(bs.Items) != 0 {
		t.Fatalf("api's bundles %+v", bs.Items)
	}
	// Replace the keys (their order is the bundle's).
	keys := []map[string]any{{"name": "API_KEY", "required": true}, {"name": "DATABASE_URL"}, {"name": "SENTRY_DSN"}}
	w := dirWrite(t, h.put("/v1/orgs/acme/projects/web/bundles/backend", h.Ada, map[string]any{"keys": keys}).expect(t, 200))
	var b api.Bundle
	h.get(at("/v1/orgs/acme/projects/web/bundles/backend", w.Position), h.Bob).expect(t, 200).decode(t, &b)
	if !slices.Equal(b.Keys, []api.BundleKey{{Name: "API_KEY", Required: true}, {Name: "DATABASE_URL"}, {Name: "SENTRY_DSN"}}) || b.Project != "web" {
		t.Fatalf("replaced bundle %+v", b)
	}
	if w := dirWrite(t, h.put("/v1/orgs/acme/projects/web/bundles/backend", h.Ada, map[string]any{"keys": keys}).expect(t, 200)); !w.Unchanged {
		t.Fatalf("the same keys again: %+v", w)
	}

	head := dirHead(t, h)
	h.post("/v1/orgs/acme/projects/web/bundles", h.Bob, map[string]any{"id": "mine", "keys": []map[string]any{{"name": "A"}}}).expectProblem(t, 403, "forbidden")
	h.put("/v1/orgs/acme/projects/web/bundles/backend", h.Eve, map[string]any{"keys": []map[string]any{{"name": "A"}}}).expectProblem(t, 403, "forbidden")
	h.del("/v1/orgs/acme/projects/web/bundles/backend", h.Bob).expectProblem(t, 403, "forbidden")
	for _, c := range []struct {
		method, path string
		body         any
		status       int
		code, field  string
	}{
		{"POST", "/v1/orgs/acme/projects/web/bundles", map[string]any{"id": "backend", "keys": []map[string]any{{"name": "A"}}}, 409, "already_exists", ""},
		{"POST", "/v1/orgs/acme/projects/web/bundles", map[string]any{"id": "b", "keys": []map[string]any{}}, 400, "invalid_request", "keys"},
		{"POST", "/v1/orgs/acme/projects/web/bundles", map[string]any{"id": "b", "keys": []map[string]any{{"name": "1BAD"}}}, 400, "invalid_request", "keys"},
		{"POST", "/v1/orgs/acme/projects/web/bundles", map[string]any{"id": "b", "keys": []map[string]any{{"name": "A"}, {"name": "A"}}}, 400, "invalid_request", "keys"},
		{"POST", "/v1/orgs/acme/projects/web/bundles", map[string]any{"id": "B!", "keys": []map[string]any{{"name": "A"}}}, 400, "invalid_request", "id"},
		{"POST", "/v1/orgs/acme/projects/nope/bundles", map[string]any{"id": "b", "keys": []map[string]any{{"name": "A"}}}, 404, "not_found", ""},
		{"PUT", "/v1/orgs/acme/projects/web/bundles/frontend", map[string]any{"keys": []map[string]any{{"name": "A"}}}, 404, "not_found", ""},
		{"PUT", "/v1/orgs/acme/projects/web/bundles/backend", map[string]any{"keys": []map[string]any{{"name": "A", "optional": true}}}, 400, "invalid_json", ""},
		{"DELETE", "/v1/orgs/acme/projects/web/bundles/frontend", nil, 404, "not_found", ""},
	} {
		r := h.do(call{method: c.method, path: c.path, cred: h.Ada, body: c.body, invalid: c.status == 400})
		r.expectProblem(t, c.status, c.code)
		var pr api.Problem
		r.decode(t, &pr)
		if pr.Field != c.field {
			t.Errorf("%s %s %v: field %q, want %q", c.method, c.path, c.body, pr.Field, c.field)
		}
	}
	unchangedLog(t, h, head)

	// Delete it; its id may be used again.
	w = dirWrite(t, h.del("/v1/orgs/acme/projects/web/bundles/backend", h.Ada).expect(t, 200))
	h.get(at("/v1/orgs/acme/projects/web/bundles/backend", w.Position), h.Eve).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/web/bundles", h.Eve).expect(t, 200).decode(t, &bs)
	if len(bs.Items) != 0 {
		t.Fatalf("bundles after the delete %+v", bs.Items)
	}
	w = dirWrite(t, h.post("/v1/orgs/acme/projects/web/bundles", h.Ada, map[string]any{"id": "backend", "keys": []map[string]any{{"name": "ONLY"}}}).expect(t, 201))
	h.get(at("/v1/orgs/acme/projects/web/bundles/backend", w.Position), h.Eve).expect(t, 200).decode(t, &b)
	if !slices.Equal(b.Keys, []api.BundleKey{{Name: "ONLY"}}) {
		t.Fatalf("bundle made again %+v", b)
	}
}

// A person whose only role is in one project, and tokens limited to a
// project or to environments, see what they cover and nothing else.
func TestProjectsScopes(t *testing.T) {
	h := newHarness(t)
	dirProjects(t, h)
	dirWrite(t, h.put("/v1/orgs/acme/projects/web/members/pia@example.com", h.Ada, map[string]any{"role": "viewer"}).expect(t, 200))
	pia := h.signIn("pia@example.com")
	var webTok, devTok api.IssuedServiceToken
	h.post("/v1/orgs/acme/tokens", h.Ada, map[string]any{"name": "web", "role": "admin", "project": "web", "ttl_seconds": 600}).expect(t, 201).decode(t, &webTok)
	h.post("/v1/orgs/acme/tokens", h.Ada, map[string]any{"name": "web-dev", "role": "developer", "project": "web",
		"environments": []string{"dev"}, "ttl_seconds": 600}).expect(t, 201).decode(t, &devTok)
	pos := dirWrite(t, h.post("/v1/orgs/acme/projects/web/envs", h.Ada, map[string]any{"id": "qa"}).expect(t, 201)).Position

	for name, cred := range map[string]string{"project member": pia, "project token": webTok.Secret, "environment token": devTok.Secret} {
		t.Run(name, func(t *testing.T) {
			var ps projectList
			h.get(at("/v1/orgs/acme/projects", pos), cred).expect(t, 200).decode(t, &ps)
			if got := projectIDs(ps.Items); !slices.Equal(got, []string{"web"}) {
				t.Fatalf("projects %v", got)
			}
			h.get("/v1/orgs/acme", cred).expect(t, 200)
			h.get("/v1/orgs/acme/projects/web", cred).expect(t, 200)
			h.get("/v1/orgs/acme/projects/web/bundles/backend", cred).expect(t, 200)
			var es envList
			h.get("/v1/orgs/acme/projects/web/envs", cred).expect(t, 200).decode(t, &es)
			want := []string{"dev", "prod", "qa"}
			if cred == devTok.Secret {
				want = []string{"dev"}
			}
			if got := envIDs(es.Items); !slices.Equal(got, want) {
				t.Fatalf("environments %v, want %v", got, want)
			}
			h.get("/v1/orgs/acme/projects/web/envs/dev", cred).expect(t, 200)
			// The other project, and for the environment token the other
			// environments, do not exist for them.
			for _, path := range []string{"/v1/orgs/acme/projects/api", "/v1/orgs/acme/projects/api/envs", "/v1/orgs/acme/projects/api/envs/dev",
				"/v1/orgs/acme/projects/api/bundles", "/v1/orgs/acme/projects/nope"} {
				outsider404(t, h.get(path, cred))
			}
			if cred == devTok.Secret {
				outsider404(t, h.get("/v1/orgs/acme/projects/web/envs/prod", cred))
			}
			// Creating a project needs a role in the whole organization.
			h.post("/v1/orgs/acme/projects", cred, map[string]any{"id": "mine", "name": "Mine"}).expectProblem(t, 403, "forbidden")
		})
	}
	// The project token administers its project, and only it.
	dirWrite(t, h.post("/v1/orgs/acme/projects/web/envs", webTok.Secret, map[string]any{"id": "preview"}).expect(t, 201))
	outsider404(t, h.post("/v1/orgs/acme/projects/api/envs", webTok.Secret, map[string]any{"id": "preview"}))
	h.post("/v1/orgs/acme/projects/web/envs", pia, map[string]any{"id": "pia"}).expectProblem(t, 403, "forbidden")
}
