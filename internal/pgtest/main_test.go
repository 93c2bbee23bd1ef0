package pgtest_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestPackageDatabase(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	var db, schema string
	if err := pool.QueryRow(ctx, "SELECT current_database(), current_schema()").Scan(&db, &schema); err != nil {
		t.Fatal(err)
	}
	t.Logf("database %s, schema %s", db, schema)
	// Normally a database of its own; with a role lacking CREATEDB, a schema.
	if !strings.HasPrefix(db, "stele_test_pgtest_") && !strings.HasPrefix(schema, "stele_test_pgtest_") {
		t.Fatalf("not isolated: database %q, schema %q", db, schema)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE pkg_marker (id int)"); err != nil {
		t.Fatal(err)
	}
	// The admin database does not see the package's table.
	admin, err := pgx.Connect(ctx, pgtest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var adminDB string
	var n int
	if err := admin.QueryRow(ctx, "SELECT current_database(), count(*) FROM pg_tables WHERE tablename = 'pkg_marker' AND schemaname = current_schema()").Scan(&adminDB, &n); err != nil {
		t.Fatal(err)
	}
	if adminDB == db && strings.HasPrefix(db, "stele_test_") {
		t.Fatalf("admin URL points at the package database %s", db)
	}
	if n != 0 {
		t.Error("the package's table is visible in the admin database's current schema")
	}
	// URL and Pool agree.
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var db2 string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db2); err != nil {
		t.Fatal(err)
	}
	if db2 != db {
		t.Errorf("URL connects to %s, Pool to %s", db2, db)
	}
}

func TestSchema(t *testing.T) {
	ctx := context.Background()
	u1 := pgtest.Schema(t)
	u2 := pgtest.Schema(t)
	if u1 == u2 {
		t.Fatal("Schema returned the same URL twice")
	}
	c1, err := pgx.Connect(ctx, u1)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close(ctx)
	c2, err := pgx.Connect(ctx, u2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(ctx)

	var s1, s2, db1, db2 string
	if err := c1.QueryRow(ctx, "SELECT current_schema(), current_database()").Scan(&s1, &db1); err != nil {
		t.Fatal(err)
	}
	if err := c2.QueryRow(ctx, "SELECT current_schema(), current_database()").Scan(&s2, &db2); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s1, "test_testschema_") || s1 == s2 {
		t.Fatalf("schemas %q and %q", s1, s2)
	}
	if db1 != db2 {
		t.Errorf("schemas in different databases %s, %s", db1, db2)
	}
	// Same table name in both schemas, independent contents.
	for i, c := range []*pgx.Conn{c1, c2} {
		if _, err := c.Exec(ctx, "CREATE TABLE events (n int)"); err != nil {
			t.Fatal(err)
		}
		for range i + 1 {
			if _, err := c.Exec(ctx, "INSERT INTO events VALUES (1)"); err != nil {
				t.Fatal(err)
			}
		}
	}
	var n1, n2 int
	if err := c1.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&n1); err != nil {
		t.Fatal(err)
	}
	if err := c2.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&n2); err != nil {
		t.Fatal(err)
	}
	if n1 != 1 || n2 != 2 {
		t.Errorf("counts %d, %d; want 1, 2", n1, n2)
	}
	// The package-level search path does not see the schema's table.
	pool := pgtest.Pool(t)
	var visible bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('events') IS NOT NULL").Scan(&visible); err != nil {
		t.Fatal(err)
	}
	if visible {
		t.Error("schema table visible through the package URL")
	}

	// Dropped when its test ends.
	var name string
	t.Run("cleanup", func(t *testing.T) {
		c, err := pgx.Connect(ctx, pgtest.Schema(t))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if err := c.QueryRow(ctx, "SELECT current_schema()").Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if name == "" || exists {
		t.Errorf("schema %q not dropped after its test", name)
	}
}
