package api_test

import (
	"encoding/csv"
	htmlstd "html"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/projections"
)

// dashCaughtUp waits until every read model has applied the log's head.
func dashCaughtUp(t *testing.T, h *harness) uint64 {
	t.Helper()
	head := must(h.Store.Head(ctx)).Position
	if err := projections.WaitFor(ctx, h.Pool, head, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return head
}

var (
	dashAda = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada@example.com"}, RequestID: "dashboard-test"}
	dashBob = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "bob@example.com"}, RequestID: "dashboard-test"}
)

// dashValues are values the tests set: no page may show them.
var dashValues = []string{"dash-prod-db-7e1f0a", "dash-prod-api-93c2bd", "dash-staging-db-1aa5ce"}

// dashFixture: acme's project web with production (flagged) and staging,
// three secrets, and reads of them by Bob, Ada and a token.
func dashFixture(t *testing.T, h *harness) (tokenID string) {
	t.Helper()
	must(h.App.CreateProject(ctx, dashAda, "acme", "web", "Web"))
	for _, env := range []string{"production", "staging"} {
		must(h.App.CreateEnvironment(ctx, dashAda, app.Env{Org: "acme", Project: "web", Env: env}, app.EnvSpec{Production: env == "production"}))
	}
	ref := func(env, name string) domain.SecretRef {
		return domain.SecretRef{Org: "acme", Project: "web", Env: env, Name: name}
	}
	must(h.App.SetSecret(ctx, dashAda, ref("production", "DB_URL"), app.SetSecret{Value: []byte(dashValues[0])}))
	must(h.App.SetSecret(ctx, dashAda, ref("production", "API_KEY"), app.SetSecret{Value: []byte(dashValues[1])}))
	must(h.App.SetSecret(ctx, dashAda, ref("staging", "DB_URL"), app.SetSecret{Value: []byte(dashValues[2])}))
	tok, _, err := h.App.IssueToken(ctx, dashAda, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tokReq := app.Request{Actor: domain.Actor{Kind: domain.ActorToken, ID: tok.ID}, RequestID: "ci"}
	for range 3 {
		must(h.App.RevealSecret(ctx, dashBob, ref("production", "DB_URL"), 0, "", domain.ChannelCLI))
	}
	must(h.App.RevealSecret(ctx, dashBob, ref("production", "API_KEY"), 0, "", domain.ChannelCLI))
	must(h.App.RevealSecret(ctx, dashAda, ref("production", "DB_URL"), 0, "<b>why</b>", domain.ChannelAPI))
	must(h.App.RevealSecret(ctx, tokReq, ref("production", "DB_URL"), 0, "", domain.ChannelRun))
	must(h.App.RevealSecret(ctx, tokReq, ref("staging", "DB_URL"), 0, "", domain.ChannelRun)) // not production
	return tok.ID
}

// noValues fails if a page shows a value of the fixture.
func noValues(t *testing.T, where, page string) {
	t.Helper()
	for _, v := range dashValues {
		if strings.Contains(page, v) {
			t.Fatalf("%s shows the value %q", where, v)
		}
	}
}

// dashChart returns the chart of a page whose label starts with title.
func dashChart(t *testing.T, page, title string) string {
	t.Helper()
	for _, svg := range regexp.MustCompile(`(?s)<svg class="chart".*?</svg>`).FindAllString(page, -1) {
		if strings.Contains(svg, `aria-label="`+htmlstd.EscapeString(title)) {
			if !strings.Contains(svg, `role="img"`) || !strings.Contains(svg, "<title>"+htmlstd.EscapeString(title)+"</title>") {
				t.Fatalf("chart %q without its role or title", title)
			}
			return svg
		}
	}
	t.Fatalf("no chart %q on the page", title)
	return ""
}

// dashRects returns the data attributes of a chart's rects, in order.
func dashRects(svg string) []map[string]string {
	var out []map[string]string
	for _, rect := range regexp.MustCompile(`<rect [^>]*data-value="[^"]*"[^>]*>`).FindAllString(svg, -1) {
		m := map[string]string{}
		for _, a := range regexp.MustCompile(`(data-[a-z]+)="([^"]*)"`).FindAllStringSubmatch(rect, -1) {
			m[a[1]] = htmlstd.UnescapeString(a[2])
		}
		out = append(out, m)
	}
	return out
}

// dashTable returns the rows of a page's table (by id) as the text of
// their cells, tags removed.
func dashTable(t *testing.T, page, id string) [][]string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<table id="` + id + `">(.*?)</table>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no table %s on the page", id)
	}
	body := m[1]
	if i := strings.Index(body, "<tbody>"); i >= 0 {
		body = body[i:]
	}
	tags := regexp.MustCompile(`<[^>]*>`)
	var rows [][]string
	for _, tr := range regexp.MustCompile(`(?s)<tr>(.*?)</tr>`).FindAllStringSubmatch(body, -1) {
		var cells []string
		for _, td := range regexp.MustCompile(`(?s)<t[hd][^>]*>(.*?)</t[hd]>`).FindAllStringSubmatch(tr[1], -1) {
			cells = append(cells, strings.Join(strings.Fields(htmlstd.UnescapeString(tags.ReplaceAllString(td[1], ""))), " "))
		}
		rows = append(rows, cells)
	}
	return rows
}

// dashKind sorts an event type into the activity chart's kinds (written
// again here, from the issue's list, to check the page's).
func dashKind(action string) string {
	switch {
	case action == "secret.viewed":
		return "Reads of values"
	case action == "secret.resealed" || strings.HasPrefix(action, "keyset."):
		return "Keys"
	case strings.HasPrefix(action, "secret."):
		return "Secret changes"
	case strings.HasPrefix(action, "organization.role_"), strings.HasPrefix(action, "organization.token_"):
		return "Access changes"
	case strings.HasPrefix(action, "approval."):
		return "Approvals"
	}
	return "Other"
}

func TestDashboardChartsMatchTheReadModels(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	dashFixture(t, h)
	// A pending request: a command-line client asks for a secret.
	keys := newApprKeys(t)
	ticket, _, err := h.App.RequestApproval(ctx, app.Request{RequestID: "cli"}, app.ApprovalSpec{Kind: domain.ApprovalSecrets,
		Org: "acme", Project: "web", Env: "production", Keys: []string{"DB_URL"}, PublicKey: keys.pub[:]})
	if err != nil {
		t.Fatal(err)
	}
	b := signedInBrowser(t, h, "ada@example.com")
	head := dashCaughtUp(t, h)
	resp := b.get("/orgs/acme?days=30")
	page := resp.page(t, 200)
	noValues(t, "the dashboard", page)

	// 1. Activity: per day and kind, as the log has it.
	now := time.Now().UTC()
	from := now.Truncate(24*time.Hour).AddDate(0, 0, -29)
	want := map[[2]string]int64{}
	for _, rec := range audLog(t, h) {
		if rec.Metadata.Tenant == "acme" && !rec.RecordedAt.Before(from) && rec.Position <= head {
			want[[2]string{rec.RecordedAt.UTC().Format("01-02"), dashKind(rec.Type)}]++
		}
	}
	svg := dashChart(t, page, "Events per day, by kind")
	got := map[[2]string]int64{}
	for _, r := range dashRects(svg) {
		n, _ := strconv.ParseInt(r["data-value"], 10, 64)
		got[[2]string{r["data-category"], r["data-series"]}] += n
	}
	if len(want) < 4 || !reflect.DeepEqual(got, want) {
		t.Fatalf("activity chart %v, want %v", got, want)
	}
	// The table says the same, day by day (30 rows, a column per kind
	// and the total).
	rows := dashTable(t, page, "activity-table")
	kinds := []string{"Secret changes", "Reads of values", "Access changes", "Keys", "Approvals", "Other"}
	var days int
	for _, row := range rows {
		if row[0] == "All days" {
			continue
		}
		days++
		if len(row) != len(kinds)+2 {
			t.Fatalf("activity row %q", row)
		}
		var total int64
		for i, k := range kinds {
			n, _ := strconv.ParseInt(row[i+1], 10, 64)
			if n != want[[2]string{row[0][5:], k}] {
				t.Fatalf("activity table %s %s: %d, want %d", row[0], k, n, want[[2]string{row[0][5:], k}])
			}
			total += n
		}
		if strconv.FormatInt(total, 10) != row[len(row)-1] {
			t.Fatalf("activity row %q: total", row)
		}
	}
	if days != 30 {
		t.Fatalf("%d days in the activity table, want 30", days)
	}

	// 2. Reads of production values by actor: from the access read model,
	// and from the log: Bob 4, Ada 1, the token 1 (its read in staging
	// does not count).
	wantReads := map[string]int64{}
	for _, rec := range audLog(t, h) {
		if rec.Type == "secret.viewed" && strings.HasPrefix(rec.StreamID, "secret/acme/web/production/") {
			wantReads[rec.Metadata.Actor]++
		}
	}
	svg = dashChart(t, page, "Reads of production values, by actor")
	gotReads := map[string]int64{}
	for _, r := range dashRects(svg) {
		gotReads[r["data-label"]], _ = strconv.ParseInt(r["data-value"], 10, 64)
	}
	if len(wantReads) != 3 || wantReads["user:bob@example.com"] != 4 || !reflect.DeepEqual(gotReads, wantReads) {
		t.Fatalf("production reads chart %v, want %v", gotReads, wantReads)
	}
	for _, row := range dashTable(t, page, "prod-reads-table") {
		if strconv.FormatInt(wantReads[row[0]], 10) != row[1] {
			t.Fatalf("production reads table row %q, want %d reads", row, wantReads[row[0]])
		}
	}

	// 4. Keysets: the reseal bars are the read model's counts.
	sets := must(h.Reader.Keysets(ctx, "acme"))
	svg = dashChart(t, page, "Values sealed by the primary key")
	bars := dashRects(svg)
	if len(sets) != 2 || len(bars) != len(sets) {
		t.Fatalf("%d reseal bars for %d keysets", len(bars), len(sets))
	}
	for i, k := range sets {
		if bars[i]["data-label"] != k.Project+"/"+k.Env || bars[i]["data-value"] != strconv.FormatInt(k.Sealed, 10) ||
			bars[i]["data-of"] != strconv.FormatInt(max(k.Values, 1), 10) {
			t.Fatalf("reseal bar %v for keyset %+v", bars[i], k)
		}
	}
	ages := dashRects(dashChart(t, page, "Age of each keyset's primary key"))
	if len(ages) != 2 || ages[0]["data-value"] != "0" {
		t.Fatalf("key age bars %v", ages)
	}
	krows := dashTable(t, page, "keysets-table")
	if len(krows) != 2 || krows[0][0] != "web/production" || krows[0][1] != strconv.FormatInt(sets[0].PrimaryKey, 10) || krows[0][5] != "2 of 2" {
		t.Fatalf("keysets table %q", krows)
	}

	// 5. The pending request, with a link to its page.
	if !strings.Contains(page, `href="/approve/`+ticket.ID+`"`) || !strings.Contains(page, "Review request "+ticket.UserCode) {
		t.Fatalf("the pending request is not linked")
	}

	// 6. The ledger: its head (at least the one read before: signing in
	// wrote since), no checkpoint or verification yet.
	m := regexp.MustCompile(`<dt>Head</dt><dd>event (\d+)`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no ledger head on the dashboard")
	}
	if n, _ := strconv.ParseUint(m[1], 10, 64); n < head {
		t.Fatalf("ledger head %d, want at least %d", n, head)
	}
	if !strings.Contains(page, "never run") {
		t.Fatal("the dashboard does not say that the log was never verified")
	}

	// 3. No secret is stale yet.
	if !strings.Contains(page, "Every secret you can see was rotated in time.") {
		t.Fatal("fresh secrets reported stale")
	}

	// Escaping: a reason typed by a person does not become markup (it is
	// in the audit trail, not on the dashboard, but the actor names are).
	if strings.Contains(page, "<b>why</b>") {
		t.Fatal("unescaped text on the dashboard")
	}

	// The period: 14 days by default; a bad one is shown, with 400.
	page = b.get("/orgs/acme").page(t, 200)
	if n := len(dashTable(t, page, "activity-table")); n != 15 { // 14 days and the totals
		t.Fatalf("%d rows by default", n)
	}
	for _, q := range []string{"days=0", "days=91", "days=a", "stale_days=-1", "stale_days=1e3"} {
		bad := b.get("/orgs/acme?"+q).page(t, 400)
		if !strings.Contains(bad, `id="form-problem"`) || !strings.Contains(bad, "want a number of days") {
			t.Fatalf("%s: no problem shown", q)
		}
	}
}

func TestDashboardStaleSecretsAndKeys(t *testing.T) {
	// The server's clock runs 100 days ahead: every value is 100 days old.
	h := newHarness(t, func(c *api.Config) {
		c.DevSignIn = true
		c.Now = func() time.Time { return time.Now().Add(100 * 24 * time.Hour) }
	})
	dashFixture(t, h)
	ref := domain.SecretRef{Org: "acme", Project: "web", Env: "staging", Name: "MONTHLY"}
	must(h.App.SetSecret(ctx, dashAda, ref, app.SetSecret{Value: []byte("m"), Metadata: domain.SecretMetadata{RotationSeconds: 30 * 86400}}))
	must(h.App.DeleteSecret(ctx, dashAda, domain.SecretRef{Org: "acme", Project: "web", Env: "staging", Name: "DB_URL"}))
	dashCaughtUp(t, h)
	b := signedInBrowser(t, h, "ada@example.com")

	names := func(page string) []string {
		var out []string
		for _, row := range dashTable(t, page, "stale-table") {
			out = append(out, row[1]+"/"+row[0])
		}
		return out
	}
	page := b.get("/orgs/acme").page(t, 200)
	// 90 days: every secret but the deleted one; each 100 days old.
	if got := names(page); !reflect.DeepEqual(got, []string{"web/production/API_KEY", "web/production/DB_URL", "web/staging/MONTHLY"}) {
		t.Fatalf("stale at 90 days: %v", got)
	}
	for _, row := range dashTable(t, page, "stale-table") {
		if row[4] != "100" {
			t.Fatalf("stale row %q: want 100 days", row)
		}
	}
	if !strings.Contains(page, "every 30 days") {
		t.Fatal("the secret's own policy is not shown")
	}
	// 200 days: only the one whose own policy (30 days) it outlived.
	page = b.get("/orgs/acme?stale_days=200").page(t, 200)
	if got := names(page); !reflect.DeepEqual(got, []string{"web/staging/MONTHLY"}) {
		t.Fatalf("stale at 200 days: %v", got)
	}
	if !strings.Contains(page, "Secrets not rotated in 200 days") {
		t.Fatal("the heading does not say N")
	}
	// The keys: 100 days old, rotation (daily) due, said in words.
	ages := dashRects(dashChart(t, page, "Age of each keyset's primary key"))
	if len(ages) != 2 || ages[0]["data-value"] != "100" || !strings.Contains(page, "100 days, rotation due") {
		t.Fatalf("key ages %v", ages)
	}
	// Bob (developer) sees the same secrets: metadata is his to read.
	bob := signedInBrowser(t, h, "bob@example.com")
	if got := names(bob.get("/orgs/acme").page(t, 200)); len(got) != 3 {
		t.Fatalf("Bob's stale secrets: %v", got)
	}
}

func TestDashboardByRole(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	dashFixture(t, h)
	// Carol holds a role in project web only.
	must(h.App.GrantRole(ctx, dashAda, "acme", "carol@example.com", domain.RoleDeveloper, "web"))
	dashCaughtUp(t, h)

	audit := []string{"Events per day, by kind", "Reads of production values, by actor"}
	// A developer: no audit-derived card, and why; the rest is there.
	bob := signedInBrowser(t, h, "bob@example.com")
	page := bob.get("/orgs/acme").page(t, 200)
	for _, title := range audit {
		if strings.Contains(page, `aria-label="`+title) {
			t.Fatalf("a developer sees %q", title)
		}
	}
	if strings.Contains(page, "activity-table") || strings.Contains(page, "prod-reads-table") || strings.Contains(page, "user:ada@example.com") {
		t.Fatal("a developer sees audit-derived numbers")
	}
	if !strings.Contains(page, "does not let you read the audit trail") {
		t.Fatal("the dashboard does not tell a developer why the activity is missing")
	}
	if !strings.Contains(page, `id="keysets-table"`) || !strings.Contains(page, "No request waits for a decision.") {
		t.Fatal("a developer misses the keysets or the approvals")
	}
	bob.get("/orgs/acme/audit").page(t, 403)
	bob.get("/orgs/acme/audit?format=csv").page(t, 403)

	// A viewer: may not approve either.
	eve := signedInBrowser(t, h, "eve@example.com")
	page = eve.get("/orgs/acme").page(t, 200)
	if !strings.Contains(page, "does not let you approve requests") || strings.Contains(page, "activity-table") {
		t.Fatal("a viewer's dashboard")
	}
	eve.get("/orgs/acme/approvals").page(t, 403)

	// A project developer: the project's keysets; audit refused.
	carol := signedInBrowser(t, h, "carol@example.com")
	page = carol.get("/orgs/acme").page(t, 200)
	if !strings.Contains(page, "web/production") || strings.Contains(page, "activity-table") {
		t.Fatal("a project member's dashboard")
	}
	// The audit page answers her as the API's feed does (her access is
	// to a project, not to the organization's trail).
	api := h.get("/v1/orgs/acme/audit", h.signIn("carol@example.com"))
	if api.status != 403 && api.status != 404 {
		t.Fatalf("the API answers a project member's audit feed with %d", api.status)
	}
	carol.get("/orgs/acme/audit").page(t, api.status)

	// Another tenant: as if acme did not exist.
	olga := signedInBrowser(t, h, "olga@example.com")
	for _, p := range []string{"/orgs/acme", "/orgs/acme/audit", "/orgs/acme/approvals", "/orgs/nosuch"} {
		if body := olga.get(p).page(t, 404); strings.Contains(body, "web/production") {
			t.Fatalf("%s tells Olga about acme", p)
		}
	}
	// Her own organization's dashboard is empty, not acme's.
	page = olga.get("/orgs/globex").page(t, 200)
	if strings.Contains(page, "web/production") || strings.Contains(page, "bob@example.com") {
		t.Fatal("globex's dashboard shows acme's data")
	}
	if !strings.Contains(page, "No production value was read in this period.") || !strings.Contains(page, "No keysets yet.") {
		t.Fatal("an empty organization's dashboard")
	}
}

// dashAuditLinks returns a page's link (unescaped) whose text is text.
func dashLink(page, text string) string {
	m := regexp.MustCompile(`<a [^>]*href="([^"]*)"[^>]*>` + regexp.QuoteMeta(text) + `</a>`).FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return htmlstd.UnescapeString(m[1])
}

// dashAuditPositions returns the positions of an audit page's table.
func dashAuditPositions(t *testing.T, page string) []uint64 {
	t.Helper()
	var out []uint64
	for _, row := range dashTable(t, page, "audit-table") {
		if len(row) < 7 {
			continue // "no event matches"
		}
		p, err := strconv.ParseUint(row[0], 10, 64)
		if err != nil {
			t.Fatalf("audit row %q", row)
		}
		out = append(out, p)
	}
	return out
}

func TestAuditPage(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	dashFixture(t, h)
	staging := domain.SecretRef{Org: "acme", Project: "web", Env: "staging", Name: "DB_URL"}
	for range 105 { // more than a page
		must(h.App.RevealSecret(ctx, dashBob, staging, 0, "", domain.ChannelCLI))
	}
	b := signedInBrowser(t, h, "ada@example.com")
	head := dashCaughtUp(t, h)
	log := audLog(t, h)

	// Unfiltered: the newest 100 of acme's events, then the rest.
	page := b.get("/orgs/acme/audit").page(t, 200)
	noValues(t, "the audit page", page)
	first := dashAuditPositions(t, page)
	if len(first) != 100 {
		t.Fatalf("%d rows on the first page", len(first))
	}
	next := dashLink(page, "Older events")
	if next == "" || dashLink(page, "Newest events") != "" {
		t.Fatalf("the first page's links: next %q", next)
	}
	page2 := b.get(next).page(t, 200)
	rest := dashAuditPositions(t, page2)
	if dashLink(page2, "Newest events") != "/orgs/acme/audit" {
		t.Fatal("the second page does not link back to the newest")
	}
	all := append(first, rest...)
	want := audExpected(log, "acme", func(r eventstore.Record) bool { return r.Position <= head })
	if !slices.Equal(all, want) {
		t.Fatalf("the pages hold %d events, want the log's %d", len(all), len(want))
	}

	// Filtered: Bob's reads in production, typed as a person would.
	q := url.Values{"actor": {"Bob@Example.com"}, "action": {"secret.viewed"}, "env": {"production"},
		"from": {time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04")}, "to": {time.Now().UTC().Add(time.Hour).Format(time.DateOnly + "T15:04")}}
	page = b.get("/orgs/acme/audit?"+q.Encode()).page(t, 200)
	got := dashAuditPositions(t, page)
	wantBob := audExpected(log, "acme", func(r eventstore.Record) bool {
		return r.Type == "secret.viewed" && r.Metadata.Actor == "user:bob@example.com" && strings.Contains(r.StreamID, "/production/")
	})
	if len(wantBob) != 4 || !slices.Equal(got, wantBob) {
		t.Fatalf("Bob's production reads: %v, want %v", got, wantBob)
	}
	if !strings.Contains(page, `value="user:bob@example.com"`) && !strings.Contains(page, `value="Bob@Example.com"`) {
		t.Fatal("the form does not keep the actor typed")
	}
	// The CSV export link has the same filters, and answers the same
	// events to the same browser (the cookie is enough for a GET).
	link := dashLink(page, "Export every matching event as CSV")
	u, err := url.Parse(link)
	if err != nil || u.Path != "/v1/orgs/acme/audit" || u.Query().Get("format") != "csv" {
		t.Fatalf("CSV link %q", link)
	}
	lq := u.Query()
	if lq.Get("actor") != "user:bob@example.com" || lq.Get("action") != "secret.viewed" || lq.Get("env") != "production" ||
		lq.Get("from") == "" || lq.Get("to") == "" || lq.Has("cursor") {
		t.Fatalf("CSV link's filters: %v", lq)
	}
	exp := b.get(link)
	if exp.status != 200 || !strings.HasPrefix(exp.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("CSV export: %d %s", exp.status, exp.header.Get("Content-Type"))
	}
	recs, err := csv.NewReader(strings.NewReader(string(exp.body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var csvPositions []uint64
	for _, rec := range recs[1:] {
		p, _ := strconv.ParseUint(rec[0], 10, 64)
		csvPositions = append(csvPositions, p)
	}
	if !slices.Equal(csvPositions, got) {
		t.Fatalf("the CSV export holds %v, the page %v", csvPositions, got)
	}
	// The link's filters are the page's: the same filters by the page's
	// URL, the API's way, give the same page.
	pq := cloneQuery(lq)
	pq.Del("format")
	if again := dashAuditPositions(t, b.get("/orgs/acme/audit?"+pq.Encode()).page(t, 200)); !slices.Equal(again, got) {
		t.Fatalf("the link's filters give %v, the page's %v", again, got)
	}

	// A read's details: version, channel and the reason, escaped.
	page = b.get("/orgs/acme/audit?actor=ada@example.com&action=secret.viewed").page(t, 200)
	if !strings.Contains(page, "version 1 through api: &lt;b&gt;why&lt;/b&gt;") || strings.Contains(page, "<b>why</b>") {
		t.Fatal("the read's details are not shown, or not escaped")
	}
	// A window in the future: nothing.
	page = b.get("/orgs/acme/audit?from=2999-01-01").page(t, 200)
	if len(dashAuditPositions(t, page)) != 0 || !strings.Contains(page, "No event matches these filters.") {
		t.Fatal("events in 2999")
	}

	// Bad filters: shown on the page, with 400.
	for q, msg := range map[string]string{
		"action=DROP+TABLE":                "action:",
		"from=monday":                      "from: want a date",
		"secret=" + url.QueryEscape("a b"): "secret:",
		"actor=robot:x":                    "actor:",
		"from=2026-02-01&to=2026-01-01":    "the window is empty",
		"cursor=x":                         "cursor:",
	} {
		bad := b.get("/orgs/acme/audit?"+q).page(t, 400)
		if !strings.Contains(bad, `id="form-problem"`) || !strings.Contains(bad, msg) {
			m := regexp.MustCompile(`id="form-problem">([^<]*)`).FindStringSubmatch(bad)
			t.Fatalf("%s: problem %v, want %q", q, m, msg)
		}
	}
}

func cloneQuery(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

func TestApprovalsPage(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	dashFixture(t, h)
	keys := newApprKeys(t)
	ask := func() app.ApprovalTicket {
		t.Helper()
		ticket, _, err := h.App.RequestApproval(ctx, app.Request{RequestID: "cli"}, app.ApprovalSpec{Kind: domain.ApprovalSecrets,
			Org: "acme", Project: "web", Env: "production", Keys: []string{"DB_URL"}, PublicKey: keys.pub[:]})
		if err != nil {
			t.Fatal(err)
		}
		return ticket
	}
	pending, denied := ask(), ask()
	must(h.App.Deny(ctx, dashAda, denied.ID, "not <today>"))
	dashCaughtUp(t, h)

	b := signedInBrowser(t, h, "bob@example.com") // a developer may approve
	page := b.get("/orgs/acme/approvals").page(t, 200)
	pend := dashTable(t, page, "pending-table")
	if len(pend) != 1 || pend[0][0] != "Review request "+pending.UserCode || pend[0][2] != "web/production" {
		t.Fatalf("pending %q", pend)
	}
	if dashLink(page, "Review request "+pending.UserCode) != "/approve/"+pending.ID {
		t.Fatal("no link to the pending request's page")
	}
	dec := dashTable(t, page, "decided-table")
	if len(dec) != 1 || dec[0][1] != "denied" || !strings.Contains(dec[0][6], "by user:ada@example.com: not <today>") {
		t.Fatalf("decided %q", dec)
	}
	if strings.Contains(page, "not <today>") {
		t.Fatal("a reason is not escaped")
	}
	noValues(t, "the approvals page", page)
	// The approval page it links to answers.
	b.get("/approve/"+pending.ID).page(t, 200)

	// Olga: no such organization; Eve: not an approver.
	signedInBrowser(t, h, "olga@example.com").get("/orgs/acme/approvals").page(t, 404)
	eve := signedInBrowser(t, h, "eve@example.com").get("/orgs/acme/approvals").page(t, 403)
	if strings.Contains(eve, pending.UserCode) {
		t.Fatal("a viewer sees the requests")
	}
}

// The pages that draw on read models wait for a min_position the way the
// API does, and say "not yet" when the read models do not reach it: so a
// page opened right after a write shows it.
func TestPagesHonourMinPosition(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true; c.ReadWait = 200 * time.Millisecond })
	dashFixture(t, h)
	b := signedInBrowser(t, h, "ada@example.com")
	future := strconv.FormatUint(dashCaughtUp(t, h)+1000, 10)
	for _, path := range []string{"/orgs/acme", "/orgs/acme/audit", "/orgs/acme/approvals", "/orgs/acme/projects/web", "/orgs/acme/members"} {
		r := b.get(path + "?min_position=" + future)
		if r.status != 503 || !strings.Contains(string(r.body), "not_yet") {
			t.Errorf("%s with a future min_position: %d %.200s", path, r.status, r.body)
		}
		b.get(path+"?min_position=1").page(t, 200)
	}
}
