package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// ErrHalted means a projection stopped on an integrity failure; its
// status row says why. It stays stopped until rebuilt.
var ErrHalted = errors.New("projections: projection halted")

// state is a projection's row in projection_state.
type state struct {
	version  int
	position uint64
	hash     eventstore.Hash
	status   string
	err      string
}

// integrityError is a broken chain or a changed event.
type integrityError struct{ msg string }

func (e *integrityError) Error() string { return e.msg }

// decode turns records into events, checking the hash chain from prev.
func decode(recs []eventstore.Record, prev eventstore.Hash) ([]Event, error) {
	out := make([]Event, len(recs))
	var h eventstore.Hasher
	for i := range recs {
		r := &recs[i]
		if r.PrevHash != prev {
			return nil, &integrityError{fmt.Sprintf("position %d: previous hash %s does not match the hash %s of position %d", r.Position, r.PrevHash, prev, r.Position-1)}
		}
		if got := h.Hash(r); got != r.Hash {
			return nil, &integrityError{fmt.Sprintf("position %d: stored hash %s differs from the hash of its content %s", r.Position, r.Hash, got)}
		}
		ev, err := domain.Decode(r.Type, r.Data)
		if err != nil {
			return nil, &integrityError{fmt.Sprintf("position %d: %v", r.Position, err)}
		}
		out[i] = Event{Record: *r, Event: ev}
		prev = r.Hash
	}
	return out, nil
}

// apply applies recs to proj's tables under names n, as the projection
// whose state row is stateName, in one transaction with its new position.
// Records at or below the recorded position are skipped, so applying a
// batch twice changes nothing. It returns the position reached.
func apply(ctx context.Context, pool *pgxpool.Pool, proj Projection, n Names, stateName string, recs []eventstore.Record) (uint64, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	pos, err := applyTx(ctx, tx, proj, n, stateName, recs)
	var ie *integrityError
	if errors.As(err, &ie) {
		tx.Rollback(ctx)
		halt(context.WithoutCancel(ctx), pool, stateName, ie.msg)
		return pos, fmt.Errorf("%w: %s: %s", ErrHalted, stateName, ie.msg)
	}
	if err != nil {
		return pos, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return pos, nil
}

// applyTx is apply within the caller's transaction. An integrity failure
// comes back as *integrityError for the caller to record.
func applyTx(ctx context.Context, tx pgx.Tx, proj Projection, n Names, stateName string, recs []eventstore.Record) (uint64, error) {
	st, err := lockState(ctx, tx, stateName)
	if err != nil {
		return 0, err
	}
	if st.status == "halted" {
		return st.position, fmt.Errorf("%w: %s: %s", ErrHalted, stateName, st.err)
	}
	i := 0
	for i < len(recs) && recs[i].Position <= st.position {
		i++
	}
	recs = recs[i:]
	if len(recs) == 0 {
		return st.position, nil
	}
	if recs[0].Position != st.position+1 {
		return st.position, fmt.Errorf("projections: %s is at %d but the batch starts at %d", stateName, st.position, recs[0].Position)
	}
	events, err := decode(recs, st.hash)
	if err != nil {
		return st.position, err
	}
	if err := proj.Apply(ctx, tx, n, events); err != nil {
		return st.position, fmt.Errorf("projections: %s: %w", stateName, err)
	}
	last := recs[len(recs)-1]
	if _, err := tx.Exec(ctx, `UPDATE projection_state SET position = $2, hash = $3, event_time = $4, updated_at = now() WHERE name = $1`,
		stateName, int64(last.Position), last.Hash[:], last.RecordedAt); err != nil {
		return st.position, err
	}
	return last.Position, nil
}

func lockState(ctx context.Context, tx pgx.Tx, name string) (state, error) {
	var st state
	var pos int64
	var hash []byte
	err := tx.QueryRow(ctx, `SELECT version, position, hash, status, error FROM projection_state WHERE name = $1 FOR UPDATE`, name).
		Scan(&st.version, &pos, &hash, &st.status, &st.err)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("projections: no state for %s", name)
	}
	st.position = uint64(pos)
	copy(st.hash[:], hash)
	return st, err
}

// halt marks a projection halted and says so loudly.
func halt(ctx context.Context, pool *pgxpool.Pool, name, reason string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pool.Exec(ctx, `UPDATE projection_state SET status = 'halted', error = $2, updated_at = now() WHERE name = $1`, name, reason)
}
