package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
)

// Status describes where a projection stands.
type Status struct {
	Name     string    `json:"name"`
	Version  int       `json:"version"`
	Position uint64    `json:"position"`
	Status   string    `json:"status"` // live, halted, building
	Error    string    `json:"error,omitempty"`
	Updated  time.Time `json:"updated_at"`
	// LagEvents is how many events the log holds beyond Position.
	LagEvents uint64 `json:"lag_events"`
	// LagMillis is how long ago the oldest event not yet applied was
	// appended (0 when caught up).
	LagMillis int64 `json:"lag_ms"`
}

// LogReader is the part of the log that statuses read.
type LogReader interface {
	Head(ctx context.Context) (eventstore.Head, error)
	ReadAll(ctx context.Context, from uint64, limit int) ([]eventstore.Record, error)
}

// Statuses returns every projection's status (shadow rebuilds included,
// named "<projection>#next"), against the log's head.
func Statuses(ctx context.Context, pool *pgxpool.Pool, store LogReader, now time.Time) ([]Status, error) {
	head, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := pool.Query(ctx, `SELECT name, version, position, status, error, updated_at FROM projection_state ORDER BY name`)
	if err != nil {
		return nil, err
	}
	var out []Status
	for rows.Next() {
		var s Status
		var pos int64
		if err := rows.Scan(&s.Name, &s.Version, &pos, &s.Status, &s.Error, &s.Updated); err != nil {
			rows.Close()
			return nil, err
		}
		s.Position = uint64(pos)
		if head.Position > s.Position {
			s.LagEvents = head.Position - s.Position
		}
		out = append(out, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].LagEvents == 0 {
			continue
		}
		recs, err := store.ReadAll(ctx, out[i].Position+1, 1)
		if err != nil {
			return nil, err
		}
		if len(recs) == 1 {
			out[i].LagMillis = max(0, now.Sub(recs[0].RecordedAt).Milliseconds())
		}
	}
	return out, nil
}

// ErrNotYet means a projection did not reach the position a read asked
// for within the time allowed.
var ErrNotYet = errors.New("projections: not caught up yet")

// WaitFor blocks until every named projection (all when names is empty)
// has applied position, or timeout passes (ErrNotYet). It is how a read
// sees its own writes: a write answers with its position; a read waits
// for it. When one of those projections is halted it fails at once with
// a *HaltedError (matching ErrHalted), whatever the position: a halted
// projection serves nothing, and waiting would not bring it back.
func WaitFor(ctx context.Context, pool *pgxpool.Pool, position uint64, timeout time.Duration, names ...string) error {
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for {
		var rows pgx.Rows
		var err error
		if len(names) == 0 {
			rows, err = pool.Query(ctx, `SELECT name, position, status, error FROM projection_state WHERE name NOT LIKE '%#next' ORDER BY name`)
		} else {
			rows, err = pool.Query(ctx, `SELECT name, position, status, error FROM projection_state WHERE name = ANY($1) ORDER BY name`, names)
		}
		if err != nil {
			return err
		}
		lowest, seen := uint64(0), false
		var halted *HaltedError
		for rows.Next() {
			var name, status, reason string
			var pos int64
			if err := rows.Scan(&name, &pos, &status, &reason); err != nil {
				rows.Close()
				return err
			}
			if status == "halted" && halted == nil {
				halted = &HaltedError{Projection: name, Reason: reason}
			}
			if !seen || uint64(pos) < lowest {
				lowest, seen = uint64(pos), true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if halted != nil {
			return halted
		}
		if lowest >= position {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: at %d, asked for %d", ErrNotYet, lowest, position)
		}
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
		delay = min64(2*delay, 20*time.Millisecond)
	}
}

func min64(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

// WaitFor is WaitFor woken by this projector's own commits, for callers
// in the same process.
func (p *Projector) WaitFor(ctx context.Context, name string, position uint64, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		p.mu.Lock()
		got, ch := p.applied[name], p.changed
		p.mu.Unlock()
		if got >= position {
			return nil
		}
		// Another process's projector may have applied it, or halted.
		err := WaitFor(ctx, p.cfg.Pool, position, 0, name)
		if err == nil || errors.Is(err, ErrHalted) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("%w: %s at %d, asked for %d", ErrNotYet, name, got, position)
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		}
	}
}
