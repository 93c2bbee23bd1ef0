package projections

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/postgres"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates the projection_state table.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return postgres.RunMigrations(ctx, pool, "projections_schema_version", sub)
}

// Config wires a Projector.
type Config struct {
	Pool   *pgxpool.Pool
	Store  eventstore.Store
	Logger *slog.Logger
	// Batch caps the events in one delivery (default 2000).
	Batch int
	// OnApplied, if set, is called after each committed batch: tests and
	// benchmarks use it to time projection lag.
	OnApplied func(projection string, position uint64)
}

// Projector keeps projections up to date with the log.
type Projector struct {
	cfg   Config
	projs []Projection
	log   *slog.Logger

	tail *tail

	mu      sync.Mutex
	applied map[string]uint64
	changed chan struct{}
}

// New returns a projector for projs.
func New(cfg Config, projs ...Projection) *Projector {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 2000
	}
	return &Projector{cfg: cfg, projs: projs, log: cfg.Logger, tail: newTail(cfg.Store, 20*cfg.Batch), applied: map[string]uint64{}, changed: make(chan struct{})}
}

// SetBatch changes the most events per delivered batch; call it before Run.
func (p *Projector) SetBatch(n int) { p.cfg.Batch = n; p.tail.max = 20 * n }

// Projections returns the registered projections.
func (p *Projector) Projections() []Projection { return p.projs }

func (p *Projector) find(name string) (Projection, error) {
	for _, pr := range p.projs {
		if pr.Name() == name {
			return pr, nil
		}
	}
	return nil, fmt.Errorf("projections: no projection %q", name)
}

// Setup creates the tables and state of projections that have none. It
// returns the projections whose recorded version differs from their code:
// they need a rebuild.
func (p *Projector) Setup(ctx context.Context) ([]Projection, error) {
	var stale []Projection
	for _, pr := range p.projs {
		tx, err := p.cfg.Pool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		// One projector at a time sets up (several servers may start together).
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('stele-projection-setup'))`); err != nil {
			tx.Rollback(ctx)
			return nil, err
		}
		var version int
		err = tx.QueryRow(ctx, `SELECT version FROM projection_state WHERE name = $1`, pr.Name()).Scan(&version)
		switch {
		case err == nil:
			if version != pr.Version() {
				stale = append(stale, pr)
			}
			tx.Rollback(ctx)
			continue
		case !isNoRows(err):
			tx.Rollback(ctx)
			return nil, err
		}
		for _, stmt := range pr.Create(liveNames) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				tx.Rollback(ctx)
				return nil, fmt.Errorf("projections: create %s: %w", pr.Name(), err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO projection_state (name, version) VALUES ($1, $2)`, pr.Name(), pr.Version()); err != nil {
			tx.Rollback(ctx)
			return nil, err
		}
		if err := tx.Commit(ctx); err != nil {
			return nil, err
		}
	}
	return stale, nil
}

// Run feeds every projection through a Watermill Router until ctx is
// done. Projections whose version changed are rebuilt first, in the
// background, while their old tables keep serving.
func (p *Projector) Run(ctx context.Context) error {
	stale, err := p.Setup(ctx)
	if err != nil {
		return err
	}
	for _, pr := range stale {
		go func() {
			if err := p.Rebuild(ctx, pr.Name()); err != nil && ctx.Err() == nil {
				p.log.Error("projection rebuild failed", "projection", pr.Name(), "err", err)
			}
		}()
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second},
		watermill.NewSlogLogger(slog.New(minLevel{p.log.Handler(), slog.LevelWarn}).With("component", "projections")))
	if err != nil {
		return err
	}
	router.AddMiddleware(middleware.Recoverer)
	sub := newLogSubscriber(p.cfg.Pool, p.cfg.Store, p.tail, p.cfg.Batch)
	for _, pr := range p.projs {
		router.AddConsumerHandler(pr.Name(), pr.Name(), sub, p.handler(pr))
	}
	err = router.Run(ctx)
	sub.Close()
	return err
}

// handler applies one delivered batch to a projection's live tables.
func (p *Projector) handler(pr Projection) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		first, err1 := strconv.ParseUint(msg.Metadata.Get("first"), 10, 64)
		last, err2 := strconv.ParseUint(msg.Metadata.Get("last"), 10, 64)
		if err1 != nil || err2 != nil || last < first {
			return fmt.Errorf("projections: malformed batch message %s", msg.UUID)
		}
		evs, err := p.tail.rangeOf(msg.Context(), first, last)
		var ie *integrityError
		if errors.As(err, &ie) {
			halt(context.WithoutCancel(msg.Context()), p.cfg.Pool, pr.Name(), ie.msg)
			p.log.Error("PROJECTION HALTED: the log failed an integrity check; it serves no newer data until rebuilt",
				"projection", pr.Name(), "err", ie.msg)
			return fmt.Errorf("%w: %s: %s", ErrHalted, pr.Name(), ie.msg)
		}
		if err != nil && msg.Context().Err() != nil {
			return nil // stopping (see below)
		}
		if err != nil {
			return err
		}
		pos, err := apply(msg.Context(), p.cfg.Pool, pr, liveNames, pr.Name(), evs)
		if err != nil && msg.Context().Err() != nil {
			// Stopping: the cancelled transaction committed nothing, the
			// subscriber stops with the same context, and the projection
			// resumes from its recorded position. Not an error to report.
			return nil
		}
		if errors.Is(err, ErrHalted) {
			p.log.Error("PROJECTION HALTED: the log failed an integrity check; it serves no newer data until rebuilt",
				"projection", pr.Name(), "position", pos, "err", err)
			return err
		}
		if err != nil {
			return err
		}
		p.notify(pr.Name(), pos)
		return nil
	}
}

func (p *Projector) notify(name string, pos uint64) {
	p.mu.Lock()
	if pos > p.applied[name] {
		p.applied[name] = pos
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	if p.cfg.OnApplied != nil {
		p.cfg.OnApplied(name, pos)
	}
}

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// minLevel drops records below a level (Watermill reports every handler
// start and stop at info).
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(a), m.min}
}
func (m minLevel) WithGroup(g string) slog.Handler { return minLevel{m.Handler.WithGroup(g), m.min} }
