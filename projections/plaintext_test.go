package projections_test

import (
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/internal/syncbuf"
	"stele.dev/stele/projections"
)

// No plaintext value reaches a read model, the projector's state or its
// logs, in any common encoding; the values are also revealed (and rolled
// back to) so that every path a value takes has run.
func TestNoPlaintextInProjections(t *testing.T) {
	e := newEnv(t)
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.proj = projections.New(projections.Config{Pool: e.pool, Store: e.store, Logger: logger}, projections.All()...)
	e.start(t)
	scenario(t, e, 3, 2)
	values := []string{"postgres://user:hunter2@db:5432/app", "sk_live_51HcQ9vKZ3", "multi\nline\x00binary\xff"}
	for i, v := range values {
		ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: []string{"DB_URL", "STRIPE_KEY", "BLOB"}[i]}
		ok(e.svc.SetSecret(ctx, bob, ref, app.SetSecret{Value: []byte(v)}))
		ok(e.svc.SetSecret(ctx, bob, ref, app.SetSecret{Value: []byte(v + "-next")}))
		ok(e.svc.RollbackSecret(ctx, bob, ref, 1))
		if got := ok(e.svc.RevealSecret(ctx, bob, ref, 0, "check", domain.ChannelAPI)); string(got.Value) != v {
			t.Fatalf("%s reads %q", ref.Name, got.Value)
		}
		values = append(values, v+"-next")
	}
	ok(e.svc.RotateKeyset(ctx, ada, prod, "test"))
	e.caughtUp(t)
	if err := e.proj.Rebuild(ctx, "secrets"); err != nil {
		t.Fatal(err)
	}
	e.caughtUp(t)

	var tables []string
	rows := ok(e.pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`))
	tables = ok(pgx.CollectRows(rows, pgx.RowTo[string]))
	scanned, control := 0, false
	for _, table := range tables {
		if !strings.HasPrefix(table, "proj") {
			continue
		}
		rows := ok(e.pool.Query(ctx, `SELECT t::text FROM `+pgx.Identifier{table}.Sanitize()+` t`))
		lines := ok(pgx.CollectRows(rows, pgx.RowTo[string]))
		for _, line := range lines {
			control = control || strings.Contains(line, "Acme Inc") // the scan does see text
			for _, v := range values {
				for _, f := range encodings(v) {
					if strings.Contains(line, f) {
						t.Fatalf("table %s holds %q as %q", table, v, f)
					}
				}
			}
		}
		scanned += len(lines)
	}
	if scanned < 100 || !control {
		t.Fatalf("only %d rows in %v: the scan saw too little", scanned, tables)
	}
	text := logs.String()
	if !strings.Contains(text, "projection rebuilt") {
		t.Fatalf("the logger captured nothing: %q", text)
	}
	for _, v := range values {
		for _, f := range encodings(v) {
			if strings.Contains(text, f) {
				t.Fatalf("the projector logged %q as %q", v, f)
			}
		}
	}
	t.Logf("%d tables, %d rows and %d bytes of logs scanned", len(tables), scanned, len(text))
}

func encodings(v string) []string {
	b := []byte(v)
	return []string{v, base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b), hex.EncodeToString(b)}
}
