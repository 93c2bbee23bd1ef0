package app_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"

	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/internal/pgtest"
)

func mainWithPG(m *testing.M) int { return pgtest.Main(m) }

// pgFixture runs the service on PostgreSQL, in a schema of its own.
func pgFixture(t testing.TB) (*fixture, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	store, err := postgres.Open(ctx, pool, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return newFixture(t, store, pgstore.New(pool), nil), pool
}

// A scenario through every kind of change, then a scan of every table of
// the schema, the log and the logs for the values as bytes, base64 and hex.
func TestNoPlaintextInAnyTable(t *testing.T) {
	f, pool := pgFixture(t)
	f.setup(t)
	values := []string{"postgres://user:hunter2@db:5432/app", "sk_live_51HcQ9vKZ3", "multi\nline\x00binary\xff"}
	refs := []domain.SecretRef{dbURL, {Org: "acme", Project: "web", Env: "production", Name: "STRIPE_KEY"}, {Org: "acme", Project: "web", Env: "production", Name: "BLOB"}}
	for i, ref := range refs {
		f.set(t, bob, ref, values[i])
	}
	f.set(t, bob, dbURL, values[1]+"-rotated")
	old := ok(f.svc.KeysetStatus(ctx, ada, prod))
	ok(f.svc.RotateKeyset(ctx, ada, prod, "manual"))
	ok(f.svc.Reseal(ctx, prod))
	ok(f.svc.RollbackSecret(ctx, bob, dbURL, 1))
	f.reveal(t, bob, refs[1], 0)
	ok(f.svc.DisableKey(ctx, ada, prod, old.Primary))
	ok(f.svc.DestroyKey(ctx, ada, prod, old.Primary))
	if got := f.reveal(t, bob, dbURL, 0); got != values[0] {
		t.Fatalf("after the scenario: %q", got)
	}
	all := append(values, values[1]+"-rotated")

	rows, err := pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	if len(tables) < 5 {
		t.Fatalf("only tables %v", tables)
	}
	for _, table := range tables {
		rows, err := pool.Query(ctx, `SELECT t::text FROM `+pgx.Identifier{table}.Sanitize()+` t`)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var row string
			if err := rows.Scan(&row); err != nil {
				t.Fatal(err)
			}
			n++
			for _, v := range all {
				for _, needle := range forms(v) {
					if strings.Contains(row, string(needle)) {
						t.Fatalf("table %s holds %q as %q", table, v, needle)
					}
				}
			}
		}
		rows.Close()
		t.Logf("table %s: %d rows scanned", table, n)
	}
	assertNoPlaintext(t, f, all...)
}

// Rotations and reseals while 16 writers and 16 readers run: every read
// succeeds and every write is there afterwards with its value.
func TestRotationUnderLoad(t *testing.T) {
	f, _ := pgFixture(t)
	f.setup(t)
	const secrets, writers, readers, updates = 8, 16, 16, 15
	refs := make([]domain.SecretRef, secrets)
	for i := range refs {
		refs[i] = domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: fmt.Sprintf("S%d", i)}
		f.set(t, bob, refs[i], "initial")
	}
	type write struct {
		ref     domain.SecretRef
		version uint64
		value   string
	}
	var mu sync.Mutex
	var written []write
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, writers+readers+1)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range updates {
				ref := refs[(w+i)%secrets]
				v := fmt.Sprintf("w%d-%d", w, i)
				r, err := f.svc.SetSecret(ctx, bob, ref, app.SetSecret{Value: []byte(v)})
				if err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				mu.Lock()
				written = append(written, write{ref, r.Version, v})
				mu.Unlock()
			}
		}()
	}
	var reads atomic.Int64
	var rwg sync.WaitGroup
	for r := range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := f.svc.RevealSecret(ctx, bob, refs[(r+i)%secrets], 0, "load", domain.ChannelRun); err != nil {
					errs <- fmt.Errorf("reader %d: %w", r, err)
					return
				}
				reads.Add(1)
			}
		}()
	}
	rotations := 0
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.svc.RotateKeyset(ctx, ada, prod, "load test"); err != nil {
				errs <- fmt.Errorf("rotate: %w", err)
				return
			}
			if _, err := f.svc.Reseal(ctx, prod); err != nil {
				errs <- fmt.Errorf("reseal: %w", err)
				return
			}
			rotations++
		}
	}()
	wg.Wait()
	close(stop)
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if rotations < 2 || reads.Load() < 100 {
		t.Fatalf("only %d rotations and %d reads happened during the writes", rotations, reads.Load())
	}
	// No lost write: every version holds what was written.
	if len(written) != writers*updates {
		t.Fatalf("%d writes recorded", len(written))
	}
	seen := map[string]bool{}
	for _, w := range written {
		key := fmt.Sprintf("%s@%d", w.ref.Name, w.version)
		if seen[key] {
			t.Fatalf("two writes got %s", key)
		}
		seen[key] = true
		if got := f.reveal(t, bob, w.ref, w.version); got != w.value {
			t.Fatalf("%s holds %q, want %q", key, got, w.value)
		}
	}
	// Everything ends sealed by the last primary once resealed.
	ok(f.svc.Reseal(ctx, prod))
	st := ok(f.svc.KeysetStatus(ctx, ada, prod))
	if st.Pending != 0 || !st.ResealComplete {
		t.Fatalf("after the load: %+v", st)
	}
	t.Logf("%d writes, %d reads, %d rotations with reseals", len(written), reads.Load(), rotations)
}
