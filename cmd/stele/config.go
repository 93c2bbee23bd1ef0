package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/eventstore/witness"
	"stele.dev/stele/internal/pglocal"
	"stele.dev/stele/projections"
)

// dbFlags is the database connection every ledger command takes.
type dbFlags struct {
	url string
	dev bool
}

func (f *dbFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "database-url", "", "PostgreSQL connection URL (default $DATABASE_URL)")
	fs.BoolVar(&f.dev, "dev", false, "with no database URL, use (and start if needed) the project's private PostgreSQL under .stele/postgres")
}

// resolve returns the connection URL: the flag, then $DATABASE_URL, then,
// with --dev, the project's private cluster.
func (f *dbFlags) resolve(ctx context.Context, logger *slog.Logger) (string, error) {
	if f.url != "" {
		return f.url, nil
	}
	if v := strings.TrimSpace(os.Getenv("DATABASE_URL")); v != "" {
		return v, nil
	}
	if !f.dev {
		return "", usageError{errors.New("no database: pass --database-url, set DATABASE_URL, or use --dev for a private local PostgreSQL")}
	}
	dir, err := pglocal.DefaultDir()
	if err != nil {
		return "", err
	}
	admin, err := pglocal.Ensure(ctx, dir, pglocal.Options{
		Install: true,
		Logf:    func(format string, args ...any) { logger.Info(fmt.Sprintf(format, args...)) },
	})
	if err != nil {
		return "", err
	}
	return devDatabase(ctx, admin)
}

// devDatabaseName is the database that --dev uses in the private cluster;
// tests make databases of their own there.
const devDatabaseName = "stele"

// devDatabase creates the development database if needed and returns its URL.
func devDatabase(ctx context.Context, adminURL string) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("local PostgreSQL: %v", redactErr(err))
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, devDatabaseName).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+devDatabaseName); err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42P04" { // created meanwhile by another process
				return "", err
			}
		}
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + devDatabaseName
	return u.String(), nil
}

// connect opens a pool on the resolved database.
func (f *dbFlags) connect(ctx context.Context, logger *slog.Logger, maxConns int32) (*pgxpool.Pool, error) {
	url, err := f.resolve(ctx, logger)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, usageError{fmt.Errorf("database URL: %v", redactErr(err))}
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "stele"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %v", redactErr(err))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s: %v", redactURL(url), redactErr(err))
	}
	return pool, nil
}

// openStore connects, migrates and opens the ledger.
func (f *dbFlags) openStore(ctx context.Context, logger *slog.Logger, maxConns int32) (*postgres.Store, *pgxpool.Pool, error) {
	pool, err := f.connect(ctx, logger, maxConns)
	if err != nil {
		return nil, nil, err
	}
	if err := migrateAll(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, err
	}
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: logger})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return store, pool, nil
}

// migrateAll applies every component's schema migrations.
func migrateAll(ctx context.Context, pool *pgxpool.Pool) error {
	if err := postgres.Migrate(ctx, pool); err != nil {
		return err
	}
	if err := pgstore.Migrate(ctx, pool); err != nil {
		return err
	}
	if err := witness.Migrate(ctx, pool); err != nil {
		return err
	}
	return projections.Migrate(ctx, pool)
}

// open is openStore for commands: it returns one function that closes
// the store and the pool.
func (f *dbFlags) open(ctx context.Context, logger *slog.Logger, maxConns int32) (*postgres.Store, func(), error) {
	store, pool, err := f.openStore(ctx, logger, maxConns)
	if err != nil {
		return nil, nil, err
	}
	return store, func() { store.Close(); pool.Close() }, nil
}

// redactURL hides a password in a connection URL.
func redactURL(u string) string {
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		return "(unparsable URL)"
	}
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// redactErr keeps passwords that pgx may echo out of error messages.
func redactErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "password="); i >= 0 {
		j := strings.IndexAny(s[i:], " )")
		if j < 0 {
			j = len(s) - i
		}
		s = s[:i] + "password=REDACTED" + s[i+j:]
	}
	return s
}

// keyFlags locate the ledger's checkpoint signing key.
type keyFlags struct {
	dataDir string
	keyFile string
	origin  string
	kekURI  string
}

func (k *keyFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&k.dataDir, "data-dir", "", "folder for the server's files: signing key, checkpoint state (default $STELE_DATA_DIR, or .stele/data with --dev, or ~/.local/share/stele)")
	fs.StringVar(&k.keyFile, "signing-key-file", "", "checkpoint signing key file (default $STELE_SIGNING_KEY_FILE or <data-dir>/ledger-signing.key); $STELE_SIGNING_KEY may hold the key itself")
	fs.StringVar(&k.origin, "log-origin", "", "the log's origin, used when the signing key is first created (default $STELE_LOG_ORIGIN or stele.local/<random>)")
	fs.StringVar(&k.kekURI, "kek-uri", "", "the key-encryption key that wraps environment keysets: local:///path, env://VAR, aws-kms://…, gcp-kms://… (default $STELE_KEK_URI or local://<data-dir>/master.key)")
}

func (k *keyFlags) dir(dev bool) (string, error) {
	if k.dataDir != "" {
		return k.dataDir, nil
	}
	if v := os.Getenv("STELE_DATA_DIR"); v != "" {
		return v, nil
	}
	if dev {
		root, err := pglocal.ModuleRoot()
		if err != nil {
			return "", err
		}
		return filepath.Join(root, ".stele", "data"), nil
	}
	if v := os.Getenv("XDG_DATA_HOME"); v != "" {
		return filepath.Join(v, "stele"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no data folder: set --data-dir or STELE_DATA_DIR (%v)", err)
	}
	return filepath.Join(home, ".local", "share", "stele"), nil
}

func (k *keyFlags) path(dev bool) (string, error) {
	if k.keyFile != "" {
		return k.keyFile, nil
	}
	if v := os.Getenv("STELE_SIGNING_KEY_FILE"); v != "" {
		return v, nil
	}
	d, err := k.dir(dev)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "ledger-signing.key"), nil
}

func (k *keyFlags) originOrDefault() string {
	if k.origin != "" {
		return k.origin
	}
	if v := os.Getenv("STELE_LOG_ORIGIN"); v != "" {
		return v
	}
	return "stele.local/" + randomHex(6)
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: use text or json", format)}
	}
}

// quietLogger is for client commands: warnings and errors only.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func addLogFlags(cmd *cobra.Command, format, level *string) {
	cmd.Flags().StringVar(format, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(level, "log-level", "info", "log level: debug, info, warn or error")
}
