package api_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"stele.dev/stele/api"
	"stele.dev/stele/domain"
)

// follow fails unless r redirects (303) to a page of the same server with
// the flash key done, and returns that page's text.
func (b *browserClient) follow(t *testing.T, r response, done string) string {
	t.Helper()
	loc := r.header.Get("Location")
	if r.status != http.StatusSeeOther || !strings.HasPrefix(loc, "/") || !strings.Contains(loc, "done="+done) {
		t.Fatalf("want a redirect with done=%s, got %d %q: %.300s", done, r.status, loc, r.body)
	}
	return b.get(loc).page(t, 200)
}

// formProblem is the problem a page shows about its form.
func formProblem(page string) string {
	m := regexp.MustCompile(`id="form-problem">([^<]*)<`).FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return m[1]
}

// members returns the members table as "user|where|role" rows.
func membersOf(t *testing.T, page string) []string {
	t.Helper()
	var out []string
	for _, row := range dashTable(t, page, "members-table") {
		if len(row) >= 5 {
			out = append(out, row[0]+"|"+row[1]+"|"+row[2])
		}
	}
	return out
}

func TestMembersPage(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	must(h.App.CreateProject(ctx, dashAda, "acme", "web", "Web"))
	dashCaughtUp(t, h)
	ada := signedInBrowser(t, h, "ada@example.com")

	page := ada.get("/orgs/acme/members").page(t, 200)
	got := membersOf(t, page)
	for _, want := range []string{"ada@example.com|the whole organization|owner", "bob@example.com|the whole organization|developer",
		"eve@example.com|the whole organization|viewer"} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Fatalf("members %q lack %q", got, want)
		}
	}
	if !strings.Contains(page, `action="/orgs/acme/members"`) || !strings.Contains(page, `<option value="web">project web</option>`) ||
		!strings.Contains(page, `name="csrf_token"`) || !strings.Contains(page, `<label for="grant-user">`) {
		t.Fatal("no grant form for the owner")
	}

	// Grant organization-wide, and in a project; the page shows them.
	page = ada.follow(t, ada.post("/orgs/acme/members", url.Values{"user": {" Carol@Example.com "}, "role": {"developer"}, "project": {""}}), "granted")
	if !strings.Contains(page, "Role granted.") || !strings.Contains(strings.Join(membersOf(t, page), "\n"), "carol@example.com|the whole organization|developer") {
		t.Fatalf("after granting: %q", membersOf(t, page))
	}
	page = ada.follow(t, ada.post("/orgs/acme/members", url.Values{"user": {"dan@example.com"}, "role": {"viewer"}, "project": {"web"}}), "granted")
	if !strings.Contains(strings.Join(membersOf(t, page), "\n"), "dan@example.com|project web|viewer") {
		t.Fatalf("after granting in a project: %q", membersOf(t, page))
	}
	// The API agrees.
	var list struct{ Items []api.Member }
	h.get("/v1/orgs/acme/members", h.Ada).expect(t, 200).decode(t, &list)
	found := 0
	for _, m := range list.Items {
		if (m.User == "carol@example.com" && m.Project == "" && m.Role == "developer") || (m.User == "dan@example.com" && m.Project == "web" && m.Role == "viewer") {
			found++
		}
	}
	if found != 2 {
		t.Fatalf("the API's members: %+v", list.Items)
	}

	// Revoke by the button's form.
	if !strings.Contains(page, "Revoke dan@example.com&#39;s viewer role in web") && !strings.Contains(page, "Revoke dan@example.com's viewer role in web") {
		t.Fatal("no revoke button that says what it revokes")
	}
	page = ada.follow(t, ada.post("/orgs/acme/members/revoke", url.Values{"user": {"dan@example.com"}, "project": {"web"}}), "revoked")
	if strings.Contains(strings.Join(membersOf(t, page), "\n"), "dan@example.com") || !strings.Contains(page, "Revoked.") {
		t.Fatalf("after revoking: %q", membersOf(t, page))
	}

	// Without the CSRF token: refused, nothing granted.
	ada.do("POST", "/orgs/acme/members", url.Values{"user": {"mallory@example.com"}, "role": {"owner"}}).page(t, http.StatusForbidden)
	ada.do("POST", "/orgs/acme/members", url.Values{"user": {"mallory@example.com"}, "role": {"owner"}, "csrf_token": {"forged-forged-forged-forged"}}).page(t, http.StatusForbidden)
	ada.do("POST", "/orgs/acme/members/revoke", url.Values{"user": {"bob@example.com"}}).page(t, http.StatusForbidden)
	if strings.Contains(ada.get("/orgs/acme/members").page(t, 200), "mallory") {
		t.Fatal("a grant without the CSRF token took effect")
	}

	// The domain's refusals, on the page: the last owner stays; an admin
	// cannot make an owner; bad input.
	page = ada.post("/orgs/acme/members/revoke", url.Values{"user": {"ada@example.com"}, "project": {""}}).page(t, 409)
	if p := formProblem(page); !strings.Contains(p, "last owner") {
		t.Fatalf("revoking the last owner: problem %q", p)
	}
	must(h.App.GrantRole(ctx, dashAda, "acme", "adam@example.com", domain.RoleAdmin, ""))
	dashCaughtUp(t, h)
	adam := signedInBrowser(t, h, "adam@example.com")
	page = adam.get("/orgs/acme/members").page(t, 200)
	if strings.Contains(page, `<option value="owner"`) {
		t.Fatal("an admin is offered the owner's role")
	}
	page = adam.post("/orgs/acme/members", url.Values{"user": {"mallory@example.com"}, "role": {"owner"}}).page(t, 403)
	if p := formProblem(page); !strings.Contains(p, "above own role") || !strings.Contains(page, `value="mallory@example.com"`) {
		t.Fatalf("an admin granting owner: problem %q", p)
	}
	for form, want := range map[string]url.Values{
		"user:":    {"user": {""}, "role": {"viewer"}},
		"role":     {"user": {"x@example.com"}, "role": {"emperor"}},
		"project:": {"user": {"x@example.com"}, "role": {"viewer"}, "project": {"nosuch"}},
	} {
		page = ada.post("/orgs/acme/members", want).page(t, 400)
		if p := formProblem(page); !strings.Contains(p, form) {
			t.Fatalf("bad grant %v: problem %q", want, p)
		}
	}

	// A viewer sees the grants, no form, and cannot post one; nor can a
	// developer.
	eve := signedInBrowser(t, h, "eve@example.com")
	page = eve.get("/orgs/acme/members").page(t, 200)
	if strings.Contains(page, `action="/orgs/acme/members"`) || strings.Contains(page, "/members/revoke") || len(membersOf(t, page)) < 4 {
		t.Fatal("a viewer's members page")
	}
	page = eve.post("/orgs/acme/members", url.Values{"user": {"eve@example.com"}, "role": {"owner"}}).page(t, 403)
	if formProblem(page) == "" {
		t.Fatal("a viewer's grant: no problem shown")
	}
	eve.post("/orgs/acme/members/revoke", url.Values{"user": {"bob@example.com"}}).page(t, 403)
	bob := signedInBrowser(t, h, "bob@example.com")
	bob.post("/orgs/acme/members", url.Values{"user": {"bob@example.com"}, "role": {"admin"}}).page(t, 403)
	bob.post("/orgs/acme/members", url.Values{"user": {"zed@example.com"}, "role": {"viewer"}, "project": {"web"}}).page(t, 403)
	if page = ada.get("/orgs/acme/members").page(t, 200); strings.Contains(page, "zed@") || strings.Contains(strings.Join(membersOf(t, page), "\n"), "bob@example.com|the whole organization|admin") {
		t.Fatal("a refused grant took effect")
	}

	// Another tenant: 404, posting too.
	olga := signedInBrowser(t, h, "olga@example.com")
	olga.get("/orgs/acme/members").page(t, 404)
	olga.post("/orgs/acme/members", url.Values{"user": {"olga@example.com"}, "role": {"owner"}}).page(t, 404)
	olga.post("/orgs/acme/members/revoke", url.Values{"user": {"ada@example.com"}}).page(t, 404)
	if page = olga.get("/orgs/globex/members").page(t, 200); strings.Contains(page, "ada@example.com") {
		t.Fatal("globex's members page shows acme's")
	}
}

func TestTokensPage(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	dashFixture(t, h) // project web (production, staging) and a token "ci"
	dashCaughtUp(t, h)
	ada := signedInBrowser(t, h, "ada@example.com")

	page := ada.get("/orgs/acme/tokens").page(t, 200)
	rows := dashTable(t, page, "tokens-table")
	if len(rows) != 2 || !strings.HasPrefix(rows[0][0], "ci ") || rows[0][2] != "project web" || rows[0][4] != "active" {
		t.Fatalf("tokens %q", rows) // ci, and the bootstrap token
	}

	// Issue: the answer is the page with the secret, not a redirect.
	r := ada.post("/orgs/acme/tokens", url.Values{"name": {"deploy <prod>"}, "role": {"developer"}, "project": {"web"},
		"environments": {"production"}, "days": {"7"}})
	page = r.page(t, 200)
	if r.header.Get("Location") != "" || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("the issue page: Location %q, Cache-Control %q", r.header.Get("Location"), r.header.Get("Cache-Control"))
	}
	m := regexp.MustCompile(`<textarea class="value" id="issued-secret"[^>]*>([^<]+)</textarea>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no secret on the issue page: %s", page)
	}
	secret := m[1]
	if len(secret) < 20 || strings.Count(page, secret) != 1 || !strings.Contains(page, "shown only this once") {
		t.Fatalf("the secret %q is not shown exactly once", secret)
	}
	if strings.Contains(page, "deploy <prod>") || !strings.Contains(page, "deploy &lt;prod&gt;") {
		t.Fatal("the token's name is not escaped")
	}
	rows = dashTable(t, page, "tokens-table")
	if !strings.HasPrefix(rows[0][0], "deploy <prod>") || rows[0][1] != "developer" || rows[0][2] != "project web: production" || rows[0][4] != "active" {
		t.Fatalf("the new token in the list: %q", rows[0])
	}
	// The secret works, as a token of that scope.
	h.get("/v1/orgs/acme/projects/web/envs/production/secrets", secret).expect(t, 200)
	h.get("/v1/orgs/acme/projects/web/envs/staging/secrets", secret).expect(t, 404)

	// Revoke it by its form.
	id := regexp.MustCompile(`\(([0-9a-f]+)\)`).FindStringSubmatch(rows[0][0])[1]
	page = ada.follow(t, ada.post("/orgs/acme/tokens/"+id+"/revoke", url.Values{"reason": {"rotated"}}), "revoked")
	rows = dashTable(t, page, "tokens-table")
	if !strings.HasPrefix(rows[0][0], "deploy") || !strings.HasPrefix(rows[0][4], "revoked") || !strings.Contains(rows[0][4], "rotated") {
		t.Fatalf("after revoking: %q", rows[0])
	}
	h.get("/v1/orgs/acme/projects/web/envs/production/secrets", secret).expect(t, 401)

	// The secret is never shown again: not on later pages, not in the
	// server's log.
	for _, p := range []string{"/orgs/acme/tokens", "/orgs/acme/members", "/orgs/acme", "/orgs/acme/audit", "/orgs/acme/approvals"} {
		if strings.Contains(ada.get(p).page(t, 200), secret) {
			t.Fatalf("%s shows the token's secret", p)
		}
	}
	if strings.Contains(h.Logs.String(), secret) {
		t.Fatal("the server's log holds the token's secret")
	}

	// Bad input, shown on the page with what was typed.
	for want, form := range map[string]url.Values{
		"lifetime":      {"name": {"x"}, "role": {"viewer"}, "days": {"400"}},
		"name":          {"name": {""}, "role": {"viewer"}, "days": {"1"}},
		"role":          {"name": {"x"}, "role": {"emperor"}, "days": {"1"}},
		"no project":    {"name": {"x"}, "role": {"viewer"}, "project": {"nosuch"}, "days": {"1"}},
		"no environm":   {"name": {"x"}, "role": {"viewer"}, "project": {"web"}, "environments": {"production, qa"}, "days": {"1"}},
		"must be limit": {"name": {"x"}, "role": {"viewer"}, "environments": {"production"}, "days": {"1"}},
	} {
		page = ada.post("/orgs/acme/tokens", form).page(t, 400)
		if p := formProblem(page); !strings.Contains(p, want) || strings.Contains(page, `id="issued-secret"`) {
			t.Fatalf("bad token %v: problem %q, want %q", form, p, want)
		}
	}

	// Without the CSRF token: refused.
	if page := ada.do("POST", "/orgs/acme/tokens", url.Values{"name": {"x"}, "role": {"viewer"}, "days": {"1"}}).page(t, http.StatusForbidden); strings.Contains(page, `id="issued-secret"`) {
		t.Fatal("a token was issued without the CSRF token")
	}
	ada.do("POST", "/orgs/acme/tokens/"+id+"/revoke", url.Values{}).page(t, http.StatusForbidden)
	// A viewer sees the tokens but cannot issue or revoke; a developer
	// cannot either; an admin cannot issue an owner's token.
	eve := signedInBrowser(t, h, "eve@example.com")
	page = eve.get("/orgs/acme/tokens").page(t, 200)
	if strings.Contains(page, `action="/orgs/acme/tokens"`) || strings.Contains(page, "/revoke") || len(dashTable(t, page, "tokens-table")) < 3 {
		t.Fatal("a viewer's tokens page")
	}
	page = eve.post("/orgs/acme/tokens", url.Values{"name": {"mine"}, "role": {"viewer"}, "days": {"1"}}).page(t, 403)
	if formProblem(page) == "" || strings.Contains(page, `id="issued-secret"`) {
		t.Fatal("a viewer issued a token")
	}
	ciID := ""
	for _, row := range dashTable(t, page, "tokens-table") {
		if strings.HasPrefix(row[0], "ci ") {
			ciID = regexp.MustCompile(`\(([0-9a-f]+)\)`).FindStringSubmatch(row[0])[1]
		}
	}
	eve.post("/orgs/acme/tokens/"+ciID+"/revoke", url.Values{}).page(t, 403)
	signedInBrowser(t, h, "bob@example.com").post("/orgs/acme/tokens", url.Values{"name": {"b"}, "role": {"developer"}, "days": {"1"}}).page(t, 403)
	must(h.App.GrantRole(ctx, dashAda, "acme", "adam@example.com", domain.RoleAdmin, ""))
	dashCaughtUp(t, h)
	page = signedInBrowser(t, h, "adam@example.com").post("/orgs/acme/tokens", url.Values{"name": {"root"}, "role": {"owner"}, "days": {"1"}}).page(t, 403)
	if !strings.Contains(formProblem(page), "above own role") {
		t.Fatalf("an admin issuing an owner's token: %q", formProblem(page))
	}
	if rows = dashTable(t, ada.get("/orgs/acme/tokens").page(t, 200), "tokens-table"); strings.Contains(rows[0][0], "mine") || strings.Contains(rows[0][0], "root") {
		t.Fatal("a refused token was issued")
	}
	if !strings.HasPrefix(rows[len(rows)-2][4], "active") {
		t.Fatalf("a viewer revoked the ci token: %q", rows)
	}

	// Another tenant: 404.
	olga := signedInBrowser(t, h, "olga@example.com")
	olga.get("/orgs/acme/tokens").page(t, 404)
	olga.post("/orgs/acme/tokens", url.Values{"name": {"x"}, "role": {"viewer"}, "days": {"1"}}).page(t, 404)
	olga.post("/orgs/acme/tokens/"+ciID+"/revoke", url.Values{}).page(t, 404)
	if page = olga.get("/orgs/globex/tokens").page(t, 200); strings.Contains(page, ciID) {
		t.Fatal("globex's tokens page shows acme's")
	}
}
