package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// versionTable records which of this package's migrations ran. Other
// packages keep tables of their own.
const versionTable = "ledger_schema_version"

// Migrate brings the ledger's tables in the pool's schema (its search_path)
// up to date. It is safe to run from several processes at once (a
// PostgreSQL advisory lock serialises them) and a no-op when nothing is
// pending.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return RunMigrations(ctx, pool, versionTable, sub)
}

// RunMigrations applies the tern migrations in fsys (files named
// 001_name.sql, …) recording progress in versionTable.
func RunMigrations(ctx context.Context, pool *pgxpool.Pool, versionTable string, fsys fs.FS) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	m, err := migrate.NewMigrator(ctx, conn.Conn(), versionTable)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := m.LoadMigrations(fsys); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
