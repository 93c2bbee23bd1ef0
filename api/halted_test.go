package api_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/projections"
)

// A halted read model is never served. Someone with database access
// changes an event the projector has not read yet; the projector halts
// every projection at it. From then on every read that depends on a
// halted read model answers 503 projection_halted (with Retry-After and
// the read model's name), with min_position or without, at once rather
// than after the read wait; /readyz says the server is degraded; the
// metric says halted. Once the log is restored and the read models
// rebuilt, reads come back.
func TestReadsFailClosedOnAHaltedProjection(t *testing.T) {
	h := newHarness(t, func(c *api.Config) {
		c.Ready = readiness{c.Ledger.(*postgres.Store)}
		c.ReadWait = 3 * time.Second
	})
	owner := ownerRequest(t, h)
	must(h.App.CreateProject(ctx, owner, "acme", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, owner, app.Env{Org: "acme", Project: "web", Env: "dev"}, app.EnvSpec{}))
	first := h.put(secDev+"/secrets/DB_URL", h.Bob, map[string]any{"value": "postgres://one"}).expect(t, 201).position(t)
	h.get(secDev+"/secrets?min_position="+first, h.Bob).expect(t, 200)

	// The projector is down while the log grows; meanwhile someone changes
	// the new event in the database.
	h.StopProjector()
	tampered := h.put(secDev+"/secrets/API_KEY", h.Bob, map[string]any{"value": "k-1"}).expect(t, 201).position(t)
	var actor string
	if err := h.Pool.QueryRow(ctx, `SELECT actor FROM ledger_events WHERE position = $1`, tampered).Scan(&actor); err != nil {
		t.Fatal(err)
	}
	setActor := func(a string) {
		t.Helper()
		for _, q := range []string{
			`ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only`,
			fmt.Sprintf(`UPDATE ledger_events SET actor = '%s' WHERE position = %s`, a, tampered),
			`ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only`,
		} {
			if _, err := h.Pool.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	setActor("user:mallory")
	h.StartProjector()
	waitHalted(t, h, len(projections.All()))

	type read struct {
		path   string
		models []string // the read models it depends on
	}
	reads := []read{
		{path: secDev + "/secrets", models: []string{"secrets", "directory"}},
		{path: secDev + "/secrets/DB_URL", models: []string{"secrets"}},
		{path: "/v1/orgs/acme/audit", models: []string{"audit", "access"}},
		{path: "/v1/orgs/acme/members", models: []string{"access_control"}},
		{path: "/v1/orgs/acme/projects", models: []string{"directory"}},
		{path: "/v1/orgs/acme/access?position=" + first, models: []string{"access_control"}},
		{path: "/v1/orgs/acme/projects/web/envs/dev/history?position=" + first, models: []string{"secrets", "directory"}},
	}
	for _, rd := range reads {
		sep := "?"
		if strings.Contains(rd.path, "?") {
			sep = "&"
		}
		for _, path := range []string{rd.path, rd.path + sep + "min_position=" + first, rd.path + sep + "min_position=" + tampered} {
			cred := h.Bob
			if strings.Contains(path, "/audit") || strings.Contains(path, "/access?") || strings.Contains(path, "/history?") {
				cred = h.Ada // auditors' reads need an admin
			}
			start := time.Now()
			r := h.get(path, cred)
			took := time.Since(start)
			r.expectProblem(t, 503, "projection_halted")
			if got := r.header.Get("X-Stele-Projection-Halted"); !slices.Contains(rd.models, got) {
				t.Errorf("%s: X-Stele-Projection-Halted %q, want one of %v", path, got, rd.models)
			}
			if r.header.Get("Retry-After") == "" {
				t.Errorf("%s: no Retry-After", path)
			}
			if took > time.Second {
				t.Errorf("%s took %v: a halted read model must be refused at once, not waited for", path, took)
			}
			if strings.Contains(string(r.body), "mallory") || strings.Contains(string(r.body), "previous hash") {
				t.Errorf("%s: the problem tells the client the integrity failure's details: %s", path, r.body)
			}
		}
	}
	// Values do not come from the read models: a reveal is decided on the
	// ledger and audited there, and still works.
	h.post(secDev+"/secrets/DB_URL/reveal", h.Bob, map[string]any{"reason": "incident"}).expect(t, 200)

	var ready struct {
		Status string   `json:"status"`
		Halted []string `json:"halted_projections"`
	}
	h.get("/readyz", "").expect(t, 200).decode(t, &ready)
	if ready.Status != "degraded" || !slices.Contains(ready.Halted, "secrets") || len(ready.Halted) != len(projections.All()) {
		t.Fatalf("readiness with halted read models: %+v", ready)
	}
	metrics := string(h.get("/metrics", "").expect(t, 200).body)
	if !strings.Contains(metrics, `stele_projection_halted{projection="secrets"} 1`) {
		t.Error("the metric does not say the secrets read model is halted")
	}
	if !strings.Contains(h.Logs.String(), "PROJECTION HALTED") {
		t.Error("the projector did not log the halt")
	}

	// The operator restores the log and rebuilds: reads come back, and
	// see the events appended meanwhile.
	setActor(actor)
	for _, p := range projections.All() {
		if err := h.Projector.Rebuild(ctx, p.Name()); err != nil {
			t.Fatalf("rebuild %s: %v", p.Name(), err)
		}
	}
	head := must(h.App.Head(ctx))
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := h.get(secDev+"/secrets?min_position="+fmt.Sprint(head), h.Bob)
		if r.status == 200 {
			var list struct {
				Items []struct {
					Name string `json:"name"`
				} `json:"items"`
			}
			r.decode(t, &list)
			if len(list.Items) != 2 {
				t.Fatalf("after the rebuild: %s", r.body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reads did not come back after the rebuild: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ready.Halted = nil
	h.get("/readyz", "").expect(t, 200).decode(t, &ready)
	if ready.Status != "ready" || len(ready.Halted) != 0 {
		t.Fatalf("readiness after the rebuild: %+v", ready)
	}
}

// waitHalted waits until n projections are halted.
func waitHalted(t *testing.T, h *harness, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		halted, err := projections.Halted(ctx, h.Pool)
		if err != nil {
			t.Fatal(err)
		}
		if len(halted) >= n {
			// Readers look again at most every 200 ms.
			time.Sleep(250 * time.Millisecond)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d projections halted, want %d: %v", len(halted), n, halted)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
