// Package pgtest gives each test package its own PostgreSQL database.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// and in tests call URL, Pool or Schema.
//
// The server is found as follows: TEST_DATABASE_URL, else DATABASE_URL, else
// the private cluster that pglocal.Ensure finds or starts under
// <module root>/.stele/postgres (initdb on first use; as root, apt-get may
// install Debian's postgresql package). Tests need a real PostgreSQL: when
// none can be found or started, Main prints one line to stderr and the test
// binary fails. Setting STELE_TEST_SKIP_PG=1 instead makes URL, Pool, Schema
// and AdminURL skip the calling test, for machines where running PostgreSQL
// is impossible.
//
// Databases created by Main are named stele_test_<package dir>_<hex>, so
// packages tested in parallel processes (go test ./...) never collide. A
// test binary that dies before Main's cleanup (panic, -timeout) leaves its
// database behind; Main drops such leftovers once they are a day old.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/internal/pglocal"
)

// SkipEnv is the environment variable that, when "1", makes tests needing
// PostgreSQL skip instead of fail.
const SkipEnv = "STELE_TEST_SKIP_PG"

// state is set by Main before m.Run and only read by tests.
var state struct {
	ready bool
	skip  bool
	admin string // server-level URL (TEST_DATABASE_URL, DATABASE_URL or pglocal)
	url   string // the package's isolated database (or schema)
}

// Main sets up the package's isolated database, runs the tests and drops the
// database. It returns the exit code for os.Exit:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// It creates a fresh database stele_test_<sanitized package dir>_<hex> from
// template0. If the role may not create databases, it creates a fresh schema
// of that name in the given database instead, and the URL's search_path
// points at it. Either is dropped (database WITH (FORCE), schema CASCADE)
// after the tests.
//
// If no PostgreSQL can be found or started, Main prints one line to stderr
// and returns 1 without running tests, unless STELE_TEST_SKIP_PG=1.
func Main(m *testing.M) int {
	if os.Getenv(SkipEnv) == "1" {
		state.skip = true
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	admin, source, err := findServer(ctx)
	if err != nil {
		cancel()
		fmt.Fprintf(os.Stderr, "pgtest: no PostgreSQL for tests: %s (set TEST_DATABASE_URL, or %s=1 to skip)\n", oneLine(err), SkipEnv)
		return 1
	}
	iso, err := createIsolated(ctx, admin, packageDirName())
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %s: %s\n", source, oneLine(err))
		return 1
	}
	state.admin, state.url, state.ready = admin, iso.url, true

	code := m.Run()

	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := iso.drop(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cleanup: %s\n", oneLine(err))
	}
	return code
}

// URL returns the connection string of the package's isolated database,
// set up by Main. It fails the test if Main was not used in TestMain, and
// skips it when STELE_TEST_SKIP_PG=1.
func URL(tb testing.TB) string {
	tb.Helper()
	checkReady(tb)
	return state.url
}

// AdminURL returns the connection string of the server Main found (the
// database named there, not the isolated one), for tests that need
// server-level operations such as CREATE ROLE. Same failure and skip rules
// as URL.
func AdminURL(tb testing.TB) string {
	tb.Helper()
	checkReady(tb)
	return state.admin
}

func checkReady(tb testing.TB) {
	tb.Helper()
	if state.skip {
		tb.Skip(SkipEnv + "=1: no PostgreSQL")
	}
	if !state.ready {
		tb.Fatal("pgtest: not set up; add func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) } to the package's tests")
	}
}

// Pool returns a pool connected to the package's isolated database (see
// URL), verified with a ping and closed when the test and its subtests end.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return poolFor(tb, URL(tb))
}

func poolFor(tb testing.TB, connString string) *pgxpool.Pool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, connString)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return pool
}

// Schema creates a fresh, empty schema in the package's database and returns
// a connection string whose search_path is that schema alone, so unqualified
// names resolve (and tables are created) only there. The schema is dropped
// with CASCADE when the test ends; close connections using it before then
// (a Pool created afterwards with tb.Cleanup is closed first).
func Schema(tb testing.TB) string {
	tb.Helper()
	base := URL(tb)
	name := schemaName(tb.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execOnce(ctx, base, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create schema %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := execOnce(ctx, base, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	u, err := withParam(base, "search_path", name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return u
}

// findServer returns the server-level connection string and where it came
// from.
func findServer(ctx context.Context) (connString, source string, err error) {
	for _, k := range []string{"TEST_DATABASE_URL", "DATABASE_URL"} {
		if v := strings.TrimSpace(os.Getenv(k)); v != "" {
			return v, k, nil
		}
	}
	dir, err := pglocal.DefaultDir()
	if err != nil {
		return "", "", err
	}
	u, err := pglocal.Ensure(ctx, dir, pglocal.Options{
		Install: true,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, format+"\n", args...)
		},
	})
	return u, "local cluster " + dir, err
}

// isolated is a database (or, as a fallback, a schema) owned by one test
// binary.
type isolated struct {
	admin  string // where to run DROP
	name   string
	schema bool
	url    string
}

// leftoverAge is how old a stele_test_ database must be before Main drops it
// as the leftover of a crashed test binary.
const leftoverAge = 24 * time.Hour

func createIsolated(ctx context.Context, admin, pkg string) (*isolated, error) {
	name, err := isolatedName(pkg, time.Now())
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact(admin), err)
	}
	defer conn.Close(context.Background())

	dropLeftovers(ctx, conn, time.Now())

	ident := pgx.Identifier{name}.Sanitize()
	_, err = conn.Exec(ctx, "CREATE DATABASE "+ident+" TEMPLATE template0")
	if err == nil {
		u, err := withParam(admin, "dbname", name)
		if err != nil {
			return nil, err
		}
		return &isolated{admin: admin, name: name, url: u}, nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" { // insufficient_privilege
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	// The role cannot create databases: fall back to a schema.
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		return nil, fmt.Errorf("role may not create databases, and create schema %s failed: %w", name, err)
	}
	u, err := withParam(admin, "search_path", name)
	if err != nil {
		return nil, err
	}
	return &isolated{admin: admin, name: name, schema: true, url: u}, nil
}

func (iso *isolated) drop(ctx context.Context) error {
	ident := pgx.Identifier{iso.name}.Sanitize()
	sql := "DROP DATABASE IF EXISTS " + ident + " WITH (FORCE)"
	if iso.schema {
		sql = "DROP SCHEMA IF EXISTS " + ident + " CASCADE"
	}
	if err := execOnce(ctx, iso.admin, sql); err != nil {
		return fmt.Errorf("drop %s: %w", iso.name, err)
	}
	return nil
}

// dropLeftovers drops stele_test_ databases and schemas whose name says they
// were created more than leftoverAge ago. Databases are dropped without
// FORCE, so one still in use survives. Errors are ignored: this is hygiene.
func dropLeftovers(ctx context.Context, conn *pgx.Conn, now time.Time) {
	collect := func(sql string) []string {
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			return nil
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil
		}
		var old []string
		for _, n := range names {
			if t, ok := nameTime(n); ok && now.Sub(t) > leftoverAge {
				old = append(old, n)
			}
		}
		return old
	}
	for _, n := range collect(`SELECT datname FROM pg_database WHERE datname LIKE 'stele\_test\_%'`) {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize())
	}
	for _, n := range collect(`SELECT nspname FROM pg_namespace WHERE nspname LIKE 'stele\_test\_%' AND pg_has_role(nspowner, 'USAGE')`) {
		_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{n}.Sanitize()+" CASCADE")
	}
}

// isolatedName returns stele_test_<pkg>_<8 hex: creation time><8 hex: random>,
// at most 63 bytes (PostgreSQL's identifier limit).
func isolatedName(pkg string, now time.Time) (string, error) {
	r, err := randomHex(4)
	if err != nil {
		return "", err
	}
	pkg = sanitize(pkg, 30)
	if pkg == "" {
		pkg = "pkg"
	}
	return fmt.Sprintf("stele_test_%s_%08x%s", pkg, uint32(now.Unix()), r), nil
}

// nameTime extracts the creation time from a name made by isolatedName.
func nameTime(name string) (time.Time, bool) {
	i := strings.LastIndexByte(name, '_')
	if i < 0 || len(name)-i-1 != 16 {
		return time.Time{}, false
	}
	sec, err := strconv.ParseUint(name[i+1:i+9], 16, 32)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(sec), 0), true
}

// schemaName returns a per-test schema name: test_<sanitized test name>_<hex>.
func schemaName(testName string) string {
	r, err := randomHex(6)
	if err != nil {
		r = strconv.FormatInt(time.Now().UnixNano(), 16)
	}
	n := sanitize(testName, 40)
	if n == "" {
		n = "t"
	}
	return "test_" + n + "_" + r
}

// sanitize lowercases s and keeps [a-z0-9_], replacing runs of other
// characters with one underscore, trimmed to at most max bytes.
func sanitize(s string, max int) string {
	var b strings.Builder
	under := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			under = false
		} else if !under {
			b.WriteByte('_')
			under = true
		}
	}
	out := b.String()
	if len(out) > max {
		out = out[:max]
	}
	return strings.Trim(out, "_")
}

func packageDirName() string {
	wd, err := os.Getwd()
	if err != nil {
		return "pkg"
	}
	return filepath.Base(wd)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// withParam returns connString with one connection parameter set: the path
// for "dbname" in URL form, a query parameter otherwise (pgx sends unknown
// ones, such as search_path, as run-time parameters). Keyword/value strings
// get the setting appended, which overrides an earlier one.
func withParam(connString, key, value string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", fmt.Errorf("parse %s: %v", redact(connString), err)
		}
		q := u.Query()
		if key == "dbname" {
			q.Del("dbname")
			u.Path = "/" + value
			u.RawPath = ""
		} else {
			q.Set(key, value)
		}
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	v := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value)
	return strings.TrimSpace(connString) + " " + key + "='" + v + "'", nil
}

// redact hides the password of a URL for error messages.
func redact(connString string) string {
	if u, err := url.Parse(connString); err == nil && u.User != nil {
		return u.Redacted()
	}
	if strings.Contains(connString, "password") {
		return "(connection string)"
	}
	return connString
}

func execOnce(ctx context.Context, connString, sql string) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
