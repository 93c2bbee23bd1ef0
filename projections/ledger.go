package projections

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/domain"
)

// Ledger records the ledger's own facts: each full verification
// (proj_ledger_verifications), for the ledger status.
type Ledger struct{}

var _ Projection = Ledger{}

func (Ledger) Name() string     { return "ledger" }
func (Ledger) Version() int     { return 1 }
func (Ledger) Tables() []string { return []string{"proj_ledger_verifications"} }

func (Ledger) Create(n Names) []string {
	return []string{`CREATE TABLE ` + n("proj_ledger_verifications") + ` (
		position bigint PRIMARY KEY, recorded_at timestamptz NOT NULL, actor text NOT NULL,
		events bigint NOT NULL, head_hash text NOT NULL, root text NOT NULL, checkpoints integer NOT NULL,
		ok boolean NOT NULL, failure text NOT NULL, seconds double precision NOT NULL)`}
}

func (Ledger) Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error {
	for _, e := range batch {
		v, ok := e.Event.(domain.LedgerVerified)
		if !ok {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+n("proj_ledger_verifications")+`
			(position, recorded_at, actor, events, head_hash, root, checkpoints, ok, failure, seconds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			int64(e.Position), e.RecordedAt, e.Metadata.Actor, int64(v.Events), v.Head, v.Root, v.Checkpoints, v.OK, v.Failure, v.Seconds); err != nil {
			return err
		}
	}
	return nil
}

// LedgerStatus is the ledger status row for dashboards.
type LedgerStatus struct {
	Head           uint64    `json:"head"`
	HeadAt         time.Time `json:"head_at"`
	Checkpoint     uint64    `json:"last_checkpoint"`
	CheckpointAt   time.Time `json:"last_checkpoint_at"`
	VerifiedAt     time.Time `json:"last_verified_at"`
	VerifiedEvents uint64    `json:"last_verified_events"`
	VerifiedOK     bool      `json:"last_verification_ok"`
	Failure        string    `json:"last_verification_failure,omitempty"`
}

// LedgerState returns the ledger status: head, latest checkpoint and
// latest full verification.
func LedgerState(ctx context.Context, pool *pgxpool.Pool) (LedgerStatus, error) {
	var s LedgerStatus
	if err := CheckHalted(ctx, pool, Ledger{}.Name()); err != nil {
		return s, err
	}
	var head int64
	var cp *int64
	var headAt, cpAt *time.Time
	err := pool.QueryRow(ctx, `SELECT h.position, h.recorded_at, c.size, c.created_at
		FROM ledger_head h LEFT JOIN LATERAL (SELECT size, created_at FROM ledger_checkpoints ORDER BY size DESC LIMIT 1) c ON true`).
		Scan(&head, &headAt, &cp, &cpAt)
	if err != nil {
		return s, err
	}
	s.Head = uint64(head)
	if cp != nil {
		s.Checkpoint = uint64(*cp)
	}
	if headAt != nil {
		s.HeadAt = headAt.UTC()
	}
	if cpAt != nil {
		s.CheckpointAt = cpAt.UTC()
	}
	var events int64
	err = pool.QueryRow(ctx, `SELECT recorded_at, events, ok, failure FROM proj_ledger_verifications ORDER BY position DESC LIMIT 1`).
		Scan(&s.VerifiedAt, &events, &s.VerifiedOK, &s.Failure)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return s, err
	}
	s.VerifiedEvents = uint64(events)
	s.VerifiedAt = s.VerifiedAt.UTC()
	return s, nil
}
