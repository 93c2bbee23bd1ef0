package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/projections"
)

// The pages of projects, environments, secrets, bundles and keysets
// (web_projects.go), through plain HTTP with a signed-in browser.

const (
	projWeb = "/orgs/acme/projects/web"
	projDev = projWeb + "/envs/dev"
)

// Distinctive values that no page may show, except the answer to a
// reveal.
var projValues = map[string]string{
	"DB_URL/1":  "postgres://proj-page-value-one@db/app",
	"DB_URL/2":  "postgres://proj-page-value-two@db/app",
	"API_KEY/1": "proj-page-api-key-5b0c7e",
}

// projBrowser is signedInBrowser with an HTTP client of its own:
// signedInBrowser sets the cookie jar of the test server's one shared
// client, so that several browsers of a test would all be the last one
// signed in.
func projBrowser(t *testing.T, h *harness, email string) *browserClient {
	t.Helper()
	c := *h.srv.Client()
	c.Jar = newJar()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	b := &browserClient{t: t, h: h, client: &c}
	if r := b.post("/v1/auth/dev", url.Values{"email": {email}, "return_to": {"/"}}); r.status != http.StatusSeeOther {
		t.Fatalf("development sign-in: %d %s", r.status, r.body)
	}
	u, _ := url.Parse(h.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if strings.Contains(ck.Name, "csrf") {
			b.csrf = ck.Value
		}
	}
	if b.csrf == "" {
		t.Fatal("no CSRF cookie after signing in")
	}
	return b
}

// projSetup starts a server with development sign-in; acme has project
// web with environment dev, holding DB_URL (two versions) and API_KEY.
func projSetup(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	ada := secAda()
	must(h.App.CreateProject(ctx, ada, "acme", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, ada, app.Env{Org: "acme", Project: "web", Env: "dev"}, app.EnvSpec{Name: "Development"}))
	projSet(t, h, "DB_URL", projValues["DB_URL/1"], domain.SecretMetadata{Description: "the main database", Tags: []string{"db"}})
	projSet(t, h, "DB_URL", projValues["DB_URL/2"], domain.SecretMetadata{})
	projSet(t, h, "API_KEY", projValues["API_KEY/1"], domain.SecretMetadata{})
	return h
}

func projSet(t *testing.T, h *harness, name, value string, m domain.SecretMetadata) uint64 {
	t.Helper()
	res, err := h.App.SetSecret(ctx, secAda(), projRef(name), app.SetSecret{Value: []byte(value), Metadata: m})
	if err != nil {
		t.Fatal(err)
	}
	return res.Position
}

func projRef(name string) domain.SecretRef {
	return domain.SecretRef{Org: "acme", Project: "web", Env: "dev", Name: name}
}

// projPage gets a page once the read models have caught up with the log,
// and checks that it holds none of the values.
func projPage(t *testing.T, h *harness, b *browserClient, path string, status int) string {
	t.Helper()
	r := b.get(secAt(path, fmt.Sprint(must(h.App.Head(ctx)))))
	if r.status != status {
		if m := regexp.MustCompile(`(?s)<main id="main">(.*?)</main>`).FindSubmatch(r.body); m != nil {
			t.Logf("%s answered: %s", path, m[1])
		}
	}
	page := r.page(t, status)
	projNoValue(t, path, page)
	return page
}

func projNoValue(t *testing.T, what, page string) {
	t.Helper()
	for k, v := range projValues {
		for _, form := range []string{v, url.QueryEscape(v), strings.ReplaceAll(v, "/", "&#47;"), strings.ReplaceAll(v, "@", "&#64;")} {
			if strings.Contains(page, form) {
				t.Fatalf("%s shows the value of %s", what, k)
			}
		}
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == '/' || r == '@' || r == ':' }) {
			if len(part) >= 12 && strings.Contains(page, part) {
				t.Fatalf("%s shows part of the value of %s (%q)", what, k, part)
			}
		}
	}
}

// projFollow checks a form's answer: a redirect to want (a path) with a
// flash key, and returns the page it leads to.
func projFollow(t *testing.T, b *browserClient, r response, want, done string) string {
	t.Helper()
	if r.status != http.StatusSeeOther {
		t.Fatalf("form answered %d, want 303: %.600s", r.status, r.body)
	}
	loc := r.header.Get("Location")
	u, err := url.Parse(loc)
	if err != nil || u.Path != want || u.Query().Get("done") != done || u.Query().Get("min_position") == "" {
		t.Fatalf("form redirected to %q, want %s with done=%s and a min_position", loc, want, done)
	}
	page := b.get(loc).page(t, 200)
	projNoValue(t, loc, page)
	return page
}

// projWithout posts a form without the CSRF token, and checks that it is
// refused (403).
func projWithout(t *testing.T, b *browserClient, path string, form url.Values) {
	t.Helper()
	form.Del("csrf_token")
	if r := b.do("POST", path, form); r.status != http.StatusForbidden || !strings.Contains(string(r.body), "csrf_failed") {
		t.Fatalf("a form without the CSRF token: %d %.300s", r.status, r.body)
	}
}

// projReads counts the recorded reads of a secret (read model), once it
// includes the log's head.
func projReads(t *testing.T, h *harness, name string) []projections.SecretRead {
	t.Helper()
	return secReads(t, h, name, must(h.App.Head(ctx)))
}

// projViewed counts the secret.viewed events of the log after position.
func projViewed(t *testing.T, h *harness, after uint64) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for from := after + 1; ; {
		recs := must(h.Store.ReadAll(ctx, from, 1000))
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			if r.Type == "secret.viewed" {
				out = append(out, r)
			}
		}
		from = recs[len(recs)-1].Position + 1
	}
}

var projValueBlock = regexp.MustCompile(`(?s)<pre class="value"[^>]*>(.*?)</pre>`)

func TestProjectPagesProjectsAndEnvironments(t *testing.T) {
	h := projSetup(t)
	ada := projBrowser(t, h, "ada@example.com")
	bob := projBrowser(t, h, "bob@example.com")
	eve := projBrowser(t, h, "eve@example.com")
	olga := projBrowser(t, h, "olga@example.com")

	list := projPage(t, h, ada, "/orgs/acme/projects", 200)
	for _, want := range []string{`href="/orgs/acme/projects/web"`, ">Web</a>", "Create a project", `name="csrf_token"`, `aria-current="page"`} {
		if !strings.Contains(list, want) {
			t.Fatalf("projects page lacks %q: %s", want, list)
		}
	}
	if page := projPage(t, h, eve, "/orgs/acme/projects", 200); !strings.Contains(page, ">Web</a>") || strings.Contains(page, "Create a project") {
		t.Fatalf("a viewer's projects page: %s", page)
	}

	// Creating a project: the admin's form; refused without the CSRF
	// token, to a developer, and with a bad id (shown on the page).
	form := url.Values{"id": {"api"}, "name": {"API"}}
	projWithout(t, ada, "/orgs/acme/projects", url.Values{"id": {"api"}, "name": {"API"}})
	bob.post("/orgs/acme/projects", url.Values{"id": {"api"}, "name": {"API"}}).page(t, 403)
	olga.post("/orgs/acme/projects", url.Values{"id": {"api"}, "name": {"API"}}).page(t, 404)
	bad := ada.post("/orgs/acme/projects", url.Values{"id": {"Not A Slug"}, "name": {"API"}}).page(t, 400)
	if !strings.Contains(bad, `role="alert"`) || !strings.Contains(bad, `value="Not A Slug"`) {
		t.Fatalf("a bad id is not shown on the page: %s", bad)
	}
	page := projFollow(t, ada, ada.post("/orgs/acme/projects", form), "/orgs/acme/projects/api", "created")
	if !strings.Contains(page, "<h1>Project API</h1>") || !strings.Contains(page, "Created.") || !strings.Contains(page, "no environment yet") {
		t.Fatalf("the new project's page: %s", page)
	}
	if dup := ada.post("/orgs/acme/projects", url.Values{"id": {"api"}, "name": {"API"}}).page(t, 409); !strings.Contains(dup, "form-problem") {
		t.Fatalf("a second project api: %s", dup)
	}

	// The project's page lists its environments, and offers the admin a
	// form to create one.
	page = projPage(t, h, ada, projWeb, 200)
	for _, want := range []string{`href="/orgs/acme/projects/web/envs/dev"`, "Development", "every 1 day", "none: direct reads and changes",
		`href="/orgs/acme/projects/web/bundles"`, "Create an environment"} {
		if !strings.Contains(page, want) {
			t.Fatalf("project page lacks %q: %s", want, page)
		}
	}
	if page := projPage(t, h, bob, projWeb, 200); strings.Contains(page, "Create an environment") {
		t.Fatal("a developer is offered the environment form")
	}
	envForm := func() url.Values {
		return url.Values{"id": {"prod"}, "name": {"Production"}, "production": {"on"}, "rotation_hours": {"12"},
			"approve_reveal": {"on"}, "approvers": {"2"}}
	}
	projWithout(t, ada, projWeb+"/envs", envForm())
	bob.post(projWeb+"/envs", envForm()).page(t, 403)
	olga.post(projWeb+"/envs", envForm()).page(t, 404)
	bad = ada.post(projWeb+"/envs", url.Values{"id": {"prod"}, "name": {"Production"}, "rotation_hours": {"soon"}}).page(t, 400)
	if !strings.Contains(bad, "rotation interval") || !strings.Contains(bad, `value="soon"`) {
		t.Fatalf("a bad rotation interval: %s", bad)
	}
	bad = ada.post(projWeb+"/envs", url.Values{"id": {"prod"}, "name": {"Production"}, "approvers": {"9"}}).page(t, 400)
	if !strings.Contains(bad, "form-problem") {
		t.Fatalf("too many approvers: %s", bad)
	}
	page = projFollow(t, ada, ada.post(projWeb+"/envs", envForm()), projWeb+"/envs/prod", "created")
	if !strings.Contains(page, "Production") || !strings.Contains(page, "every 12 h") || !strings.Contains(page, "reveals need 2 approvals") {
		t.Fatalf("the new environment's page: %s", page)
	}
	if page := projPage(t, h, ada, projWeb, 200); !strings.Contains(page, "production</span>") || !strings.Contains(page, "reveals need 2 approvals") {
		t.Fatalf("the project page after: %s", page)
	}

	// Another tenant learns nothing; a person with a role in one project
	// sees that project only.
	for _, path := range []string{"/orgs/acme/projects", projWeb, projDev, projDev + "/secrets/DB_URL", projWeb + "/bundles", "/orgs/acme/projects/nowhere"} {
		projPage(t, h, olga, path, 404)
	}
	owner := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada@example.com"}, RequestID: "pages"}
	must(h.App.GrantRole(ctx, owner, "acme", "pat@example.com", domain.RoleDeveloper, "web"))
	pat := projBrowser(t, h, "pat@example.com")
	page = projPage(t, h, pat, "/orgs/acme/projects", 200)
	if !strings.Contains(page, ">Web</a>") || strings.Contains(page, ">API</a>") || strings.Contains(page, "Create a project") {
		t.Fatalf("a project developer's projects page: %s", page)
	}
	projPage(t, h, pat, "/orgs/acme/projects/api", 404)
	projPage(t, h, pat, projDev, 200)
	pat.post("/orgs/acme/projects", url.Values{"id": {"pats"}, "name": {"Pat's"}}).page(t, 403)
}

func TestProjectPagesEnvironmentRevealAndSet(t *testing.T) {
	h := projSetup(t)
	ada := projBrowser(t, h, "ada@example.com")
	bob := projBrowser(t, h, "bob@example.com")
	eve := projBrowser(t, h, "eve@example.com")
	olga := projBrowser(t, h, "olga@example.com")

	// The environment's page: its secrets (never a value), a reveal form
	// per secret for a developer, the keyset.
	page := projPage(t, h, bob, projDev, 200)
	for _, want := range []string{`href="/orgs/acme/projects/web/envs/dev/secrets/DB_URL"`, "the main database", `<span class="badge">db</span>`,
		`action="/orgs/acme/projects/web/envs/dev/secrets/DB_URL/reveal"`, "Reveal DB_URL", `<label for="why-DB_URL">`,
		"Set a value", "Primary key", `<time datetime="`, "every current value is sealed by the primary key"} {
		if !strings.Contains(page, want) {
			t.Fatalf("environment page lacks %q: %s", want, page)
		}
	}
	if strings.Contains(page, "Rotate now") {
		t.Fatal("a developer is offered the rotation")
	}
	page = projPage(t, h, eve, projDev, 200)
	if strings.Contains(page, "Reveal DB_URL") || strings.Contains(page, "Set a value") || !strings.Contains(page, "not their values") {
		t.Fatalf("a viewer's environment page: %s", page)
	}

	// A reveal through the page: one secret.viewed event (channel ui,
	// with the reason), then the value, not cached.
	before := projReads(t, h, "DB_URL")
	head := must(h.App.Head(ctx))
	r := bob.post(projDev+"/secrets/DB_URL/reveal", url.Values{"reason": {"debugging the pages"}})
	value := r.page(t, 200)
	if r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("a value's page has Cache-Control %q", r.header.Get("Cache-Control"))
	}
	m := projValueBlock.FindStringSubmatch(value)
	if m == nil || m[1] != projValues["DB_URL/2"] || !strings.Contains(value, "recorded in the audit trail") {
		t.Fatalf("the reveal's page: %s", value)
	}
	if n := len(projValueBlock.FindAllString(value, -1)); n != 1 || strings.Contains(value, projValues["DB_URL/1"]) || strings.Contains(value, projValues["API_KEY/1"]) {
		t.Fatalf("the reveal's page shows %d values, or another one", n)
	}
	viewed := projViewed(t, h, head)
	if len(viewed) != 1 || viewed[0].StreamID != projRef("DB_URL").Stream() {
		t.Fatalf("the reveal appended %d secret.viewed events: %+v", len(viewed), viewed)
	}
	after := projReads(t, h, "DB_URL")
	if len(after) != len(before)+1 || after[0].Actor != "user:bob@example.com" && after[0].Actor != "bob@example.com" ||
		after[0].Channel != "ui" || after[0].Reason != "debugging the pages" || after[0].Version != 2 {
		t.Fatalf("the recorded reads: %+v, before %d", after, len(before))
	}
	// An earlier version, from the history page.
	value = bob.post(projDev+"/secrets/DB_URL/reveal", url.Values{"version": {"1"}, "from": {"secret"}}).page(t, 200)
	if m := projValueBlock.FindStringSubmatch(value); m == nil || m[1] != projValues["DB_URL/1"] {
		t.Fatalf("revealing version 1: %s", value)
	}

	// Refusals record nothing: a viewer (403), no CSRF token (403),
	// another tenant (404), a missing secret (404), a bad version (400).
	head = must(h.App.Head(ctx))
	for _, c := range []struct {
		b      *browserClient
		path   string
		form   url.Values
		status int
		csrf   bool
	}{
		{eve, projDev + "/secrets/DB_URL/reveal", url.Values{}, 403, true},
		{bob, projDev + "/secrets/DB_URL/reveal", url.Values{}, 403, false},
		{olga, projDev + "/secrets/DB_URL/reveal", url.Values{}, 404, true},
		{bob, projDev + "/secrets/NOPE/reveal", url.Values{}, 404, true},
		{bob, projDev + "/secrets/DB_URL/reveal", url.Values{"version": {"zero"}}, 400, true},
		{bob, projDev + "/secrets/DB_URL/reveal", url.Values{"reason": {strings.Repeat("x", 501)}}, 400, true},
	} {
		if !c.csrf {
			projWithout(t, c.b, c.path, c.form)
			continue
		}
		projNoValue(t, c.path, c.b.post(c.path, c.form).page(t, c.status))
	}
	if n := len(projViewed(t, h, head)); n != 0 {
		t.Fatalf("refused reveals appended %d secret.viewed events", n)
	}

	// Setting a value through the form: the page that follows does not
	// show it, nor does a refused form (which keeps the name).
	const newValue = "proj-page-new-value-c4d1e2"
	projValues["NEW/1"] = newValue
	defer delete(projValues, "NEW/1")
	set := func() url.Values {
		return url.Values{"name": {"NEW_ONE"}, "value": {newValue}, "description": {"made by a page"}, "tags": {"a, b"}}
	}
	projWithout(t, bob, projDev+"/secrets", set())
	eve.post(projDev+"/secrets", set()).page(t, 403)
	olga.post(projDev+"/secrets", set()).page(t, 404)
	badForm := set()
	badForm.Set("name", "1BAD-NAME")
	bad := bob.post(projDev+"/secrets", badForm).page(t, 400)
	projNoValue(t, "a refused set", bad)
	if !strings.Contains(bad, "form-problem") || !strings.Contains(bad, `value="1BAD-NAME"`) {
		t.Fatalf("a bad name: %s", bad)
	}
	page = projFollow(t, bob, bob.post(projDev+"/secrets", set()), projDev, "updated")
	if !strings.Contains(page, "NEW_ONE") || !strings.Contains(page, "made by a page") || !strings.Contains(page, "Saved.") {
		t.Fatalf("after setting a value: %s", page)
	}
	rv := must(h.App.RevealSecret(ctx, secAda(), projRef("NEW_ONE"), 0, "check", domain.ChannelAPI))
	if string(rv.Value) != newValue || rv.Version != 1 {
		t.Fatalf("the value set: %q v%d", rv.Value, rv.Version)
	}
	// A second value, with CRLF line breaks as browsers send them, from
	// the secret's own page.
	const second = "proj-page-second-line-1\r\nproj-page-second-line-2"
	projValues["NEW/2"] = "proj-page-second-line-1"
	defer delete(projValues, "NEW/2")
	projFollow(t, bob, bob.post(projDev+"/secrets/NEW_ONE", url.Values{"value": {second}}), projDev+"/secrets/NEW_ONE", "updated")
	rv = must(h.App.RevealSecret(ctx, secAda(), projRef("NEW_ONE"), 0, "check", domain.ChannelAPI))
	if string(rv.Value) != "proj-page-second-line-1\nproj-page-second-line-2" || rv.Version != 2 {
		t.Fatalf("the second value: %q v%d", rv.Value, rv.Version)
	}
	if empty := bob.post(projDev+"/secrets/NEW_ONE", url.Values{"value": {""}}).page(t, 400); !strings.Contains(empty, "enter the value") {
		t.Fatalf("an empty value: %s", empty)
	}

	// Every page, as every person, shows no value.
	for _, b := range []*browserClient{ada, bob, eve} {
		for _, path := range []string{"/orgs/acme/projects", projWeb, projDev, projDev + "/secrets/DB_URL", projDev + "/secrets/API_KEY",
			projDev + "/secrets/NEW_ONE", projWeb + "/bundles"} {
			projPage(t, h, b, path, 200)
		}
	}
	secNoLeak(t, h, projValues["DB_URL/1"], projValues["DB_URL/2"], projValues["API_KEY/1"], newValue)
}

func TestProjectPagesApprovalPolicy(t *testing.T) {
	h := projSetup(t)
	ada := projBrowser(t, h, "ada@example.com")
	bob := projBrowser(t, h, "bob@example.com")
	prod := app.Env{Org: "acme", Project: "web", Env: "prod"}
	must(h.App.CreateEnvironment(ctx, secAda(), prod, app.EnvSpec{Name: "Production", Production: true}))
	ref := domain.SecretRef{Org: "acme", Project: "web", Env: "prod", Name: "DB_URL"}
	must(h.App.SetSecret(ctx, secAda(), ref, app.SetSecret{Value: []byte(projValues["DB_URL/1"])}))
	must(h.App.UpdateEnvironment(ctx, secAda(), prod, app.EnvUpdate{Approval: &domain.ApprovalPolicy{Reveal: true, Change: true}}))
	const path = projWeb + "/envs/prod"

	page := projPage(t, h, bob, path, 200)
	if strings.Contains(page, "Reveal DB_URL") || !strings.Contains(page, "only through an approved request") ||
		!strings.Contains(page, "stele request --org acme --project web --env prod") || strings.Contains(page, `name="value"`) {
		t.Fatalf("an environment under an approval policy: %s", page)
	}
	head := must(h.App.Head(ctx))
	for _, b := range []*browserClient{bob, ada} {
		refused := b.post(path+"/secrets/DB_URL/reveal", url.Values{}).page(t, 403)
		projNoValue(t, "a reveal under the policy", refused)
		if !strings.Contains(refused, "approval_required") || !strings.Contains(refused, "POST /v1/approvals") {
			t.Fatalf("a reveal under the policy: %s", refused)
		}
	}
	if n := len(projViewed(t, h, head)); n != 0 {
		t.Fatalf("refused reveals appended %d secret.viewed events", n)
	}
	refused := bob.post(path+"/secrets", url.Values{"name": {"DB_URL"}, "value": {projValues["DB_URL/2"]}}).page(t, 403)
	projNoValue(t, "a change under the policy", refused)
	if !strings.Contains(refused, "approval_required") {
		t.Fatalf("a change under the policy: %s", refused)
	}
	refused = bob.post(path+"/secrets/DB_URL/rollback", url.Values{"version": {"1"}}).page(t, 403)
	if !strings.Contains(refused, "approval_required") || !strings.Contains(refused, "History") {
		t.Fatalf("a rollback under the policy: %s", refused)
	}
}

func TestProjectPagesHistoryAndRollback(t *testing.T) {
	h := projSetup(t)
	bob := projBrowser(t, h, "bob@example.com")
	eve := projBrowser(t, h, "eve@example.com")
	olga := projBrowser(t, h, "olga@example.com")
	const path = projDev + "/secrets/DB_URL"

	page := projPage(t, h, bob, path, 200)
	for _, want := range []string{"<h1>Secret <code>DB_URL</code></h1>", "the main database", "Roll back to version 1", "Reveal version 1", "Reveal version 2",
		"ada@example.com", `<span class="badge good">current</span>`} {
		if !strings.Contains(page, want) {
			t.Fatalf("history page lacks %q: %s", want, page)
		}
	}
	if strings.Contains(page, "Roll back to version 2") {
		t.Fatal("the current version is offered as a rollback")
	}
	if page := projPage(t, h, eve, path, 200); strings.Contains(page, "Roll back") || strings.Contains(page, "Reveal version") || !strings.Contains(page, "Sealed by key") {
		t.Fatalf("a viewer's history page: %s", page)
	}
	projPage(t, h, bob, projDev+"/secrets/NOPE", 404)
	projPage(t, h, bob, projDev+"/secrets/1-bad", 400)

	projWithout(t, bob, path+"/rollback", url.Values{"version": {"1"}})
	eve.post(path+"/rollback", url.Values{"version": {"1"}}).page(t, 403)
	olga.post(path+"/rollback", url.Values{"version": {"1"}}).page(t, 404)
	bob.post(path+"/rollback", url.Values{"version": {"x"}}).page(t, 400)
	if p := bob.post(path+"/rollback", url.Values{"version": {"7"}}).page(t, 404); !strings.Contains(p, "version") {
		t.Fatalf("a rollback to a version that does not exist: %s", p)
	}
	page = projFollow(t, bob, bob.post(path+"/rollback", url.Values{"version": {"1"}}), path, "rolled-back")
	if !strings.Contains(page, "Rolled back") || !strings.Contains(page, "rolled back from version 1") || !strings.Contains(page, "Roll back to version 2") {
		t.Fatalf("after the rollback: %s", page)
	}
	rv := must(h.App.RevealSecret(ctx, secAda(), projRef("DB_URL"), 0, "check", domain.ChannelAPI))
	if rv.Version != 3 || string(rv.Value) != projValues["DB_URL/1"] {
		t.Fatalf("after the rollback the value is v%d %q", rv.Version, rv.Value)
	}
}

func TestProjectPagesRotate(t *testing.T) {
	h := projSetup(t)
	ada := projBrowser(t, h, "ada@example.com")
	bob := projBrowser(t, h, "bob@example.com")
	olga := projBrowser(t, h, "olga@example.com")
	env := app.Env{Org: "acme", Project: "web", Env: "dev"}
	before := must(h.App.KeysetStatus(ctx, secAda(), env))

	page := projPage(t, h, ada, projDev, 200)
	if !strings.Contains(page, "Rotate now") || !strings.Contains(page, fmt.Sprintf("<code>%d</code> <span class=\"badge good\">primary</span>", before.Primary)) ||
		!strings.Contains(page, "never: the first key is still the primary") {
		t.Fatalf("the keyset before a rotation: %s", page)
	}
	projWithout(t, ada, projDev+"/rotate", url.Values{})
	bob.post(projDev+"/rotate", url.Values{}).page(t, 403)
	olga.post(projDev+"/rotate", url.Values{}).page(t, 404)
	ada.post(projWeb+"/envs/nowhere/rotate", url.Values{}).page(t, 404)
	if st := must(h.App.KeysetStatus(ctx, secAda(), env)); st.Primary != before.Primary {
		t.Fatal("a refused rotation rotated")
	}

	page = projFollow(t, ada, ada.post(projDev+"/rotate", url.Values{"reason": {"drill"}}), projDev, "rotated")
	after := must(h.App.KeysetStatus(ctx, secAda(), env))
	if after.Primary == before.Primary || len(after.Keys) != 2 {
		t.Fatalf("the rotation made %+v", after)
	}
	for _, want := range []string{"A new primary key was made", fmt.Sprintf("<code>%d</code> <span class=\"badge good\">primary</span>", after.Primary),
		"in progress", "values wait to be resealed", "0 of 2 current values", `<progress id="reseal-progress" max="2" value="0">`, "1 in all"} {
		if !strings.Contains(page, want) {
			t.Fatalf("the keyset after a rotation lacks %q: %s", want, page)
		}
	}
	must(h.App.Reseal(ctx, env))
	page = projPage(t, h, ada, projDev, 200)
	if !strings.Contains(page, "2 of 2 current values") || !strings.Contains(page, "every current value is sealed by the primary key") {
		t.Fatalf("the keyset after resealing: %s", page)
	}
}

func TestProjectPagesBundles(t *testing.T) {
	h := projSetup(t)
	ada := projBrowser(t, h, "ada@example.com")
	bob := projBrowser(t, h, "bob@example.com")
	olga := projBrowser(t, h, "olga@example.com")
	must(h.App.CreateEnvironment(ctx, secAda(), app.Env{Org: "acme", Project: "web", Env: "staging"}, app.EnvSpec{Name: "Staging"}))
	must(h.App.SetSecret(ctx, secAda(), domain.SecretRef{Org: "acme", Project: "web", Env: "staging", Name: "DB_URL"},
		app.SetSecret{Value: []byte("proj-page-staging-db-url")}))
	projValues["staging"] = "proj-page-staging-db-url"
	defer delete(projValues, "staging")
	const path = projWeb + "/bundles"

	page := projPage(t, h, ada, path, 200)
	if !strings.Contains(page, "no bundle yet") || !strings.Contains(page, "Create a bundle") || !strings.Contains(page, "Key library") {
		t.Fatalf("bundles page: %s", page)
	}
	form := func() url.Values {
		return url.Values{"id": {"backend"}, "keys": {"DB_URL required\r\nAPI_KEY\r\n\r\nSMTP_PASSWORD\r\n"}}
	}
	projWithout(t, ada, path, form())
	bob.post(path, form()).page(t, 403)
	olga.post(path, form()).page(t, 404)
	bad := ada.post(path, url.Values{"id": {"backend"}, "keys": {"DB_URL maybe"}}).page(t, 400)
	if !strings.Contains(bad, "line 1") || !strings.Contains(bad, "DB_URL maybe") {
		t.Fatalf("a bad key line: %s", bad)
	}
	if bad = ada.post(path, url.Values{"id": {"backend"}, "keys": {"1BAD"}}).page(t, 400); !strings.Contains(bad, "form-problem") {
		t.Fatalf("a bad key name: %s", bad)
	}
	page = projFollow(t, ada, ada.post(path, form()), path, "created")
	bundle := page[strings.Index(page, `<th scope="row"><code>backend</code>`):]
	if !strings.Contains(bundle, `<li><code>DB_URL</code> <span class="badge warn">required</span></li><li><code>API_KEY</code></li><li><code>SMTP_PASSWORD</code></li>`) {
		t.Fatalf("the bundle's keys: %s", page)
	}
	// The key library: every key, where it is, and the bundles naming it.
	lib := page[strings.Index(page, `id="library"`):]
	for _, want := range []string{
		`<th scope="col">Development</th><th scope="col">Staging</th>`,
		`href="/orgs/acme/projects/web/envs/staging/secrets/DB_URL" aria-label="DB_URL in staging, version 1"`,
		`aria-label="DB_URL in dev, version 2"`,
		"<code>SMTP_PASSWORD</code> <span class=\"badge warn\">missing in 2</span>",
		"<code>API_KEY</code> <span class=\"badge warn\">missing in 1</span>",
	} {
		if !strings.Contains(lib, want) {
			t.Fatalf("the key library lacks %q: %s", want, lib)
		}
	}
	if page := projPage(t, h, bob, path, 200); strings.Contains(page, "Create a bundle") || strings.Contains(page, "Delete bundle") || !strings.Contains(page, "backend") {
		t.Fatalf("a developer's bundles page: %s", page)
	}

	del := projWeb + "/bundles/backend/delete"
	projWithout(t, ada, del, url.Values{})
	bob.post(del, url.Values{}).page(t, 403)
	olga.post(del, url.Values{}).page(t, 404)
	page = projFollow(t, ada, ada.post(del, url.Values{}), path, "deleted")
	if strings.Contains(page, `<th scope="row"><code>backend</code>`) || strings.Contains(page, "SMTP_PASSWORD") {
		t.Fatalf("after deleting the bundle: %s", page)
	}
	ada.post(del, url.Values{}).page(t, 404)
}
