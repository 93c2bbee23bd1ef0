package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/internal/pgtest"
	"stele.dev/stele/projections"
)

var steleBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stele-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	steleBin = filepath.Join(dir, "stele")
	if out, err := exec.Command("go", "build", "-o", steleBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building stele: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// stele runs the built binary with a clean environment plus env.
func stele(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runEnv(t, append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...), steleBin, args...)
}

// runEnv runs a command with the given environment (nil: inherit) and
// returns its output and exit code.
func runEnv(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// oneLineError checks a failure is one line, prefixed, without a Go trace.
func oneLineError(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d; stderr: %s", r.code, code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "stele: ") || !strings.Contains(last, want) {
		t.Fatalf("stderr %q: want a line 'stele: …%s…'", r.stderr, want)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("stderr holds a trace: %s", r.stderr)
	}
}

// appendEvents writes n events to the ledger at url.
func appendEvents(t *testing.T, url string, n int) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := postgres.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	s, err := postgres.Open(context.Background(), pool, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range n {
		ev := eventstore.Event{ID: eventstore.NewID(), Type: "secret.updated", Data: fmt.Appendf(nil, `{"n":%d}`, i),
			Metadata: eventstore.Metadata{Actor: "user:test", Tenant: "org-1"}}
		if _, err := s.Append(context.Background(), fmt.Sprintf("secret-%d", i%5), eventstore.Any, ev); err != nil {
			t.Fatal(err)
		}
	}
}

func TestServerServesHealthAndKeepsItsKey(t *testing.T) {
	url := pgtest.Schema(t)
	dataDir := t.TempDir()
	cfg := ServerConfig{DB: dbFlags{url: url}, Keys: keyFlags{dataDir: dataDir, origin: "stele.test/server"},
		Listen: "127.0.0.1:0", CheckpointInterval: time.Hour, Logger: quietLogger()}
	s, err := StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string, map[string]any) {
		resp, err := http.Get("http://" + s.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %q is not JSON", path, b)
		}
		if resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s: no X-Request-Id", path)
		}
		return resp.StatusCode, resp.Header.Get("Content-Type"), m
	}
	if code, _, m := get("/healthz"); code != 200 || m["status"] != "ok" {
		t.Fatalf("/healthz = %d %v", code, m)
	}
	if code, _, m := get("/readyz"); code != 200 || m["status"] != "ready" {
		t.Fatalf("/readyz = %d %v", code, m)
	}
	if code, ct, m := get("/no/such/thing"); code != 404 || ct != "application/problem+json" || m["code"] != "not_found" {
		t.Fatalf("404 = %d %s %v", code, ct, m)
	}
	keyFile := filepath.Join(dataDir, "ledger-signing.key")
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key %v %v; want mode 0600", fi, err)
	}
	vkey := s.Signer.Verifier().String()
	if !strings.HasPrefix(vkey, "stele.test/server+") {
		t.Fatalf("verifier key %q does not carry the origin", vkey)
	}
	if err := s.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}

	// A restart keeps the key.
	s, err = StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Signer.Verifier().String() != vkey {
		t.Fatal("the server made a new key on restart")
	}
	s.Stop(5 * time.Second)

	// A second server without the key refuses to make another one.
	cfg.Keys.dataDir = t.TempDir()
	if _, err := StartServer(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), vkey) {
		t.Fatalf("a server without the key started: %v", err)
	}
}

func TestLedgerCommandsEndToEnd(t *testing.T) {
	url := pgtest.Schema(t)
	dataDir := t.TempDir()
	env := []string{"DATABASE_URL=" + url, "STELE_DATA_DIR=" + dataDir, "STELE_LOG_ORIGIN=stele.test/e2e"}

	if r := stele(t, env, "migrate"); r.code != 0 || !strings.Contains(r.stdout, "schema up to date") {
		t.Fatalf("migrate: %+v", r)
	}
	oneLineError(t, stele(t, env, "ledger", "key"), 1, "no signing key yet")
	appendEvents(t, url, 40)
	r := stele(t, env, "ledger", "checkpoint")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "stele.test/e2e\n40\n") {
		t.Fatalf("checkpoint: %+v", r)
	}
	saved := filepath.Join(t.TempDir(), "auditor-checkpoint")
	os.WriteFile(saved, []byte(r.stdout), 0o644)
	r = stele(t, env, "ledger", "key")
	vkey := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(vkey, "stele.test/e2e+") {
		t.Fatalf("key: %+v", r)
	}
	// The key from the key file alone, with no database.
	if r := stele(t, []string{"STELE_SIGNING_KEY_FILE=" + filepath.Join(dataDir, "ledger-signing.key")}, "ledger", "key"); strings.TrimSpace(r.stdout) != vkey {
		t.Fatalf("key from file: %+v", r)
	}
	appendEvents(t, url, 10)

	r = stele(t, env, "ledger", "verify", "--database-url", url, "--key", vkey, "--checkpoint", saved, "--json")
	var rep map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || rep["ok"] != true || rep["events"] != 50.0 || rep["trusted_checkpoint"] != 40.0 {
		t.Fatalf("verify: %+v", r)
	}
	r = stele(t, env, "ledger", "verify", "--database-url", url)
	if r.code != 0 || !strings.Contains(r.stdout, "events verified   50") || !strings.Contains(r.stderr, "key recorded in the database") {
		t.Fatalf("verify (human): %+v", r)
	}
	head := stele(t, env, "ledger", "head", "--json")
	if head.code != 0 || !strings.Contains(head.stdout, `"position":50`) {
		t.Fatalf("head: %+v", head)
	}

	out := filepath.Join(t.TempDir(), "ledger.export")
	r = stele(t, env, "ledger", "export", "--out", out)
	if r.code != 0 || !strings.Contains(r.stdout, "exported 50 events") {
		t.Fatalf("export: %+v", r)
	}
	// Offline: no database in the environment.
	offline := []string{"HOME=" + t.TempDir()}
	r = stele(t, offline, "ledger", "verify", "--file", out, "--key", vkey, "--checkpoint", saved)
	if r.code != 0 || !strings.Contains(r.stdout, "OK") {
		t.Fatalf("offline verify: %+v", r)
	}
	keyFile := filepath.Join(t.TempDir(), "ledger.pub")
	os.WriteFile(keyFile, []byte(vkey+"\n"), 0o644)
	if r := stele(t, offline, "ledger", "verify", "--file", out, "--key", "@"+keyFile); r.code != 0 {
		t.Fatalf("verify with @keyfile: %+v", r)
	}
	b, _ := os.ReadFile(out)
	tampered := filepath.Join(t.TempDir(), "tampered.export")
	i := bytes.Index(b, []byte(`{"n":17}`))
	b[i+5] = '8'
	os.WriteFile(tampered, b, 0o644)
	r = stele(t, offline, "ledger", "verify", "--file", tampered, "--key", vkey)
	oneLineError(t, r, 3, "position 18")
	if !strings.Contains(r.stdout, "FAILED") {
		t.Fatalf("report does not say FAILED: %s", r.stdout)
	}
	if python, ok := pythonVerifier(t); ok {
		if r := runEnv(t, nil, python[0], append(python[1:], "--key", vkey, out)...); r.code != 0 {
			t.Fatalf("the independent Python verifier rejects Stele's export: %+v", r)
		}
		if r := runEnv(t, nil, python[0], append(python[1:], "--key", vkey, tampered)...); r.code != 3 || !strings.Contains(r.stdout+r.stderr, "18") {
			t.Fatalf("the independent Python verifier accepts a tampered export: %+v", r)
		}
	}

	// Tamper with the live table: caught, exit 3, the position named.
	pool, _ := pgxpool.New(context.Background(), url)
	defer pool.Close()
	for _, q := range []string{
		`ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only`,
		`UPDATE ledger_events SET data = '{"n":"x"}' WHERE position = 33`,
		`ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only`,
	} {
		if _, err := pool.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	oneLineError(t, stele(t, env, "ledger", "verify", "--database-url", url, "--key", vkey), 3, "position 33")
}

// pythonVerifier returns the command of docs/verifier/stele_verify.py, an
// auditor's verifier written from docs/ledger-format.md alone, if python3
// with the cryptography package is here.
func pythonVerifier(t *testing.T) ([]string, bool) {
	script, _ := filepath.Abs("../../docs/verifier/stele_verify.py")
	if _, err := os.Stat(script); err != nil {
		t.Log("docs/verifier/stele_verify.py not found: skipping the cross-check")
		return nil, false
	}
	if err := exec.Command("python3", "-c", "import cryptography").Run(); err != nil {
		t.Log("python3 with the cryptography package is not installed: skipping the independent verifier cross-check")
		return nil, false
	}
	return []string{"python3", script}, true
}

func TestBadInputGetsOneLine(t *testing.T) {
	oneLineError(t, stele(t, nil, "ledger", "verify", "--no-such-flag"), 2, "unknown flag")
	oneLineError(t, stele(t, nil, "ledger", "head"), 2, "no database")
	oneLineError(t, stele(t, nil, "ledger", "verify", "--file", "/nonexistent.export"), 2, "--key")
	oneLineError(t, stele(t, nil, "ledger", "verify", "--file", "/nonexistent.export", "--key", "not-a-key"), 2, "verifier key")
	oneLineError(t, stele(t, nil, "migrate", "extra-arg"), 2, "unknown command")
	oneLineError(t, stele(t, nil, "bench", "ledger", "--events", "0", "--database-url", "postgres://x@127.0.0.1:1/x"), 2, "--events")
	oneLineError(t, stele(t, nil, "ledger", "export"), 2, "--out is required")

	// A password in a database URL never reaches the output.
	r := stele(t, nil, "ledger", "head", "--database-url", "postgres://stele:supersecret-pw@127.0.0.1:1/stele?connect_timeout=2")
	oneLineError(t, r, 1, "database")
	if strings.Contains(r.stdout+r.stderr, "supersecret-pw") {
		t.Fatalf("the password leaked: %s", r.stderr)
	}
	notExport := filepath.Join(t.TempDir(), "x")
	os.WriteFile(notExport, []byte("hello"), 0o644)
	oneLineError(t, stele(t, nil, "ledger", "verify", "--file", notExport, "--key", "example.com/stele/test-vectors+57c1fd3a+AYFGZA8CSTr0+8VP4zOI513CyTeuC3cnzCsq+xt1GZo+"), 1, "malformed")
}

func TestBenchLedgerPrintsJSONAndCleansUp(t *testing.T) {
	url := pgtest.URL(t)
	r := stele(t, []string{"DATABASE_URL=" + url}, "bench", "ledger", "--events", "300", "--concurrency", "4", "--baseline", "--verify")
	var out map[string]float64
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
		t.Fatalf("bench: %+v", r)
	}
	for _, k := range []string{"events", "seconds", "events_per_sec", "p50_ms", "p99_ms", "copy_baseline_events_per_sec", "verify_db_events_per_sec", "sha256_events_per_sec"} {
		if out[k] <= 0 {
			t.Errorf("%s = %v", k, out[k])
		}
	}
	if out["events"] != 300 || out["event_bytes"] < 350 || out["event_bytes"] > 450 {
		t.Errorf("events %v of %v bytes", out["events"], out["event_bytes"])
	}
	pool, _ := pgxpool.New(context.Background(), url)
	defer pool.Close()
	var left int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'stele_bench_%'`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d scratch schemas left behind", left)
	}
}

// The independent verifier agrees with every vector in
// eventstore/testdata/vectors.json.
func TestIndependentVerifierSelfTest(t *testing.T) {
	python, ok := pythonVerifier(t)
	if !ok {
		t.Skip("python3 with the cryptography package is not installed")
	}
	if r := runEnv(t, nil, python[0], append(python[1:], "--self-test")...); r.code != 0 {
		t.Fatalf("self-test: %+v", r)
	}
}

// The keys commands act on a server's keysets through the database and
// the master key in the data folder; the ledger still verifies after a
// key is destroyed.
func TestKeysCommands(t *testing.T) {
	url := pgtest.Schema(t)
	dataDir := t.TempDir()
	cfg := ServerConfig{DB: dbFlags{url: url}, Keys: keyFlags{dataDir: dataDir, origin: "stele.test/keys"},
		Listen: "127.0.0.1:0", CheckpointInterval: time.Hour, KeyMaintenance: time.Hour, Logger: quietLogger()}
	s, err := StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(5 * time.Second)
	if fi, err := os.Stat(filepath.Join(dataDir, "master.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key: %v %v", fi, err)
	}
	ctx := context.Background()
	ada := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada"}}
	env := app.Env{Org: "acme", Project: "web", Env: "production"}
	ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB_URL"}
	for _, step := range []func() error{
		func() error { _, err := s.App.CreateOrganization(ctx, ada, "acme", "Acme"); return err },
		func() error { _, err := s.App.CreateProject(ctx, ada, "acme", "web", "Web"); return err },
		func() error {
			_, err := s.App.CreateEnvironment(ctx, ada, env, app.EnvSpec{Production: true})
			return err
		},
		func() error {
			_, err := s.App.SetSecret(ctx, ada, ref, app.SetSecret{Value: []byte("postgres://one")})
			return err
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	envs := []string{"DATABASE_URL=" + url, "STELE_DATA_DIR=" + dataDir}
	var st app.KeysetStatus
	r := stele(t, envs, "keys", "status", "--database-url", url, "acme/web/production", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || len(st.Keys) != 1 {
		t.Fatalf("status: %+v", r)
	}
	old := st.Primary
	r = stele(t, envs, "keys", "rotate", "--database-url", url, "acme/web/production", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Primary == old || !st.ResealComplete || st.Pending != 0 {
		t.Fatalf("rotate: %+v %+v", r, st)
	}
	oneLineError(t, stele(t, envs, "keys", "destroy", "--database-url", url, "acme/web/production", fmt.Sprint(old)), 1, "disable it before")
	if r := stele(t, envs, "keys", "disable", "--database-url", url, "acme/web/production", fmt.Sprint(old)); r.code != 0 {
		t.Fatalf("disable: %+v", r)
	}
	if r := stele(t, envs, "keys", "destroy", "--database-url", url, "acme/web/production", fmt.Sprint(old)); r.code != 0 || !strings.Contains(r.stdout, "destroyed") {
		t.Fatalf("destroy: %+v", r)
	}
	oneLineError(t, stele(t, envs, "keys", "status", "--database-url", url, "acme/web"), 2, "ORG/PROJECT/ENV")
	oneLineError(t, stele(t, envs, "keys", "disable", "--database-url", url, "acme/web/production", "x"), 2, "key id")
	// The server, which cached the keyset, reads the current value (resealed) …
	rv, err := s.App.RevealSecret(ctx, ada, ref, 0, "after destroy", domain.ChannelAPI)
	if err != nil || string(rv.Value) != "postgres://one" {
		t.Fatalf("reveal after the old key was destroyed elsewhere: %q %v", rv.Value, err)
	}
	// … and the ledger still verifies.
	if r := stele(t, envs, "ledger", "verify", "--database-url", url); r.code != 0 {
		t.Fatalf("verify after crypto-shredding: %+v", r)
	}
	// Without the master key, a server refuses to make a new one.
	os.Remove(filepath.Join(dataDir, "master.key"))
	oneLineError(t, stele(t, envs, "keys", "status", "--database-url", url, "acme/web/production"), 1, "restore the master key")
}

// A projector killed (SIGKILL) while a batch is open resumes with no
// missed and no doubled row: its tables then equal a rebuild from zero.
func TestProjectorSurvivesAKill(t *testing.T) {
	url := pgtest.Schema(t)
	cfg := ServerConfig{DB: dbFlags{url: url}, Keys: keyFlags{dataDir: t.TempDir(), origin: "stele.test/kill"}, NoProjector: true,
		Listen: "127.0.0.1:0", CheckpointInterval: time.Hour, KeyMaintenance: time.Hour, Logger: quietLogger()}
	s, err := StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(5 * time.Second)
	ctx := context.Background()
	ada := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada"}}
	env := app.Env{Org: "acme", Project: "web", Env: "production"}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.App.CreateOrganization(ctx, ada, "acme", "Acme"))
	must(s.App.CreateProject(ctx, ada, "acme", "web", "Web"))
	must(s.App.CreateEnvironment(ctx, ada, env, app.EnvSpec{}))
	for i := range 150 {
		ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: fmt.Sprintf("S%d", i%40)}
		must(s.App.SetSecret(ctx, ada, ref, app.SetSecret{Value: []byte(fmt.Sprint(i))}))
		if i%4 == 0 {
			must(s.App.RevealSecret(ctx, ada, ref, 0, "t", domain.ChannelAPI))
		}
	}
	head, err := s.Store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// First run: batches of 20; every batch past position 60 is held open
	// for 10 s, and the process is killed inside the first one held.
	cmd := exec.Command(steleBin, "projections", "run", "--batch", "20", "--database-url", url)
	cmd.Env = append(os.Environ(), "STELE_TEST_HOLD_BATCH_MS=10000", "STELE_TEST_HOLD_AFTER=60")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	var seen string
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(seen, "holding") && time.Now().Before(deadline) {
		n, err := stderr.Read(buf)
		seen += string(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.Contains(seen, "holding") {
		cmd.Process.Kill()
		t.Fatalf("the projector never held a batch: %s", seen)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var minPos, maxPos int64
	pool.QueryRow(ctx, `SELECT min(position), max(position) FROM projection_state`).Scan(&minPos, &maxPos)
	if maxPos < 60 || uint64(maxPos) >= head.Position {
		t.Fatalf("after the kill the projections stand at %d..%d of %d: the kill did not land mid-way", minPos, maxPos, head.Position)
	}

	// Second run resumes.
	cmd = exec.Command(steleBin, "projections", "run", "--database-url", url)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	if err := projections.WaitFor(ctx, pool, head.Position, time.Minute); err != nil {
		t.Fatal(err)
	}
	dump := func() map[string][]string {
		out := map[string][]string{}
		for _, p := range projections.All() {
			for _, table := range p.Tables() {
				rows, err := pool.Query(ctx, `SELECT t::text FROM `+pgx.Identifier{table}.Sanitize()+` t ORDER BY 1`)
				if err != nil {
					t.Fatal(err)
				}
				out[table], err = pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		return out
	}
	resumed := dump()
	var audit int
	pool.QueryRow(ctx, `SELECT count(*) FROM proj_audit`).Scan(&audit)
	if uint64(audit) != head.Position {
		t.Fatalf("the audit feed holds %d rows for %d events", audit, head.Position)
	}
	if r := stele(t, []string{"DATABASE_URL=" + url}, "projections", "rebuild"); r.code != 0 {
		t.Fatalf("rebuild: %+v", r)
	}
	rebuilt := dump()
	for table, rows := range resumed {
		if !slices.Equal(rows, rebuilt[table]) {
			t.Fatalf("%s after the kill and resume differs from a rebuild: %d rows, rebuilt %d", table, len(rows), len(rebuilt[table]))
		}
	}
	r := stele(t, []string{"DATABASE_URL=" + url}, "projections", "status", "--json")
	var sts []projections.Status
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &sts) != nil || len(sts) < 3 {
		t.Fatalf("status: %+v", r)
	}
	for _, st := range sts {
		if st.Status != "live" || st.LagEvents != 0 {
			t.Fatalf("status %+v", st)
		}
	}
}
