package api_test

import (
	"context"
	"errors"
	"flag"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/postgres"
)

var update = flag.Bool("update", false, "rewrite docs/openapi.yaml from api/openapi/*.yaml")

// docs/openapi.yaml is the merged description, kept in step with its parts.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := contract.load()
	if err != nil {
		t.Fatalf("the description does not load or validate: %v", err)
	}
	merged, err := api.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	const path = "../docs/openapi.yaml"
	if *update {
		if err := os.WriteFile(path, merged, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(merged) {
		t.Fatalf("docs/openapi.yaml is stale: run go test ./api -run TestOpenAPIDocument -update")
	}
	seen := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			switch {
			case op.OperationID == "":
				t.Errorf("%s %s has no operationId", method, path)
			case seen[op.OperationID]:
				t.Errorf("operationId %s is used twice", op.OperationID)
			}
			seen[op.OperationID] = true
			if op.Responses.Default() == nil {
				t.Errorf("%s (%s %s) documents no default (problem) response", op.OperationID, method, path)
			}
			if op.Summary == "" {
				t.Errorf("%s has no summary", op.OperationID)
			}
		}
	}
}

// readiness answers /readyz from the store.
type readiness struct{ store *postgres.Store }

func (r readiness) Ready(ctx context.Context) (api.LedgerStatus, error) {
	h, err := r.store.Head(ctx)
	if err != nil {
		return api.LedgerStatus{}, err
	}
	st := api.LedgerStatus{Head: h.Position, HeadHash: h.Hash.String()}
	if cp, err := r.store.LatestCheckpoint(ctx); err == nil {
		st.LastCheckpoint = cp.Size
	} else if !errors.Is(err, eventstore.ErrNotFound) {
		return st, err
	}
	return st, nil
}

func TestServiceEndpoints(t *testing.T) {
	h := newHarness(t)
	h.get("/healthz", "").expect(t, 200)
	h.get("/readyz", "").expectProblem(t, 503, "not_ready") // no readiness check configured

	h2 := newHarness(t, func(c *api.Config) { c.Ready = readiness{c.Ledger.(*postgres.Store)} })
	var ready struct {
		Status string `json:"status"`
		Ledger struct {
			Head uint64 `json:"head"`
		} `json:"ledger"`
	}
	h2.get("/readyz", "").expect(t, 200).decode(t, &ready)
	if ready.Status != "ready" || ready.Ledger.Head == 0 {
		t.Fatalf("readiness %+v", ready)
	}
	spec := h.get("/v1/openapi.yaml", "").expect(t, 200)
	if !strings.HasPrefix(spec.header.Get("Content-Type"), "application/yaml") || !strings.Contains(string(spec.body), "openapi: 3.1.0") {
		t.Fatalf("description served as %s: %.100s", spec.header.Get("Content-Type"), spec.body)
	}
	h.get("/v1/me", h.Owner).expect(t, 200)
	h.do(call{method: "GET", path: "/v1/nowhere", cred: h.Owner, invalid: true}).expectProblem(t, 404, "not_found")
	metrics := string(h.get("/metrics", "").expect(t, 200).body)
	for _, want := range []string{
		`stele_http_requests_total{code="200",method="GET",route="/v1/me"} 1`,
		`stele_http_request_duration_seconds_bucket{method="GET",route="/v1/me"`,
		"stele_ledger_head_position ",
		`stele_projection_lag_events{projection="secrets"}`,
		`stele_projection_halted{projection="audit"} 0`,
		"stele_read_models_up 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestHeadersAndRequestIDs(t *testing.T) {
	h := newHarness(t)
	r := h.do(call{method: "GET", path: "/v1/me", cred: h.Owner, header: map[string]string{"X-Request-Id": "deploy-42.a"}}).expect(t, 200)
	if got := r.header.Get("X-Request-Id"); got != "deploy-42.a" {
		t.Fatalf("request id echoed as %q", got)
	}
	r = h.do(call{method: "GET", path: "/v1/me", cred: h.Owner, header: map[string]string{"X-Request-Id": "<script>"}}).expect(t, 200)
	if got := r.header.Get("X-Request-Id"); len(got) != 24 {
		t.Fatalf("an unsafe request id was replaced by %q", got)
	}
	for k, want := range map[string]string{
		"X-Content-Type-Options":    "nosniff",
		"X-Frame-Options":           "DENY",
		"Strict-Transport-Security": "max-age=63072000; includeSubDomains",
		"Cache-Control":             "no-store",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	// A problem carries the request id too.
	p := h.do(call{method: "GET", path: "/v1/nowhere", header: map[string]string{"X-Request-Id": "abc"}, invalid: true})
	var doc api.Problem
	p.decode(t, &doc)
	if doc.RequestID != "abc" || doc.Type != "https://stele.dev/problems/not_found" || doc.Title == "" {
		t.Fatalf("problem %+v", doc)
	}
}

func TestAuthentication(t *testing.T) {
	h := newHarness(t)
	r := h.get("/v1/me", "")
	r.expectProblem(t, 401, "unauthenticated")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
	for _, bad := range []map[string]string{
		{"Authorization": "Basic YWRhOnB3"},
		{"Authorization": "Bearer"},
		{"Authorization": "Bearer stele_tok_acme.0011223344556677.nope"},
		{"Authorization": "Bearer " + h.Owner + "x"},
		{"Authorization": "Bearer " + strings.Replace(h.Owner, "acme.", "globex.", 1)},
	} {
		h.do(call{method: "GET", path: "/v1/me", header: bad, invalid: true}).expectProblem(t, 401, "unauthenticated")
	}
	var me api.Me
	h.get("/v1/me", h.Owner).expect(t, 200).decode(t, &me)
	if me.Kind != "token" || me.Org != "acme" || me.Token == nil || me.Token.Name != "bootstrap" || len(me.Roles) != 1 || me.Roles[0].Role != "owner" {
		t.Fatalf("the owner token: %+v", me)
	}
	pos := must(h.App.Head(ctx))
	h.get("/v1/me?min_position="+strconv.FormatUint(pos, 10), h.Bob).expect(t, 200).decode(t, &me)
	if me.Actor != "user:bob@example.com" || me.Method != "dev" || len(me.Roles) != 1 || me.Roles[0].Org != "acme" || me.Roles[0].Role != "developer" {
		t.Fatalf("bob: %+v", me)
	}
	h.get("/v1/me?min_position="+strconv.FormatUint(pos, 10), h.Olga).expect(t, 200).decode(t, &me)
	if len(me.Roles) != 1 || me.Roles[0].Org != "globex" || me.Roles[0].Role != "owner" {
		t.Fatalf("olga: %+v", me)
	}
	// The log shows who was refused, never the credential.
	if strings.Contains(h.Logs.String(), h.Owner[len("stele_tok_acme."):]) {
		t.Fatal("a credential reached the log")
	}
}

func TestReadYourWritesBound(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.ReadWait = 200 * time.Millisecond })
	head := must(h.App.Head(ctx))
	start := time.Now()
	r := h.get("/v1/me?min_position="+strconv.FormatUint(head+1000, 10), h.Bob)
	r.expectProblem(t, 503, "not_yet")
	if r.header.Get("Retry-After") == "" || time.Since(start) > 5*time.Second {
		t.Fatalf("not yet: Retry-After %q after %s", r.header.Get("Retry-After"), time.Since(start))
	}
	h.do(call{method: "GET", path: "/v1/me?min_position=soon", cred: h.Bob, invalid: true}).expectProblem(t, 400, "invalid_request")
}

func TestRateLimitsPerCredential(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.RatePerSecond, c.RateBurst = 0.5, 3 })
	for i := range 3 {
		h.get("/v1/me", h.Bob).expect(t, 200)
		_ = i
	}
	r := h.get("/v1/me", h.Bob)
	r.expectProblem(t, 429, "rate_limited")
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 2 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	h.get("/v1/me", h.Eve).expect(t, 200) // another credential has its own budget
}

func TestBodyLimitAndCSRF(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.MaxBodyBytes = 64 })
	big := strings.Repeat("x", 65)
	h.do(call{method: "POST", path: "/v1/me", cred: h.Bob, body: big, contentType: "text/plain", invalid: true}).expectProblem(t, 413, "payload_too_large")

	// A browser session (the cookie) must send the CSRF token on writes.
	cookie := map[string]string{"Cookie": "__Host-stele_session=" + h.Bob + "; __Host-stele_csrf=0123456789abcdef0123"}
	get := h.do(call{method: "GET", path: "/v1/me", header: cookie}).expect(t, 200)
	_ = get
	h.do(call{method: "POST", path: "/v1/me", header: cookie, invalid: true}).expectProblem(t, 403, "csrf_failed")
	withToken := map[string]string{"Cookie": cookie["Cookie"], "X-CSRF-Token": "0123456789abcdef0123"}
	h.do(call{method: "POST", path: "/v1/me", header: withToken, invalid: true}).expectProblem(t, 405, "method_not_allowed")
	withToken["Origin"] = "https://evil.example"
	h.do(call{method: "POST", path: "/v1/me", header: withToken, invalid: true}).expectProblem(t, 403, "csrf_failed")
	// A stale cookie leaves the caller anonymous.
	h.do(call{method: "GET", path: "/v1/me", header: map[string]string{"Cookie": "__Host-stele_session=stele_ses_00.x"}}).expectProblem(t, 401, "unauthenticated")
	_ = http.MethodGet
}
