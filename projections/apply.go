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

func decodeEvent(r *eventstore.Record) (Event, error) {
	ev, err := domain.Decode(r.Type, r.Data)
	if err != nil {
		return Event{}, &integrityError{fmt.Sprintf("position %d: %v", r.Position, err)}
	}
	return Event{Record: *r, Event: ev}, nil
}

// apply applies recs to proj's tables under names n, as the projection
// whose state row is stateName, in one transaction with its new position.
// Records at or below the recorded position are skipped, so applying a
// batch twice changes nothing. It returns the position reached.
func apply(ctx context.Context, pool *pgxpool.Pool, proj Projection, n Names, stateName string, recs []Event) (uint64, error) {
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
	if BeforeCommit != nil {
		BeforeCommit(stateName, pos)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return pos, nil
}

// BeforeCommit, when set, runs inside each batch's transaction just
// before it commits. Crash tests set it to hold a batch open while they
// kill the process.
var BeforeCommit func(projection string, position uint64)

// applyTx is apply within the caller's transaction. An integrity failure
// comes back as *integrityError for the caller to record.
func applyTx(ctx context.Context, tx pgx.Tx, proj Projection, n Names, stateName string, recs []Event) (uint64, error) {
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
	// The events are checked among themselves (decodeChecked); here the
	// first must follow the last this projection applied.
	if recs[0].PrevHash != st.hash {
		return st.position, &integrityError{fmt.Sprintf("position %d: previous hash %s does not match the hash %s of position %d",
			recs[0].Position, recs[0].PrevHash, st.hash, st.position)}
	}
	if err := proj.Apply(ctx, tx, n, recs); err != nil {
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
