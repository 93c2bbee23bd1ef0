package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/projections"
)

// apiBench is the JSON that stele bench api prints.
type apiBench struct {
	Seconds float64 `json:"seconds_per_scenario"`
	// Secrets is how many secrets the listed environment holds.
	Secrets   int                      `json:"secrets_listed"`
	Scenarios map[string][]apiScenario `json:"scenarios"`
	// LedgerAppendsPerSec is the ledger's raw append rate (one event per
	// append, store level, no HTTP) at each concurrency, from the same run.
	LedgerAppendsPerSec map[string]float64 `json:"ledger_appends_per_sec"`
	Transport           string             `json:"transport"`
	// Projector says whether the read models followed the log during the
	// load, as in a server (the default).
	Projector bool `json:"projector"`
}

type apiScenario struct {
	Clients   int     `json:"clients"`
	Requests  int     `json:"requests"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	Errors    int     `json:"errors"`
}

func newBenchAPICmd() *cobra.Command {
	var db dbFlags
	var clients []int
	var duration time.Duration
	var secrets int
	var cpuProfile, blockProfile string
	var withProjector bool
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Load the HTTP API on loopback: reveals, sets and metadata lists per second, with latencies",
		Long: `In a scratch schema, start the API (with the projector, as the server
runs it) on a loopback port, then for each --clients count run each
scenario for --duration with that many concurrent clients over keep-alive
HTTP/1.1, and print one JSON object:

  set     PUT a 64-byte value to a secret of the client's own
  reveal  POST …/reveal of the client's secret (each one a secret.viewed event)
  list    GET the metadata of an environment of --secrets secrets

with requests per second and p50/p99 latency, beside the ledger's raw
append rate (one event per append, through the store, no HTTP) measured
in the same run at the same concurrency.`,
		Example: `  stele bench api --dev --clients 16,64 --duration 5s`,
		RunE: func(c *cobra.Command, _ []string) error {
			if duration < 100*time.Millisecond || duration > 10*time.Minute || len(clients) == 0 || secrets < 1 {
				return usageError{errors.New("--duration must be 100ms to 10m, --clients at least one count, --secrets at least 1")}
			}
			for _, n := range clients {
				if n < 1 || n > 1024 {
					return usageError{fmt.Errorf("--clients %d: want 1 to 1024", n)}
				}
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
			cfg.MaxConns = 48
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				return err
			}
			defer pool.Close()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if blockProfile != "" {
				runtime.SetBlockProfileRate(int(time.Microsecond))
				runtime.SetMutexProfileFraction(5)
				defer func() {
					if f, err := os.Create(blockProfile); err == nil {
						pprof.Lookup("block").WriteTo(f, 0)
						f.Close()
					}
				}()
			}
			res, err := benchAPI(ctx, admin, pool, clients, duration, secrets, withProjector)
			if err != nil {
				return err
			}
			return json.NewEncoder(c.OutOrStdout()).Encode(res)
		},
	}
	db.register(cmd.Flags())
	cmd.Flags().IntSliceVar(&clients, "clients", []int{16, 64}, "concurrent clients (a run per count)")
	cmd.Flags().DurationVar(&duration, "duration", 5*time.Second, "how long each scenario runs at each count")
	cmd.Flags().BoolVar(&withProjector, "projector", true, "keep the read models following the log during the load, as a server does (false: lists read the read models as they were before the load)")
	cmd.Flags().StringVar(&blockProfile, "blockprofile", "", "write a profile of where goroutines waited to this file")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (server and clients) to this file")
	cmd.Flags().IntVar(&secrets, "secrets", 100, "secrets in the listed environment (at least the largest client count are written to)")
	return cmd
}

func benchAPI(ctx context.Context, admin, pool *pgxpool.Pool, clients []int, duration time.Duration, listed int, withProjector bool) (apiBench, error) {
	res := apiBench{Seconds: duration.Seconds(), Scenarios: map[string][]apiScenario{}, LedgerAppendsPerSec: map[string]float64{},
		Transport: "HTTP/1.1 over loopback TCP, keep-alive, no TLS", Projector: withProjector}
	logger := quietLogger()
	bg, stop := context.WithCancel(ctx)
	defer stop()
	store, svc, done, err := benchApp(bg, pool, logger)
	if err != nil {
		return res, err
	}
	defer done()
	proj := projections.New(projections.Config{Pool: pool, Store: store, Logger: logger}, projections.All()...)
	if _, err := proj.Setup(ctx); err != nil {
		return res, err
	}
	pctx, stopProjector := context.WithCancel(bg)
	defer stopProjector()
	go proj.Run(pctx)
	server, err := api.New(api.Config{App: svc, Reader: projections.NewReader(pool), Pool: pool, Ledger: store, Logger: logger,
		RatePerSecond: 1e9, RateBurst: 1e9})
	if err != nil {
		return res, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	hs := &http.Server{Handler: server.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	base := "http://" + ln.Addr().String()

	tok, _, err := svc.Bootstrap(ctx, "bench", "Bench", "", time.Hour)
	if err != nil {
		return res, err
	}
	owner := app.Request{Actor: domain.Actor{Kind: domain.ActorToken, ID: tok.ID}, RequestID: "bench"}
	if _, err := svc.CreateProject(ctx, owner, "bench", "app", "App"); err != nil {
		return res, err
	}
	env := app.Env{Org: "bench", Project: "app", Env: "production"}
	if _, err := svc.CreateEnvironment(ctx, owner, env, app.EnvSpec{}); err != nil {
		return res, err
	}
	n := max(listed, slices.Max(clients))
	res.Secrets = n
	value := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	var last app.Result
	for i := range n {
		ref := domain.SecretRef{Org: "bench", Project: "app", Env: "production", Name: fmt.Sprintf("S%04d", i)}
		if last, err = svc.SetSecret(ctx, owner, ref, app.SetSecret{Value: value, Metadata: domain.SecretMetadata{Description: "bench"}}); err != nil {
			return res, err
		}
	}
	if err := projections.WaitFor(ctx, pool, last.Position, time.Minute); err != nil {
		return res, err
	}
	if !withProjector {
		stopProjector()
	}

	envPath := base + "/v1/orgs/bench/projects/app/envs/production"
	scenarios := []struct {
		name string
		req  func(client int) (*http.Request, error)
	}{
		{"set", func(c int) (*http.Request, error) {
			return http.NewRequest(http.MethodPut, fmt.Sprintf("%s/secrets/S%04d", envPath, c), strings.NewReader(`{"value":"`+string(value)+`"}`))
		}},
		{"reveal", func(c int) (*http.Request, error) {
			return http.NewRequest(http.MethodPost, fmt.Sprintf("%s/secrets/S%04d/reveal", envPath, c), strings.NewReader(`{"reason":"bench"}`))
		}},
		{"list", func(int) (*http.Request, error) { return http.NewRequest(http.MethodGet, envPath+"/secrets", nil) }},
	}
	for _, c := range clients {
		tr := &http.Transport{MaxIdleConns: c, MaxIdleConnsPerHost: c, IdleConnTimeout: time.Minute}
		client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		for _, sc := range scenarios {
			r, err := loadAPI(ctx, client, c, duration, tok.Secret, sc.req)
			if err != nil {
				return res, fmt.Errorf("%s at %d clients: %w", sc.name, c, err)
			}
			res.Scenarios[sc.name] = append(res.Scenarios[sc.name], r)
		}
		tr.CloseIdleConnections()
		rate, err := rawAppendRate(ctx, admin, c)
		if err != nil {
			return res, err
		}
		res.LedgerAppendsPerSec[fmt.Sprint(c)] = rate
	}
	return res, nil
}

// rawAppendRate measures the ledger alone: clients appenders, one event
// of about 200 bytes per append, in a scratch schema of its own.
func rawAppendRate(ctx context.Context, admin *pgxpool.Pool, clients int) (float64, error) {
	schema, drop, err := scratchSchema(ctx, admin)
	if err != nil {
		return 0, err
	}
	defer drop()
	cfg := admin.Config().Copy()
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 48
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool); err != nil {
		return 0, err
	}
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: quietLogger()})
	if err != nil {
		return 0, err
	}
	defer store.Close()
	lb, err := benchAppend(ctx, store, 200*clients, clients, 200)
	return lb.EventsPerSec, err
}

// loadAPI runs clients loops of requests for d and reports the rate and
// latencies of the answers (every one must be a success).
func loadAPI(ctx context.Context, client *http.Client, clients int, d time.Duration, token string, mk func(int) (*http.Request, error)) (apiScenario, error) {
	out := apiScenario{Clients: clients}
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			errs := 0
			for time.Now().Before(deadline) && ctx.Err() == nil {
				req, err := mk(c)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				req.Header.Set("Authorization", "Bearer "+token)
				if req.Body != nil {
					req.Header.Set("Content-Type", "application/json")
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs++
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					errs++
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, bytes.TrimSpace(body))
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			out.Errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return out, firstErr
	}
	slices.Sort(lat)
	out.Requests = len(lat)
	if len(lat) > 0 {
		ms := func(x time.Duration) float64 { return math.Round(float64(x)/1e3) / 1e3 }
		out.P50ms, out.P99ms = ms(lat[len(lat)/2]), ms(lat[min(len(lat)-1, len(lat)*99/100)])
	}
	out.OpsPerSec = math.Round(float64(len(lat)) / elapsed.Seconds())
	return out, nil
}
