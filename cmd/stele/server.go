package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/eventstore/verify"
	"stele.dev/stele/eventstore/witness"
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
	API       *api.Server
	// Witnesses asks the configured witnesses to cosign checkpoints.
	Witnesses *witness.Cosigner
	Logger    *slog.Logger
	TLS       bool // serving HTTPS
	// BootstrapToken is the owner token made on an empty ledger (shown
	// once), written to BootstrapFile.
	BootstrapToken string
	BootstrapFile  string

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
	// API is the HTTP API's configuration (sign-in, TLS, limits).
	API    apiFlags
	Logger *slog.Logger
}

// apiFlags configure the HTTP API.
type apiFlags struct {
	PublicURL        string
	TLSCert, TLSKey  string
	TrustProxy       bool
	DevSignIn        bool
	OIDCIssuer       string
	OIDCClientID     string
	OIDCClientSecret string
	BootstrapOrg     string
	BootstrapOwner   string
	RatePerSecond    float64

	// OIDCSessionTTL is how long a browser session lasts (0: 12 hours);
	// OIDCNoEmailVerified accepts addresses from a provider that never
	// sends email_verified.
	OIDCSessionTTL      time.Duration
	OIDCNoEmailVerified bool

	// PublicLog serves the tlog-tiles endpoints, the checkpoint and the
	// key to anyone; Witnesses are the witnesses (<verifier key>@<URL>)
	// asked to cosign each checkpoint.
	PublicLog bool
	Witnesses []string
}

func (f *apiFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.PublicURL, "public-url", "", "the URL people and clients reach the server by, e.g. https://stele.example.com (default $STELE_PUBLIC_URL, or taken from each request)")
	fs.StringVar(&f.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; with --tls-key)")
	fs.StringVar(&f.TLSKey, "tls-key", "", "the certificate's private key (PEM)")
	fs.BoolVar(&f.TrustProxy, "trust-proxy", false, "take client addresses from X-Forwarded-For and treat the server as reached over TLS (only behind a proxy that sets it)")
	fs.BoolVar(&f.DevSignIn, "dev-sign-in", false, "DEVELOPMENT ONLY: a sign-in page that trusts any name typed in; every response says it is enabled")
	fs.StringVar(&f.OIDCIssuer, "oidc-issuer", "", "OpenID Connect issuer URL for people's sign-in (default $STELE_OIDC_ISSUER)")
	fs.StringVar(&f.OIDCClientID, "oidc-client-id", "", "OpenID Connect client id (default $STELE_OIDC_CLIENT_ID)")
	fs.StringVar(&f.OIDCClientSecret, "oidc-client-secret", "", "OpenID Connect client secret, if the client has one (default $STELE_OIDC_CLIENT_SECRET; prefer the variable: arguments show in ps)")
	fs.DurationVar(&f.OIDCSessionTTL, "oidc-session-ttl", 12*time.Hour, "how long a browser session started through OpenID Connect lasts")
	fs.BoolVar(&f.OIDCNoEmailVerified, "oidc-no-email-verified-claim", false, "the OpenID provider never sends email_verified (it releases only verified addresses): accept addresses without the claim")
	fs.StringVar(&f.BootstrapOrg, "bootstrap-org", "default", "on an empty ledger, create this organization and an owner token for it")
	fs.StringVar(&f.BootstrapOwner, "bootstrap-owner", "", "on an empty ledger, make this person (an e-mail address) the first organization's owner (default $STELE_BOOTSTRAP_OWNER)")
	fs.Float64Var(&f.RatePerSecond, "rate-limit", 100, "requests per second allowed to each token, session or anonymous address (bursts of twice as many)")
	fs.BoolVar(&f.PublicLog, "public-log", false, "serve the transparency log (/v1/ledger/log/: C2SP tlog-tiles), the latest checkpoint and its key to anyone, with no credential, for witnesses and monitors (default $STELE_PUBLIC_LOG, else signed-in callers only)")
	fs.StringArrayVar(&f.Witnesses, "witness", nil, "ask this witness to cosign each checkpoint (C2SP tlog-witness): <name>+<key hash>+<base64 key>@<https URL prefix>; repeat for several (default $STELE_WITNESSES, separated by spaces)")
}

func (f *apiFlags) fromEnv() {
	for _, v := range []struct {
		dst *string
		env string
	}{{&f.PublicURL, "STELE_PUBLIC_URL"}, {&f.OIDCIssuer, "STELE_OIDC_ISSUER"}, {&f.OIDCClientID, "STELE_OIDC_CLIENT_ID"},
		{&f.OIDCClientSecret, "STELE_OIDC_CLIENT_SECRET"}, {&f.BootstrapOwner, "STELE_BOOTSTRAP_OWNER"}} {
		if *v.dst == "" {
			*v.dst = os.Getenv(v.env)
		}
	}
	if len(f.Witnesses) == 0 {
		f.Witnesses = strings.Fields(os.Getenv("STELE_WITNESSES"))
	}
}

// witnesses parses the configured witnesses.
func (f *apiFlags) witnesses() ([]witness.Witness, error) {
	out := make([]witness.Witness, 0, len(f.Witnesses))
	seen := map[string]bool{}
	for _, spec := range f.Witnesses {
		w, err := witness.Parse(spec)
		if err != nil {
			return nil, fmt.Errorf("--witness: %w", err)
		}
		if seen[w.Key] {
			return nil, fmt.Errorf("--witness: %s is given twice", w.Name)
		}
		seen[w.Key] = true
		out = append(out, w)
	}
	return out, nil
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
	witnesses, err := cfg.API.witnesses()
	if err != nil {
		return fail(usageError{err})
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
	s.Witnesses = &witness.Cosigner{Log: store, Store: witness.NewStore(pool), Witnesses: witnesses, Logger: logger}
	if s.BootstrapToken, s.BootstrapFile, err = bootstrap(ctx, svc, &cfg, logger); err != nil {
		cancel()
		ln.Close()
		return fail(err)
	}
	cp := &checkpoint.Checkpointer{Store: store, Signer: signer, StateFile: checkpointStateFile(&cfg.Keys, cfg.DB.dev), Logger: logger}
	// The evidence endpoint signs a checkpoint on demand when the latest
	// does not cover what it exports.
	apiCfg := api.Config{App: svc, Reader: projections.NewReader(pool), Pool: pool, Ledger: api.SigningLedger{Ledger: store, Signer: cp}, Ready: s, Logger: logger,
		History:   &projections.History{Pool: pool, Store: store},
		PublicURL: cfg.API.PublicURL, Secure: cfg.API.TLSCert != "" || cfg.API.TrustProxy, TrustProxy: cfg.API.TrustProxy,
		DevSignIn: cfg.API.DevSignIn, RatePerSecond: cfg.API.RatePerSecond, RateBurst: int(2 * cfg.API.RatePerSecond),
		CheckpointKey: signer.Verifier(), PublicLog: cfg.API.PublicLog, Witnesses: s.Witnesses}
	if cfg.API.OIDCIssuer != "" {
		apiCfg.OIDC = &api.OIDCConfig{Issuer: cfg.API.OIDCIssuer, ClientID: cfg.API.OIDCClientID, ClientSecret: cfg.API.OIDCClientSecret,
			SessionTTL: cfg.API.OIDCSessionTTL, NoEmailVerifiedClaim: cfg.API.OIDCNoEmailVerified}
	}
	handler, err := api.New(apiCfg)
	if err != nil {
		cancel()
		ln.Close()
		return fail(err)
	}
	s.API = handler
	s.http = &http.Server{
		Handler:           handler.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if cfg.API.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.API.TLSCert, cfg.API.TLSKey)
		if err != nil {
			cancel()
			ln.Close()
			return fail(fmt.Errorf("TLS certificate: %w", err))
		}
		s.http.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		s.TLS = true
	}
	s.cancel = cancel
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
	s.wg.Add(6)
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
	go func() { defer s.wg.Done(); s.Witnesses.Run(bg) }()
	go func() {
		defer s.wg.Done()
		if n, err := svc.CleanKeyMaterial(bg); err != nil {
			if bg.Err() == nil { // not a server stopping as it started
				logger.Error("cleaning key material", "err", err)
			}
		} else if n > 0 {
			logger.Info("erased key material no longer named by the ledger", "versions", n)
		}
		svc.RunKeyMaintenance(bg, cfg.KeyMaintenance)
	}()
	go func() {
		defer s.wg.Done()
		serve := func() error { return s.http.Serve(ln) }
		if s.TLS {
			serve = func() error { return s.http.ServeTLS(ln, "", "") }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server stopped", "err", err)
		}
	}()
	logger.Info("stele server listening", "addr", s.Addr, "log_origin", signer.Origin(), "signing_key", source,
		"checkpoint_interval", cfg.CheckpointInterval.String(), "kek", kek.URI(), "public_log", cfg.API.PublicLog, "witnesses", len(witnesses))
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
start (in the data folder, mode 0600), signs checkpoints on a cadence,
keeps the read models up to date, rotates keys when due, and serves the
HTTP API (/v1, described at /v1/openapi.yaml), /healthz, /readyz and
/metrics. On an empty ledger it creates a first organization and an owner
token (shown once, and written to <data-dir>/bootstrap-token).`,
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
			cfg.API.fromEnv()
			if v := os.Getenv("STELE_PUBLIC_LOG"); v != "" && !cmd.Flags().Changed("public-log") {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return usageError{fmt.Errorf("STELE_PUBLIC_LOG=%q: want true or false", v)}
				}
				cfg.API.PublicLog = b
			}
			if _, err := cfg.API.witnesses(); err != nil {
				return usageError{err}
			}
			if (cfg.API.TLSCert == "") != (cfg.API.TLSKey == "") {
				return usageError{errors.New("--tls-cert and --tls-key go together")}
			}
			if (cfg.API.OIDCIssuer == "") != (cfg.API.OIDCClientID == "") {
				return usageError{errors.New("--oidc-issuer and --oidc-client-id go together")}
			}
			if cfg.API.RatePerSecond <= 0 {
				return usageError{errors.New("--rate-limit must be above 0")}
			}
			ctx := cmd.Context()
			s, err := StartServer(ctx, cfg)
			if err != nil {
				return err
			}
			printBanner(cmd, s, cfg)
			<-ctx.Done()
			logger.Info("shutting down")
			return s.Stop(15 * time.Second)
		},
	}
	cfg.DB.register(cmd.Flags())
	cfg.Keys.register(cmd.Flags())
	cfg.API.register(cmd.Flags())
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address to serve HTTP on (default $STELE_LISTEN or 127.0.0.1:8080)")
	cmd.Flags().DurationVar(&cfg.CheckpointInterval, "checkpoint-interval", 30*time.Second, "how often to sign a checkpoint while the ledger grows")
	cmd.Flags().DurationVar(&cfg.KeyMaintenance, "key-maintenance-interval", time.Minute, "how often to check for due key rotations and unfinished reseals")
	cmd.Flags().BoolVar(&cfg.NoProjector, "no-projector", false, "do not run the projector here (run stele projections run elsewhere)")
	cmd.Flags().StringVar(&cfg.NATSURL, "nats-url", "", "publish the event stream to this NATS JetStream server (default $STELE_NATS_URL)")
	cmd.Flags().DurationVar(&cfg.VerifyInterval, "verify-interval", 24*time.Hour, "how often to verify the whole ledger and record the result (0: never)")
	addLogFlags(cmd, &logFormat, &logLevel)
	return cmd
}

// logAccess says who may follow the transparency log, and who cosigns it.
func logAccess(f apiFlags) string {
	who := "signed-in callers; --public-log opens it to witnesses and monitors"
	if f.PublicLog {
		who = "public"
	}
	switch n := len(f.Witnesses); n {
	case 0:
	case 1:
		who += "; 1 witness cosigns"
	default:
		who += fmt.Sprintf("; %d witnesses cosign", n)
	}
	return who
}

func printBanner(cmd *cobra.Command, s *Server, cfg ServerConfig) {
	dbFlag := "--database-url \"$DATABASE_URL\""
	if cfg.DB.dev {
		dbFlag = "--dev"
	}
	scheme := "http"
	if s.TLS {
		scheme = "https"
	}
	base := cfg.API.PublicURL
	if base == "" {
		base = scheme + "://" + s.Addr
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, `
Stele is running.
  server          %[1]s   (health: /healthz, readiness: /readyz, metrics: /metrics)
  API             %[1]s/v1   (description: %[1]s/v1/openapi.yaml)
  ledger key      %[2]s
  verify          stele ledger verify %[3]s --key '%[2]s'
  tlog-tiles      %[1]s/v1/ledger/log/   (%[4]s)
`, base, s.Signer.Verifier().String(), dbFlag, logAccess(cfg.API))
	fmt.Fprintln(out, "Sign in:")
	if s.BootstrapToken != "" {
		fmt.Fprintf(out, "  owner token     %s   (shown once; also in %s, mode 0600)\n", s.BootstrapToken, s.BootstrapFile)
	}
	if s.BootstrapFile != "" {
		fmt.Fprintf(out, "  machines, CLI   export STELE_TOKEN=\"$(cat %s)\"\n", s.BootstrapFile)
		fmt.Fprintf(out, "                  curl -H \"Authorization: Bearer $STELE_TOKEN\" %s/v1/me\n", base)
	}
	if cfg.API.OIDCIssuer != "" {
		fmt.Fprintf(out, "  people          %s/v1/auth/login   (OpenID Connect: %s)\n", base, cfg.API.OIDCIssuer)
	}
	if cfg.API.DevSignIn {
		fmt.Fprintf(out, "  development     %s/v1/auth/dev   (--dev-sign-in: anyone can sign in as anyone; never use it in production)\n", base)
	}
	if cfg.API.DevSignIn || cfg.API.OIDCIssuer != "" {
		fmt.Fprintf(out, "  the CLI         STELE_ADDR=%s bin/stele login   (approve it in the browser; then stele run -- CMD, see docs/cli.md)\n", base)
	}
	if cfg.API.OIDCIssuer == "" && !cfg.API.DevSignIn {
		fmt.Fprintln(out, "  people          no sign-in for people is configured: set --oidc-issuer and --oidc-client-id")
	}
	fmt.Fprint(out, "Press Ctrl-C to stop.\n\n")
}

// bootstrap prepares an empty ledger: the first organization and an owner
// token, written once to <data-dir>/bootstrap-token with mode 0600. It
// returns the token only when it made one now, and the file when it
// exists.
func bootstrap(ctx context.Context, svc *app.Service, cfg *ServerConfig, logger *slog.Logger) (token, file string, err error) {
	dir, err := cfg.Keys.dir(cfg.DB.dev)
	if err != nil {
		return "", "", err
	}
	file = filepath.Join(dir, "bootstrap-token")
	exists := func() string {
		if _, err := os.Stat(file); err == nil {
			return file
		}
		return ""
	}
	h, err := svc.Head(ctx)
	if err != nil || h > 0 || cfg.API.BootstrapOrg == "" {
		return "", exists(), err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("bootstrap token file: %w", err)
	}
	defer f.Close()
	tok, created, err := svc.Bootstrap(ctx, cfg.API.BootstrapOrg, cfg.API.BootstrapOrg, cfg.API.BootstrapOwner, 90*24*time.Hour)
	if err != nil {
		os.Remove(file)
		return "", "", fmt.Errorf("bootstrap: %w", err)
	}
	if !created {
		f.Close()
		os.Remove(file)
		return "", exists(), nil
	}
	if _, err := f.WriteString(tok.Secret + "\n"); err != nil {
		return "", "", err
	}
	logger.Info("bootstrapped an empty ledger", "org", cfg.API.BootstrapOrg, "owner", cfg.API.BootstrapOwner, "token_id", tok.ID, "token_file", file)
	return tok.Secret, file, f.Close()
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
