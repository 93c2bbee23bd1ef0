package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/api"
)

type tokenList struct {
	Items []api.ServiceToken `json:"items"`
}

// databaseHolds reports the tables of the harness's schema (the log, the
// key material and every read model) where some row's text holds s.
func databaseHolds(t *testing.T, h *harness, s string) []string {
	t.Helper()
	rows, err := h.Pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, table := range tables {
		var n int
		if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()+` t WHERE strpos(t::text, $1) > 0`, s).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			found = append(found, table)
		}
	}
	return found
}

func TestTokensIssueUseRevoke(t *testing.T) {
	h := newHarness(t)
	dirProjects(t, h)
	key := map[string]string{"Idempotency-Key": "deploy-token-1"}
	body := map[string]any{"name": "deploy", "role": "developer", "project": "web", "ttl_seconds": 3600}
	r := h.do(call{method: "POST", path: "/v1/orgs/acme/tokens", cred: h.Ada, header: key, body: body}).expect(t, 201)
	w := dirWrite(t, r)
	var tok api.IssuedServiceToken
	r.decode(t, &tok)
	if !strings.HasPrefix(tok.Secret, "stele_tok_acme."+tok.ID+".") || tok.Name != "deploy" || tok.Role != "developer" || tok.Project != "web" ||
		len(tok.Environments) != 0 || r.header.Get("Location") != "/v1/orgs/acme/tokens/"+tok.ID {
		t.Fatalf("issued %+v (Location %q)", tok, r.header.Get("Location"))
	}
	if d := time.Until(tok.ExpiresAt); d < 3590*time.Second || d > 3600*time.Second {
		t.Fatalf("expires in %s", d)
	}
	// A retry appends nothing and cannot show the secret again.
	head := dirHead(t, h)
	h.do(call{method: "POST", path: "/v1/orgs/acme/tokens", cred: h.Ada, header: key, body: body}).expectProblem(t, 409, "shown_once")
	unchangedLog(t, h, head)

	// The token works as a bearer credential, within its project.
	var me api.Me
	h.get(at("/v1/me", tok.Position), tok.Secret).expect(t, 200).decode(t, &me)
	if me.Kind != "token" || me.Token == nil || me.Token.ID != tok.ID || me.Token.Project != "web" || me.Roles[0].Role != "developer" {
		t.Fatalf("me %+v", me)
	}
	h.get("/v1/orgs/acme/projects/web/envs/dev", tok.Secret).expect(t, 200)

	// Listed with its metadata, never its secret or hash.
	var ts tokenList
	list := h.get(at("/v1/orgs/acme/tokens", w.Position), h.Eve).expect(t, 200)
	list.decode(t, &ts)
	if len(ts.Items) != 2 || ts.Items[0].Name != "bootstrap" || ts.Items[1].ID != tok.ID {
		t.Fatalf("tokens %+v", ts.Items)
	}
	if st := ts.Items[1]; st.Status != "active" || st.Project != "web" || st.IssuedBy != "user:ada@example.com" || !st.ExpiresAt.Equal(tok.ExpiresAt) || st.RevokedAt != nil {
		t.Fatalf("token %+v", st)
	}
	secretPart := tok.Secret[strings.LastIndex(tok.Secret, ".")+1:]
	if strings.Contains(string(list.body), secretPart) || strings.Contains(string(list.body), "hash") {
		t.Fatalf("the token list shows a secret: %s", list.body)
	}

	// The token revokes itself, and stops working at once.
	rv := dirWrite(t, h.del("/v1/orgs/acme/tokens/"+tok.ID+"?reason=leaked%20in%20a%20build%20log", tok.Secret).expect(t, 200))
	h.get("/v1/me", tok.Secret).expectProblem(t, 401, "unauthenticated")
	h.get("/v1/orgs/acme/projects", tok.Secret).expectProblem(t, 401, "unauthenticated")
	var st api.ServiceToken
	h.get(at("/v1/orgs/acme/tokens/"+tok.ID, rv.Position), h.Ada).expect(t, 200).decode(t, &st)
	if st.Status != "revoked" || st.RevokeReason != "leaked in a build log" || st.RevokedBy != "token:"+tok.ID {
		t.Fatalf("revoked %+v", st)
	}
	h.del("/v1/orgs/acme/tokens/"+tok.ID, h.Ada).expectProblem(t, 409, "conflict")

	// The secret reached no log line and no table: not the log, not the
	// read models (proj_tokens keeps only its hash).
	for _, s := range []string{tok.Secret, secretPart} {
		if strings.Contains(h.Logs.String(), s) {
			t.Fatal("the token's secret is in the server's log")
		}
		if tables := databaseHolds(t, h, s); len(tables) > 0 {
			t.Fatalf("the token's secret is in %v", tables)
		}
	}
	var n int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM proj_tokens WHERE token_id = $1 AND secret_hash <> ''`, tok.ID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("proj_tokens: %d rows with the hash (%v)", n, err)
	}

	// An absolute expiry works too.
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	var nightly api.IssuedServiceToken
	h.post("/v1/orgs/acme/tokens", h.Ada, map[string]any{"name": "nightly", "role": "viewer", "expires_at": exp}).expect(t, 201).decode(t, &nightly)
	if !nightly.ExpiresAt.Equal(exp) || nightly.Project != "" {
		t.Fatalf("expires_at: %+v, want %s", nightly, exp)
	}
}

func TestTokensRules(t *testing.T) {
	h := newHarness(t)
	dirProjects(t, h)
	dirWrite(t, h.put("/v1/orgs/acme/members/dan@example.com", h.Ada, map[string]any{"role": "admin"}).expect(t, 200))
	dan := h.signIn("dan@example.com")
	head := dirHead(t, h)
	ok := map[string]any{"name": "ci", "role": "viewer", "ttl_seconds": 600}
	// Roles: a developer or viewer issues nothing; nobody issues above
	// their own role.
	h.post("/v1/orgs/acme/tokens", h.Bob, ok).expectProblem(t, 403, "forbidden")
	h.post("/v1/orgs/acme/tokens", h.Eve, ok).expectProblem(t, 403, "forbidden")
	h.post("/v1/orgs/acme/tokens", dan, map[string]any{"name": "root", "role": "owner", "ttl_seconds": 600}).expectProblem(t, 403, "forbidden")
	h.post("/v1/orgs/acme/tokens", h.Bob, map[string]any{"name": "ci", "role": "viewer", "project": "web", "ttl_seconds": 600}).expectProblem(t, 403, "forbidden")
	for _, c := range []struct {
		body    map[string]any
		invalid bool
		field   string
	}{
		{map[string]any{"name": "ci", "role": "viewer"}, true, "ttl_seconds"},
		{map[string]any{"name": "ci", "role": "viewer", "ttl_seconds": 60, "expires_at": time.Now().Add(time.Hour)}, true, "ttl_seconds"},
		{map[string]any{"name": "ci", "role": "viewer", "ttl_seconds": 0}, true, "ttl_seconds"},
		{map[string]any{"name": "ci", "role": "viewer", "ttl_seconds": 400 * 24 * 3600}, true, "ttl_seconds"},
		{map[string]any{"name": "ci", "role": "viewer", "expires_at": time.Now().Add(-time.Hour)}, false, "expires_at"},
		{map[string]any{"name": "ci", "role": "viewer", "expires_at": time.Now().Add(400 * 24 * time.Hour)}, false, "expires_at"},
		{map[string]any{"name": "", "role": "viewer", "ttl_seconds": 60}, true, "name"},
		{map[string]any{"name": "ci", "role": "root", "ttl_seconds": 60}, true, "role"},
		{map[string]any{"name": "ci", "role": "viewer", "environments": []string{"dev"}, "ttl_seconds": 60}, false, "environments"},
		{map[string]any{"name": "ci", "role": "viewer", "project": "nope", "ttl_seconds": 60}, false, "project"},
		{map[string]any{"name": "ci", "role": "viewer", "project": "web", "environments": []string{"staging"}, "ttl_seconds": 60}, false, "environments"},
	} {
		r := h.do(call{method: "POST", path: "/v1/orgs/acme/tokens", cred: h.Ada, body: c.body, invalid: c.invalid})
		r.expectProblem(t, 400, "invalid_request")
		var p api.Problem
		r.decode(t, &p)
		if p.Field != c.field {
			t.Errorf("%v: field %q, want %q (%s)", c.body, p.Field, c.field, p.Detail)
		}
	}
	h.do(call{method: "POST", path: "/v1/orgs/acme/tokens", cred: h.Ada, body: map[string]any{"name": "ci", "role": "viewer", "ttl_seconds": 60, "secret": "mine"}, invalid: true}).
		expectProblem(t, 400, "invalid_json")
	h.get("/v1/orgs/acme/tokens/0011223344556677", h.Ada).expectProblem(t, 404, "not_found")
	h.del("/v1/orgs/acme/tokens/0011223344556677", h.Ada).expectProblem(t, 404, "not_found")
	unchangedLog(t, h, head)

	// Tokens scoped to a project are managed, and seen, by that project's
	// people; a developer revokes none.
	var web api.IssuedServiceToken
	h.post("/v1/orgs/acme/tokens", dan, map[string]any{"name": "web-ci", "role": "developer", "project": "web", "ttl_seconds": 600}).expect(t, 201).decode(t, &web)
	w := dirWrite(t, h.post("/v1/orgs/acme/tokens", dan, map[string]any{"name": "org-ci", "role": "viewer", "ttl_seconds": 600}).expect(t, 201))
	h.del("/v1/orgs/acme/tokens/"+web.ID, h.Bob).expectProblem(t, 403, "forbidden")
	dirWrite(t, h.put("/v1/orgs/acme/projects/web/members/pia@example.com", h.Ada, map[string]any{"role": "admin"}).expect(t, 200))
	pia := h.signIn("pia@example.com")
	var ts tokenList
	h.get(at("/v1/orgs/acme/tokens", w.Position), pia).expect(t, 200).decode(t, &ts)
	if len(ts.Items) != 1 || ts.Items[0].ID != web.ID {
		t.Fatalf("a project admin sees the tokens %+v", ts.Items)
	}
	h.get(at("/v1/orgs/acme/tokens", w.Position), web.Secret).expect(t, 200).decode(t, &ts)
	if len(ts.Items) != 1 || ts.Items[0].ID != web.ID {
		t.Fatalf("a project token sees the tokens %+v", ts.Items)
	}
	var all tokenList
	h.get(at("/v1/orgs/acme/tokens", w.Position), h.Eve).expect(t, 200).decode(t, &all)
	if len(all.Items) != 3 {
		t.Fatalf("a viewer of the organization sees the tokens %+v", all.Items)
	}
	bootstrap := all.Items[0].ID
	head = dirHead(t, h)
	r := h.do(call{method: "DELETE", path: "/v1/orgs/acme/tokens/" + bootstrap + "?reason=" + strings.Repeat("x", 501), cred: h.Ada, invalid: true})
	r.expectProblem(t, 400, "invalid_request")
	unchangedLog(t, h, head)
	outsider404(t, h.get("/v1/orgs/acme/tokens/"+bootstrap, pia))
	// A project admin issues in its project only, and revokes there.
	h.post("/v1/orgs/acme/tokens", pia, map[string]any{"name": "x", "role": "viewer", "ttl_seconds": 60}).expect(t, 404)
	outsider404(t, h.post("/v1/orgs/acme/tokens", pia, map[string]any{"name": "x", "role": "viewer", "project": "api", "ttl_seconds": 60}))
	h.post("/v1/orgs/acme/tokens", pia, map[string]any{"name": "x", "role": "viewer", "project": "web", "environments": []string{"prod"}, "ttl_seconds": 60}).expect(t, 201)
	outsider404(t, h.del("/v1/orgs/acme/tokens/"+bootstrap, pia))
	dirWrite(t, h.del("/v1/orgs/acme/tokens/"+web.ID, pia).expect(t, 200))
}
