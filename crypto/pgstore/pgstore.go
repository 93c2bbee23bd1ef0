// Package pgstore keeps wrapped environment keysets (crypto.Material) in
// PostgreSQL, in the table keyset_material.
//
// The table is mutable, unlike the ledger's: Delete removes rows, which is
// how a destroyed key is erased. A DELETE makes the bytes unreachable at
// once; PostgreSQL reuses their space after VACUUM (autovacuum does it),
// and copies in WAL archives and backups last as long as those are kept
// (docs/crypto.md).
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/crypto"
	"stele.dev/stele/eventstore/postgres"
)

//go:embed migrations/*.sql
var migrations embed.FS

// versionTable records which of this package's migrations ran.
const versionTable = "keystore_schema_version"

// Migrate creates or updates the keyset_material table in the pool's
// schema (its search_path). It is safe to run from several processes at
// once and a no-op when nothing is pending.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	if err := postgres.RunMigrations(ctx, pool, versionTable, sub); err != nil {
		return fmt.Errorf("pgstore: %w", err)
	}
	return nil
}

// Store is a crypto.MaterialStore on PostgreSQL. It is safe for concurrent
// use.
type Store struct {
	pool *pgxpool.Pool
	// Now gives the CreatedAt of material put with a zero CreatedAt;
	// time.Now if nil.
	Now func() time.Time
}

var _ crypto.MaterialStore = (*Store)(nil)

// New returns a Store using pool. Run Migrate first.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// dbVersion converts a keyset version to the bigint column's type.
func dbVersion(v uint64) (int64, error) {
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("pgstore: keyset version %d exceeds the stored range", v)
	}
	return int64(v), nil
}

// Put implements crypto.MaterialStore. CreatedAt is stored with
// microsecond precision.
func (s *Store) Put(ctx context.Context, m crypto.Material) error {
	if err := crypto.CheckMaterial(m); err != nil {
		return err
	}
	v, err := dbVersion(m.Version)
	if err != nil {
		return err
	}
	if m.CreatedAt.IsZero() {
		now := time.Now
		if s.Now != nil {
			now = s.Now
		}
		m.CreatedAt = now()
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO keyset_material (env_id, version, kek_uri, wrapped, created_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (env_id, version) DO NOTHING`,
		m.EnvID, v, m.KEKURI, m.Wrapped, m.CreatedAt)
	if err != nil {
		return fmt.Errorf("pgstore: put material: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: environment %s version %d", crypto.ErrExists, m.EnvID, m.Version)
	}
	return nil
}

// Get implements crypto.MaterialStore.
func (s *Store) Get(ctx context.Context, envID string, version uint64) (crypto.Material, error) {
	m := crypto.Material{EnvID: envID, Version: version}
	v, err := dbVersion(version)
	if err != nil {
		return crypto.Material{}, fmt.Errorf("%w: environment %s version %d", crypto.ErrNotFound, envID, version)
	}
	err = s.pool.QueryRow(ctx, `SELECT kek_uri, wrapped, created_at FROM keyset_material WHERE env_id = $1 AND version = $2`,
		envID, v).Scan(&m.KEKURI, &m.Wrapped, &m.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return crypto.Material{}, fmt.Errorf("%w: environment %s version %d", crypto.ErrNotFound, envID, version)
	}
	if err != nil {
		return crypto.Material{}, fmt.Errorf("pgstore: get material: %w", err)
	}
	return m, nil
}

// Versions implements crypto.MaterialStore.
func (s *Store) Versions(ctx context.Context, envID string) ([]uint64, error) {
	rows, err := s.pool.Query(ctx, `SELECT version FROM keyset_material WHERE env_id = $1 ORDER BY version`, envID)
	if err != nil {
		return nil, fmt.Errorf("pgstore: versions: %w", err)
	}
	vs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (uint64, error) {
		var v int64
		err := r.Scan(&v)
		return uint64(v), err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: versions: %w", err)
	}
	return vs, nil
}

// Delete implements crypto.MaterialStore.
func (s *Store) Delete(ctx context.Context, envID string, versions ...uint64) error {
	vs := make([]int64, 0, len(versions))
	for _, v := range versions {
		if v <= math.MaxInt64 { // larger versions cannot be stored
			vs = append(vs, int64(v))
		}
	}
	if len(vs) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM keyset_material WHERE env_id = $1 AND version = ANY($2)`, envID, vs); err != nil {
		return fmt.Errorf("pgstore: delete material: %w", err)
	}
	return nil
}

// Envs implements crypto.MaterialStore.
func (s *Store) Envs(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT env_id FROM keyset_material ORDER BY env_id`)
	if err != nil {
		return nil, fmt.Errorf("pgstore: envs: %w", err)
	}
	es, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("pgstore: envs: %w", err)
	}
	return es, nil
}
