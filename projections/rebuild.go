package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	pr, err := p.find(name)
	if err != nil {
		return err
	}
	if _, err := p.Setup(ctx); err != nil {
		return err
	}
	start := time.Now()
	shadow := pr.Name() + "#next"
	// Fresh shadow tables and state.
	tx, err := p.cfg.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('stele-projection-setup'))`); err != nil {
		return err
	}
	for _, t := range pr.Tables() {
		if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+shadowNames(t)); err != nil {
			return err
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
			return fmt.Errorf("projections: create shadow of %s: %w", name, err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM projection_state WHERE name = $1`, shadow); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO projection_state (name, version, status) VALUES ($1, $2, 'building')`, shadow, pr.Version()); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
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
			return pg.err
		}
		if len(pg.recs) == 0 {
			break
		}
		evs, err := decodeChecked(pg.recs, prev)
		if err != nil {
			return err
		}
		if pos, err = apply(ctx, p.cfg.Pool, pr, shadowNames, shadow, evs); err != nil {
			return err
		}
		h := evs[len(evs)-1].Hash
		prev = &h
	}
	cancel()
	for _, stmt := range indexes {
		if _, err := p.cfg.Pool.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("projections: index shadow of %s: %w", name, err)
		}
	}

	// Swap.
	tx, err = p.cfg.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := lockState(ctx, tx, pr.Name()); err != nil { // waits for the live batch in flight
		return err
	}
	for {
		recs, err := p.cfg.Store.ReadAll(ctx, pos+1, RebuildBatch)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			break
		}
		evs, err := decodeChecked(recs, nil)
		if err != nil {
			return err
		}
		if pos, err = applyTx(ctx, tx, pr, shadowNames, shadow, evs); err != nil {
			var ie *integrityError
			if errors.As(err, &ie) {
				return fmt.Errorf("%w: %s", ErrHalted, ie.msg)
			}
			return err
		}
	}
	st, err := lockState(ctx, tx, shadow)
	if err != nil {
		return err
	}
	for _, t := range pr.Tables() {
		if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+liveNames(t)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `ALTER TABLE `+shadowNames(t)+` RENAME TO `+liveNames(t)); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1`, t)
		if err != nil {
			return err
		}
		idx, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, i := range idx {
			if strings.Contains(i, shadowSuffix) {
				if _, err := tx.Exec(ctx, `ALTER INDEX `+pgx.Identifier{i}.Sanitize()+` RENAME TO `+
					pgx.Identifier{strings.Replace(i, shadowSuffix, "", 1)}.Sanitize()); err != nil {
					return err
				}
			}
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE projection_state SET version = $2, position = $3, hash = $4, event_time = (SELECT event_time FROM projection_state WHERE name = $5),
		status = 'live', error = '', updated_at = now() WHERE name = $1`, pr.Name(), pr.Version(), int64(st.position), st.hash[:], shadow); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM projection_state WHERE name = $1`, shadow); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	p.notify(pr.Name(), st.position)
	p.log.Info("projection rebuilt", "projection", pr.Name(), "events", st.position, "seconds", time.Since(start).Seconds())
	return nil
}
