package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/eventstore/storetest"
	"stele.dev/stele/internal/pgtest"
)

// The split of docs/operations.md: the owner migrates; the application
// role appends and reads, but can neither change ledger rows nor switch
// the triggers off.
func TestApplicationRoleCannotRewriteTheLedger(t *testing.T) {
	ctx := context.Background()
	ownerURL := pgtest.Schema(t)
	owner := newPool(t, ownerURL) // migrated by the owner
	schema := searchPath(t, ownerURL)
	role := "stele_app_" + strings.TrimPrefix(schema, "t_")
	if len(role) > 60 {
		role = role[:60]
	}
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN PASSWORD 'app-test-password'`,
		`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + role,
		`GRANT SELECT, INSERT ON ledger_events, ledger_checkpoints, ledger_meta TO ` + role,
		`GRANT SELECT, UPDATE ON ledger_head TO ` + role,
		`GRANT EXECUTE ON FUNCTION ledger_advance, ledger_lock_head, ledger_check_versions TO ` + role,
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42501" {
				t.Skipf("the test database role cannot create roles (%v): the role split is not tested here", err)
			}
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		owner.Exec(context.Background(), `DROP OWNED BY `+role)
		owner.Exec(context.Background(), `DROP ROLE `+role)
	})
	u, _ := url.Parse(ownerURL)
	u.User = url.UserPassword(role, "app-test-password")
	app, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	s, err := postgres.Open(ctx, app, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		if _, err := s.Append(ctx, "s", eventstore.Exactly(uint64(i)), storetest.Ev("thing.happened", "x")); err != nil {
			t.Fatalf("the application role cannot append: %v", err)
		}
	}
	if _, err := s.Append(ctx, "s", eventstore.Any, storetest.Ev("thing.happened", "y")); err != nil {
		t.Fatalf("slow path as the application role: %v", err)
	}
	for _, q := range []string{
		`UPDATE ledger_events SET data = 'x'`,
		`DELETE FROM ledger_events`,
		`TRUNCATE ledger_events`,
		`ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only`,
		`DELETE FROM ledger_checkpoints`,
	} {
		_, err := app.Exec(ctx, q)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s as the application role: %v, want a refusal", q, err)
		}
	}
	if h, _ := s.Head(ctx); h.Position != 4 {
		t.Fatalf("head %d, want 4", h.Position)
	}
}

func searchPath(t *testing.T, connURL string) string {
	u, err := url.Parse(connURL)
	if err != nil {
		t.Fatal(err)
	}
	sp := u.Query().Get("search_path")
	if sp == "" {
		t.Fatal("no search_path in the schema URL")
	}
	return sp
}
