package projections

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// HaltedError is a read refused because a projection it depends on is
// halted: the projector met an event that failed an integrity check (a
// changed event, a broken link) and stopped that projection, so its
// tables no longer follow the log. It matches ErrHalted.
type HaltedError struct {
	// Projection is the halted projection's name.
	Projection string
	// Reason is what the projector found (for operators: it names a
	// position and hashes).
	Reason string
}

func (e *HaltedError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrHalted, e.Projection, e.Reason)
}

// Unwrap makes errors.Is(err, ErrHalted) hold.
func (e *HaltedError) Unwrap() error { return ErrHalted }

// Halted returns the live projections (shadow rebuilds left out) that are
// halted, by name, with their reasons.
func Halted(ctx context.Context, pool *pgxpool.Pool) (map[string]string, error) {
	rows, err := pool.Query(ctx, `SELECT name, error FROM projection_state WHERE status = 'halted' AND name NOT LIKE '%#next'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, reason string
		if err := rows.Scan(&name, &reason); err != nil {
			return nil, err
		}
		out[name] = reason
	}
	return out, rows.Err()
}

// CheckHalted returns a *HaltedError when one of the named projections
// (any live one when names is empty) is halted. It asks the database
// every time; Reader.CheckHalted caches the answer briefly.
func CheckHalted(ctx context.Context, pool *pgxpool.Pool, names ...string) error {
	halted, err := Halted(ctx, pool)
	if err != nil {
		return err
	}
	return haltedAmong(halted, names)
}

func haltedAmong(halted map[string]string, names []string) error {
	if len(halted) == 0 {
		return nil
	}
	if len(names) == 0 {
		for name := range halted {
			names = append(names, name)
		}
		slices.Sort(names)
	}
	for _, n := range names {
		if reason, ok := halted[n]; ok {
			return &HaltedError{Projection: n, Reason: reason}
		}
	}
	return nil
}

// haltCacheTTL is how long a Reader trusts its last look at which
// projections are halted. A halted projection's tables hold the history
// up to the event before the one that failed its check, which is sound;
// they stop being served at most this long after the projector halts.
const haltCacheTTL = 200 * time.Millisecond

// haltCache remembers which projections are halted, for haltCacheTTL, so
// that reads do not each ask the database.
type haltCache struct {
	pool *pgxpool.Pool

	mu     sync.Mutex
	at     time.Time
	halted map[string]string
}

func (c *haltCache) check(ctx context.Context, names ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= haltCacheTTL {
		halted, err := Halted(ctx, c.pool)
		if err != nil {
			return err
		}
		c.halted, c.at = halted, time.Now()
	}
	return haltedAmong(c.halted, names)
}
