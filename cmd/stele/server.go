package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/eventstore/verify"
	"stele.dev/stele/projections"
)

// Server is a running Stele server: database, ledger, checkpointer and
// HTTP. Tests start one on 127.0.0.1:0.
type Server struct {
	Addr      string // the address it listens on, once started
	Store     *postgres.Store
	Signer    *checkpoint.Signer
	App       *app.Service
	Projector *projections.Projector // nil with NoProjector
	Logger    *slog.Logger

	pool   *pgxpool.Pool
	http   *http.Server
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ServerConfig is what StartServer needs.
type ServerConfig struct {
	DB                 dbFlags
	Keys               keyFlags
	Listen             string
	CheckpointInterval time.Duration
	// KeyMaintenance is how often key rotation and resealing are checked.
	KeyMaintenance time.Duration
	// NoProjector leaves the read models to another process
	// (stele projections run); NATSURL also publishes the event stream.
	NoProjector bool
	NATSURL     string
	// VerifyInterval is how often the whole ledger is verified (and the
	// result recorded as a ledger.verified event); 0 disables it.
	VerifyInterval time.Duration
	Logger         *slog.Logger
}

// StartServer connects to the database, migrates it, opens the ledger,
// loads or creates the signing key, starts the checkpointer and serves
// HTTP on cfg.Listen. Stop shuts it all down.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	logger := cfg.Logger
	store, pool, err := cfg.DB.openStore(ctx, logger, 32)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Server, error) {
		store.Close()
		pool.Close()
		return nil, err
	}
	signer, source, err := loadSigner(ctx, store, &cfg.Keys, cfg.DB.dev, true, logger)
	if err != nil {
		return fail(err)
	}
	material := pgstore.New(pool)
	kek, err := openKEK(ctx, &cfg.Keys, cfg.DB.dev, material, logger)
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(fmt.Errorf("listen on %s: %w", cfg.Listen, err))
	}
	bg, cancel := context.WithCancel(context.Background())
	svc, err := newApp(bg, store, material, kek, logger)
	if err != nil {
		cancel()
		ln.Close()
		return fail(err)
	}
	s := &Server{Addr: ln.Addr().String(), Store: store, Signer: signer, App: svc, Logger: logger, pool: pool, ln: ln}
	s.http = &http.Server{
		Handler:           api.NewRouter(api.Config{Ready: s, Logger: logger}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	s.cancel = cancel
	cp := &checkpoint.Checkpointer{Store: store, Signer: signer, StateFile: checkpointStateFile(&cfg.Keys, cfg.DB.dev), Logger: logger}
	if cfg.KeyMaintenance <= 0 {
		cfg.KeyMaintenance = time.Minute
	}
	var projector *projections.Projector
	closePub := func() {}
	if !cfg.NoProjector {
		if projector, closePub, err = newProjector(store, cfg.NATSURL, logger); err != nil {
			cancel()
			ln.Close()
			return fail(err)
		}
		if _, err := projector.Setup(ctx); err != nil {
			cancel()
			ln.Close()
			closePub()
			return fail(err)
		}
	}
	s.Projector = projector
	s.wg.Add(5)
	go func() {
		defer s.wg.Done()
		defer closePub()
		if projector == nil {
			return
		}
		for bg.Err() == nil {
			if err := projector.Run(bg); err != nil && bg.Err() == nil {
				logger.Error("projector stopped; restarting", "err", err)
				time.Sleep(time.Second)
			}
		}
	}()
	go func() { defer s.wg.Done(); runVerifier(bg, store, signer, cfg.VerifyInterval, logger) }()
	go func() { defer s.wg.Done(); cp.Run(bg, cfg.CheckpointInterval) }()
	go func() {
		defer s.wg.Done()
		if n, err := svc.CleanKeyMaterial(bg); err != nil {
			logger.Error("cleaning key material", "err", err)
		} else if n > 0 {
			logger.Info("erased key material no longer named by the ledger", "versions", n)
		}
		svc.RunKeyMaintenance(bg, cfg.KeyMaintenance)
	}()
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server stopped", "err", err)
		}
	}()
	logger.Info("stele server listening", "addr", s.Addr, "log_origin", signer.Origin(), "signing_key", source,
		"checkpoint_interval", cfg.CheckpointInterval.String(), "kek", kek.URI())
	return s, nil
}

// Ready implements api.Readiness.
func (s *Server) Ready(ctx context.Context) (api.LedgerStatus, error) {
	h, err := s.Store.Head(ctx)
	if err != nil {
		return api.LedgerStatus{}, err
	}
	st := api.LedgerStatus{Head: h.Position, HeadHash: h.Hash.String()}
	cp, err := s.Store.LatestCheckpoint(ctx)
	switch {
	case err == nil:
		st.LastCheckpoint = cp.Size
	case !errors.Is(err, eventstore.ErrNotFound):
		return st, err
	}
	return st, nil
}

// Stop shuts the server down gracefully, waiting up to timeout for
// requests in flight.
func (s *Server) Stop(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := s.http.Shutdown(ctx)
	s.cancel()
	s.wg.Wait()
	s.Store.Close()
	s.pool.Close()
	return err
}

func newServerCmd() *cobra.Command {
	var cfg ServerConfig
	var logFormat, logLevel string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Stele server",
		Long: `Run the Stele server: it connects to PostgreSQL, applies the schema
migrations, opens the ledger, creates the checkpoint signing key on first
start (in the data folder, mode 0600), signs checkpoints on a cadence and
serves HTTP (/healthz, /readyz).`,
		Example: `  stele server --dev                      # local development: private PostgreSQL, .stele/data
  DATABASE_URL=postgres://… stele server --listen :8080 --data-dir /var/lib/stele`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = logger
			if cfg.CheckpointInterval < time.Second {
				return usageError{fmt.Errorf("--checkpoint-interval %s: use at least 1s", cfg.CheckpointInterval)}
			}
			if v := os.Getenv("STELE_LISTEN"); v != "" && !cmd.Flags().Changed("listen") {
				cfg.Listen = v
			}
			ctx := cmd.Context()
			s, err := StartServer(ctx, cfg)
			if err != nil {
				return err
			}
			printBanner(cmd, s, cfg.DB.dev)
			<-ctx.Done()
			logger.Info("shutting down")
			return s.Stop(15 * time.Second)
		},
	}
	cfg.DB.register(cmd.Flags())
	cfg.Keys.register(cmd.Flags())
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address to serve HTTP on (default $STELE_LISTEN or 127.0.0.1:8080)")
	cmd.Flags().DurationVar(&cfg.CheckpointInterval, "checkpoint-interval", 30*time.Second, "how often to sign a checkpoint while the ledger grows")
	cmd.Flags().DurationVar(&cfg.KeyMaintenance, "key-maintenance-interval", time.Minute, "how often to check for due key rotations and unfinished reseals")
	cmd.Flags().BoolVar(&cfg.NoProjector, "no-projector", false, "do not run the projector here (run stele projections run elsewhere)")
	cmd.Flags().StringVar(&cfg.NATSURL, "nats-url", "", "publish the event stream to this NATS JetStream server (default $STELE_NATS_URL)")
	cmd.Flags().DurationVar(&cfg.VerifyInterval, "verify-interval", 24*time.Hour, "how often to verify the whole ledger and record the result (0: never)")
	addLogFlags(cmd, &logFormat, &logLevel)
	return cmd
}

func printBanner(cmd *cobra.Command, s *Server, dev bool) {
	dbFlag := "--database-url \"$DATABASE_URL\""
	if dev {
		dbFlag = "--dev"
	}
	fmt.Fprintf(cmd.OutOrStdout(), `
Stele is running.
  server          http://%[1]s   (health: /healthz, readiness: /readyz)
  ledger key      %[2]s
  verify          stele ledger verify %[3]s --key '%[2]s'
  sign-in         not available yet: OpenID Connect sign-in and the /v1 API come with the API
Press Ctrl-C to stop.

`, s.Addr, s.Signer.Verifier().String(), dbFlag)
}

// runVerifier verifies the whole ledger every interval (the first time an
// interval after start) and records each outcome as a ledger.verified
// event, so that the audit trail shows when the ledger was checked.
func runVerifier(ctx context.Context, store *postgres.Store, signer *checkpoint.Signer, every time.Duration, logger *slog.Logger) {
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := recordVerification(ctx, store, signer.Verifier(), "system:verifier"); err != nil && ctx.Err() == nil {
			logger.Error("ledger verification", "err", err)
		}
	}
}

// recordVerification verifies the ledger and appends the outcome.
func recordVerification(ctx context.Context, store *postgres.Store, key *checkpoint.Verifier, actor string) (verify.Report, error) {
	return recordVerificationWith(ctx, store, verify.Options{Key: key}, actor)
}

func recordVerificationWith(ctx context.Context, store *postgres.Store, opts verify.Options, actor string) (verify.Report, error) {
	rep, verr := verify.Store(ctx, store, opts)
	var ve *verify.Error
	if verr != nil && !errors.As(verr, &ve) {
		return rep, verr
	}
	ev := domain.LedgerVerified{Events: rep.Events, Head: rep.Head.String(), Root: rep.Root.String(), Checkpoints: rep.Checkpoints,
		OK: verr == nil, Seconds: rep.Duration.Seconds()}
	if ve != nil {
		ev.Failure = ve.Error()
	}
	data, err := domain.Encode(ev)
	if err != nil {
		return rep, err
	}
	_, err = store.Append(ctx, domain.LedgerStream, eventstore.Any, eventstore.Event{ID: eventstore.NewID(), Type: ev.EventType(), Data: data,
		Metadata: eventstore.Metadata{Actor: actor, RequestID: "verify-" + randomHex(6)}})
	if err != nil {
		return rep, err
	}
	return rep, verr
}
