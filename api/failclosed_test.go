package api_test

import (
	"strings"
	"testing"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// Fail closed: a value leaves the server only after its secret.viewed
// event is durable. Here the database itself refuses to take events (a
// trigger that raises on every insert into the ledger, the way a
// read-only replica or a full disk would refuse): the reveal answers 503
// with no value, and so do bulk reveals, exports and the collection of
// an approved request (which stays collectable), nothing is appended, and reads of metadata, which come
// from the read models, keep working.
func TestRevealFailsClosed(t *testing.T) {
	h := newHarness(t)
	owner := ownerRequest(t, h)
	must(h.App.CreateProject(ctx, owner, "acme", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, owner, app.Env{Org: "acme", Project: "web", Env: "production"}, app.EnvSpec{Production: true}))
	const value = "postgres://app:correct-horse-battery@db/prod"
	ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB_URL"}
	must(h.App.SetSecret(ctx, owner, ref, app.SetSecret{Value: []byte(value)}))
	path := "/v1/orgs/acme/projects/web/envs/production/secrets/DB_URL"

	r := h.post(path+"/reveal", h.Bob, map[string]any{"reason": "before"}).expect(t, 200)
	if !strings.Contains(string(r.body), value) {
		t.Fatalf("the reveal before the failure: %s", r.body)
	}
	const other = "sk_live_other-value-for-bulk"
	must(h.App.SetSecret(ctx, owner, domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "API_KEY"}, app.SetSecret{Value: []byte(other)}))
	// An approved request waiting to be collected when the failure starts.
	keys := newApprKeys(t)
	var c api.ApprovalCreated
	h.post("/v1/approvals", "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web",
		"env": "production", "keys": []string{"DB_URL"}}).expect(t, 201).decode(t, &c)
	h.post("/v1/approvals/"+c.ID+"/approve", h.Bob, map[string]any{"keys": []string{"DB_URL"}}).expect(t, 200)

	if _, err := h.Pool.Exec(ctx, `CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'the ledger refuses writes (test)'; END $$`); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Pool.Exec(ctx, `CREATE TRIGGER refuse_writes BEFORE INSERT ON ledger_events FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes()`); err != nil {
		t.Fatal(err)
	}
	head := must(h.App.Head(ctx))

	r = h.post(path+"/reveal", h.Bob, map[string]any{"reason": "during"})
	r.expectProblem(t, 503, "ledger_unavailable")
	if strings.Contains(string(r.body), value) || strings.Contains(string(r.body), "correct-horse") || r.header.Get("X-Stele-Position") != "" {
		t.Fatalf("the refused reveal answered %s", r.body)
	}
	h.put(path, h.Bob, map[string]any{"value": "new value"}).expectProblem(t, 503, "ledger_unavailable")
	// Many values at once (their reads run concurrently): none of them.
	env := "/v1/orgs/acme/projects/web/envs/production"
	for _, r := range []response{
		h.post(env+"/reveal", h.Bob, map[string]any{"names": []string{"DB_URL", "API_KEY"}}),
		h.post(env+"/export", h.Bob, map[string]any{"format": "dotenv"}),
		h.post(env+"/export", h.Bob, map[string]any{"format": "json", "channel": "cli-run"}),
		h.post("/v1/approvals/"+c.ID+"/collect", "", map[string]any{"poll_token": c.PollToken}),
	} {
		r.expectProblem(t, 503, "ledger_unavailable")
		for _, v := range []string{value, other, "correct-horse", "sk_live"} {
			if strings.Contains(string(r.body), v) || strings.Contains(string(r.body), "sealed_box") {
				t.Fatalf("a refused read answered %s", r.body)
			}
		}
	}
	if got := must(h.App.Head(ctx)); got != head {
		t.Fatalf("the log moved from %d to %d while refusing writes", head, got)
	}
	// Metadata still reads from the projections.
	h.get("/v1/orgs/acme/projects/web/envs/production/secrets", h.Bob).expect(t, 200)

	// Once the database takes writes again, so does Stele.
	if _, err := h.Pool.Exec(ctx, `DROP TRIGGER refuse_writes ON ledger_events`); err != nil {
		t.Fatal(err)
	}
	h.post(path+"/reveal", h.Bob, map[string]any{"reason": "after"}).expect(t, 200)
	// The approved request was not used up by the refused collection.
	var d api.ApprovalDelivery
	h.post("/v1/approvals/"+c.ID+"/collect", "", map[string]any{"poll_token": c.PollToken}).expect(t, 200).decode(t, &d)
	if !strings.Contains(string(keys.open(t, d)), value) {
		t.Fatal("the delivery after the failure lacks the value")
	}
	for _, line := range strings.Split(h.Logs.String(), "\n") {
		if strings.Contains(line, "correct-horse") {
			t.Fatalf("a value reached the log: %s", line)
		}
	}
}

// ownerRequest is an app request acting as acme's bootstrap token.
func ownerRequest(t *testing.T, h *harness) app.Request {
	t.Helper()
	id, err := h.App.Authenticate(ctx, h.Owner)
	if err != nil {
		t.Fatal(err)
	}
	return app.Request{Actor: id.Actor, RequestID: "test-setup"}
}
