package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/crypto"
	"stele.dev/stele/crypto/materialtest"
	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// newStore returns a store in a fresh schema of its own, and its pool.
func newStore(t *testing.T) (*pgstore.Store, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pgstore.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return pgstore.New(pool), pool
}

func TestConformance(t *testing.T) {
	materialtest.Run(t, func(t *testing.T) crypto.MaterialStore { s, _ := newStore(t); return s })
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	s, pool := newStore(t)
	m := crypto.Material{EnvID: "env-1", Version: 1, KEKURI: "local:///k", Wrapped: []byte("w")}
	if err := s.Put(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	if err := pgstore.Migrate(t.Context(), pool); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if _, err := s.Get(t.Context(), "env-1", 1); err != nil {
		t.Fatalf("material gone after a second Migrate: %v", err)
	}
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM keystore_schema_version`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("version table: %d rows, %v", n, err)
	}
}

// TestDeleteErasesTheRow checks with plain SQL, not through the store, that
// a deleted version's bytes are no longer in the table.
func TestDeleteErasesTheRow(t *testing.T) {
	s, pool := newStore(t)
	secret := []byte("wrapped keyset holding a destroyed key")
	for v, w := range [][]byte{secret, []byte("kept version")} {
		if err := s.Put(t.Context(), crypto.Material{EnvID: "env-1", Version: uint64(v + 1), KEKURI: "local:///k", Wrapped: w}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(t.Context(), "env-1", 1); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM keyset_material WHERE version = 1 OR position($1 in wrapped) > 0`, secret).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d rows still hold the deleted version", n)
	}
	var kept []byte
	if err := pool.QueryRow(t.Context(), `SELECT wrapped FROM keyset_material WHERE env_id = 'env-1' AND version = 2`).Scan(&kept); err != nil || !bytes.Equal(kept, []byte("kept version")) {
		t.Fatalf("version 2: %q, %v", kept, err)
	}
}

func TestVersionBeyondInt64(t *testing.T) {
	s, _ := newStore(t)
	big := uint64(1) << 63
	if err := s.Put(t.Context(), crypto.Material{EnvID: "e", Version: big, KEKURI: "local:///k", Wrapped: []byte("w")}); err == nil {
		t.Fatal("Put accepted a version beyond the bigint range")
	}
	if _, err := s.Get(t.Context(), "e", big); !errors.Is(err, crypto.ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	if err := s.Delete(t.Context(), "e", big); err != nil {
		t.Fatalf("Delete = %v", err)
	}
}

func TestUnmigratedSaysSo(t *testing.T) {
	pool, err := pgxpool.New(t.Context(), pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	_, err = pgstore.New(pool).Get(context.Background(), "e", 1)
	if err == nil || errors.Is(err, crypto.ErrNotFound) {
		t.Fatalf("Get without the table = %v, want a database error", err)
	}
}

// TestRoundTripThroughTheStore wraps a keyset, stores it, reads it back and
// unwraps it.
func TestRoundTripThroughTheStore(t *testing.T) {
	s, _ := newStore(t)
	dir := t.TempDir()
	uri, err := crypto.CreateLocalMasterKey(dir + "/master.key")
	if err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenKEK(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := crypto.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	ad := crypto.KeysetAD("org", "proj", "env")
	w, err := ks.Wrap(kek, ad)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), crypto.Material{EnvID: "env", Version: 1, KEKURI: kek.URI(), Wrapped: w}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Get(t.Context(), "env", 1)
	if err != nil {
		t.Fatal(err)
	}
	if crypto.MaterialHash(m.Wrapped) != crypto.MaterialHash(w) {
		t.Fatal("stored bytes differ")
	}
	kek2, err := crypto.OpenKEK(t.Context(), m.KEKURI)
	if err != nil {
		t.Fatal(err)
	}
	back, err := crypto.UnwrapKeyset(m.Wrapped, kek2, ad)
	if err != nil {
		t.Fatal(err)
	}
	if back.Primary() != ks.Primary() {
		t.Fatalf("primary %d, want %d", back.Primary(), ks.Primary())
	}
}
