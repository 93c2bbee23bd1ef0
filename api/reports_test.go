package api_test

import (
	"encoding/csv"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// reportOf reads a report as JSON, with its items decoded into items.
func reportOf[T any](t *testing.T, h *harness, path string) (api.Report, []T) {
	t.Helper()
	var raw struct {
		api.Report
		Items []T `json:"items"`
	}
	h.get(path, h.Owner).expect(t, 200).decode(t, &raw)
	return raw.Report, raw.Items
}

// reportCSV reads a report as CSV: its header and rows.
func reportCSV(t *testing.T, h *harness, path string) ([]string, [][]string) {
	t.Helper()
	r := h.get(path, h.Ada).expect(t, 200)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") || !strings.Contains(r.header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("%s: %s, %s", path, ct, r.header.Get("Content-Disposition"))
	}
	recs, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
	if err != nil || len(recs) == 0 {
		t.Fatalf("%s: %v\n%s", path, err, r.body)
	}
	return recs[0], recs[1:]
}

// The compliance reports, each on a scenario built for it, with what
// must be left out: other tenants' objects, machines' reads, tokens that
// cannot reveal production values, requests no one approved.
func TestReports(t *testing.T) {
	var ahead atomic.Int64 // the API's clock runs this far ahead
	h := newHarness(t, func(c *api.Config) { c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) } })
	audEnv(t, h)
	prod := app.Env{Org: "acme", Project: "web", Env: "production"}
	staging := app.Env{Org: "acme", Project: "web", Env: "staging"}
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "o"}
	gprod := app.Env{Org: "globex", Project: "web", Env: "production"}
	must(h.App.CreateProject(ctx, olga, "globex", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, olga, gprod, app.EnvSpec{Production: true}))
	gref := domain.SecretRef{Org: "globex", Project: "web", Env: "production", Name: "G"}
	day := int64(86400)

	// Secrets: DB_URL (30 days) and API_KEY (60 days) in production, one
	// without a policy, a deleted one, and another tenant's.
	set := func(req app.Request, ref domain.SecretRef, rotation int64) {
		must(h.App.SetSecret(ctx, req, ref, app.SetSecret{Value: []byte("plaintext-" + ref.Name), Metadata: domain.SecretMetadata{Owner: "team-db", RotationSeconds: rotation}}))
	}
	set(audAda, audRef("production", "DB_URL"), 30*day)
	set(audAda, audRef("production", "API_KEY"), 60*day)
	set(audAda, audRef("staging", "NO_POLICY"), 0)
	set(audAda, audRef("staging", "GONE"), day)
	must(h.App.DeleteSecret(ctx, audAda, audRef("staging", "GONE")))
	set(olga, gref, day)

	// Keys: production rotates daily (the default) and has a destroyed
	// and a disabled old key; staging rotates every 90 days.
	ninety := 90 * 24 * time.Hour
	must(h.App.UpdateEnvironment(ctx, audAda, staging, app.EnvUpdate{Rotation: &ninety}))
	var oldKeys []uint32
	for range 2 {
		old := must(h.App.KeysetStatus(ctx, audAda, prod)).Primary
		must(h.App.RotateKeyset(ctx, audAda, prod, "report test"))
		must(h.App.Reseal(ctx, prod))
		must(h.App.DisableKey(ctx, audAda, prod, old))
		oldKeys = append(oldKeys, old)
	}
	must(h.App.DestroyKey(ctx, audAda, prod, oldKeys[0]))

	// Tokens: which can reveal production values, and which cannot.
	issue := func(req app.Request, org, name string, role domain.Role, envs []string, ttl time.Duration) string {
		tok, _ := audMust2(h.App.IssueToken(ctx, req, org, app.TokenSpec{Name: name, Role: role, Project: "web", Environments: envs, TTL: ttl}))
		return tok.ID
	}
	long := 90 * 24 * time.Hour
	ciProd := issue(audAda, "acme", "ci-prod", domain.RoleDeveloper, []string{"production"}, long)
	issue(audAda, "acme", "ci-staging", domain.RoleDeveloper, []string{"staging"}, long)
	issue(audAda, "acme", "viewer-all", domain.RoleViewer, nil, long)
	issue(audAda, "acme", "short-lived", domain.RoleDeveloper, []string{"production"}, time.Hour)
	must(h.App.RevokeToken(ctx, audAda, "acme", issue(audAda, "acme", "revoked", domain.RoleAdmin, nil, long), "leaked"))
	issue(olga, "globex", "globex-ci", domain.RoleDeveloper, nil, long)

	// Reads: people in production (listed), a machine in production, a
	// person in staging and another tenant's reads (not listed).
	ciReq := app.Request{Actor: domain.Actor{Kind: domain.ActorToken, ID: ciProd}, RequestID: "ci"}
	must(h.App.RevealSecret(ctx, audBob, audRef("production", "DB_URL"), 0, "before the window", domain.ChannelCLI))
	audCaughtUp(t, h)
	time.Sleep(5 * time.Millisecond)
	from := time.Now()
	must(h.App.RevealSecret(ctx, audBob, audRef("production", "DB_URL"), 0, "=incident 42", domain.ChannelAPI))
	must(h.App.RevealSecret(ctx, audAda, audRef("production", "API_KEY"), 0, "", domain.ChannelRun))
	must(h.App.RevealSecret(ctx, ciReq, audRef("production", "DB_URL"), 0, "deploy", domain.ChannelRun))
	must(h.App.RevealSecret(ctx, audBob, audRef("staging", "NO_POLICY"), 0, "staging", domain.ChannelAPI))
	must(h.App.RevealSecret(ctx, olga, gref, 0, "globex", domain.ChannelAPI))

	// Approvals: approved and delivered, denied, pending, and another
	// tenant's approved request.
	keys := newApprKeys(t)
	ask := func(req app.Request, env app.Env, names ...string) string {
		tk, _ := audMust2(h.App.RequestApproval(ctx, req, app.ApprovalSpec{Kind: domain.ApprovalSecrets, Org: env.Org, Project: env.Project, Env: env.Env,
			Keys: names, PublicKey: keys.pub[:]}))
		return tk.ID
	}
	granted := ask(audBob, prod, "DB_URL", "API_KEY")
	must(h.App.Approve(ctx, audAda, granted, []string{"DB_URL"}))
	must(h.App.Collect(ctx, audBob, granted)) // a read by bob, through the approval
	must(h.App.Deny(ctx, audAda, ask(audBob, prod, "DB_URL"), "no"))
	ask(audBob, prod, "API_KEY")
	must(h.App.GrantRole(ctx, olga, "globex", "gina@example.com", domain.RoleDeveloper, ""))
	gina := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "gina@example.com"}, RequestID: "g"}
	must(h.App.Approve(ctx, olga, ask(gina, gprod, "G"), []string{"G"}))
	to := time.Now()
	head := audCaughtUp(t, h)
	ahead.Store(int64(40 * 24 * time.Hour)) // forty days later
	base := "/v1/orgs/acme/reports/"
	mp := "min_position=" + strconv.FormatUint(head, 10)

	// stale-secrets: DB_URL only (ten days overdue); with days=30, also
	// the secret without a policy.
	rep, stale := reportOf[api.StaleSecretRow](t, h, base+"stale-secrets?"+mp)
	if rep.Report != "stale-secrets" || rep.Org != "acme" || len(stale) != 1 || stale[0].Name != "DB_URL" || !stale[0].Production ||
		stale[0].Policy != "secret" || stale[0].IntervalSeconds != 30*day || stale[0].AgeDays != 40 || stale[0].OverdueDays != 10 || stale[0].Owner != "team-db" {
		t.Fatalf("stale-secrets: %+v %+v", rep, stale)
	}
	_, stale = reportOf[api.StaleSecretRow](t, h, base+"stale-secrets?days=30&"+mp)
	if len(stale) != 2 || stale[1].Name != "NO_POLICY" || stale[1].Policy != "days" || stale[1].OverdueDays != 10 || stale[1].Production {
		t.Fatalf("stale-secrets with days: %+v", stale)
	}

	// production-reads: people only, production only, acme only, in
	// the window; checked against the log itself.
	var want []string
	for _, rec := range audLog(t, h) {
		if rec.Type == "secret.viewed" && strings.HasPrefix(rec.StreamID, "secret/acme/web/production/") && strings.HasPrefix(rec.Metadata.Actor, "user:") &&
			!rec.RecordedAt.Before(from) && rec.RecordedAt.Before(to) {
			want = append(want, rec.Metadata.Actor+" "+strings.TrimPrefix(rec.StreamID, "secret/acme/web/production/"))
		}
	}
	window := "from=" + histAt(from) + "&to=" + histAt(to) + "&" + mp
	rep, reads := reportOf[api.ProductionReadRow](t, h, base+"production-reads?"+window)
	var got []string
	for _, x := range reads {
		got = append(got, x.Actor+" "+x.Secret)
		if x.Env != "production" || x.Project != "web" || x.Position == 0 || x.RecordedAt.Before(from) {
			t.Fatalf("production-reads row %+v", x)
		}
	}
	if len(want) != 3 || !slices.Equal(got, want) || reads[0].Reason != "=incident 42" || reads[0].Channel != "api" || reads[2].Channel != "approval-delivery" {
		t.Fatalf("production-reads %v, want %v (from the log): %+v", got, want, reads)
	}
	if rep.From == nil || rep.To == nil || !rep.From.Equal(from) || !rep.To.Equal(to) {
		t.Fatalf("production-reads window: %v %v", rep.From, rep.To)
	}
	_, all := reportOf[api.ProductionReadRow](t, h, base+"production-reads?"+mp)
	if len(all) != 4 || all[0].Reason != "before the window" {
		t.Fatalf("production-reads since the log began: %+v", all)
	}
	header, rows := reportCSV(t, h, base+"production-reads?format=csv&"+window)
	if !slices.Equal(header, rep.Columns) || len(rows) != 3 || rows[0][1] != "user:bob@example.com" || rows[0][7] != "'=incident 42" {
		t.Fatalf("production-reads as CSV: %q %q", header, rows)
	}

	// old-keys: production's primary and its disabled old key (older than
	// a day), not the destroyed one, nor staging's (90 days).
	_, old := reportOf[api.OldKeyRow](t, h, base+"old-keys?"+mp)
	var oldGot []string
	for _, k := range old {
		oldGot = append(oldGot, k.Env+" "+k.State+" "+strconv.FormatBool(k.Primary))
		if k.RotationSeconds != day || k.AgeDays != 40 || k.OverdueDays != 39 || !k.Production {
			t.Fatalf("old-keys row %+v", k)
		}
		if k.KeyID == int64(oldKeys[0]) {
			t.Fatalf("a destroyed key is listed: %+v", k)
		}
	}
	if !slices.Equal(oldGot, []string{"production disabled false", "production enabled true"}) {
		t.Fatalf("old-keys: %v", oldGot)
	}

	// approvals: the one approved, for bob, by ada, with its keys.
	_, appr := reportOf[api.ApprovalGrantedRow](t, h, base+"approvals?"+mp)
	if len(appr) != 1 || appr[0].ID != granted || appr[0].Requester != "user:bob@example.com" || !slices.Equal(appr[0].ApprovedBy, []string{"user:ada@example.com"}) ||
		!slices.Equal(appr[0].Keys, []string{"DB_URL", "API_KEY"}) || !slices.Equal(appr[0].GrantedKeys, []string{"DB_URL"}) ||
		!slices.Equal(appr[0].DeliveredKeys, []string{"DB_URL"}) || appr[0].Status != "delivered" || appr[0].DecidedAt == nil || appr[0].DeliveredAt == nil {
		t.Fatalf("approvals: %+v", appr)
	}
	if _, none := reportOf[api.ApprovalGrantedRow](t, h, base+"approvals?to="+histAt(from)+"&"+mp); len(none) != 0 {
		t.Fatalf("approvals requested before the window: %+v", none)
	}

	// production-tokens: ci-prod only (forty days on, the short-lived
	// token and the bootstrap owner token have expired).
	_, toks := reportOf[api.ProductionTokenRow](t, h, base+"production-tokens?"+mp)
	if len(toks) != 1 || toks[0].ID != ciProd || toks[0].Role != "developer" || !slices.Equal(toks[0].ProductionEnvs, []string{"web/production"}) ||
		toks[0].IssuedBy != "user:ada@example.com" {
		t.Fatalf("production-tokens 40 days on: %+v", toks)
	}
	ahead.Store(0)
	_, toks = reportOf[api.ProductionTokenRow](t, h, base+"production-tokens?"+mp)
	var names []string
	for _, x := range toks {
		names = append(names, x.Name)
	}
	if !slices.Equal(names, []string{"bootstrap", "ci-prod", "short-lived"}) {
		t.Fatalf("production-tokens now: %v", names)
	}
	header, rows = reportCSV(t, h, base+"production-tokens?format=csv&"+mp)
	if header[0] != "id" || len(rows) != 3 || rows[1][5] != "web/production" {
		t.Fatalf("production-tokens as CSV: %q %q", header, rows)
	}

	// Another tenant's reports are its own; access; bad input.
	h.get("/v1/orgs/globex/reports/approvals", h.Olga).expect(t, 200)
	h.get(base+"approvals", h.Olga).expectProblem(t, 404, "not_found")
	h.get(base+"approvals", h.Bob).expectProblem(t, 403, "forbidden")
	h.get(base+"approvals", "").expectProblem(t, 401, "unauthenticated")
	h.do(call{method: "GET", path: base + "nope", cred: h.Ada, invalid: true}).expectProblem(t, 404, "not_found")
	h.do(call{method: "GET", path: base + "approvals?format=xml", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")
	h.get(base+"old-keys?from="+histAt(from), h.Ada).expectProblem(t, 400, "invalid_request")
	h.get(base+"approvals?days=3", h.Ada).expectProblem(t, 400, "invalid_request")
	h.get(base+"approvals?from="+histAt(to)+"&to="+histAt(from), h.Ada).expectProblem(t, 400, "invalid_request")
	if p := must(h.Store.Head(ctx)).Position; p != head {
		t.Fatalf("reports appended %d events", p-head)
	}
}
