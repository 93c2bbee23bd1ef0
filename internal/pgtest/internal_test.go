package pgtest

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestNames(t *testing.T) {
	now := time.Unix(1700000000, 0)
	n, err := isolatedName("Event-Store.v2", now)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(n, "stele_test_event_store_v2_") || len(n) > 63 {
		t.Errorf("isolatedName = %q", n)
	}
	if got, ok := nameTime(n); !ok || !got.Equal(now) {
		t.Errorf("nameTime(%q) = %v, %v", n, got, ok)
	}
	long, _ := isolatedName(strings.Repeat("x", 100), now)
	if len(long) > 63 {
		t.Errorf("name too long: %q (%d)", long, len(long))
	}
	if s := schemaName("TestFoo/sub_case#01"); !strings.HasPrefix(s, "test_testfoo_sub_case_01_") {
		t.Errorf("schemaName = %q", s)
	}
}

func TestWithParam(t *testing.T) {
	u, err := withParam("postgres://u:p%40ss@h:5/db?sslmode=disable", "dbname", "other")
	if err != nil || u != "postgres://u:p%40ss@h:5/other?sslmode=disable" {
		t.Errorf("dbname: %q, %v", u, err)
	}
	u, err = withParam("postgres://u@h/db?search_path=a", "search_path", "b")
	if err != nil || u != "postgres://u@h/db?search_path=b" {
		t.Errorf("search_path: %q, %v", u, err)
	}
	kv, _ := withParam("host=h dbname=db", "dbname", "it's")
	if kv != `host=h dbname=db dbname='it\'s'` {
		t.Errorf("keyword/value: %q", kv)
	}
	for _, s := range []string{u, kv} {
		if _, err := pgx.ParseConfig(s); err != nil {
			t.Errorf("pgx cannot parse %q: %v", s, err)
		}
	}
	cfg, _ := pgx.ParseConfig(kv)
	if cfg.Database != "it's" {
		t.Errorf("override not effective: %q", cfg.Database)
	}
}

// TestSchemaFallback creates a role without CREATEDB and checks that
// createIsolated falls back to a schema with search_path pointing at it.
func TestSchemaFallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pkgURL := URL(t)
	u, err := url.Parse(pkgURL)
	if err != nil || !strings.HasPrefix(pkgURL, "postgres") {
		t.Skip("needs a URL-form connection string")
	}
	if u.Query().Get("search_path") != "" {
		t.Skip("already running in schema fallback mode")
	}
	admin, err := pgx.Connect(ctx, pkgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	role := "stele_test_nocreatedb_" + mustHex(t)
	pw := mustHex(t)
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN NOCREATEDB PASSWORD '"+pw+"'"); err != nil {
		t.Skipf("cannot create a role: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = admin.Exec(ctx, "DROP OWNED BY "+role)
		if _, err := admin.Exec(ctx, "DROP ROLE "+role); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})
	var db string
	if err := admin.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "GRANT CREATE ON DATABASE "+pgx.Identifier{db}.Sanitize()+" TO "+role); err != nil {
		t.Fatal(err)
	}

	u.User = url.UserPassword(role, pw)
	iso, err := createIsolated(ctx, u.String(), "fallback")
	if err != nil {
		t.Fatal(err)
	}
	if !iso.schema {
		t.Fatal("expected the schema fallback")
	}
	conn, err := pgx.Connect(ctx, iso.url)
	if err != nil {
		t.Fatal(err)
	}
	var schema string
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if schema != iso.name || !strings.HasPrefix(schema, "stele_test_fallback_") {
		t.Errorf("current_schema() = %q, want %q", schema, iso.name)
	}
	if err := iso.drop(ctx); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", iso.name).Scan(&exists); err != nil || exists {
		t.Errorf("schema %s still exists (%v)", iso.name, err)
	}
}

func TestDropLeftovers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	old, _ := isolatedName("leftover", time.Now().Add(-48*time.Hour))
	recent, _ := isolatedName("leftover", time.Now().Add(-time.Hour))
	for _, n := range []string{old, recent} {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+n+" TEMPLATE template0"); err != nil {
			t.Skipf("cannot create databases: %v", err)
		}
	}
	t.Cleanup(func() {
		for _, n := range []string{old, recent} {
			if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+n); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	dropLeftovers(ctx, admin, time.Now())
	for n, want := range map[string]bool{old: false, recent: true} {
		var exists bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", n).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists != want {
			t.Errorf("%s exists = %v, want %v", n, exists, want)
		}
	}
}

func mustHex(t *testing.T) string {
	h, err := randomHex(6)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
