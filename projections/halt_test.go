package projections_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/projections"
)

// A changed event stops the projections that reach it: they keep what
// they had, say why, and stay stopped until rebuilt.
func TestProjectionHaltsOnABrokenChain(t *testing.T) {
	e := newEnv(t, projections.Secrets{}, projections.Audit{})
	scenario(t, e, 3, 1)
	head := ok(e.store.Head(ctx)).Position
	// Someone with database access changes an event the projector has not
	// read yet.
	for _, q := range []string{
		`ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only`,
		`UPDATE ledger_events SET actor = 'user:mallory' WHERE position = 12`,
		`ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only`,
	} {
		if _, err := e.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	e.start(t)
	deadline := time.Now().Add(20 * time.Second)
	var sts []projections.Status
	for time.Now().Before(deadline) {
		sts = ok(projections.Statuses(ctx, e.pool, e.store, time.Now()))
		halted := 0
		for _, s := range sts {
			if s.Status == "halted" {
				halted++
			}
		}
		if halted == 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range sts {
		if s.Status != "halted" || s.Position >= 12 || !strings.Contains(s.Error, "position 12") {
			t.Fatalf("status %+v: want halted before position 12, saying why", s)
		}
		if s.LagEvents != head-s.Position {
			t.Fatalf("lag %d", s.LagEvents)
		}
	}
	var rows int
	e.pool.QueryRow(ctx, `SELECT count(*) FROM proj_audit WHERE actor = 'user:mallory'`).Scan(&rows)
	if rows != 0 {
		t.Fatal("the changed event reached the audit feed")
	}
	// A rebuild meets the same broken event and refuses.
	if err := e.proj.Rebuild(ctx, "audit"); err == nil {
		t.Fatal("a rebuild passed over a changed event")
	}
	// Reads of a halted projection are refused at once, whatever position
	// they ask for (none, one it reached, one it never will).
	for _, p := range []uint64{0, 1, head} {
		start := time.Now()
		err := projections.WaitFor(ctx, e.pool, p, 5*time.Second)
		var he *projections.HaltedError
		if !errors.As(err, &he) || !errors.Is(err, projections.ErrHalted) || !strings.Contains(he.Reason, "position 12") {
			t.Fatalf("WaitFor(%d) on halted projections: %v", p, err)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("WaitFor(%d) waited for a halted projection", p)
		}
	}
	r := projections.NewReader(e.pool)
	if _, err := r.Secrets(ctx, "acme", "web", "production"); !errors.Is(err, projections.ErrHalted) {
		t.Fatalf("the secrets of a halted read model: %v", err)
	}
	if _, _, err := r.AuditFeed(ctx, "acme", projections.AuditFilter{}, 0, 10); !errors.Is(err, projections.ErrHalted) {
		t.Fatalf("the audit feed of a halted read model: %v", err)
	}
	h := projections.History{Pool: e.pool, Store: e.store, Wait: time.Second}
	if _, err := h.SecretsAt(ctx, "acme", "web", "production", 5); !errors.Is(err, projections.ErrHalted) {
		t.Fatalf("secrets at 5 from a halted read model: %v", err)
	}
	if err := projections.CheckHalted(ctx, e.pool, "secrets"); !errors.Is(err, projections.ErrHalted) {
		t.Fatalf("CheckHalted: %v", err)
	}
	if err := projections.CheckHalted(ctx, e.pool, "directory"); err != nil {
		t.Fatalf("CheckHalted of a projection that is not halted: %v", err)
	}
}
