package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"stele.dev/stele/app"
	"stele.dev/stele/crypto"
	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/projections"
)

// projectionBench is the JSON that stele bench projections prints.
type projectionBench struct {
	Writers int `json:"writers"`
	// Lag: from an update's commit to the moment every projection has
	// applied it, while the writers append.
	LagEvents     int     `json:"lag_events"`
	AppendsPerSec float64 `json:"appends_per_sec"`
	// AppendsAlonePerSec: the same writers with no projector running,
	// measured first in the same run, to show what projecting costs.
	AppendsAlonePerSec float64 `json:"appends_alone_per_sec"`
	LagP50ms           float64 `json:"lag_p50_ms"`
	LagP99ms           float64 `json:"lag_p99_ms"`
	LagMaxms           float64 `json:"lag_max_ms"`
	Projections        int     `json:"projections"`
	Backlog            int     `json:"backlog_events"`
	CatchUpSeconds     float64 `json:"catch_up_seconds"`
	// CatchUpEventsPerSec: events per second through every projection at
	// once when the projector starts behind by Backlog events.
	CatchUpEventsPerSec float64 `json:"live_catch_up_events_per_sec"`
	// Rebuild: events per second of each projection's rebuild from 0.
	RebuildEventsPerSec map[string]float64 `json:"rebuild_events_per_sec"`
	RebuildAllSeconds   float64            `json:"rebuild_all_seconds"`
	LogEvents           uint64             `json:"log_events"`
	CopyEventsPerSec    float64            `json:"copy_baseline_events_per_sec"`
}

func newBenchProjectionsCmd() *cobra.Command {
	var db dbFlags
	var writers, updates, backlog int
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Measure projection lag under write load, catch-up and rebuild speed",
		Long: `In a scratch schema: --writers callers update secrets through the
application layer, first alone, then while the projector runs, and the
lag from each commit to the moment every projection has applied it is
measured (p50, p99).
Then the projector stops, --backlog more updates are appended, and the
projector's catch-up is timed. Finally each projection is rebuilt from
position 0, timed, beside pgx CopyFrom of as many ledger rows.`,
		Example: `  stele bench projections --dev --writers 64 --updates 20000 --backlog 100000`,
		RunE: func(c *cobra.Command, _ []string) error {
			if writers < 1 || updates < writers || backlog < 0 {
				return usageError{errors.New("--writers must be at least 1 and --updates at least --writers")}
			}
			ctx := c.Context()
			admin, err := db.connect(ctx, quietLogger(), 2)
			if err != nil {
				return err
			}
			defer admin.Close()
			schema, drop, err := scratchSchema(ctx, admin)
			if err != nil {
				return err
			}
			defer drop()
			cfg := admin.Config().Copy()
			cfg.ConnConfig.RuntimeParams["search_path"] = schema
			cfg.MaxConns = 32
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				return err
			}
			defer pool.Close()
			res, err := benchProjections(ctx, pool, writers, updates, backlog)
			if err != nil {
				return err
			}
			return json.NewEncoder(c.OutOrStdout()).Encode(res)
		},
	}
	db.register(cmd.Flags())
	cmd.Flags().IntVar(&writers, "writers", 64, "concurrent writers")
	cmd.Flags().IntVar(&updates, "updates", 20000, "secret updates during the lag measurement")
	cmd.Flags().IntVar(&backlog, "backlog", 100000, "secret updates appended while the projector is stopped")
	return cmd
}

// benchApp migrates a scratch schema and opens the ledger and the
// application layer on it, with a fresh local KEK; done releases them.
func benchApp(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) (*postgres.Store, *app.Service, func(), error) {
	if err := migrateAll(ctx, pool); err != nil {
		return nil, nil, nil, err
	}
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: logger})
	if err != nil {
		return nil, nil, nil, err
	}
	dir, err := os.MkdirTemp("", "stele-bench-")
	if err != nil {
		store.Close()
		return nil, nil, nil, err
	}
	done := func() { store.Close(); os.RemoveAll(dir) }
	uri, err := crypto.CreateLocalMasterKey(filepath.Join(dir, "master.key"))
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	kek, err := crypto.OpenKEK(ctx, uri)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	svc, err := newApp(ctx, store, pgstore.New(pool), kek, logger)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return store, svc, done, nil
}

func benchProjections(ctx context.Context, pool *pgxpool.Pool, writers, updates, backlog int) (projectionBench, error) {
	res := projectionBench{Writers: writers, RebuildEventsPerSec: map[string]float64{}}
	logger := quietLogger()
	store, svc, release, err := benchApp(ctx, pool, logger)
	if err != nil {
		return res, err
	}
	defer release()
	ada := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada"}}
	env := app.Env{Org: "bench", Project: "app", Env: "production"}
	for _, step := range []func() error{
		func() error { _, err := svc.CreateOrganization(ctx, ada, "bench", "Bench"); return err },
		func() error { _, err := svc.CreateProject(ctx, ada, "bench", "app", "App"); return err },
		func() error { _, err := svc.CreateEnvironment(ctx, ada, env, app.EnvSpec{}); return err },
	} {
		if err := step(); err != nil {
			return res, err
		}
	}
	refs := make([]domain.SecretRef, writers)
	for i := range refs {
		refs[i] = domain.SecretRef{Org: "bench", Project: "app", Env: "production", Name: fmt.Sprintf("S%03d", i)}
	}
	value := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	write := func(n int, committed func(pos uint64)) error {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					r, err := svc.SetSecret(ctx, ada, refs[w], app.SetSecret{Value: value})
					if err != nil {
						errs <- err
						return
					}
					if committed != nil {
						committed(r.Position)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}

	// The writers alone.
	start := time.Now()
	if err := write(updates, nil); err != nil {
		return res, err
	}
	res.AppendsAlonePerSec = math.Round(float64(updates) / time.Since(start).Seconds())

	// Lag under load.
	projs := projections.All()
	res.Projections = len(projs)
	var mu sync.Mutex
	commits := map[uint64]time.Time{}
	applied := map[string]uint64{}
	var lags []time.Duration
	var done uint64
	onApplied := func(name string, pos uint64) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		applied[name] = pos
		if len(applied) < len(projs) {
			return
		}
		low := pos
		for _, p := range applied {
			low = min(low, p)
		}
		for p := done + 1; p <= low; p++ {
			if t, ok := commits[p]; ok {
				lags = append(lags, now.Sub(t))
				delete(commits, p)
			}
		}
		done = max(done, low)
	}
	proj := projections.New(projections.Config{Pool: pool, Store: store, Logger: logger, OnApplied: onApplied}, projs...)
	pctx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- proj.Run(pctx) }()
	head, err := store.Head(ctx)
	if err != nil {
		stop()
		return res, err
	}
	if err := projections.WaitFor(ctx, pool, head.Position, time.Minute); err != nil {
		stop()
		return res, err
	}
	start = time.Now()
	err = write(updates, func(pos uint64) {
		mu.Lock()
		if pos > done {
			commits[pos] = time.Now()
		}
		mu.Unlock()
	})
	elapsed := time.Since(start)
	if err != nil {
		stop()
		return res, err
	}
	head, _ = store.Head(ctx)
	if err := projections.WaitFor(ctx, pool, head.Position, time.Minute); err != nil {
		stop()
		return res, err
	}
	stop()
	<-runDone
	mu.Lock()
	slices.Sort(lags)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	if len(lags) > 0 {
		res.LagEvents = len(lags)
		res.LagP50ms = ms(lags[len(lags)/2])
		res.LagP99ms = ms(lags[min(len(lags)-1, len(lags)*99/100)])
		res.LagMaxms = ms(lags[len(lags)-1])
	}
	mu.Unlock()
	res.AppendsPerSec = math.Round(float64(updates) / elapsed.Seconds())

	// Catch-up from a backlog.
	if backlog > 0 {
		if err := write(backlog, nil); err != nil {
			return res, err
		}
		head, _ = store.Head(ctx)
		var from int64
		if err := pool.QueryRow(ctx, `SELECT min(position) FROM projection_state`).Scan(&from); err != nil {
			return res, err
		}
		res.Backlog = int(head.Position) - int(from)
		proj = projections.New(projections.Config{Pool: pool, Store: store, Logger: logger}, projs...)
		pctx, stop = context.WithCancel(ctx)
		go func() { runDone <- proj.Run(pctx) }()
		start = time.Now()
		err := projections.WaitFor(ctx, pool, head.Position, 10*time.Minute)
		res.CatchUpSeconds = math.Round(time.Since(start).Seconds()*1000) / 1000
		res.CatchUpEventsPerSec = math.Round(float64(res.Backlog) / time.Since(start).Seconds())
		if err != nil {
			stop()
			return res, err
		}
	} else {
		proj = projections.New(projections.Config{Pool: pool, Store: store, Logger: logger}, projs...)
		pctx, stop = context.WithCancel(ctx)
		go func() { runDone <- proj.Run(pctx) }()
	}

	// Rebuilds, while the projector keeps running.
	head, _ = store.Head(ctx)
	res.LogEvents = head.Position
	all := time.Now()
	for _, pr := range projs {
		t0 := time.Now()
		if err := proj.Rebuild(ctx, pr.Name()); err != nil {
			stop()
			return res, err
		}
		res.RebuildEventsPerSec[pr.Name()] = math.Round(float64(head.Position) / time.Since(t0).Seconds())
	}
	res.RebuildAllSeconds = math.Round(time.Since(all).Seconds()*1000) / 1000
	stop()
	<-runDone

	rate, err := benchCopy(ctx, pool, int(min(head.Position, 200000)), 400)
	if err != nil {
		return res, err
	}
	res.CopyEventsPerSec = math.Round(rate)
	return res, nil
}
