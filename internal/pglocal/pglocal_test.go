package pglocal

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// clusterDir returns a fresh directory for a cluster that the server's OS
// user can reach. t.TempDir's directories are mode 0700, which the postgres
// user cannot traverse when the test runs as root, so they are opened up.
// The cluster is stopped before the directory is removed.
func clusterDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	if os.Geteuid() == 0 {
		for d := tmp; d != os.TempDir() && d != filepath.Dir(d); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := checkTraversable(tmp, mustLookupUser(t)); err != nil {
			t.Fatalf("temporary directory not usable: %v", err)
		}
	}
	dir := filepath.Join(tmp, "pg")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := Stop(ctx, dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

func mustLookupUser(t *testing.T) osUser {
	t.Helper()
	l, _ := newLayout(t.TempDir())
	u, err := l.clusterUser(Options{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func skipWithoutBinaries(t *testing.T) {
	t.Helper()
	if _, err := findBinaries(context.Background(), 0); err != nil {
		t.Skipf("no usable PostgreSQL binaries: %v", err)
	}
}

func selectOne(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("SELECT 1 returned %d", n)
	}
	return nil
}

// TestLifecycle exercises initdb, warm reuse, stop and restart of one cluster.
func TestLifecycle(t *testing.T) {
	skipWithoutBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := clusterDir(t)

	var logMu sync.Mutex
	var logs []string
	opts := Options{Logf: func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		logs = append(logs, fmt.Sprintf(format, args...))
		t.Logf(format, args...)
	}}

	start := time.Now()
	u, err := Ensure(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cold Ensure: %v", time.Since(start))
	if err := selectOne(ctx, u); err != nil {
		t.Fatalf("SELECT 1: %v", err)
	}

	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if pu.Hostname() != "127.0.0.1" || pu.User.Username() != "postgres" || pu.Path != "/postgres" || pu.Query().Get("sslmode") != "disable" {
		t.Errorf("unexpected URL shape: %s", u)
	}
	for _, name := range []string{"password", "url"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", name, fi.Mode().Perm())
		}
	}
	// TCP needs the password.
	bad := *pu
	bad.User = url.UserPassword("postgres", "wrong")
	if err := selectOne(ctx, bad.String()); err == nil {
		t.Error("connecting with a wrong password succeeded")
	}

	// Warm: same URL, quickly, without initdb or start.
	logs = nil
	start = time.Now()
	u2, err := Ensure(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	warm := time.Since(start)
	t.Logf("warm Ensure: %v", warm)
	if u2 != u {
		t.Errorf("second Ensure returned %s, want %s", u2, u)
	}
	if len(logs) != 0 {
		t.Errorf("second Ensure did work: %q", logs)
	}
	if warm > 2*time.Second {
		t.Errorf("warm Ensure took %v", warm)
	}

	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives restart')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	if err := Stop(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if err := selectOne(ctx, u); err == nil {
		t.Fatal("server still accepts connections after Stop")
	}
	if err := Stop(ctx, dir); err != nil {
		t.Errorf("Stop of a stopped cluster: %v", err)
	}

	logs = nil
	start = time.Now()
	u3, err := Ensure(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Ensure after Stop (restart): %v", time.Since(start))
	if u3 != u {
		t.Errorf("Ensure after Stop returned %s, want the same URL %s (port reused)", u3, u)
	}
	for _, m := range logs {
		if strings.Contains(m, "initializing") {
			t.Errorf("restart re-initialized the cluster: %q", m)
		}
	}
	conn, err = pgx.Connect(ctx, u3)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil {
		t.Fatalf("data lost across restart: %v", err)
	}
	if v != "survives restart" {
		t.Errorf("got %q", v)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "on" {
		t.Errorf("fsync = %q (%v), want on", fsync, err)
	}
}

// TestConcurrentEnsure starts one cluster from many goroutines at once.
func TestConcurrentEnsure(t *testing.T) {
	skipWithoutBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := clusterDir(t)

	var mu sync.Mutex
	inits := 0
	opts := Options{Logf: func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(msg, "initializing") {
			inits++
		}
	}}
	const n = 8
	urls := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { urls[i], errs[i] = Ensure(ctx, dir, opts) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Ensure #%d: %v", i, errs[i])
		}
		if urls[i] != urls[0] {
			t.Errorf("Ensure #%d returned %s, #0 returned %s", i, urls[i], urls[0])
		}
	}
	if inits != 1 {
		t.Errorf("initdb ran %d times, want 1", inits)
	}
	if err := selectOne(ctx, urls[0]); err != nil {
		t.Fatal(err)
	}
}

// TestStartOnTakenPort checks that a stopped cluster whose recorded port was
// taken meanwhile starts on another port.
func TestStartOnTakenPort(t *testing.T) {
	skipWithoutBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := clusterDir(t)
	u, err := Ensure(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Stop(ctx, dir); err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u)
	ln, err := net.Listen("tcp", "127.0.0.1:"+pu.Port())
	if err != nil {
		t.Skipf("cannot occupy the old port: %v", err)
	}
	defer ln.Close()
	u2, err := Ensure(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if u2 == u {
		t.Fatal("Ensure reused a taken port")
	}
	if err := selectOne(ctx, u2); err != nil {
		t.Fatal(err)
	}
}

func TestStopMissing(t *testing.T) {
	ctx := context.Background()
	if err := Stop(ctx, filepath.Join(t.TempDir(), "nothing")); err != nil {
		t.Errorf("Stop on a missing directory: %v", err)
	}
}

// TestUntraversableParent checks the error when the server's OS user cannot
// reach the cluster directory (only meaningful as root).
func TestUntraversableParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	skipWithoutBinaries(t)
	parent := t.TempDir() // mode 0700
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(context.Background(), filepath.Join(parent, "pg"), Options{})
	if err == nil {
		t.Fatal("Ensure succeeded in a directory the server cannot reach")
	}
	if !strings.Contains(err.Error(), "not traversable") || strings.Contains(err.Error(), "\n") {
		t.Errorf("unclear error: %v", err)
	}
	t.Log(err)
}

func TestServerError(t *testing.T) {
	log := `2024-01-01 00:00:00.000 UTC [1] LOG:  starting PostgreSQL 15
2024-01-01 00:00:00.000 UTC [1] LOG:  could not bind IPv4 address "127.0.0.1": Address already in use
2024-01-01 00:00:00.000 UTC [1] FATAL:  could not create any TCP/IP sockets
2024-01-01 00:00:00.000 UTC [1] LOG:  database system is shut down
`
	if got, want := serverError(log), "FATAL: could not create any TCP/IP sockets"; got != want {
		t.Errorf("serverError = %q, want %q", got, want)
	}
}
