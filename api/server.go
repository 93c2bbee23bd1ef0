// Package api serves Stele's versioned HTTP API (/v1) with chi: every
// capability of the application layer, reads from the projections, sign-in
// (OpenID Connect, service tokens, CLI sessions), health, readiness and
// Prometheus metrics. cmd/stele wires the concrete stores; handlers reach
// the ledger only through the application layer (writes, reveals) and
// the read models (everything else).
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"stele.dev/stele/app"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/projections"
)

// LedgerStatus is what readiness reports about the ledger.
type LedgerStatus struct {
	Head           uint64 `json:"head"`
	HeadHash       string `json:"head_hash"`
	LastCheckpoint uint64 `json:"last_checkpoint"`
}

// Readiness reports whether the server can serve: its database answers
// and its ledger is open.
type Readiness interface {
	Ready(ctx context.Context) (LedgerStatus, error)
}

// Ledger is what the API reads of the log directly: its head, signed
// checkpoints, records by position (for the projections' lag and the
// change notifications, which also wait on it for new records), and the
// Merkle tree's stored hashes (for proofs). An eventstore.Store is one.
type Ledger interface {
	Head(ctx context.Context) (eventstore.Head, error)
	ReadAll(ctx context.Context, from uint64, limit int) ([]eventstore.Record, error)
	Wait(ctx context.Context, position uint64) (eventstore.Head, error)
	LatestCheckpoint(ctx context.Context) (eventstore.Checkpoint, error)
	TreeHashes(ctx context.Context, indexes []int64) ([]eventstore.Hash, error)
}

// Config holds what the server needs. App, Reader, Pool and Ledger are
// required for the /v1 API; without them only the service endpoints
// (health, readiness, metrics) answer.
type Config struct {
	App    *app.Service
	Reader *projections.Reader
	// Pool is the read models' database: reads that ask for a minimum
	// position wait on it.
	Pool   *pgxpool.Pool
	Ledger Ledger
	// History answers point-in-time questions (auditors).
	History *projections.History
	Ready   Readiness
	Logger  *slog.Logger
	// Registry receives the server's metrics; a new one when nil.
	Registry *prometheus.Registry
	// PublicURL is how people and clients reach the server
	// ("https://stele.example.com"): verification links and the OpenID
	// redirect use it. Empty: taken from each request's Host.
	PublicURL string
	// Secure says the server is reached over TLS (its own or a proxy's):
	// cookies get the __Host- prefix and responses carry HSTS.
	Secure bool
	// TrustProxy takes the client address from X-Forwarded-For (only
	// behind a proxy that sets it).
	TrustProxy bool
	// OIDC configures sign-in with an OpenID provider; nil disables it.
	OIDC *OIDCConfig
	// DevSignIn enables a sign-in that trusts the name typed in, for
	// development only; every page and response says so.
	DevSignIn bool
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64
	// RatePerSecond and RateBurst bound each credential's (or, for
	// anonymous callers, each address's) requests (defaults 100/s, 200).
	RatePerSecond float64
	RateBurst     int
	// ReadWait is the longest a read waits for min_position (default 5s);
	// LongPollMax the longest an approval collection waits (default 60s).
	ReadWait    time.Duration
	LongPollMax time.Duration
	// CheckpointKey is the verifier key of the ledger's checkpoint signer,
	// published at /v1/ledger/key; nil: that endpoint answers 404.
	CheckpointKey *checkpoint.Verifier
	// PublicLog lets anyone, signed in or not, read what a
	// transparency-log client or witness needs: the C2SP tlog-tiles
	// endpoints (/v1/ledger/log/…), the latest checkpoint and the
	// checkpoints' key. Off: signed-in callers only, like the other
	// ledger endpoints.
	PublicLog bool
	// Witnesses holds the witnesses' cosignatures of checkpoints; nil:
	// none are served.
	Witnesses Witnesses
	// KeepAlive is how often a change stream with nothing to say sends a
	// comment (default 15s).
	KeepAlive time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	limiter *limiter
	metrics *metrics
	oidc    *oidcProvider
	changes *changeHub
	// shutdownHooks: the http.Servers that end the change streams when
	// they shut down.
	shutdownHooks sync.Map
	handler       http.Handler
}

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.RatePerSecond <= 0 {
		cfg.RatePerSecond = 100
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = 200
	}
	if cfg.ReadWait <= 0 {
		cfg.ReadWait = 5 * time.Second
	}
	if cfg.LongPollMax <= 0 {
		cfg.LongPollMax = 60 * time.Second
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if _, err := OpenAPI(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	s.limiter = newLimiter(cfg.RatePerSecond, cfg.RateBurst)
	if cfg.Ledger != nil {
		s.changes = newChangeHub(cfg.Ledger, cfg.Logger)
		hub := s.changes
		for _, c := range []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "stele_change_streams", Help: "Open change notification streams."},
				func() float64 { n, _ := hub.stats(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "stele_change_tail_running", Help: "1 while the process follows the log for change streams (one reader for all of them)."},
				func() float64 {
					if _, on := hub.stats(); on {
						return 1
					}
					return 0
				}),
		} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, err
			}
		}
	}
	var err error
	if s.metrics, err = newMetrics(cfg.Registry, cfg.Pool, cfg.Ledger); err != nil {
		return nil, err
	}
	if cfg.OIDC != nil {
		if s.oidc, err = newOIDCProvider(context.Background(), *cfg.OIDC); err != nil {
			return nil, err
		}
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Close ends the server's open change streams and refuses new ones. An
// http.Server that serves the handler calls it by itself when it shuts
// down (the first change stream registers it with RegisterOnShutdown), so
// that Shutdown does not wait on streams that never end.
func (s *Server) Close() {
	if s.changes != nil {
		s.changes.close()
	}
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.requestID, s.securityHeaders, s.recoverer, s.logRequests, s.metrics.middleware)
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		problem(w, req, http.StatusNotFound, "not_found", "no such endpoint: "+req.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		problem(w, req, http.StatusMethodNotAllowed, "method_not_allowed", req.Method+" is not allowed on "+req.URL.Path)
	})
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.ready)
	r.Handle("/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}))
	r.Route("/v1", func(r chi.Router) {
		r.Use(s.limitBody, s.authenticate, s.rateLimit)
		r.Get("/openapi.yaml", serveOpenAPI)
		if s.cfg.App == nil {
			return
		}
		// Public: sign-in, and the approval requests a CLI opens and
		// collects before anyone vouches for it.
		s.mountAuth(r)
		s.mountPublicApprovals(r)
		if s.cfg.PublicLog {
			s.mountLog(r)
		}
		r.Group(func(r chi.Router) {
			r.Use(s.requireIdentity)
			s.mountMe(r)
			s.mountOrgs(r)
			s.mountProjects(r)
			s.mountSecrets(r)
			s.mountKeys(r)
			s.mountTokens(r)
			s.mountApprovals(r)
			s.mountAudit(r)
			s.mountLedger(r)
		})
	})
	if s.cfg.App != nil {
		s.mountWeb(r)
	}
	return r
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready == nil {
		problem(w, r, http.StatusServiceUnavailable, "not_ready", "no readiness check is configured")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	st, err := s.cfg.Ready.Ready(ctx)
	if err != nil {
		s.log.Warn("not ready", "err", err)
		problem(w, r, http.StatusServiceUnavailable, "not_ready", "the ledger database is not reachable")
		return
	}
	body := map[string]any{"status": "ready", "ledger": st}
	if s.cfg.Pool != nil {
		// A halted read model degrades the server: the reads that depend
		// on it answer 503 projection_halted, the rest (writes, reveals,
		// the other read models) keep working. The server stays in
		// rotation so that clients get that answer rather than none.
		halted, err := projections.Halted(ctx, s.cfg.Pool)
		if err != nil {
			s.log.Warn("not ready", "err", err)
			problem(w, r, http.StatusServiceUnavailable, "not_ready", "the read models' state cannot be read")
			return
		}
		if len(halted) > 0 {
			names := make([]string, 0, len(halted))
			for n := range halted {
				names = append(names, n)
			}
			slices.Sort(names)
			body["status"], body["halted_projections"] = "degraded", names
		}
	}
	writeJSON(w, http.StatusOK, body)
}

// errNoReadModels: the server runs without a read-model database.
var errNoReadModels = errors.New("api: no read models configured")
