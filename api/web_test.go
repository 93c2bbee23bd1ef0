package api_test

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// browserClient is a cookie-keeping client for pages (which are not part
// of the API's description); it does not follow redirects.
type browserClient struct {
	t      *testing.T
	h      *harness
	client *http.Client
	csrf   string
}

// signedInBrowser signs a person in with the development sign-in.
func signedInBrowser(t *testing.T, h *harness, email string) *browserClient {
	t.Helper()
	c := *h.srv.Client() // a client of its own: the jar is this browser's
	c.Jar = newJar()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	b := &browserClient{t: t, h: h, client: &c}
	r := b.post("/v1/auth/dev", url.Values{"email": {email}, "return_to": {"/"}})
	if r.status != http.StatusSeeOther {
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

func (b *browserClient) do(method, path string, form url.Values) response {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.h.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", b.h.URL)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: out}
}

func (b *browserClient) get(path string) response { b.t.Helper(); return b.do("GET", path, nil) }

// post sends a form with the CSRF token (when the browser has one).
func (b *browserClient) post(path string, form url.Values) response {
	b.t.Helper()
	if b.csrf != "" && form.Get("csrf_token") == "" {
		form.Set("csrf_token", b.csrf)
	}
	return b.do("POST", path, form)
}

// page fails unless the answer is an HTML page with this status, and
// returns its text.
func (r response) page(t *testing.T, status int) string {
	t.Helper()
	if r.status != status || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s, want %d HTML: %.400s", r.status, r.header.Get("Content-Type"), status, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("page CSP %q", csp)
	}
	return string(r.body)
}

func TestPagesSignInAndOut(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	// Nobody signed in: to the sign-in page, which offers the methods.
	c := *h.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(h.URL + "/orgs/acme")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin?return_to=") {
		t.Fatalf("anonymous page: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	b := signedInBrowser(t, h, "ada@example.com")
	home := b.get("/")
	if home.status != http.StatusSeeOther || home.header.Get("Location") != "/orgs/acme" {
		t.Fatalf("home: %d %s", home.status, home.header.Get("Location"))
	}
	signin := b.get("/signin").page(t, 200)
	if !strings.Contains(signin, "Development sign-in") || !strings.Contains(signin, "anyone can sign in as anyone") {
		t.Fatalf("sign-in page: %s", signin)
	}
	// Signing out needs the CSRF token.
	b.do("POST", "/signout", url.Values{"csrf_token": {"forged-forged-forged"}}).page(t, 403)
	out := b.post("/signout", url.Values{})
	if out.status != http.StatusSeeOther || !strings.HasPrefix(out.header.Get("Location"), "/signin") {
		t.Fatalf("sign-out: %d %s", out.status, out.header.Get("Location"))
	}
	if r := b.get("/"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/signin") {
		t.Fatalf("after signing out: %d %s", r.status, r.header.Get("Location"))
	}
	// Assets are embedded.
	css := b.get("/static/stele.css")
	if css.status != 200 || !strings.Contains(string(css.body), "--accent") {
		t.Fatalf("stylesheet: %d", css.status)
	}
}

// The organization switcher lists exactly the organizations the person
// belongs to, and leads to the one chosen; a malformed choice leads home.
func TestOrganizationSwitcher(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "test"}
	must(h.App.CreateOrganization(ctx, olga, "initech", "Initech"))
	must(h.App.GrantRole(ctx, olga, "globex", "ada@example.com", domain.RoleViewer, ""))
	b := signedInBrowser(t, h, "ada@example.com")
	page := b.get("/orgs/acme?min_position="+strconv.FormatUint(must(h.App.Head(ctx)), 10)).page(t, 200)
	i := strings.Index(page, `id="org-switch"`)
	if i < 0 {
		t.Fatalf("no switcher: %.400s", page)
	}
	sel := page[i : i+strings.Index(page[i:], "</select>")]
	for _, want := range []string{`value="acme" selected`, `value="globex"`} {
		if !strings.Contains(sel, want) {
			t.Errorf("the switcher lacks %s: %s", want, sel)
		}
	}
	if strings.Contains(sel, "initech") {
		t.Errorf("the switcher shows an organization Ada is not in: %s", sel)
	}
	for query, want := range map[string]string{"org=globex": "/orgs/globex", "org=Not_A_Slug": "/", "": "/"} {
		if r := b.get("/switch?" + query); r.status != 303 || r.header.Get("Location") != want {
			t.Errorf("/switch?%s: %d %s, want %s", query, r.status, r.header.Get("Location"), want)
		}
	}
	b.get("/orgs/globex").page(t, 200)
	if r := b.get("/orgs/initech"); r.status != 404 {
		t.Errorf("another tenant's page: %d", r.status)
	}
}
