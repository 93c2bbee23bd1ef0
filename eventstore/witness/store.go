package witness

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/postgres"
)

//go:embed migrations/*.sql
var migrations embed.FS

// versionTable records which of this package's migrations ran.
const versionTable = "witness_schema_version"

// Migrate creates or updates the witness_cosignatures table in the pool's
// schema (its search_path). It is safe to run from several processes at
// once and a no-op when nothing is pending.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	if err := postgres.RunMigrations(ctx, pool, versionTable, sub); err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	return nil
}

// Store keeps verified cosignatures in PostgreSQL. It does not check
// them: Open does, before they are added. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store using pool. Run Migrate first.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

func dbSize(n uint64) (int64, error) {
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("witness: size %d exceeds the stored range", n)
	}
	return int64(n), nil
}

// Add stores a cosignature. A witness's second cosignature of the same
// checkpoint size is ignored: the first one is kept.
func (s *Store) Add(ctx context.Context, c Cosignature) error {
	size, err := dbSize(c.Size)
	if err != nil {
		return err
	}
	if c.Size == 0 || c.Key == "" || c.Witness == "" || c.Signature == "" {
		return fmt.Errorf("witness: incomplete cosignature %+v", c)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO witness_cosignatures (witness_key, witness_name, size, root, signature, cosigned_at, received_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (witness_key, size) DO NOTHING`,
		c.Key, c.Witness, size, c.Root[:], c.Signature, c.CosignedAt.UTC(), c.ReceivedAt.UTC())
	if err != nil {
		return fmt.Errorf("witness: store cosignature: %w", err)
	}
	return nil
}

const cosignatureColumns = `witness_key, witness_name, size, root, signature, cosigned_at, received_at`

func scanCosignature(row pgx.Row) (Cosignature, error) {
	var c Cosignature
	var size int64
	var root []byte
	if err := row.Scan(&c.Key, &c.Witness, &size, &root, &c.Signature, &c.CosignedAt, &c.ReceivedAt); err != nil {
		return c, err
	}
	c.Size = uint64(size)
	copy(c.Root[:], root)
	c.CosignedAt, c.ReceivedAt = c.CosignedAt.UTC(), c.ReceivedAt.UTC()
	return c, nil
}

func collect(rows pgx.Rows) ([]Cosignature, error) {
	defer rows.Close()
	out := []Cosignature{}
	for rows.Next() {
		c, err := scanCosignature(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Cosignatures returns the cosignatures of the checkpoint of this size
// and root, ordered by witness name and key.
func (s *Store) Cosignatures(ctx context.Context, size uint64, root eventstore.Hash) ([]Cosignature, error) {
	n, err := dbSize(size)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+cosignatureColumns+` FROM witness_cosignatures
		WHERE size = $1 AND root = $2 ORDER BY witness_name, witness_key`, n, root[:])
	if err != nil {
		return nil, fmt.Errorf("witness: cosignatures: %w", err)
	}
	out, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("witness: cosignatures: %w", err)
	}
	return out, nil
}

// Latest returns the newest cosignature stored for each witness key.
func (s *Store) Latest(ctx context.Context) (map[string]Cosignature, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (witness_key) `+cosignatureColumns+` FROM witness_cosignatures
		ORDER BY witness_key, size DESC`)
	if err != nil {
		return nil, fmt.Errorf("witness: latest cosignatures: %w", err)
	}
	cs, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("witness: latest cosignatures: %w", err)
	}
	out := make(map[string]Cosignature, len(cs))
	for _, c := range cs {
		out[c.Key] = c
	}
	return out, nil
}

// LatestSize returns the largest checkpoint size cosigned by the witness
// with this verifier key, 0 if none.
func (s *Store) LatestSize(ctx context.Context, key string) (uint64, error) {
	var n *int64
	if err := s.pool.QueryRow(ctx, `SELECT max(size) FROM witness_cosignatures WHERE witness_key = $1`, key).Scan(&n); err != nil {
		return 0, fmt.Errorf("witness: latest size: %w", err)
	}
	if n == nil {
		return 0, nil
	}
	return uint64(*n), nil
}

// Witnessed is a checkpoint and the cosignatures it holds.
type Witnessed struct {
	Size         uint64
	Root         eventstore.Hash
	Cosignatures []Cosignature
}

// Witnessed returns up to limit (1 to 1000) cosigned checkpoints with a
// size below before (0: any), newest first, each with its cosignatures.
func (s *Store) Witnessed(ctx context.Context, before uint64, limit int) ([]Witnessed, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	below := int64(math.MaxInt64)
	if before > 0 {
		var err error
		if below, err = dbSize(before); err != nil {
			return nil, err
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+cosignatureColumns+` FROM witness_cosignatures
		WHERE size IN (SELECT DISTINCT size FROM witness_cosignatures WHERE size < $1 ORDER BY size DESC LIMIT $2)
		ORDER BY size DESC, root, witness_name, witness_key`, below, limit)
	if err != nil {
		return nil, fmt.Errorf("witness: witnessed checkpoints: %w", err)
	}
	cs, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("witness: witnessed checkpoints: %w", err)
	}
	out := []Witnessed{}
	for _, c := range cs {
		if n := len(out); n == 0 || out[n-1].Size != c.Size || out[n-1].Root != c.Root {
			out = append(out, Witnessed{Size: c.Size, Root: c.Root})
		}
		out[len(out)-1].Cosignatures = append(out[len(out)-1].Cosignatures, c)
	}
	return out, nil
}
