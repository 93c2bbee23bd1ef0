package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/internal/syncbuf"
)

var screenshots = flag.Bool("screenshots", false, "write a screenshot of each main page to docs/screenshots/")

// Browser tests drive Debian's chromium, headless, through the Chrome
// DevTools protocol (chromedp). When chromium is missing, the test
// installs Debian's package if it runs as root with apt-get, and skips,
// saying why, otherwise.
var chromiumPath = sync.OnceValues(func() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("chromium is not installed, and only root may install it (apt-get install chromium)")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", fmt.Errorf("chromium is not installed, and there is no apt-get to install it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", "chromium")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install chromium: %v: %s", err, lastLines(out, 3))
		}
		return nil
	}
	if err := install(); err != nil { // the package lists may be stale
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("apt-get update: %v: %s", uerr, lastLines(out, 3))
		}
		if err := install(); err != nil {
			return "", err
		}
	}
	return exec.LookPath("chromium")
})

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// newBrowser starts a headless chromium for the test. The servers of the
// tests use certificates of their own, so the browser accepts any.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := chromiumPath()
	if err != nil {
		t.Skip("no browser: " + err.Error())
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoSandbox, // tests may run as root, where chromium's sandbox refuses to start
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return bctx
}

// run runs browser actions with a deadline.
func run(t *testing.T, bctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// read runs one browser action that returns a value.
func read[T any](t *testing.T, bctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// css is a CSS selector.
func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// html is the page's whole HTML now.
func html(t *testing.T, bctx context.Context) string {
	t.Helper()
	return read(t, bctx, "read the page", chromedp.OuterHTML(css("html")))
}

// location is the page's address now.
func location(t *testing.T, bctx context.Context) string {
	t.Helper()
	return read(t, bctx, "read the address", chromedp.Location())
}

// shot saves a screenshot of the page when -screenshots is given.
func shot(t *testing.T, bctx context.Context, name string) {
	t.Helper()
	if !*screenshots {
		return
	}
	png := read(t, bctx, "screenshot "+name, chromedp.FullScreenshot(100))
	dir := filepath.Join("..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// steleBinary builds the stele command once for the package's tests.
var steleBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "stele-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "stele")
	out, err := exec.Command("go", "build", "-o", bin, "stele.dev/stele/cmd/stele").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return bin, nil
})

// cliRequest is a running `stele request` process.
type cliRequest struct {
	cmd    *exec.Cmd
	stdout *bytes.Buffer
	stderr *syncbuf.Buffer
	URL    string
	Code   string
	done   chan error
}

// startRequest runs `stele request` against the harness, trusting its
// certificate, and reads the approval address and code it prints.
func startRequest(t *testing.T, h *harness, args ...string) *cliRequest {
	t.Helper()
	bin, err := steleBinary()
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "server.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"request", "--server", h.URL, "--ca-file", ca}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	c := &cliRequest{cmd: cmd, stdout: &bytes.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout = c.stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	rd := bufio.NewReader(pipe)
	for !strings.Contains(c.stderr.String(), "Waiting") {
		line, err := rd.ReadString('\n')
		c.stderr.Write([]byte(line))
		if err != nil {
			t.Fatalf("stele request printed %q, then %v", c.stderr, err)
		}
	}
	head := c.stderr.String()
	go func() { io.Copy(c.stderr, rd); c.done <- cmd.Wait() }()
	m := regexp.MustCompile(`Open (\S+) to approve`).FindStringSubmatch(head)
	code := regexp.MustCompile(`code ([A-Z0-9-]+)\.`).FindStringSubmatch(head)
	if m == nil || code == nil {
		t.Fatalf("no address or code in %q", head)
	}
	c.URL, c.Code = m[1], code[1]
	return c
}

// wait waits for the process to end and returns its exit code.
func (c *cliRequest) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-c.done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatalf("stele request did not finish; stderr %q", c.stderr)
	}
	return -1
}

// browserFixture is acme/web/production with values, a bundle, and
// Grace (the provider's user) as an acme developer.
type browserFixture struct {
	*harness
	p      *testProvider
	b      context.Context
	values map[string]string
}

func newBrowserFixture(t *testing.T) *browserFixture {
	t.Helper()
	b := newBrowser(t) // first: skip before building anything when there is no browser
	h, p := oidcHarness(t, false)
	own := ownerRequest(t, h)
	must(h.App.GrantRole(ctx, own, "acme", "grace@example.com", domain.RoleAdmin, ""))
	must(h.App.CreateProject(ctx, own, "acme", "web", "Web"))
	prod := app.Env{Org: "acme", Project: "web", Env: "production"}
	must(h.App.CreateEnvironment(ctx, own, prod, app.EnvSpec{Name: "Production", Production: true}))
	must(h.App.CreateEnvironment(ctx, own, app.Env{Org: "acme", Project: "web", Env: "staging"}, app.EnvSpec{Name: "Staging"}))
	values := map[string]string{
		"DB_URL":     "postgres://app:Gr4ce-only@db.internal/prod",
		"API_KEY":    "sk_live_51BrowserTestValue",
		"SMTP_PASS":  "smtp-p4ss-<b>not</b>&html",
		"FEATURE_ON": "true-ish-value-xyz",
	}
	for name, v := range values {
		must(h.App.SetSecret(ctx, own, domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: name},
			app.SetSecret{Value: []byte(v), Metadata: domain.SecretMetadata{Description: "used by the web app"}}))
	}
	must(h.App.CreateBundle(ctx, own, "acme", "web", "backend", []domain.BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}, {Name: "SMTP_PASS"}}))
	return &browserFixture{harness: h, p: p, b: b, values: values}
}

// signIn signs Grace in through the provider's own login page.
func (f *browserFixture) signIn(t *testing.T) {
	t.Helper()
	run(t, f.b, "open the sign-in page", chromedp.Navigate(f.URL+"/signin"))
	shot(t, f.b, "sign-in")
	run(t, f.b, "choose the provider", chromedp.Click(css(`a.button[href^="/v1/auth/login"]`)), chromedp.WaitVisible(css(`#username`)))
	if loc := location(t, f.b); !strings.HasPrefix(loc, f.p.Issuer) {
		t.Fatalf("the sign-in went to %s, not the provider", loc)
	}
	run(t, f.b, "sign in at the provider",
		chromedp.SendKeys(css(`#username`), "grace"),
		chromedp.SendKeys(css(`#password`), testPassword),
		chromedp.Submit(css(`#password`)),
		chromedp.WaitVisible(css(`header.top .who`)))
	who := read(t, f.b, "read who is signed in", chromedp.Text(css(`header.top .who`)))
	if who != "grace@example.com" {
		t.Fatalf("signed in as %q", who)
	}
	if loc := location(t, f.b); !strings.HasPrefix(loc, f.URL+"/orgs/acme") {
		t.Fatalf("after signing in the browser is at %s", loc)
	}
}

// noValues fails if the page's HTML holds any value but the allowed ones.
func (f *browserFixture) noValues(t *testing.T, page string, allowed ...string) {
	t.Helper()
	doc := html(t, f.b)
	for name, v := range f.values {
		if contains(allowed, name) {
			continue
		}
		for _, form := range []string{v, strings.ReplaceAll(strings.ReplaceAll(v, "<", "&lt;"), ">", "&gt;"), strings.ReplaceAll(v, "&", "&amp;")} {
			if strings.Contains(doc, form) {
				t.Fatalf("the %s page shows the value of %s", page, name)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A person signs in through a real OpenID provider in a real browser,
// approves a real `stele request` process's request on the approval page,
// and the process prints the values let through; a second request is
// denied; an expired one says so.
func TestBrowserApprovesCLIRequest(t *testing.T) {
	f := newBrowserFixture(t)
	f.signIn(t)

	c := startRequest(t, f.harness, "--org", "acme", "--project", "web", "--env", "production", "--bundle", "backend", "--format", "json")
	run(t, f.b, "open the approval page", chromedp.Navigate(c.URL), chromedp.WaitVisible(css(`p.code`)))
	code := read(t, f.b, "read the code", chromedp.Text(css(`p.code`)))
	if code != c.Code {
		t.Fatalf("the page shows %q, the CLI printed %q", code, c.Code)
	}
	doc := html(t, f.b)
	for _, want := range []string{"a client that is not signed in", "acme/web/production", "backend", "DB_URL", "(required by the bundle)", "127.0.0.1"} {
		if !strings.Contains(doc, want) {
			t.Fatalf("the approval page lacks %q", want)
		}
	}
	f.noValues(t, "approval")
	shot(t, f.b, "approve")
	// Required keys come checked; let DB_URL and API_KEY through, not SMTP_PASS.
	required := read(t, f.b, "read the required key",
		chromedp.Evaluate[bool](`document.querySelector('input[value="DB_URL"]').checked && document.querySelector('input[value="DB_URL"]').required`))
	if !required {
		t.Fatal("the bundle's required key is not checked and required")
	}
	run(t, f.b, "leave SMTP_PASS out", chromedp.Click(css(`input[value="SMTP_PASS"]`)))
	run(t, f.b, "approve", chromedp.Click(css(`button[value="approve"]`)))
	run(t, f.b, "the approval is done", chromedp.WaitVisible(css(`p.flash`)))
	if exit := c.wait(t); exit != 0 {
		t.Fatalf("stele request exited %d: %s", exit, c.stderr)
	}
	want := fmt.Sprintf("{\n  \"API_KEY\": %q,\n  \"DB_URL\": %q\n}\n", f.values["API_KEY"], f.values["DB_URL"])
	if c.stdout.String() != want {
		t.Fatalf("the CLI received %q, want %q", c.stdout, want)
	}
	if !strings.Contains(html(t, f.b), "Waiting for the requester to collect it") && !strings.Contains(html(t, f.b), "has been delivered") {
		t.Fatal("the page does not say the request was approved")
	}
	run(t, f.b, "reload", chromedp.Reload(), chromedp.WaitVisible(css(`p.code`)))
	if !strings.Contains(html(t, f.b), "has been delivered") {
		t.Fatal("after the delivery the page does not say so")
	}

	// Denied: the CLI says so and exits 1.
	c = startRequest(t, f.harness, "--org", "acme", "--project", "web", "--env", "production", "--keys", "API_KEY")
	run(t, f.b, "open the second request", chromedp.Navigate(c.URL), chromedp.WaitVisible(css(`#reason`)),
		chromedp.SendKeys(css(`#reason`), "not from this machine"),
		chromedp.Click(css(`button[value="deny"]`)), chromedp.WaitVisible(css(`p.flash`)))
	if exit := c.wait(t); exit != 1 || !strings.Contains(c.stderr.String(), "denied") || c.stdout.Len() != 0 {
		t.Fatalf("a denied request: exit %d, stderr %q, stdout %q", exit, c.stderr, c.stdout)
	}
	if !strings.Contains(html(t, f.b), "not from this machine") {
		t.Fatal("the page does not show the denial's reason")
	}

	// Expired: the page says so and offers nothing.
	c = startRequest(t, f.harness, "--org", "acme", "--project", "web", "--env", "production", "--keys", "API_KEY", "--ttl", "10s")
	time.Sleep(11 * time.Second)
	run(t, f.b, "open the expired request", chromedp.Navigate(c.URL), chromedp.WaitVisible(css(`p.code`)))
	doc = html(t, f.b)
	if !strings.Contains(doc, "This request has expired") || strings.Contains(doc, `value="approve"`) {
		t.Fatal("an expired request does not say so plainly, or still offers to approve")
	}
	if exit := c.wait(t); exit != 1 || !strings.Contains(c.stderr.String(), "expired") {
		t.Fatalf("an expired request: exit %d, stderr %q", exit, c.stderr)
	}

	// A form posted without its CSRF token is refused.
	c = startRequest(t, f.harness, "--org", "acme", "--project", "web", "--env", "production", "--keys", "API_KEY")
	run(t, f.b, "open a request", chromedp.Navigate(c.URL), chromedp.WaitVisible(css(`button[value="approve"]`)))
	// The form's hidden token, emptied from the outside (the page itself has no script).
	if !read(t, f.b, "drop the token", chromedp.Evaluate[bool](`(() => { const i = document.querySelector('main form input[name="csrf_token"]'); i.value = ""; return i.value === ""; })()`)) {
		t.Fatal("the token is still in the form")
	}
	run(t, f.b, "post without the token", chromedp.Click(css(`button[value="approve"]`)), chromedp.WaitVisible(css(`p.problem`)))
	doc = html(t, f.b)
	if !strings.Contains(doc, "Cross-site request refused") || !strings.Contains(doc, "csrf_failed") {
		t.Fatalf("a form without its token: %.300s", doc)
	}
	if v := must(h0(f).App.Approval(ctx, domain.Actor{Kind: domain.ActorUser, ID: "grace@example.com"}, strings.TrimPrefix(c.URL, f.URL+"/approve/"))); v.Status != domain.StatusPending {
		t.Fatalf("the refused form changed the request: %s", v.Status)
	}
}

func h0(f *browserFixture) *harness { return f.harness }

// Every main page, in the browser, holds no secret value; a reveal shows
// exactly the one value asked for and lands in the audit feed. With
// -screenshots, each page is saved under docs/screenshots/.
func TestBrowserPagesRevealAndAudit(t *testing.T) {
	f := newBrowserFixture(t)
	own := ownerRequest(t, f.harness)
	// Some history for the dashboard and the audit feed.
	ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB_URL"}
	f.values["DB_URL_V2"] = "postgres://app:second-version@db.internal/prod"
	must(f.App.SetSecret(ctx, own, ref, app.SetSecret{Value: []byte(f.values["DB_URL_V2"])}))
	must(f.App.RotateKeyset(ctx, own, app.Env{Org: "acme", Project: "web", Env: "production"}, "quarterly"))
	if _, _, err := f.App.IssueToken(ctx, own, "acme", app.TokenSpec{Name: "deploy", Role: domain.RoleDeveloper, Project: "web", TTL: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	f.post("/v1/approvals", "", map[string]any{"kind": "secrets", "public_key": base64Key(), "org": "acme", "project": "web", "env": "production",
		"bundle": "backend"}).expect(t, 201)
	f.signIn(t)

	pages := []struct{ name, path, want string }{
		{"dashboard", "/orgs/acme", "Activity"},
		{"projects", "/orgs/acme/projects", "web"},
		{"project", "/orgs/acme/projects/web", "production"},
		{"environment", "/orgs/acme/projects/web/envs/production", "DB_URL"},
		{"secret", "/orgs/acme/projects/web/envs/production/secrets/DB_URL", "Roll back"},
		{"bundles", "/orgs/acme/projects/web/bundles", "backend"},
		{"approvals", "/orgs/acme/approvals", "backend"},
		{"members", "/orgs/acme/members", "grace@example.com"},
		{"tokens", "/orgs/acme/tokens", "deploy"},
		{"audit", "/orgs/acme/audit", "secret.created"},
	}
	for _, p := range pages {
		run(t, f.b, "open "+p.name, chromedp.Navigate(f.URL+p.path+"?min_position="+fmt.Sprint(must(f.App.Head(ctx)))), chromedp.WaitVisible(css(`main h1`)))
		doc := html(t, f.b)
		if !strings.Contains(doc, p.want) || strings.Contains(doc, "problem") && strings.Contains(doc, "Status 4") {
			t.Fatalf("the %s page lacks %q or is an error: %.500s", p.name, p.want, doc)
		}
		f.noValues(t, p.name)
		if problems := read(t, f.b, "check labels and contrast", chromedp.Evaluate[[]string](accessibilityJS)); len(problems) > 0 {
			t.Errorf("the %s page: %s", p.name, strings.Join(problems, "; "))
		}
		shot(t, f.b, p.name)
	}

	// The check itself finds what it looks for: faint text and a control
	// without a label, added to the page from the outside.
	// (Styles set through the DOM: the pages' CSP refuses inline ones.)
	read(t, f.b, "add faint text and a bare input", chromedp.Evaluate[bool](`(() => { const m = document.querySelector('main');
		const p = document.createElement('p'); p.textContent = 'faint'; p.style.color = '#aaa'; p.style.background = '#fff'; m.append(p);
		const i = document.createElement('input'); i.name = 'bare'; m.append(i); return true; })()`))
	if problems := read(t, f.b, "check the check", chromedp.Evaluate[[]string](accessibilityJS)); len(problems) != 2 ||
		!strings.HasPrefix(problems[0], "unlabelled input bare") || !strings.Contains(problems[1], `"faint"`) {
		t.Fatalf("the accessibility check found %q", problems)
	}

	// Reveal DB_URL from the environment page: exactly its value shows.
	head := must(f.App.Head(ctx))
	run(t, f.b, "open the environment", chromedp.Navigate(f.URL+"/orgs/acme/projects/web/envs/production"), chromedp.WaitVisible(css(`#why-DB_URL`)),
		chromedp.SendKeys(css(`#why-DB_URL`), "incident 4711"),
		chromedp.Click(css(`form.reveal[action$="/DB_URL/reveal"] button`)), chromedp.WaitVisible(css(`.value`)))
	shown := read(t, f.b, "read the value", chromedp.Text(css(`.value`)))
	if shown != f.values["DB_URL_V2"] {
		t.Fatalf("the reveal shows %q", shown)
	}
	f.noValues(t, "reveal", "DB_URL_V2")
	shot(t, f.b, "reveal")
	if got := must(f.App.Head(ctx)); got != head+1 {
		t.Fatalf("the reveal appended %d events, want 1", got-head)
	}

	// The read is in the audit feed, as Grace's, with its reason.
	run(t, f.b, "filter the audit feed", chromedp.Navigate(f.URL+"/orgs/acme/audit?action=secret.viewed&min_position="+fmt.Sprint(head+1)),
		chromedp.WaitVisible(css(`#audit-table`)))
	feed := read(t, f.b, "read the audit table", chromedp.Text(css(`#audit-table tbody`)))
	if !strings.Contains(feed, "user:grace@example.com") || !strings.Contains(feed, "secret.viewed") || !strings.Contains(feed, "incident 4711") {
		t.Fatalf("the audit feed does not show the reveal: %q", feed)
	}
	f.noValues(t, "audit feed")
}

// base64Key is a well-formed X25519 public key for requests whose
// delivery the test never opens.
func base64Key() string { return "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }

// accessibilityJS lists, in the page at hand, the form controls without a
// label (a <label for>, an enclosing <label>, aria-label or
// aria-labelledby) and the visible text whose contrast with its
// background is under 4.5:1 (WCAG 2 AA for normal text; 3:1 for large
// text), computed from the styles the browser applied.
const accessibilityJS = `(() => {
  const out = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || el.type === 'submit' || el.type === 'button') continue;
    const labelled = (el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]')) ||
      el.closest('label') || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!labelled) out.push('unlabelled ' + el.tagName.toLowerCase() + ' ' + (el.name || el.id));
  }
  const rgb = s => { const m = s.match(/rgba?\(([^)]+)\)/); if (!m) return null; const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const background = el => {
    for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c && c.a > 0.5) return c; }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || !n.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || st.display === 'none' || el.getClientRects().length === 0 || el.closest('svg')) continue;
    const fg = rgb(st.color), bg = background(el);
    if (!fg) continue;
    const l1 = lum(fg), l2 = lum(bg), ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) out.push('contrast ' + ratio.toFixed(2) + ' < ' + need + ' for "' + n.textContent.trim().slice(0, 40) + '" (' + st.color + ' on ' + JSON.stringify(bg) + ')');
  }
  return out;
})()`
