package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/eventstore/verify"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Stele's speed on this machine",
	}
	cmd.AddCommand(newBenchLedgerCmd(), newBenchProjectionsCmd(), newBenchAPICmd())
	return cmd
}

// ledgerBench is the JSON that stele bench ledger prints.
type ledgerBench struct {
	Events       int     `json:"events"`
	Concurrency  int     `json:"concurrency"`
	EventBytes   int     `json:"event_bytes"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	// Batches is how many transactions the writer committed for the
	// appends; EventsPerBatch the mean events in one.
	Batches        float64 `json:"batches"`
	EventsPerBatch float64 `json:"events_per_batch"`
	// CPU time per appended event, of this process (the appenders and the
	// store) and of its PostgreSQL backends, and the same per row of the
	// CopyFrom baseline. Read from /proc: only when PostgreSQL runs on
	// this machine.
	ClientCPUus     float64 `json:"client_cpu_us_per_event,omitempty"`
	ServerCPUus     float64 `json:"server_cpu_us_per_event,omitempty"`
	CopyClientCPUus float64 `json:"copy_client_cpu_us_per_row,omitempty"`
	CopyServerCPUus float64 `json:"copy_server_cpu_us_per_row,omitempty"`

	CopyEventsPerSec float64 `json:"copy_baseline_events_per_sec,omitempty"`
	RatioToCopy      float64 `json:"ratio_to_copy,omitempty"`

	// Verification against the database (verify.Store) beside the rate
	// PostgreSQL sends the same rows at (a binary COPY of them, read and
	// dropped), measured in the same run.
	VerifyEventsPerSec  float64 `json:"verify_db_events_per_sec,omitempty"`
	DBReadEventsPerSec  float64 `json:"db_read_events_per_sec,omitempty"`
	VerifyDBRatioToRead float64 `json:"verify_db_ratio_to_read,omitempty"`
	// Verification in memory (verify.Records) beside raw SHA-256 over the
	// same canonical bytes, both on every core (GOMAXPROCS goroutines) and
	// both on one core (GOMAXPROCS=1).
	VerifyMemEventsPerS  float64 `json:"verify_mem_events_per_sec,omitempty"`
	SHA256EventsPerSec   float64 `json:"sha256_events_per_sec,omitempty"`
	VerifyRatioToSHA256  float64 `json:"verify_mem_ratio_to_sha256,omitempty"`
	VerifyMem1EventsPerS float64 `json:"verify_mem_1core_events_per_sec,omitempty"`
	SHA2561EventsPerSec  float64 `json:"sha256_1core_events_per_sec,omitempty"`
	Verify1RatioToSHA256 float64 `json:"verify_mem_1core_ratio_to_sha256,omitempty"`
	GOMAXPROCS           int     `json:"gomaxprocs"`
	Schema               string  `json:"schema,omitempty"`
	// Runs is how many measurements the figures are the medians of.
	Runs             int       `json:"runs"`
	EventsPerSecRuns []float64 `json:"events_per_sec_runs,omitempty"`
}

func newBenchLedgerCmd() *cobra.Command {
	var db dbFlags
	var events, concurrency, size int
	var baseline, verifyToo, keep bool
	var cpuProfile string
	var runs int
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Append synthetic events from concurrent appenders and report throughput and latency",
		Long: `Append --events synthetic events of about --size bytes (canonical
encoding) from --concurrency appenders, each appending one event at a time
to a stream of its own with an exact expected version, and print one JSON
object: events, seconds, events_per_sec, p50_ms, p99_ms (per append).

The benchmark runs in a scratch schema (stele_bench_…) of the database
named by --database-url or DATABASE_URL, dropped afterwards (--keep keeps
it): your ledger is not touched.

--baseline also measures pgx CopyFrom of the same rows (same columns,
constraints and indexes, one transaction) in the same run: the raw rate
this machine's PostgreSQL accepts such rows at. --verify also verifies the
appended log from the database (beside the rate PostgreSQL sends the same
rows at, as a binary COPY that is read and dropped) and in memory (beside
raw SHA-256 over the same canonical bytes, both sides on every core, then
both on one core).

--cpuprofile writes a CPU profile of the append phase; batches and
events_per_batch say how the writer grouped the appends into commits; when
PostgreSQL runs on this machine, the *_cpu_us_* figures give the CPU time
of this process and of its PostgreSQL backends per event (and per row of
the baseline), read from /proc.`,
		Example: `  stele bench ledger --dev --events 20000 --concurrency 64 --baseline --verify`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if events < 1 || concurrency < 1 || size < 200 || size > eventstore.MaxDataSize || runs < 1 {
				return usageError{errors.New("--events, --concurrency and --runs must be at least 1, --size between 200 and 262144")}
			}
			ctx := cmd.Context()
			admin, err := db.connect(ctx, quietLogger(), 2)
			if err != nil {
				return err
			}
			defer admin.Close()
			var all []ledgerBench
			for range runs {
				res, err := benchLedgerOnce(ctx, admin, benchOptions{events, concurrency, size, baseline, verifyToo, keep, cpuProfile})
				if err != nil {
					return err
				}
				all = append(all, res)
			}
			res := medianBench(all)
			return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
		},
	}
	db.register(cmd.Flags())
	cmd.Flags().IntVar(&events, "events", 10000, "events to append")
	cmd.Flags().IntVar(&concurrency, "concurrency", 16, "concurrent appenders")
	cmd.Flags().IntVar(&size, "size", 400, "approximate size of each event's canonical encoding, in bytes")
	cmd.Flags().BoolVar(&baseline, "baseline", false, "also measure pgx CopyFrom of the same rows")
	cmd.Flags().BoolVar(&verifyToo, "verify", false, "also measure verification against raw SHA-256")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the scratch schema")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the append phase to this file")
	cmd.Flags().IntVar(&runs, "runs", 1, "repeat the whole measurement this many times, each in a fresh schema, and report the median of each figure")
	return cmd
}

func round(f float64) float64 { return math.Round(f) }

type benchOptions struct {
	events, concurrency, size int
	baseline, verify, keep    bool
	cpuProfile                string
}

// scratchSchema creates a schema of its own for one benchmark run and
// returns its name and a function that drops it.
func scratchSchema(ctx context.Context, admin *pgxpool.Pool) (string, func(), error) {
	schema := "stele_bench_" + randomHex(4)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return "", nil, err
	}
	return schema, func() { admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") }, nil
}

// benchLedgerOnce runs one measurement in a fresh scratch schema.
func benchLedgerOnce(ctx context.Context, admin *pgxpool.Pool, o benchOptions) (ledgerBench, error) {
	logger := quietLogger()
	schema, drop, err := scratchSchema(ctx, admin)
	if err != nil {
		return ledgerBench{}, err
	}
	if !o.keep {
		defer drop()
	}
	cfg := admin.Config().Copy()
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.ConnConfig.RuntimeParams["application_name"] = schema
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return ledgerBench{}, err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool); err != nil {
		return ledgerBench{}, err
	}
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: logger})
	if err != nil {
		return ledgerBench{}, err
	}
	defer store.Close()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return ledgerBench{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return ledgerBench{}, err
		}
	}
	st0 := store.Stats()
	cpu := startCPU(ctx, pool, schema)
	res, err := benchAppend(ctx, store, o.events, o.concurrency, o.size)
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return res, err
	}
	if client, server, ok := cpu.stop(ctx); ok {
		res.ClientCPUus = math.Round(client.Seconds()*1e7/float64(o.events)) / 10
		res.ServerCPUus = math.Round(server.Seconds()*1e7/float64(o.events)) / 10
	}
	st := store.Stats()
	if b := st.FastBatches + st.SlowBatches - st0.FastBatches - st0.SlowBatches; b > 0 {
		res.Batches = float64(b)
		res.EventsPerBatch = math.Round(float64(st.Events-st0.Events)/float64(b)*10) / 10
	}
	res.GOMAXPROCS = runtime.GOMAXPROCS(0)
	res.Runs = 1
	if o.keep {
		res.Schema = schema
	}
	if o.baseline {
		rate, client, server, err := benchCopyCPU(ctx, pool, schema, o.events, o.size)
		if err != nil {
			return res, err
		}
		if client > 0 || server > 0 {
			res.CopyClientCPUus = math.Round(client.Seconds()*1e7/float64(o.events)) / 10
			res.CopyServerCPUus = math.Round(server.Seconds()*1e7/float64(o.events)) / 10
		}
		res.CopyEventsPerSec = round(rate)
		res.RatioToCopy = math.Round(res.EventsPerSec/rate*1000) / 1000
	}
	if o.verify {
		var verifies, reads, ratios []float64
		for range 3 {
			rep, err := verify.Store(ctx, store, verify.Options{})
			if err != nil {
				return res, err
			}
			read, err := benchReadLog(ctx, pool, rep.Events)
			if err != nil {
				return res, err
			}
			verifies, reads = append(verifies, rep.EventsPerSecond()), append(reads, read)
			ratios = append(ratios, rep.EventsPerSecond()/read)
		}
		res.VerifyEventsPerSec, res.DBReadEventsPerSec = round(median(verifies)), round(median(reads))
		res.VerifyDBRatioToRead = math.Round(median(ratios)*1000) / 1000
		recs, err := readAllRecords(ctx, store)
		if err != nil {
			return res, err
		}
		procs := runtime.GOMAXPROCS(0)
		res.SHA256EventsPerSec, res.VerifyMemEventsPerS, res.VerifyRatioToSHA256 = benchVerifyMem(recs, procs)
		res.SHA2561EventsPerSec, res.VerifyMem1EventsPerS, res.Verify1RatioToSHA256 = benchVerifyMem(recs, 1)
	}
	return res, nil
}

// medianBench returns the median of each figure over the runs (ratios
// are the medians of the per-run ratios, each measured within one run).
func medianBench(all []ledgerBench) ledgerBench {
	if len(all) == 1 {
		return all[0]
	}
	med := func(get func(ledgerBench) float64) float64 {
		v := make([]float64, len(all))
		for i, r := range all {
			v[i] = get(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out := all[0]
	out.Runs = len(all)
	out.Schema = ""
	out.Seconds = med(func(r ledgerBench) float64 { return r.Seconds })
	out.EventsPerSec = med(func(r ledgerBench) float64 { return r.EventsPerSec })
	out.P50ms = med(func(r ledgerBench) float64 { return r.P50ms })
	out.P99ms = med(func(r ledgerBench) float64 { return r.P99ms })
	out.MaxMs = med(func(r ledgerBench) float64 { return r.MaxMs })
	out.Batches = med(func(r ledgerBench) float64 { return r.Batches })
	out.EventsPerBatch = med(func(r ledgerBench) float64 { return r.EventsPerBatch })
	out.ClientCPUus = med(func(r ledgerBench) float64 { return r.ClientCPUus })
	out.ServerCPUus = med(func(r ledgerBench) float64 { return r.ServerCPUus })
	out.CopyClientCPUus = med(func(r ledgerBench) float64 { return r.CopyClientCPUus })
	out.CopyServerCPUus = med(func(r ledgerBench) float64 { return r.CopyServerCPUus })
	out.CopyEventsPerSec = med(func(r ledgerBench) float64 { return r.CopyEventsPerSec })
	out.RatioToCopy = med(func(r ledgerBench) float64 { return r.RatioToCopy })
	out.VerifyEventsPerSec = med(func(r ledgerBench) float64 { return r.VerifyEventsPerSec })
	out.DBReadEventsPerSec = med(func(r ledgerBench) float64 { return r.DBReadEventsPerSec })
	out.VerifyDBRatioToRead = med(func(r ledgerBench) float64 { return r.VerifyDBRatioToRead })
	out.VerifyMemEventsPerS = med(func(r ledgerBench) float64 { return r.VerifyMemEventsPerS })
	out.SHA256EventsPerSec = med(func(r ledgerBench) float64 { return r.SHA256EventsPerSec })
	out.VerifyRatioToSHA256 = med(func(r ledgerBench) float64 { return r.VerifyRatioToSHA256 })
	out.VerifyMem1EventsPerS = med(func(r ledgerBench) float64 { return r.VerifyMem1EventsPerS })
	out.SHA2561EventsPerSec = med(func(r ledgerBench) float64 { return r.SHA2561EventsPerSec })
	out.Verify1RatioToSHA256 = med(func(r ledgerBench) float64 { return r.Verify1RatioToSHA256 })
	for _, r := range all {
		out.EventsPerSecRuns = append(out.EventsPerSecRuns, r.EventsPerSec)
	}
	return out
}

// benchEvent makes a synthetic event whose canonical encoding is about
// size bytes.
func benchEvent(appender, seq, size int) eventstore.Event {
	meta := eventstore.Metadata{Actor: "token:bench", Tenant: "org-bench", RequestID: fmt.Sprintf("req-%d-%d", appender, seq), ClientAddr: "127.0.0.1"}
	overhead := 87 + 36 + len("bench-0000") + len("bench.appended") + len(meta.Actor) + len(meta.Tenant) + len(meta.RequestID) + len(meta.ClientAddr)
	pad := max(size-overhead-len(`{"n":,"v":""}`)-8, 0)
	raw := make([]byte, pad*3/4)
	for i := range raw {
		raw[i] = byte(i*7 + seq)
	}
	data := fmt.Appendf(nil, `{"n":%d,"v":"%s"}`, seq, base64.StdEncoding.EncodeToString(raw))
	return eventstore.Event{ID: eventstore.NewID(), Type: "bench.appended", Data: data, Metadata: meta}
}

func benchAppend(ctx context.Context, store *postgres.Store, events, concurrency, size int) (ledgerBench, error) {
	res := ledgerBench{Events: events, Concurrency: concurrency}
	lat := make([][]time.Duration, concurrency)
	var wg, ready sync.WaitGroup
	errs := make(chan error, concurrency)
	ready.Add(concurrency)
	for a := range concurrency {
		n := events / concurrency
		if a < events%concurrency {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("bench-%04d", a)
			ls := make([]time.Duration, 0, n)
			evs := make([]eventstore.Event, n)
			for i := range evs {
				evs[i] = benchEvent(a, i, size)
			}
			ready.Done()
			ready.Wait()
			for i, ev := range evs {
				t0 := time.Now()
				if _, err := store.Append(ctx, stream, eventstore.Exactly(uint64(i)), ev); err != nil {
					errs <- err
					return
				}
				ls = append(ls, time.Since(t0))
			}
			lat[a] = ls
		}()
	}
	ready.Wait()
	start := time.Now()
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	res.Seconds = math.Round(elapsed.Seconds()*1000) / 1000
	res.EventsPerSec = round(float64(events) / elapsed.Seconds())
	res.P50ms = ms(all[len(all)/2])
	res.P99ms = ms(all[min(len(all)-1, len(all)*99/100)])
	res.MaxMs = ms(all[len(all)-1])
	e := benchEvent(0, 0, size)
	r := eventstore.Record{StreamID: "bench-0000", Type: e.Type, Data: e.Data, Metadata: e.Metadata}
	res.EventBytes = eventstore.CanonicalSize(&r)
	return res, nil
}

// benchCopy copies rows shaped like the ledger's (a full hash chain and
// tree, computed beforehand) into a copy of the events table in one
// CopyFrom, and returns rows per second.
func benchCopy(ctx context.Context, pool *pgxpool.Pool, events, size int) (float64, error) {
	rate, _, _, err := benchCopyCPU(ctx, pool, "", events, size)
	return rate, err
}

// benchCopyCPU is benchCopy that also returns the CPU time this process
// and the pool's backends named app (see cpuMeter) used for the copy, or
// zeros when that cannot be measured.
func benchCopyCPU(ctx context.Context, pool *pgxpool.Pool, app string, events, size int) (rate float64, client, server time.Duration, err error) {
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_copy (LIKE ledger_events INCLUDING ALL)`); err != nil {
		return 0, 0, 0, err
	}
	rows := make([][]any, events)
	var f merkle.Frontier
	var prev eventstore.Hash
	now := eventstore.TruncateTime(time.Now())
	for i := range rows {
		e := benchEvent(i%64, i, size)
		r := eventstore.Record{Position: uint64(i + 1), StreamID: fmt.Sprintf("bench-%04d", i%64), StreamVersion: uint64(i/64 + 1),
			ID: e.ID, Type: e.Type, Data: e.Data, Metadata: e.Metadata, RecordedAt: now, PrevHash: prev}
		r.Hash = eventstore.ComputeHash(&r)
		prev = r.Hash
		var tree []byte
		for _, h := range f.Append(nil, r.Hash) {
			tree = append(tree, h[:]...)
		}
		m := r.Metadata
		rows[i] = []any{int64(r.Position), r.StreamID, int64(r.StreamVersion), [16]byte(r.ID), r.Type, r.Data, m.Actor, m.Tenant,
			m.RequestID, m.ClientAddr, m.CausationID, m.CorrelationID, r.RecordedAt, r.PrevHash[:], r.Hash[:], tree}
	}
	cols := []string{"position", "stream_id", "stream_version", "event_id", "type", "data", "actor", "tenant", "request_id",
		"client_addr", "causation_id", "correlation_id", "recorded_at", "prev_hash", "hash", "tree"}
	cpu := startCPU(ctx, pool, app)
	start := time.Now()
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"bench_copy"}, cols, pgx.CopyFromRows(rows))
	if err != nil {
		return 0, 0, 0, err
	}
	rate = float64(n) / time.Since(start).Seconds()
	client, server, _ = cpu.stop(ctx)
	return rate, client, server, nil
}

func readAllRecords(ctx context.Context, s eventstore.Store) ([]eventstore.Record, error) {
	var out []eventstore.Record
	for from := uint64(1); ; {
		recs, err := s.ReadAll(ctx, from, 5000)
		if err != nil || len(recs) == 0 {
			return out, err
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Position + 1
	}
}

// benchReadLog returns the rate at which PostgreSQL sends the log's rows
// as verify.Store reads them (every column, a binary COPY of blocks of
// 16384 positions, two connections taking turns) to a reader that drops
// them: the bound of verification against the database.
func benchReadLog(ctx context.Context, pool *pgxpool.Pool, end uint64) (float64, error) {
	const block, readers = 16384, 2
	start := time.Now()
	var rows atomic.Int64
	errs := make(chan error, readers)
	for k := range uint64(readers) {
		go func() {
			errs <- func() error {
				conn, err := pool.Acquire(ctx)
				if err != nil {
					return err
				}
				defer conn.Release()
				for from := 1 + k*block; from <= end; from += readers * block {
					tag, err := conn.Conn().PgConn().CopyTo(ctx, io.Discard, fmt.Sprintf(`COPY (SELECT position, stream_version,
						recorded_at, event_id, prev_hash, hash, tree, stream_id, type, actor, tenant, request_id, client_addr,
						causation_id, correlation_id, data FROM ledger_events WHERE position BETWEEN %d AND %d ORDER BY position)
						TO STDOUT (FORMAT binary)`, from, min(from+block-1, end)))
					if err != nil {
						return err
					}
					rows.Add(tag.RowsAffected())
				}
				return nil
			}()
		}()
	}
	for range readers {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return float64(rows.Load()) / time.Since(start).Seconds(), nil
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// benchVerifyMem times raw SHA-256 over the records' canonical bytes
// (encoded beforehand) and full verification of the records in memory
// (verify.Records), both with GOMAXPROCS set to procs and the hashing
// spread over that many goroutines, alternately, five times each. It
// returns the median rates and the median of the per-round ratios.
func benchVerifyMem(recs []eventstore.Record, procs int) (shaRate, verifyRate, ratio float64) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	canon := make([][]byte, len(recs))
	for i := range recs {
		canon[i] = eventstore.AppendCanonical(nil, &recs[i])
	}
	var shas, verifies, ratios []float64
	for range 5 {
		t0 := time.Now()
		var wg sync.WaitGroup
		chunk := (len(canon) + procs - 1) / procs
		for lo := 0; lo < len(canon); lo += chunk {
			wg.Add(1)
			go func(part [][]byte) {
				defer wg.Done()
				for _, c := range part {
					sha256.Sum256(c)
				}
			}(canon[lo:min(lo+chunk, len(canon))])
		}
		wg.Wait()
		sha := float64(len(recs)) / time.Since(t0).Seconds()

		rep, err := verify.Records(recs, verify.Options{})
		if err != nil {
			panic(err)
		}
		shas, verifies = append(shas, sha), append(verifies, rep.EventsPerSecond())
		ratios = append(ratios, rep.EventsPerSecond()/sha)
	}
	return round(median(shas)), round(median(verifies)), math.Round(median(ratios)*1000) / 1000
}

// cpuMeter measures the CPU time this process and the PostgreSQL backends
// of a pool (those whose application_name is app) use. It reads /proc, so
// it measures only on Linux with PostgreSQL on the same machine.
type cpuMeter struct {
	pool    *pgxpool.Pool
	app     string
	self    time.Duration
	backend map[int]time.Duration
	ok      bool
}

func startCPU(ctx context.Context, pool *pgxpool.Pool, app string) *cpuMeter {
	m := &cpuMeter{pool: pool, app: app}
	if app == "" {
		return m
	}
	m.self, m.ok = procCPU("self")
	m.backend = m.backends(ctx)
	return m
}

// stop returns the CPU time used since startCPU by this process and by the
// backends; ok is false when it could not be measured.
func (m *cpuMeter) stop(ctx context.Context) (client, server time.Duration, ok bool) {
	self, ok := procCPU("self")
	if !ok || !m.ok {
		return 0, 0, false
	}
	now := m.backends(ctx)
	if len(now) == 0 {
		return 0, 0, false
	}
	for pid, t := range now {
		server += t - m.backend[pid]
	}
	return self - m.self, server, true
}

func (m *cpuMeter) backends(ctx context.Context) map[int]time.Duration {
	out := map[int]time.Duration{}
	rows, err := m.pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, m.app)
	if err != nil {
		return out
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) == nil {
			if t, ok := procCPU(strconv.Itoa(pid)); ok {
				out[pid] = t
			}
		}
	}
	return out
}

// procCPU returns the user and system CPU time of a process (a pid or
// "self") from /proc/<pid>/stat, in clock ticks of 10 ms.
func procCPU(pid string) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}
