package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// devCredential signs a person in with the development sign-in and
// returns the session's credential, which STELE_TOKEN takes.
func (cs *cliServer) devCredential(t *testing.T, email string) string {
	t.Helper()
	resp, err := http.Post(cs.url+"/v1/auth/dev", "application/json", strings.NewReader(`{"email":"`+email+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if strings.HasSuffix(c.Name, "stele_session") {
			return c.Value
		}
	}
	t.Fatalf("dev sign-in of %s: %d, no session cookie", email, resp.StatusCode)
	return ""
}

// quiet returns the log's head once the read models have applied it and
// nothing was appended meanwhile, and fn's outcome, read at that head.
func (cs *cliServer) quiet(t *testing.T, fn func(head uint64)) uint64 {
	t.Helper()
	for range 50 {
		h := must(cs.Store.Head(context.Background())).Position
		fn(h)
		if must(cs.Store.Head(context.Background())).Position == h {
			return h
		}
	}
	t.Fatal("the log never stood still")
	return 0
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

// The auditor's history commands with the real binary against a real
// server: replay at a position equals what the server served then; who
// could read and who read a production secret; the reports as tables,
// CSV and JSON; bad input is one line and exit 2.
func TestCLIAuditHistory(t *testing.T) {
	cs := newCLIServer(t)
	secretsPath := "/v1/orgs/acme/projects/web/envs/production/secrets"
	if code, out := apiCall(t, cs.Server, "PUT", secretsPath+"/DB_URL", map[string]any{"value": "prod-plaintext-1", "owner": "team-db",
		"rotation_seconds": 3600}); code >= 300 {
		t.Fatalf("set: %d %s", code, out)
	}
	// What the server serves at p1, read with min_position while the log
	// stands there.
	type meta struct {
		Name      string    `json:"name"`
		Version   int64     `json:"version"`
		KeyID     int64     `json:"key_id"`
		Owner     string    `json:"owner"`
		UpdatedAt time.Time `json:"updated_at"`
		UpdatedBy string    `json:"updated_by"`
	}
	var served struct {
		Items []meta `json:"items"`
	}
	var members struct {
		Items []struct{ User, Role string } `json:"items"`
	}
	p1 := cs.quiet(t, func(h uint64) {
		q := fmt.Sprintf("?include_deleted=true&min_position=%d", h)
		_, out := apiCall(t, cs.Server, "GET", secretsPath+q, nil)
		if err := json.Unmarshal(out, &served); err != nil || len(served.Items) != 1 {
			t.Fatalf("secrets at %d: %s", h, out)
		}
		_, out = apiCall(t, cs.Server, "GET", fmt.Sprintf("/v1/orgs/acme/members?min_position=%d", h), nil)
		json.Unmarshal(out, &members)
	})

	// Later: a new version, a member, reads by a person and by a token.
	cs.set(t, "production", "DB_URL", "prod-plaintext-2")
	if r := cs.run(t, nil, "members", "grant", "bob@example.com", "--role", "developer"); r.code != 0 {
		t.Fatalf("grant: %+v", r)
	}
	ada := []string{"STELE_TOKEN=" + cs.devCredential(t, "ada@example.com")}
	if r := cs.run(t, ada, "secrets", "get", "DB_URL", "--env", "production", "--reason", "incident 7"); r.code != 0 || r.stdout != "prod-plaintext-2" {
		t.Fatalf("ada's read: %+v", r)
	}
	if r := cs.run(t, nil, "secrets", "get", "DB_URL", "--env", "production", "--reason", "deploy"); r.code != 0 {
		t.Fatalf("the token's read: %+v", r)
	}
	values := []string{"prod-plaintext-1", "prod-plaintext-2"}

	// Replay at p1, as JSON: the secrets and members served then.
	r := cs.run(t, nil, "audit", "replay", "--as-of", fmt.Sprint(p1), "--json")
	var rep struct {
		Position uint64 `json:"position"`
		Secrets  []struct {
			Project string `json:"project"`
			Env     string `json:"env"`
			meta
		} `json:"secrets"`
		Members []struct{ User, Role string } `json:"members"`
		Keysets []struct {
			Env  string `json:"env"`
			Keys []any  `json:"keys"`
		} `json:"keysets"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || rep.Position != p1 {
		t.Fatalf("replay --json: %+v", r)
	}
	var prod []meta
	for _, x := range rep.Secrets {
		if x.Env == "production" {
			prod = append(prod, x.meta)
		}
	}
	if fmt.Sprintf("%+v", prod) != fmt.Sprintf("%+v", served.Items) || fmt.Sprint(rep.Members) != fmt.Sprint(members.Items) {
		t.Fatalf("replay at %d:\n %+v %v\nthe server served then:\n %+v %v", p1, prod, rep.Members, served.Items, members.Items)
	}
	if len(rep.Keysets) != 2 || len(rep.Keysets[0].Keys) != 1 {
		t.Fatalf("replay's keysets: %+v", rep.Keysets)
	}
	noValue(t, r, values...)
	for _, v := range values {
		if strings.Contains(r.stdout, v) {
			t.Fatalf("a value in the replay: %s", r.stdout)
		}
	}
	// As tables.
	r = cs.run(t, nil, "audit", "replay", "--as-of", fmt.Sprint(p1))
	for _, want := range []string{"Organization acme", fmt.Sprintf("position %d", p1), "SECRETS (1)", "web/production  DB_URL", "ROLES", "ada@example.com", "TOKENS", "bootstrap", "KEYS (2)", "primary"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("replay lacks %q: %+v", want, r)
		}
	}
	if strings.Contains(r.stdout, "bob@example.com") {
		t.Fatalf("a later grant in the replay: %s", r.stdout)
	}
	r = cs.run(t, nil, "audit", "replay", "--as-of", "2001-01-01")
	if r.code != 0 || !strings.Contains(r.stdout, "did not exist yet") {
		t.Fatalf("replay before the log: %+v", r)
	}

	// Who could read it at p1; who read it.
	r = cs.run(t, nil, "audit", "who-could-read", "DB_URL", "--env", "production", "--at", fmt.Sprint(p1))
	if r.code != 0 || !strings.Contains(r.stdout, "user:ada@example.com") || !strings.Contains(r.stdout, "token:") || strings.Contains(r.stdout, "bob") {
		t.Fatalf("who-could-read: %+v", r)
	}
	r = cs.run(t, nil, "audit", "who-could-read", "DB_URL", "--env", "production", "--at", time.Now().Format(time.RFC3339Nano), "--format", "csv")
	if recs := must(csv.NewReader(strings.NewReader(r.stdout)).ReadAll()); r.code != 0 || strings.Join(recs[0], ",") != "actor,role,via" || len(recs) != 4 {
		t.Fatalf("who-could-read now as CSV (ada, bob, the token): %+v", r)
	}
	r = cs.run(t, nil, "audit", "who-read", "DB_URL", "--env", "production", "--from", "1h")
	if r.code != 0 || !strings.Contains(r.stdout, "user:ada@example.com") || !strings.Contains(r.stdout, "incident 7") || !strings.Contains(r.stdout, "deploy") {
		t.Fatalf("who-read: %+v", r)
	}
	var reads struct {
		Items []struct{ Actor, Reason string } `json:"items"`
	}
	if r = cs.run(t, nil, "audit", "who-read", "DB_URL", "--env", "production", "--json"); json.Unmarshal([]byte(r.stdout), &reads) != nil || len(reads.Items) != 2 {
		t.Fatalf("who-read --json: %+v", r)
	}

	// Reports: production reads by people only.
	r = cs.run(t, nil, "audit", "report", "production-reads", "--from", "1h")
	if r.code != 0 || !strings.Contains(r.stdout, "user:ada@example.com") || !strings.Contains(r.stdout, "incident 7") || strings.Contains(r.stdout, "token:") ||
		!strings.Contains(r.stdout, "1 row") {
		t.Fatalf("report production-reads: %+v", r)
	}
	r = cs.run(t, nil, "audit", "report", "production-reads", "--format", "csv")
	recs := must(csv.NewReader(strings.NewReader(r.stdout)).ReadAll())
	if r.code != 0 || strings.Join(recs[0][:2], ",") != "recorded_at,actor" || len(recs) != 2 || recs[1][1] != "user:ada@example.com" {
		t.Fatalf("report production-reads as CSV: %+v", r)
	}
	var tokens struct {
		Items []struct {
			Name           string   `json:"name"`
			ProductionEnvs []string `json:"production_envs"`
		} `json:"items"`
	}
	if r = cs.run(t, nil, "audit", "report", "production-tokens", "--json"); json.Unmarshal([]byte(r.stdout), &tokens) != nil || len(tokens.Items) != 1 ||
		fmt.Sprint(tokens.Items[0].ProductionEnvs) != "[web/production]" {
		t.Fatalf("report production-tokens: %+v", r)
	}
	for _, name := range []string{"stale-secrets", "old-keys", "approvals"} {
		if r := cs.run(t, nil, "audit", "report", name); r.code != 0 || !strings.Contains(r.stdout, "Report "+name+" of acme") {
			t.Fatalf("report %s: %+v", name, r)
		}
	}
	for _, c := range []string{"replay", "who-could-read", "who-read", "report"} {
		if r := cs.run(t, nil, "audit", c, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Examples:") {
			t.Fatalf("audit %s --help: %+v", c, r)
		}
	}

	// Bad input: one line, exit 2, before any request.
	oneLineError(t, cs.run(t, nil, "audit", "replay"), 2, "--as-of is required")
	oneLineError(t, cs.run(t, nil, "audit", "replay", "--as-of", "last tuesday"), 2, "--as-of")
	oneLineError(t, cs.run(t, nil, "audit", "who-could-read", "DB_URL", "--env", "production"), 2, "--at is required")
	oneLineError(t, cs.run(t, nil, "audit", "who-could-read", "db-url", "--at", "1"), 2, "not a secret name")
	oneLineError(t, cs.run(t, nil, "audit", "who-read", "DB_URL", "--from", "2026-02-01", "--to", "2026-01-01"), 2, "--from must be before --to")
	oneLineError(t, cs.run(t, nil, "audit", "who-read", "DB_URL", "--format", "xml"), 2, "--format")
	oneLineError(t, cs.run(t, nil, "audit", "report", "secrets-nobody-rotated"), 2, "no report")
	oneLineError(t, cs.run(t, nil, "audit", "report", "old-keys", "--from", "1h"), 2, "covers no period")
	oneLineError(t, cs.run(t, nil, "audit", "report", "approvals", "--days", "3"), 2, "--days")
	oneLineError(t, cs.run(t, nil, "audit", "report"), 2, "arg")
	// Refusals and failures of the server: exit 4 and 1.
	bob := []string{"STELE_TOKEN=" + cs.devCredential(t, "bob@example.com")}
	oneLineError(t, cs.run(t, bob, "audit", "report", "approvals"), exitAuth, "forbidden")
	oneLineError(t, cs.run(t, nil, "audit", "who-read", "NOPE", "--env", "production"), 1, "not_found")
	oneLineError(t, cs.run(t, nil, "audit", "who-could-read", "DB_URL", "--env", "production", "--at", time.Now().Add(time.Hour).Format(time.RFC3339)), 1, "not_yet")
}
