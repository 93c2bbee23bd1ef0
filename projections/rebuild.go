package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
)

// RebuildBatch is how many events a rebuild reads and applies at once.
const RebuildBatch = 5000

// Rebuild builds projection name again from position 0 into shadow tables
// and swaps them in. Readers keep using the live tables until the swap,
// a short transaction that waits for the live projector's batch in
// flight, brings the shadow tables to the head, and renames them into
// place. A halted projection comes back to life this way (if the log
// passes the checks this time).
func (p *Projector) Rebuild(ctx context.Context, name string) error {
	_, err := p.RebuildReport(ctx, name)
	return err
}

// RebuildResult says how a rebuild went.
type RebuildResult struct {
	// Position is the last event the rebuilt tables hold.
	Position uint64
	// Duration is the whole rebuild's.
	Duration time.Duration
	// SwapStart is when the swap began to lock the live tables, and Swap
	// how long it took to lock them, rename them and commit: readers of
	// the projection waited at most this long (and at most the lock
	// timeout, 200 ms, on each failed attempt).
	SwapStart time.Time
	Swap      time.Duration
	// Attempts counts the swaps tried (one gives up when the live tables
	// stay busy longer than the lock timeout, and is tried again).
	Attempts int
}

// RebuildReport is Rebuild, and says how it went.
func (p *Projector) RebuildReport(ctx context.Context, name string) (RebuildResult, error) {
	var res RebuildResult
	pr, err := p.find(name)
	if err != nil {
		return res, err
	}
	if _, err := p.Setup(ctx); err != nil {
		return res, err
	}
	start := time.Now()
	shadow := pr.Name() + "#next"
	// Fresh shadow tables and state.
	tx, err := p.cfg.Pool.Begin(ctx)
	if err != nil {
		return res, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('stele-projection-setup'))`); err != nil {
		return res, err
	}
	for _, t := range pr.Tables() {
		if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+shadowNames(t)+`, `+oldNames(t)); err != nil {
			return res, err
		}
	}
	// Tables now, indexes once the bulk of the log is in (faster).
	var indexes []string
	for _, stmt := range pr.Create(shadowNames) {
		if strings.HasPrefix(strings.TrimSpace(stmt), "CREATE INDEX") {
			indexes = append(indexes, stmt)
			continue
		}
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return res, fmt.Errorf("projections: create shadow of %s: %w", name, err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM projection_state WHERE name = $1`, shadow); err != nil {
		return res, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO projection_state (name, version, status) VALUES ($1, $2, 'building')`, shadow, pr.Version()); err != nil {
		return res, err
	}
	if err := tx.Commit(ctx); err != nil {
		return res, err
	}

	// Catch up, reading the next page while the current one is applied.
	type page struct {
		recs []eventstore.Record
		err  error
	}
	pages := make(chan page, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(pages)
		for from := uint64(1); ; {
			recs, err := p.cfg.Store.ReadAll(rctx, from, RebuildBatch)
			select {
			case pages <- page{recs, err}:
			case <-rctx.Done():
				return
			}
			if err != nil || len(recs) < RebuildBatch {
				return
			}
			from = recs[len(recs)-1].Position + 1
		}
	}()
	var pos uint64
	var prev *eventstore.Hash
	for pg := range pages {
		if pg.err != nil {
			return res, pg.err
		}
		if len(pg.recs) == 0 {
			break
		}
		evs, err := decodeChecked(pg.recs, prev)
		if err != nil {
			return res, err
		}
		if pos, err = apply(ctx, p.cfg.Pool, pr, shadowNames, shadow, evs); err != nil {
			return res, err
		}
		h := evs[len(evs)-1].Hash
		prev = &h
	}
	cancel()
	for _, stmt := range indexes {
		if _, err := p.cfg.Pool.Exec(ctx, stmt); err != nil {
			return res, fmt.Errorf("projections: index shadow of %s: %w", name, err)
		}
	}
	// What arrived while the indexes were built, outside the swap: the
	// swap's own catch-up holds back the live projector.
	if pos, err = p.catchUp(ctx, pr, shadow, pos, nil); err != nil {
		return res, err
	}

	// Swap, in one short transaction. When readers keep a live table
	// busy past the lock timeout (a long query, a transaction left open),
	// give up the lock at once, so that the readers queued behind the swap
	// go on, and try again a little later; the last attempt waits as long
	// as it takes.
	for pause := 100 * time.Millisecond; ; pause = min(2*pause, 5*time.Second) {
		res.Attempts++
		timeout := swapLockTimeout
		if res.Attempts == maxSwapAttempts {
			timeout = 0
		}
		pos, res.SwapStart, res.Swap, err = p.swap(ctx, pr, shadow, pos, timeout)
		if err == nil {
			break
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55P03" { // lock_not_available
			return res, err
		}
		p.log.Warn("projection swap: a live table is busy; trying again", "projection", pr.Name(), "attempt", res.Attempts)
		if !sleep(ctx, pause) {
			return res, ctx.Err()
		}
	}
	res.Position, res.Duration = pos, time.Since(start)
	p.notify(pr.Name(), pos)
	p.log.Info("projection rebuilt", "projection", pr.Name(), "events", pos, "seconds", res.Duration.Seconds(),
		"swap_ms", float64(res.Swap.Microseconds())/1000, "swap_attempts", res.Attempts)
	return res, nil
}

// swapLockTimeout bounds how long a swap waits for the live tables'
// lock: while it waits, new readers of those tables queue behind it.
const swapLockTimeout = 200 * time.Millisecond

// maxSwapAttempts bounds the swap attempts (about 30 s in all); the last
// one waits for its lock without a timeout.
const maxSwapAttempts = 10

// catchUp applies the events after pos to the shadow tables, in batches
// of their own transactions (tx nil), or within tx. It returns the
// position reached.
func (p *Projector) catchUp(ctx context.Context, pr Projection, shadow string, pos uint64, tx pgx.Tx) (uint64, error) {
	for {
		recs, err := p.cfg.Store.ReadAll(ctx, pos+1, RebuildBatch)
		if err != nil {
			return pos, err
		}
		if len(recs) == 0 {
			return pos, nil
		}
		evs, err := decodeChecked(recs, nil)
		if err != nil {
			return pos, err
		}
		if tx == nil {
			pos, err = apply(ctx, p.cfg.Pool, pr, shadowNames, shadow, evs)
		} else {
			pos, err = applyTx(ctx, tx, pr, shadowNames, shadow, evs)
		}
		var ie *integrityError
		if errors.As(err, &ie) {
			return pos, fmt.Errorf("%w: %s", ErrHalted, ie.msg)
		}
		if err != nil {
			return pos, err
		}
	}
}

// swap brings the shadow tables to the head and puts them in place of
// the live ones, in one transaction. It returns the position reached,
// and when it began to lock the live tables and for how long. It waits
// at most lockTimeout (0: no limit) for that lock. Readers are not held up until the
// last statement: it locks the live tables (waiting at most lockTimeout
// for the readers in flight), drops them and renames the shadow tables
// and their indexes, in one round trip; the commit follows at once.
// Everything else (waiting for the live projector's batch in flight,
// applying what arrived meanwhile, the state rows, the names of the
// indexes) is done before, while readers still read the live tables.
func (p *Projector) swap(ctx context.Context, pr Projection, shadow string, pos uint64, lockTimeout time.Duration) (newPos uint64, locked time.Time, pause time.Duration, err error) {
	tx, err := p.cfg.Pool.Begin(ctx)
	if err != nil {
		return pos, locked, pause, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := lockState(ctx, tx, pr.Name()); err != nil { // waits for the live batch in flight
		return pos, locked, pause, err
	}
	// On failure the transaction rolls back, and the shadow tables are
	// still at pos.
	if _, err := p.catchUp(ctx, pr, shadow, pos, tx); err != nil {
		return pos, locked, pause, err
	}
	st, err := lockState(ctx, tx, shadow)
	if err != nil {
		return pos, locked, pause, err
	}
	if _, err := tx.Exec(ctx, `UPDATE projection_state SET version = $2, position = $3, hash = $4, event_time = (SELECT event_time FROM projection_state WHERE name = $5),
		status = 'live', error = '', updated_at = now() WHERE name = $1`, pr.Name(), pr.Version(), int64(st.position), st.hash[:], shadow); err != nil {
		return pos, locked, pause, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM projection_state WHERE name = $1`, shadow); err != nil {
		return pos, locked, pause, err
	}
	// The indexes' names. A renamed table keeps its indexes' names, so
	// the live tables' indexes take names of their own (by oid) to leave
	// theirs to the shadow tables' indexes.
	var tables []string
	for _, t := range pr.Tables() {
		tables = append(tables, t, t+shadowSuffix)
	}
	rows, err := tx.Query(ctx, `SELECT c.oid::int8, c.relname, t.relname FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
		WHERE t.relnamespace = current_schema()::regnamespace AND t.relname = ANY($1) ORDER BY 2`, tables)
	if err != nil {
		return pos, locked, pause, err
	}
	type index struct {
		oid         int64
		name, table string
	}
	idx, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
		var x index
		err := r.Scan(&x.oid, &x.name, &x.table)
		return x, err
	})
	if err != nil {
		return pos, locked, pause, err
	}
	var live []string
	for _, t := range pr.Tables() {
		live = append(live, liveNames(t))
	}
	var stmts []string
	if len(live) > 0 {
		stmts = append(stmts, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, lockTimeout.Milliseconds()),
			`LOCK TABLE `+strings.Join(live, ", ")+` IN ACCESS EXCLUSIVE MODE`,
			`SET LOCAL lock_timeout = 0`)
	}
	stmts = append(stmts,
		// Nothing is deleted in this transaction (the old tables are
		// dropped after it), so its commit need not wait for the WAL to
		// reach the disk, and readers do not wait for that either. If the
		// database crashed before it did, the swap is lost as a whole: the
		// old tables and their state come back, consistent, and the
		// shadow is rebuilt next time. Any later durable commit (the live
		// projector's next batch) makes it durable too.
		`SET LOCAL synchronous_commit = off`)
	for _, x := range idx {
		if !strings.HasSuffix(x.table, shadowSuffix) {
			stmts = append(stmts, `ALTER INDEX `+pgx.Identifier{x.name}.Sanitize()+` RENAME TO `+pgx.Identifier{fmt.Sprintf("stele_old_index_%d", x.oid)}.Sanitize())
		}
	}
	for _, t := range pr.Tables() {
		stmts = append(stmts, `ALTER TABLE `+liveNames(t)+` RENAME TO `+oldNames(t),
			`ALTER TABLE `+shadowNames(t)+` RENAME TO `+liveNames(t))
	}
	for _, x := range idx {
		if strings.HasSuffix(x.table, shadowSuffix) && strings.Contains(x.name, shadowSuffix) {
			stmts = append(stmts, `ALTER INDEX `+pgx.Identifier{x.name}.Sanitize()+` RENAME TO `+pgx.Identifier{strings.Replace(x.name, shadowSuffix, "", 1)}.Sanitize())
		}
	}
	// No arguments: one simple-protocol round trip for every statement.
	locked = time.Now()
	_, err = tx.Exec(ctx, strings.Join(stmts, ";\n"))
	if err == nil {
		err = tx.Commit(ctx)
	}
	pause = time.Since(locked)
	if err != nil {
		return pos, locked, pause, err
	}
	// The old tables, out of the way: readers that were waiting for
	// them found the new ones by name.
	if err := dropOld(ctx, p.cfg.Pool, pr); err != nil {
		p.log.Warn("projection swap: the old tables are left over; the next rebuild drops them", "projection", pr.Name(), "err", err)
	}
	return st.position, locked, pause, nil
}

// oldSuffix marks live tables replaced by a swap, until they are dropped.
const oldSuffix = "__old"

func oldNames(base string) string { return pgx.Identifier{base + oldSuffix}.Sanitize() }

// dropOld drops a projection's tables that a swap replaced.
func dropOld(ctx context.Context, pool *pgxpool.Pool, pr Projection) error {
	var old []string
	for _, t := range pr.Tables() {
		old = append(old, oldNames(t))
	}
	if len(old) == 0 {
		return nil
	}
	_, err := pool.Exec(ctx, `DROP TABLE IF EXISTS `+strings.Join(old, ", "))
	return err
}
