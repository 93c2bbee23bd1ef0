package api_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/nacl/box"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// The values of the approval tests: none of them may appear in a log
// line, an event or a read model.
const (
	apprDBValue  = "postgres://app:seed003-db-7f3a91@db.internal/app"
	apprAPIValue = "sk_live_seed003_api_c0ffee42"
	apprNewValue = "postgres://app:seed003-rotated-5e11@db.internal/app"
)

// apprFixture: acme's project web with environment production (bundle
// backend: DB_URL required, API_KEY), and values for DB_URL and API_KEY.
type apprFixture struct {
	*harness
	ada  app.Request
	prod app.Env
}

func newApprFixture(t *testing.T) *apprFixture {
	t.Helper()
	h := newHarness(t)
	f := &apprFixture{harness: h, ada: app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada@example.com"}, RequestID: "approvals-test"},
		prod: app.Env{Org: "acme", Project: "web", Env: "production"}}
	must(h.App.CreateProject(ctx, f.ada, "acme", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, f.ada, f.prod, app.EnvSpec{Name: "Production", Production: true}))
	must(h.App.CreateBundle(ctx, f.ada, "acme", "web", "backend", []domain.BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}))
	f.set(t, "DB_URL", apprDBValue)
	f.set(t, "API_KEY", apprAPIValue)
	return f
}

func (f *apprFixture) ref(name string) domain.SecretRef {
	return domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: name}
}

func (f *apprFixture) set(t *testing.T, name, value string) {
	t.Helper()
	if _, err := f.App.SetSecret(ctx, f.ada, f.ref(name), app.SetSecret{Value: []byte(value)}); err != nil {
		t.Fatal(err)
	}
}

func (f *apprFixture) policy(t *testing.T, p domain.ApprovalPolicy) {
	t.Helper()
	if _, err := f.App.UpdateEnvironment(ctx, f.ada, f.prod, app.EnvUpdate{Approval: &p}); err != nil {
		t.Fatal(err)
	}
}

// person grants a role in acme and signs the person in.
func (f *apprFixture) person(t *testing.T, user string, role domain.Role) string {
	t.Helper()
	must(f.App.GrantRole(ctx, f.ada, "acme", user, role, ""))
	return f.signIn(user)
}

// apprKeys is a client's one-time X25519 key pair.
type apprKeys struct{ pub, priv *[32]byte }

func newApprKeys(t *testing.T) apprKeys {
	t.Helper()
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return apprKeys{pub, priv}
}

func (k apprKeys) public() string { return base64.StdEncoding.EncodeToString(k.pub[:]) }

// open opens a delivery's sealed box.
func (k apprKeys) open(t *testing.T, d api.ApprovalDelivery) []byte {
	t.Helper()
	sealed, err := base64.StdEncoding.DecodeString(d.SealedBox)
	if err != nil {
		t.Fatalf("sealed box %q: %v", d.SealedBox, err)
	}
	plain, ok := box.OpenAnonymous(nil, sealed, k.pub, k.priv)
	if !ok {
		t.Fatal("the sealed box does not open with the client's key")
	}
	return plain
}

func (f *apprFixture) create(t *testing.T, cred string, body map[string]any) api.ApprovalCreated {
	t.Helper()
	var out api.ApprovalCreated
	f.post("/v1/approvals", cred, body).expect(t, 201).decode(t, &out)
	return out
}

func (f *apprFixture) collect(t *testing.T, id, cred string, body map[string]any) response {
	t.Helper()
	return f.post("/v1/approvals/"+id+"/collect", cred, body)
}

func (f *apprFixture) head(t *testing.T) uint64 {
	t.Helper()
	return must(f.App.Head(ctx))
}

// records returns the whole log.
func (f *apprFixture) records(t *testing.T) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for from := uint64(1); ; {
		recs, err := f.Store.ReadAll(ctx, from, 1000)
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

// noPlaintext fails if a value appears in the server's log lines, in an
// event of the log, or in any table of the schema (read models included).
func (f *apprFixture) noPlaintext(t *testing.T, values ...string) {
	t.Helper()
	logs := f.Logs.String()
	recs := f.records(t)
	rows, err := f.Pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tables, "proj_approvals") {
		t.Fatalf("no read models among %v", tables)
	}
	for _, v := range values {
		if strings.Contains(logs, v) {
			t.Errorf("a value reached the server's log")
		}
		for _, r := range recs {
			if strings.Contains(string(r.Data), v) || strings.Contains(r.Metadata.Actor+r.Metadata.CausationID+r.Metadata.RequestID, v) {
				t.Errorf("a value is in event %d (%s)", r.Position, r.Type)
			}
		}
		for _, table := range tables {
			var n int
			if err := f.Pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()+` t WHERE strpos(t::text, $1) > 0`, v).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				t.Errorf("a value is in table %s", table)
			}
		}
	}
}

func pollActor(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "anonymous:" + hex.EncodeToString(sum[:])[:32]
}

// The seed's flow: a CLI that is not signed in asks for a bundle, a
// colleague sees the request and approves the keys they choose, the CLI
// collects and opens the box.
func TestApprovalSeedFlow(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	c := f.create(t, "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "bundle": "backend"})
	if c.VerificationURL != f.URL+"/approve/"+c.ID || !strings.HasPrefix(c.PollToken, "stele_poll_") || c.Status != "pending" ||
		c.ExpiresIn < 290 || c.ExpiresIn > 300 || c.ApprovalsRequired != 1 || c.Kind != "secrets" {
		t.Fatalf("created %+v", c)
	}
	if exp := time.Until(c.ExpiresAt); exp < 4*time.Minute || exp > 5*time.Minute {
		t.Fatalf("expires in %s", exp)
	}

	// The approver sees who asks, from where, and the bundle's keys.
	var ctxt api.ApprovalContext
	f.get("/v1/approvals/"+c.ID, f.Bob).expect(t, 200).decode(t, &ctxt)
	want := []api.ApprovalKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}
	if ctxt.Kind != "secrets" || ctxt.RequesterKind != "anonymous" || ctxt.Requester != pollActor(c.PollToken) || ctxt.ClientAddr != "127.0.0.1" ||
		ctxt.Org != "acme" || ctxt.Project != "web" || ctxt.Env != "production" || ctxt.Bundle != "backend" || !ctxt.KeysFromBundle ||
		!slices.Equal(ctxt.Keys, want) || ctxt.UserCode != c.UserCode || ctxt.Status != "pending" || ctxt.ApprovalsRequired != 1 ||
		len(ctxt.ApprovedBy) != 0 || !ctxt.ExpiresAt.Equal(c.ExpiresAt) {
		t.Fatalf("context %+v", ctxt)
	}
	// Only approvers in that environment see it: a member without the
	// role is told so, another tenant learns nothing.
	f.get("/v1/approvals/"+c.ID, f.Eve).expectProblem(t, 403, "forbidden")  // a viewer
	f.get("/v1/approvals/"+c.ID, f.Olga).expectProblem(t, 404, "not_found") // another tenant
	f.get("/v1/approvals/"+c.ID, "").expectProblem(t, 401, "unauthenticated")
	f.get("/v1/approvals/0123456789abcdef01234567", f.Bob).expectProblem(t, 404, "not_found")

	// Not decided yet.
	var waiting api.ApprovalWaiting
	f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken}).expect(t, 202).decode(t, &waiting)
	if waiting.Status != "pending" || waiting.ID != c.ID {
		t.Fatalf("waiting %+v", waiting)
	}
	// Someone without the poll token learns nothing.
	f.collect(t, c.ID, "", map[string]any{"poll_token": "stele_poll_" + strings.Repeat("A", 43)}).expectProblem(t, 404, "not_found")
	f.collect(t, c.ID, f.Bob, map[string]any{}).expectProblem(t, 404, "not_found")

	// Required keys stay in; only requested keys; a viewer and another
	// tenant cannot approve. None of it changes anything.
	head := f.head(t)
	f.post("/v1/approvals/"+c.ID+"/approve", f.Bob, map[string]any{"keys": []string{"API_KEY"}}).expectProblem(t, 400, "invalid_request")
	f.post("/v1/approvals/"+c.ID+"/approve", f.Bob, map[string]any{"keys": []string{"DB_URL", "OTHER"}}).expectProblem(t, 400, "invalid_request")
	f.post("/v1/approvals/"+c.ID+"/approve", f.Bob, map[string]any{}).expectProblem(t, 400, "invalid_request")
	f.post("/v1/approvals/"+c.ID+"/approve", f.Eve, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 403, "forbidden")
	f.post("/v1/approvals/"+c.ID+"/approve", f.Olga, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 404, "not_found")
	if f.head(t) != head {
		t.Fatal("refused approvals appended events")
	}

	// Bob lets DB_URL through, not API_KEY.
	var dec api.ApprovalDecided
	r := f.post("/v1/approvals/"+c.ID+"/approve", f.Bob, map[string]any{"keys": []string{"DB_URL"}}).expect(t, 200)
	r.decode(t, &dec)
	if dec.Status != "approved" || strconv.FormatUint(dec.Position, 10) != r.position(t) {
		t.Fatalf("approved %+v", dec)
	}

	// The client collects and opens the box.
	var d api.ApprovalDelivery
	r = f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken, "wait_seconds": 5}).expect(t, 200)
	r.decode(t, &d)
	var values map[string]string
	if err := json.Unmarshal(keys.open(t, d), &values); err != nil {
		t.Fatal(err)
	}
	if len(values) != 1 || values["DB_URL"] != apprDBValue {
		t.Fatalf("delivered %d values (keys %v)", len(values), d.Keys)
	}
	if d.Kind != "secrets" || d.Status != "delivered" || len(d.Keys) != 1 || d.Keys[0] != (domain.DeliveredKey{Name: "DB_URL", Version: 1}) ||
		strconv.FormatUint(d.Position, 10) != r.position(t) {
		t.Fatalf("delivery %+v", d)
	}
	// Once.
	f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken}).expectProblem(t, 410, "already_delivered")

	// The log: the approval, the delivery, then the read of the value by
	// the client (known by its poll token), through the approval.
	var seq []string
	for _, rec := range f.records(t) {
		switch {
		case rec.StreamID == domain.ApprovalStream(c.ID):
			seq = append(seq, rec.Type)
		case rec.Type == "secret.viewed" && strings.Contains(string(rec.Data), "approval-delivery"):
			seq = append(seq, rec.Type)
			if rec.Metadata.Actor != pollActor(c.PollToken) || rec.StreamID != f.ref("DB_URL").Stream() || !strings.Contains(string(rec.Data), c.ID) {
				t.Fatalf("delivery read %s by %s: %s", rec.StreamID, rec.Metadata.Actor, rec.Data)
			}
		}
		if strings.Contains(string(rec.Data), c.PollToken) {
			t.Fatal("the poll token is in the log")
		}
	}
	if strings.Join(seq, " ") != "approval.requested approval.approved approval.delivered secret.viewed" {
		t.Fatalf("events %v", seq)
	}

	// The read model lists it, with the bundle resolved by the approval.
	var list struct{ Items []api.ApprovalSummary }
	f.get("/v1/orgs/acme/approvals?status=delivered&min_position="+strconv.FormatUint(d.Position, 10), f.Ada).expect(t, 200).decode(t, &list)
	if len(list.Items) != 1 || list.Items[0].ID != c.ID || !slices.Equal(list.Items[0].Keys, want) || list.Items[0].RequesterKind != "anonymous" ||
		!slices.Equal(list.Items[0].ApprovedBy, []string{"user:bob@example.com"}) || len(list.Items[0].DeliveredKeys) != 1 {
		t.Fatalf("list %+v", list.Items)
	}
	if strings.Contains(f.Logs.String(), c.PollToken) {
		t.Fatal("the poll token reached the server's log")
	}
	f.noPlaintext(t, apprDBValue, apprAPIValue)
}

// The answer to an anonymous request does not depend on whether what it
// names exists.
func TestApprovalAnonymousRequestRevealsNothing(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	shape := func(org, project, env, bundle string) (map[string]any, []string) {
		r := f.post("/v1/approvals", "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": org, "project": project, "env": env, "bundle": bundle})
		var body map[string]any
		r.decode(t, &body)
		for _, k := range []string{"id", "user_code", "poll_token", "verification_url", "expires_at", "position"} {
			if _, ok := body[k]; !ok {
				t.Fatalf("%s missing: %s", k, r.body)
			}
			body[k] = "…" // differs between any two requests
		}
		if n := body["expires_in"].(float64); n >= 299 && n <= 300 {
			body["expires_in"] = 300.0
		}
		body["status_code"] = r.status
		var hdrs []string
		for k := range r.header {
			hdrs = append(hdrs, k)
		}
		slices.Sort(hdrs)
		return body, hdrs
	}
	real, realHeaders := shape("acme", "web", "production", "backend")
	for _, scope := range [][4]string{
		{"nope", "web", "production", "backend"},   // no such organization
		{"globex", "web", "production", "backend"}, // another tenant's
		{"acme", "nope", "production", "backend"},  // no such project
		{"acme", "web", "nope", "backend"},         // no such environment
		{"acme", "web", "production", "no-bundle"}, // no such bundle
	} {
		got, headers := shape(scope[0], scope[1], scope[2], scope[3])
		gb, _ := json.Marshal(got)
		rb, _ := json.Marshal(real)
		if string(gb) != string(rb) || !slices.Equal(headers, realHeaders) {
			t.Fatalf("%v answers\n%s %v\nbut an existing scope\n%s %v", scope, gb, headers, rb, realHeaders)
		}
	}
	// A malformed name is refused alike, exists or not.
	for _, org := range []string{"acme", "nope"} {
		f.do(call{method: "POST", path: "/v1/approvals", invalid: true, body: map[string]any{"kind": "secrets", "public_key": keys.public(), "org": org,
			"project": "Web!", "env": "production", "keys": []string{"DB_URL"}}}).expectProblem(t, 400, "invalid_request")
	}
	// The approver finds out: a request of an organization that does not
	// exist is nobody's to see or approve; a missing bundle cannot be
	// approved in acme.
	c := f.create(t, "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "bundle": "no-bundle"})
	var ctxt api.ApprovalContext
	f.get("/v1/approvals/"+c.ID, f.Ada).expect(t, 200).decode(t, &ctxt)
	if !ctxt.KeysFromBundle || len(ctxt.Keys) != 0 {
		t.Fatalf("context of a missing bundle %+v", ctxt)
	}
	f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 404, "not_found")
	nope := f.create(t, "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "nope", "project": "web", "env": "production", "keys": []string{"DB_URL"}})
	f.get("/v1/approvals/"+nope.ID, f.Ada).expectProblem(t, 404, "not_found")
	f.post("/v1/approvals/"+nope.ID+"/approve", f.Ada, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 404, "not_found")
}

// Bad input is refused with a clear problem and changes nothing.
func TestApprovalBadInput(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	head := f.head(t)
	base := func() map[string]any {
		return map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "keys": []string{"DB_URL"}}
	}
	for _, c := range []struct {
		name   string
		change func(map[string]any)
		field  string
		code   string
	}{
		{"a short key", func(b map[string]any) { b["public_key"] = base64.StdEncoding.EncodeToString(keys.pub[:16]) }, "public_key", "invalid_request"},
		{"no key", func(b map[string]any) { delete(b, "public_key") }, "public_key", "invalid_request"},
		{"an unknown kind", func(b map[string]any) { b["kind"] = "everything" }, "kind", "invalid_request"},
		{"nothing asked", func(b map[string]any) { delete(b, "keys") }, "keys", "invalid_request"},
		{"a bad key name", func(b map[string]any) { b["keys"] = []string{"NOT-A-NAME"} }, "key", "invalid_request"},
		{"a bundle and keys", func(b map[string]any) { b["bundle"] = "backend" }, "keys", "invalid_request"},
		{"too long", func(b map[string]any) { b["ttl_seconds"] = 7200 }, "ttl_seconds", "invalid_request"},
		{"an unknown field", func(b map[string]any) { b["approvers"] = 0 }, "", "invalid_json"},
		{"a sign-in with keys", func(b map[string]any) { b["kind"] = "login" }, "kind", "invalid_request"},
	} {
		b := base()
		c.change(b)
		r := f.do(call{method: "POST", path: "/v1/approvals", body: b, invalid: true})
		r.expectProblem(t, 400, c.code)
		var p api.Problem
		r.decode(t, &p)
		if c.field != "" && p.Field != c.field && !strings.Contains(p.Detail, strings.ReplaceAll(c.field, "_", " ")) {
			t.Errorf("%s: problem %+v, want field %s", c.name, p, c.field)
		}
	}
	f.do(call{method: "POST", path: "/v1/approvals", body: "{", contentType: "application/json", invalid: true}).expectProblem(t, 400, "invalid_json")
	// A change request needs a signed-in caller.
	f.post("/v1/approvals", "", map[string]any{"kind": "change", "org": "acme", "project": "web", "env": "production",
		"changes": []map[string]any{{"name": "DB_URL", "op": "set", "base_version": 1, "value": "x"}}}).expectProblem(t, 401, "unauthenticated")
	if f.head(t) != head {
		t.Fatal("refused requests appended events")
	}

	c := f.create(t, "", base())
	head = f.head(t)
	f.do(call{method: "POST", path: "/v1/approvals/" + c.ID + "/collect", body: map[string]any{"poll_token": c.PollToken, "wait_seconds": 61}, invalid: true}).
		expectProblem(t, 400, "invalid_request")
	f.collect(t, c.ID, "", map[string]any{}).expectProblem(t, 400, "invalid_request") // no token, not signed in
	f.do(call{method: "POST", path: "/v1/approvals/not.an.id/collect", body: map[string]any{"poll_token": c.PollToken}, invalid: true}).expectProblem(t, 404, "not_found")
	f.post("/v1/approvals/"+c.ID+"/deny", "", map[string]any{}).expectProblem(t, 401, "unauthenticated")
	f.do(call{method: "POST", path: "/v1/approvals/" + c.ID + "/deny", cred: f.Bob, body: map[string]any{"reason": strings.Repeat("x", 501)}, invalid: true}).
		expectProblem(t, 400, "invalid_request")
	f.do(call{method: "GET", path: "/v1/orgs/acme/approvals?status=maybe", cred: f.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")
	if f.head(t) != head {
		t.Fatal("refused calls appended events")
	}
}

// A collection waits for the decision without polling, and answers
// promptly once it comes.
func TestApprovalLongPoll(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	c := f.create(t, "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "keys": []string{"API_KEY"}})
	type result struct {
		r  response
		at time.Time
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		r := f.post("/v1/approvals/"+c.ID+"/collect", "", map[string]any{"poll_token": c.PollToken, "wait_seconds": 30})
		done <- result{r, time.Now()}
	}()
	select {
	case res := <-done:
		t.Fatalf("the collection answered before any decision: %d %s", res.r.status, res.r.body)
	case <-time.After(700 * time.Millisecond):
	}
	f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{"keys": []string{"API_KEY"}}).expect(t, 200)
	approved := time.Now()
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the collection did not wake up after the approval")
	}
	res.r.expect(t, 200)
	if lag := res.at.Sub(approved); lag > 800*time.Millisecond {
		t.Fatalf("the collection answered %s after the approval", lag)
	}
	if res.at.Sub(start) > 5*time.Second {
		t.Fatalf("the collection took %s", res.at.Sub(start))
	}
	var d api.ApprovalDelivery
	res.r.decode(t, &d)
	var values map[string]string
	if err := json.Unmarshal(keys.open(t, d), &values); err != nil || values["API_KEY"] != apprAPIValue || len(values) != 1 {
		t.Fatalf("delivered %d values: %v", len(values), err)
	}

	// A wait that ends undecided answers 202 after the wait, not before.
	c2 := f.create(t, "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "keys": []string{"API_KEY"}})
	start = time.Now()
	f.collect(t, c2.ID, "", map[string]any{"poll_token": c2.PollToken, "wait_seconds": 1}).expect(t, 202)
	if took := time.Since(start); took < time.Second || took > 3*time.Second {
		t.Fatalf("a one-second wait took %s", took)
	}
	// A denial wakes it too.
	go func() {
		r := f.post("/v1/approvals/"+c2.ID+"/collect", "", map[string]any{"poll_token": c2.PollToken, "wait_seconds": 30})
		done <- result{r, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	f.post("/v1/approvals/"+c2.ID+"/deny", f.Bob, map[string]any{"reason": "not for a script"}).expect(t, 200)
	denied := time.Now()
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the collection did not wake up after the denial")
	}
	res.r.expectProblem(t, 409, "approval_denied")
	if lag := res.at.Sub(denied); lag > 800*time.Millisecond {
		t.Fatalf("the collection answered %s after the denial", lag)
	}
}

// Denied, withdrawn and expired requests deliver nothing, each with its
// own code.
func TestApprovalDeniedWithdrawnExpired(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	ask := func() api.ApprovalCreated {
		return f.create(t, "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "keys": []string{"DB_URL"}})
	}
	// Denied by an approver, with a reason the approver's page shows.
	c := ask()
	f.post("/v1/approvals/"+c.ID+"/deny", f.Eve, map[string]any{}).expectProblem(t, 403, "forbidden") // a viewer
	f.post("/v1/approvals/"+c.ID+"/deny", f.Olga, map[string]any{}).expectProblem(t, 404, "not_found")
	var dec api.ApprovalDecided
	f.post("/v1/approvals/"+c.ID+"/deny", f.Bob, map[string]any{"reason": "who is this?"}).expect(t, 200).decode(t, &dec)
	if dec.Status != "denied" {
		t.Fatalf("denied %+v", dec)
	}
	var ctxt api.ApprovalContext
	f.get("/v1/approvals/"+c.ID, f.Ada).expect(t, 200).decode(t, &ctxt)
	if ctxt.Status != "denied" || ctxt.DeniedBy != "user:bob@example.com" || ctxt.DenyReason != "who is this?" {
		t.Fatalf("context %+v", ctxt)
	}
	f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken}).expectProblem(t, 409, "approval_denied")
	f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 409, "approval_denied")

	// Withdrawn by the client with its poll token; a wrong token is told
	// nothing.
	c = ask()
	f.post("/v1/approvals/"+c.ID+"/deny", "", map[string]any{"poll_token": "stele_poll_nope"}).expectProblem(t, 404, "not_found")
	f.post("/v1/approvals/"+c.ID+"/deny", "", map[string]any{"poll_token": c.PollToken, "reason": "cancelled"}).expect(t, 200)
	f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken}).expectProblem(t, 409, "approval_denied")
	for _, rec := range f.records(t) {
		if rec.StreamID == domain.ApprovalStream(c.ID) && rec.Type == "approval.denied" && rec.Metadata.Actor != pollActor(c.PollToken) {
			t.Fatalf("withdrawal recorded for %s", rec.Metadata.Actor)
		}
	}

	// Expired: a short-lived request; the waiting collection wakes at the
	// deadline.
	anon := app.Request{RequestID: "expiring"}
	ticket, _, err := f.App.RequestApproval(ctx, anon, app.ApprovalSpec{Kind: domain.ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
		Keys: []string{"DB_URL"}, PublicKey: keys.pub[:], TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.collect(t, ticket.ID, "", map[string]any{"poll_token": ticket.PollToken, "wait_seconds": 20}).expectProblem(t, 410, "expired")
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the expiry was noticed after %s", took)
	}
	f.post("/v1/approvals/"+ticket.ID+"/approve", f.Ada, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 410, "expired")
	f.noPlaintext(t, apprDBValue)
}

// A CLI signs in: the person who approves is signed in on it.
func TestApprovalLoginFlow(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	c := f.create(t, "", map[string]any{"kind": "login", "public_key": keys.public()})
	var ctxt api.ApprovalContext
	f.get("/v1/approvals/"+c.ID, f.Ada).expect(t, 200).decode(t, &ctxt)
	if ctxt.Kind != "login" || ctxt.RequesterKind != "anonymous" || ctxt.UserCode != c.UserCode || ctxt.Org != "" || len(ctxt.Keys) != 0 {
		t.Fatalf("context %+v", ctxt)
	}
	f.get("/v1/approvals/"+c.ID, f.Owner).expectProblem(t, 404, "not_found") // tokens sign nobody in
	f.post("/v1/approvals/"+c.ID+"/approve", f.Owner, map[string]any{}).expectProblem(t, 403, "forbidden")
	f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 400, "invalid_request")
	f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{}).expect(t, 200)

	var d api.ApprovalDelivery
	f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken}).expect(t, 200).decode(t, &d)
	var sess struct {
		Credential string    `json:"credential"`
		User       string    `json:"user"`
		ExpiresAt  time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(keys.open(t, d), &sess); err != nil {
		t.Fatal(err)
	}
	if d.Kind != "login" || d.User != "ada@example.com" || sess.User != "ada@example.com" || !strings.HasPrefix(sess.Credential, "stele_ses_") ||
		d.SessionExpiresAt == nil || !d.SessionExpiresAt.Equal(sess.ExpiresAt) {
		t.Fatalf("delivery %+v, session for %s", d, sess.User)
	}
	if ttl := time.Until(sess.ExpiresAt); ttl < 29*24*time.Hour || ttl > 30*24*time.Hour {
		t.Fatalf("the CLI session lasts %s", ttl)
	}
	// The credential works.
	var me api.Me
	f.get("/v1/me", sess.Credential).expect(t, 200).decode(t, &me)
	if me.Actor != "user:ada@example.com" || me.Method != "cli" {
		t.Fatalf("me %+v", me)
	}
	f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken}).expectProblem(t, 410, "already_delivered")

	// The session's start, then the delivery; only the credential's hash.
	var seq []string
	for _, rec := range f.records(t) {
		switch {
		case rec.Type == "session.started" && strings.Contains(string(rec.Data), c.ID):
			seq = append(seq, rec.Type)
			if rec.Metadata.Actor != "user:ada@example.com" || rec.Metadata.CausationID != "approval:"+c.ID {
				t.Fatalf("session started with metadata %+v", rec.Metadata)
			}
		case rec.StreamID == domain.ApprovalStream(c.ID):
			seq = append(seq, rec.Type)
		}
	}
	if strings.Join(seq, " ") != "approval.requested approval.approved session.started approval.delivered" {
		t.Fatalf("events %v", seq)
	}
	f.noPlaintext(t, sess.Credential[len("stele_ses_"):], c.PollToken)

	// A sign-in may be turned away by the person it would sign in.
	c2 := f.create(t, "", map[string]any{"kind": "login", "public_key": keys.public()})
	f.post("/v1/approvals/"+c2.ID+"/deny", f.Eve, map[string]any{"reason": "not me"}).expect(t, 200)
	f.collect(t, c2.ID, "", map[string]any{"poll_token": c2.PollToken}).expectProblem(t, 409, "approval_denied")
}

// A signed-in developer's request is theirs: they cannot approve it, and
// collect it with their own credential.
func TestApprovalSignedInRequester(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	c := f.create(t, f.Bob, map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "bundle": "backend"})
	var ctxt api.ApprovalContext
	f.get("/v1/approvals/"+c.ID, f.Ada).expect(t, 200).decode(t, &ctxt)
	if ctxt.Requester != "user:bob@example.com" || ctxt.RequesterKind != "user" || ctxt.KeysFromBundle ||
		!slices.Equal(ctxt.Keys, []api.ApprovalKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}) {
		t.Fatalf("context %+v", ctxt)
	}
	head := f.head(t)
	f.post("/v1/approvals/"+c.ID+"/approve", f.Bob, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 403, "forbidden")
	if f.head(t) != head {
		t.Fatal("a refused self-approval appended events")
	}
	// A signed-in requester sees only what exists: another tenant's
	// scope is not found.
	f.post("/v1/approvals", f.Bob, map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "globex", "project": "web", "env": "production",
		"keys": []string{"DB_URL"}}).expectProblem(t, 404, "not_found")
	f.post("/v1/approvals", f.Bob, map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production",
		"bundle": "no-bundle"}).expectProblem(t, 404, "not_found")

	f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{"keys": []string{"DB_URL", "API_KEY"}}).expect(t, 200)
	f.collect(t, c.ID, f.Eve, map[string]any{}).expectProblem(t, 404, "not_found") // not hers
	var d api.ApprovalDelivery
	f.collect(t, c.ID, f.Bob, map[string]any{}).expect(t, 200).decode(t, &d)
	var values map[string]string
	if err := json.Unmarshal(keys.open(t, d), &values); err != nil || values["DB_URL"] != apprDBValue || values["API_KEY"] != apprAPIValue {
		t.Fatalf("delivered %d values: %v", len(values), err)
	}
	f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken}).expectProblem(t, 410, "already_delivered")

	// Idempotency: a retried request cannot show its poll token again; a
	// retried approval appends nothing.
	hdr := map[string]string{"Idempotency-Key": "bob-request-1"}
	body := map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "keys": []string{"API_KEY"}}
	var first api.ApprovalCreated
	f.do(call{method: "POST", path: "/v1/approvals", cred: f.Bob, body: body, header: hdr}).expect(t, 201).decode(t, &first)
	f.do(call{method: "POST", path: "/v1/approvals", cred: f.Bob, body: body, header: hdr}).expectProblem(t, 409, "shown_once")
	hdr = map[string]string{"Idempotency-Key": "ada-approves-1"}
	var a1, a2 api.ApprovalDecided
	f.do(call{method: "POST", path: "/v1/approvals/" + first.ID + "/approve", cred: f.Ada, body: map[string]any{"keys": []string{"API_KEY"}}, header: hdr}).expect(t, 200).decode(t, &a1)
	head = f.head(t)
	f.do(call{method: "POST", path: "/v1/approvals/" + first.ID + "/approve", cred: f.Ada, body: map[string]any{"keys": []string{"API_KEY"}}, header: hdr}).expect(t, 200).decode(t, &a2)
	if !a2.Replayed || a2.Position != a1.Position || f.head(t) != head {
		t.Fatalf("retried approval %+v after %+v", a2, a1)
	}
}

// An organization's list: approvers see the requests of the environments
// where they may approve.
func TestApprovalList(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	ask := func(cred string) api.ApprovalCreated {
		return f.create(t, cred, map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "keys": []string{"DB_URL"}})
	}
	pending, denied := ask(""), ask(f.Eve)
	f.post("/v1/approvals/"+denied.ID+"/deny", f.Ada, map[string]any{"reason": "no"}).expect(t, 200)
	// Another project, where a project-scoped developer approves.
	must(f.App.CreateProject(ctx, f.ada, "acme", "api", "API"))
	must(f.App.CreateEnvironment(ctx, f.ada, app.Env{Org: "acme", Project: "api", Env: "dev"}, app.EnvSpec{Name: "Dev"}))
	must(f.App.GrantRole(ctx, f.ada, "acme", "pat@example.com", domain.RoleDeveloper, "api"))
	pat := f.signIn("pat@example.com")
	other := f.create(t, "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "api", "env": "dev", "keys": []string{"X"}})
	pos := strconv.FormatUint(f.head(t), 10)

	list := func(cred, query string) []string {
		var out struct{ Items []api.ApprovalSummary }
		f.get("/v1/orgs/acme/approvals?min_position="+pos+query, cred).expect(t, 200).decode(t, &out)
		var ids []string
		for _, a := range out.Items {
			ids = append(ids, a.ID)
		}
		slices.Sort(ids)
		return ids
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	if got := list(f.Ada, ""); !slices.Equal(got, sorted(pending.ID, denied.ID, other.ID)) {
		t.Fatalf("ada sees %v", got)
	}
	if got := list(f.Ada, "&status=pending"); !slices.Equal(got, sorted(pending.ID, other.ID)) {
		t.Fatalf("ada's pending %v", got)
	}
	if got := list(f.Ada, "&status=denied"); !slices.Equal(got, []string{denied.ID}) {
		t.Fatalf("ada's denied %v", got)
	}
	if got := list(pat, ""); !slices.Equal(got, []string{other.ID}) {
		t.Fatalf("pat sees %v", got)
	}
	f.get("/v1/orgs/acme/approvals", f.Eve).expectProblem(t, 403, "forbidden")
	f.get("/v1/orgs/acme/approvals", f.Olga).expectProblem(t, 404, "not_found")
	f.get("/v1/orgs/nope/approvals", f.Olga).expectProblem(t, 404, "not_found")
	var globex struct{ Items []api.ApprovalSummary }
	f.get("/v1/orgs/globex/approvals", f.Olga).expect(t, 200).decode(t, &globex)
	if len(globex.Items) != 0 {
		t.Fatalf("globex lists %d requests", len(globex.Items))
	}
}

// With reveal in the environment's policy, values leave only through a
// request approved by two people other than the requester.
func TestApprovalPolicyReveal(t *testing.T) {
	f := newApprFixture(t)
	carol := f.person(t, "carol@example.com", domain.RoleDeveloper)
	f.policy(t, domain.ApprovalPolicy{Reveal: true, Approvers: 2})

	// Direct reveals are refused, on every channel.
	_, err := f.App.RevealSecret(ctx, app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "bob@example.com"}}, f.ref("DB_URL"), 0, "", domain.ChannelCLI)
	if !errors.Is(err, domain.ErrApprovalRequired) {
		t.Fatalf("a direct reveal under the policy: %v", err)
	}
	head := f.head(t)
	f.post("/v1/orgs/acme/projects/web/envs/production/secrets/DB_URL/reveal", f.Bob, map[string]any{}).expectProblem(t, 403, "approval_required")
	f.post("/v1/orgs/acme/projects/web/envs/production/secrets/DB_URL/reveal", f.Eve, map[string]any{}).expectProblem(t, 403, "forbidden")
	if f.head(t) != head {
		t.Fatal("a refused reveal appended events")
	}

	// Bob asks; he may not approve his own; Ada's approval is one of two.
	keys := newApprKeys(t)
	c := f.create(t, f.Bob, map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "keys": []string{"DB_URL"}})
	if c.ApprovalsRequired != 2 {
		t.Fatalf("the request needs %d approvals", c.ApprovalsRequired)
	}
	f.post("/v1/approvals/"+c.ID+"/approve", f.Bob, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 403, "forbidden")
	var dec api.ApprovalDecided
	f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{"keys": []string{"DB_URL"}}).expect(t, 200).decode(t, &dec)
	if dec.Status != "pending" {
		t.Fatalf("after one approval of two: %s", dec.Status)
	}
	f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{"keys": []string{"DB_URL"}}).expectProblem(t, 409, "conflict")
	f.collect(t, c.ID, f.Bob, map[string]any{}).expect(t, 202)
	f.post("/v1/approvals/"+c.ID+"/approve", carol, map[string]any{"keys": []string{"DB_URL"}}).expect(t, 200).decode(t, &dec)
	if dec.Status != "approved" {
		t.Fatalf("after two approvals: %s", dec.Status)
	}
	var d api.ApprovalDelivery
	f.collect(t, c.ID, f.Bob, map[string]any{}).expect(t, 200).decode(t, &d)
	var values map[string]string
	if err := json.Unmarshal(keys.open(t, d), &values); err != nil || values["DB_URL"] != apprDBValue {
		t.Fatalf("delivered %d values: %v", len(values), err)
	}

	// An anonymous request learns the policy only from its approvers, who
	// cannot approve it: an anonymous requester could be one of them.
	a := f.create(t, "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production", "keys": []string{"API_KEY"}})
	if a.ApprovalsRequired != 1 {
		t.Fatalf("an anonymous request was told %d approvals", a.ApprovalsRequired)
	}
	var ctxt api.ApprovalContext
	f.get("/v1/approvals/"+a.ID, f.Ada).expect(t, 200).decode(t, &ctxt)
	if ctxt.ApprovalsRequired != 2 {
		t.Fatalf("the approver is told %d approvals", ctxt.ApprovalsRequired)
	}
	before := f.head(t)
	refused := f.post("/v1/approvals/"+a.ID+"/approve", f.Ada, map[string]any{"keys": []string{"API_KEY"}})
	refused.expectProblem(t, 403, "forbidden")
	if !strings.Contains(string(refused.body), "signed-in requesters") || f.head(t) != before {
		t.Fatalf("approving an anonymous request under the policy: %s", refused.body)
	}
	f.collect(t, a.ID, "", map[string]any{"poll_token": a.PollToken}).expect(t, 202)

	// Stele's own jobs are not bound by the policy: a rotation reseals.
	must(f.App.RotateKeyset(ctx, f.ada, f.prod, "scheduled"))
	if _, err := f.App.Reseal(ctx, f.prod); err != nil {
		t.Fatalf("resealing under the policy: %v", err)
	}
	f.noPlaintext(t, apprDBValue, apprAPIValue)
}

// With change in the environment's policy, values change only through an
// approved change request, made as the requester once approved.
func TestApprovalPolicyChange(t *testing.T) {
	f := newApprFixture(t)
	f.policy(t, domain.ApprovalPolicy{Change: true})
	bob := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "bob@example.com"}}

	// Direct changes are refused.
	head := f.head(t)
	for name, err := range map[string]error{
		"set":      second(f.App.SetSecret(ctx, bob, f.ref("DB_URL"), app.SetSecret{Value: []byte(apprNewValue)})),
		"delete":   second(f.App.DeleteSecret(ctx, bob, f.ref("DB_URL"))),
		"rollback": second(f.App.RollbackSecret(ctx, f.ada, f.ref("DB_URL"), 1)),
		"destroy":  second(f.App.DestroySecretVersion(ctx, f.ada, f.ref("DB_URL"), 1)),
	} {
		if !errors.Is(err, domain.ErrApprovalRequired) {
			t.Errorf("a direct %s under the policy: %v", name, err)
		}
	}
	f.put("/v1/orgs/acme/projects/web/envs/production/secrets/DB_URL", f.Bob, map[string]any{"value": apprNewValue}).expectProblem(t, 403, "approval_required")
	if f.head(t) != head {
		t.Fatal("refused changes appended events")
	}
	// Metadata is not a value: it still changes directly.
	if _, err := f.App.UpdateSecretMetadata(ctx, bob, f.ref("DB_URL"), domain.SecretMetadata{Description: "the database"}); err != nil {
		t.Fatalf("metadata under the policy: %v", err)
	}

	// Bob asks to change DB_URL (at version 1) and to create NEW_KEY.
	var c api.ApprovalCreated
	f.post("/v1/approvals", f.Bob, map[string]any{"kind": "change", "org": "acme", "project": "web", "env": "production", "changes": []map[string]any{
		{"name": "DB_URL", "op": "set", "base_version": 1, "value": apprNewValue},
		{"name": "NEW_KEY", "op": "set", "base_version": 0, "value_base64": base64.StdEncoding.EncodeToString([]byte(apprAPIValue + "-new"))},
	}}).expect(t, 201).decode(t, &c)
	var ctxt api.ApprovalContext
	f.get("/v1/approvals/"+c.ID, f.Ada).expect(t, 200).decode(t, &ctxt)
	if ctxt.Kind != "change" || len(ctxt.Changes) != 2 || ctxt.Changes[0] != (api.ApprovalChange{Name: "DB_URL", Op: "set", BaseVersion: 1}) ||
		ctxt.Requester != "user:bob@example.com" {
		t.Fatalf("context %+v", ctxt)
	}
	// A viewer may not ask for a change; nor may a change request be
	// approved by its requester.
	f.post("/v1/approvals", f.Eve, map[string]any{"kind": "change", "org": "acme", "project": "web", "env": "production", "changes": []map[string]any{
		{"name": "DB_URL", "op": "delete", "base_version": 1}}}).expectProblem(t, 403, "forbidden")
	f.post("/v1/approvals/"+c.ID+"/approve", f.Bob, map[string]any{}).expectProblem(t, 403, "forbidden")

	// A second request based on the same version.
	var c2 api.ApprovalCreated
	f.post("/v1/approvals", f.Bob, map[string]any{"kind": "change", "org": "acme", "project": "web", "env": "production", "changes": []map[string]any{
		{"name": "DB_URL", "op": "set", "base_version": 1, "value": "stale-" + apprNewValue}}}).expect(t, 201).decode(t, &c2)

	// Ada approves the first: the changes are made as Bob.
	var dec api.ApprovalDecided
	r := f.post("/v1/approvals/"+c.ID+"/approve", f.Ada, map[string]any{}).expect(t, 200)
	r.decode(t, &dec)
	if dec.Status != "delivered" || !slices.Equal(dec.Applied, []domain.DeliveredKey{{Name: "DB_URL", Version: 2}, {Name: "NEW_KEY", Version: 1}}) {
		t.Fatalf("approved change %+v", dec)
	}
	for _, rec := range f.records(t) {
		if (rec.StreamID == f.ref("DB_URL").Stream() && rec.Type == "secret.updated") || (rec.StreamID == f.ref("NEW_KEY").Stream() && rec.Type == "secret.created") {
			if rec.Metadata.Actor != "user:bob@example.com" || rec.Metadata.CausationID != "approval:"+c.ID {
				t.Fatalf("%s made with metadata %+v", rec.Type, rec.Metadata)
			}
		}
	}
	got := must(f.App.RevealSecret(ctx, bob, f.ref("DB_URL"), 0, "check", domain.ChannelAPI))
	if string(got.Value) != apprNewValue || got.Version != 2 {
		t.Fatalf("DB_URL is at version %d after the change", got.Version)
	}
	// The requester's client learns the outcome by collecting.
	var d api.ApprovalDelivery
	f.collect(t, c.ID, f.Bob, map[string]any{"wait_seconds": 1}).expect(t, 200).decode(t, &d)
	if d.Kind != "change" || d.SealedBox != "" || len(d.Keys) != 2 {
		t.Fatalf("collected change %+v", d)
	}

	// The second was based on version 1: DB_URL moved on, so approving it
	// is refused and records nothing.
	head = f.head(t)
	f.post("/v1/approvals/"+c2.ID+"/approve", f.Ada, map[string]any{}).expectProblem(t, 412, "version_mismatch")
	if f.head(t) != head {
		t.Fatal("an approval of a stale change appended events")
	}
	got = must(f.App.RevealSecret(ctx, bob, f.ref("DB_URL"), 0, "check", domain.ChannelAPI))
	if string(got.Value) != apprNewValue {
		t.Fatal("the stale change was made")
	}

	// Deleting and restoring go through requests too.
	var del api.ApprovalCreated
	f.post("/v1/approvals", f.Bob, map[string]any{"kind": "change", "org": "acme", "project": "web", "env": "production", "changes": []map[string]any{
		{"name": "NEW_KEY", "op": "delete", "base_version": 1}}}).expect(t, 201).decode(t, &del)
	f.post("/v1/approvals/"+del.ID+"/approve", f.Ada, map[string]any{}).expect(t, 200).decode(t, &dec)
	if info := must(f.App.Secret(ctx, bob.Actor, f.ref("NEW_KEY"))); !info.Deleted {
		t.Fatal("the approved delete was not made")
	}
	f.noPlaintext(t, apprNewValue, apprAPIValue+"-new", "stale-"+apprNewValue)
}

func second[T any](_ T, err error) error { return err }

// Two clients collecting one sign-in at once: one gets the session, the
// other already_delivered, and no session is left that nobody received.
func TestApprovalLoginCollectedOnce(t *testing.T) {
	f := newApprFixture(t)
	keys := newApprKeys(t)
	c := f.create(t, "", map[string]any{"kind": "login", "public_key": keys.public()})
	f.post("/v1/approvals/"+c.ID+"/approve", f.Bob, map[string]any{}).expect(t, 200)
	const n = 4
	results := make(chan response, n)
	for range n {
		go func() { results <- f.collect(t, c.ID, "", map[string]any{"poll_token": c.PollToken}) }()
	}
	delivered := 0
	for range n {
		r := <-results
		switch r.status {
		case 200:
			delivered++
		default:
			r.expectProblem(t, 410, "already_delivered")
		}
	}
	if delivered != 1 {
		t.Fatalf("%d deliveries of one sign-in", delivered)
	}
	started, ended := map[string]bool{}, map[string]bool{}
	for _, rec := range f.records(t) {
		switch {
		case rec.Type == "session.started" && strings.Contains(string(rec.Data), c.ID):
			started[rec.StreamID] = true
		case rec.Type == "session.ended":
			ended[rec.StreamID] = true
		}
	}
	live := 0
	for s := range started {
		if !ended[s] {
			live++
		}
	}
	if live != 1 {
		t.Fatalf("%d sessions started for the sign-in, %d of them left open", len(started), live)
	}
}
