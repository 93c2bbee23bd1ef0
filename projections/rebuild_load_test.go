package projections_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/internal/pgtest"
	"stele.dev/stele/projections"
)

// twin is an incremental build of e's log in a schema of its own, in
// small batches, never rebuilt: what a rebuild must equal.
func twin(t *testing.T, e *env) (*pgxpool.Pool, *projections.Projector) {
	t.Helper()
	pool, err := pgxpool.New(ctx, pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := projections.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	p := projections.New(projections.Config{Pool: pool, Store: e.store, Batch: 7}, projections.All()...)
	c, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(c) }()
	t.Cleanup(func() { cancel(); <-done })
	return pool, p
}

// dumpPool is env.dump over another schema's read models.
func dumpPool(t testing.TB, pool *pgxpool.Pool) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, p := range projections.All() {
		for _, table := range p.Tables() {
			rows, err := pool.Query(ctx, `SELECT t::text FROM `+pgx.Identifier{table}.Sanitize()+` t`)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(lines)
			out[table] = lines
		}
	}
	return out
}

// latencies collects how long reads took, and when.
type latencies struct {
	mu    sync.Mutex
	reads []timedRead
}

type timedRead struct {
	start time.Time
	took  time.Duration
	what  string
}

func (l *latencies) add(what string, start time.Time) {
	took := time.Since(start)
	l.mu.Lock()
	l.reads = append(l.reads, timedRead{start, took, what})
	l.mu.Unlock()
}

// stats returns the count, median, 99th percentile and maximum of the
// reads that were under way at some time in [from, to], and the slowest
// one's name.
func (l *latencies) stats(from, to time.Time) (n int, p50, p99, worst time.Duration, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []time.Duration
	for _, r := range l.reads {
		if !r.start.After(to) && !r.start.Add(r.took).Before(from) {
			ds = append(ds, r.took)
			if r.took > worst {
				worst, what = r.took, r.what
			}
		}
	}
	if len(ds) == 0 {
		return 0, 0, 0, 0, ""
	}
	slices.Sort(ds)
	return len(ds), ds[len(ds)/2], ds[len(ds)*99/100], worst, what
}

// Rebuild with no downtime, under load: writers keep appending and
// readers keep reading through the read models while every projection is
// rebuilt into shadow tables and swapped in. No read fails, and no read
// sees less than a read before it (an empty or partial model, or one
// behind the live one); afterwards the read models equal an incremental
// build of the same log, byte for byte. The test logs how long readers
// waited on each swap.
func TestRebuildUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test")
	}
	e := newEnv(t)
	incrPool, _ := twin(t, e)
	e.start(t)
	synthLog(t, e, 4) // bulk, so that each rebuild takes a while
	scenario(t, e, 5, 2)
	e.caughtUp(t)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: fmt.Sprintf("W%d_%d", w, i)}
				if _, err := e.svc.SetSecret(ctx, bob, ref, app.SetSecret{Value: []byte("v")}); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				switch i % 4 {
				case 1:
					_, err := e.svc.GrantRole(ctx, ada, "acme", fmt.Sprintf("u-%d-%d", w, i), domain.RoleViewer, "web")
					if err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
				case 3:
					if _, err := e.svc.RevealSecret(ctx, bob, ref, 0, "load", domain.ChannelAPI); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
				}
				writes.Add(1)
			}
		}()
	}

	r := projections.NewReader(e.pool)
	lat := &latencies{}
	var reads, failures atomic.Int64
	for rd := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var secrets, members, tokens, approvals, readsSeen, keysets, envs int
			var audit uint64
			fail := func(format string, args ...any) {
				if failures.Add(1) <= 10 {
					t.Errorf("reader %d: "+format, append([]any{rd}, args...)...)
				}
			}
			// atLeast checks that a read saw no less than the one before.
			atLeast := func(what string, got int, last *int) {
				if got == 0 || got < *last {
					fail("%s: %d, after %d", what, got, *last)
				}
				*last = max(*last, got)
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				ss, err := r.Secrets(ctx, "acme", "web", "production")
				lat.add("secrets", start)
				if err != nil {
					fail("secrets: %v", err)
					continue
				}
				atLeast("secrets", len(ss), &secrets)

				start = time.Now()
				ms, err := r.Members(ctx, "acme")
				lat.add("members", start)
				if err != nil {
					fail("members: %v", err)
					continue
				}
				atLeast("members", len(ms), &members)

				start = time.Now()
				ts, err := r.Tokens(ctx, "acme")
				lat.add("tokens", start)
				if err != nil {
					fail("tokens: %v", err)
					continue
				}
				atLeast("tokens", len(ts), &tokens)

				start = time.Now()
				rows, _, err := r.AuditFeed(ctx, "acme", projections.AuditFilter{}, 0, 1)
				lat.add("audit", start)
				if err != nil || len(rows) != 1 || rows[0].Position < audit {
					fail("audit feed: %v %+v after %d", err, rows, audit)
					continue
				}
				audit = rows[0].Position

				start = time.Now()
				rs, err := r.Reads(ctx, "acme", "web", "production", "", time.Time{}, time.Time{})
				lat.add("reads", start)
				if err != nil {
					fail("reads: %v", err)
					continue
				}
				atLeast("reads", len(rs), &readsSeen)

				start = time.Now()
				ks, err := r.Keysets(ctx, "acme")
				lat.add("keysets", start)
				if err != nil {
					fail("keysets: %v", err)
					continue
				}
				atLeast("keysets", len(ks), &keysets)

				start = time.Now()
				es, err := r.Environments(ctx, "acme", "")
				lat.add("environments", start)
				if err != nil {
					fail("environments: %v", err)
					continue
				}
				atLeast("environments", len(es), &envs)

				start = time.Now()
				as, err := r.Approvals(ctx, "acme", "", time.Now())
				lat.add("approvals", start)
				if err != nil {
					fail("approvals: %v", err)
					continue
				}
				atLeast("approvals", len(as), &approvals)

				start = time.Now()
				ls, err := projections.LedgerState(ctx, e.pool)
				lat.add("ledger", start)
				if err != nil || ls.VerifiedEvents == 0 {
					fail("ledger state: %v %+v", err, ls)
					continue
				}
				reads.Add(1)
			}
		}()
	}

	// A quiet moment of load first, for comparison.
	time.Sleep(500 * time.Millisecond)
	baseline := time.Now()
	time.Sleep(time.Second)
	rebuilding := time.Now()
	for _, p := range e.proj.Projections() {
		res, err := e.proj.RebuildReport(ctx, p.Name())
		if err != nil {
			t.Fatalf("rebuild %s: %v", p.Name(), err)
		}
		n, _, _, worst, what := lat.stats(res.SwapStart, res.SwapStart.Add(res.Swap))
		t.Logf("rebuilt %-14s %6d events in %6.0f ms; swap %5.2f ms (%d attempts); %3d reads under way during the swap, the slowest (%s) %5.2f ms",
			p.Name(), res.Position, ms(res.Duration), ms(res.Swap), res.Attempts, n, what, ms(worst))
	}
	done := time.Now()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	n, p50, p99, worst, what := lat.stats(baseline, rebuilding)
	t.Logf("reads before the rebuilds: %5d, p50 %.2f ms, p99 %.2f ms, max %.2f ms (%s)", n, ms(p50), ms(p99), ms(worst), what)
	n, p50, p99, worst, what = lat.stats(rebuilding, done)
	t.Logf("reads during the rebuilds: %5d, p50 %.2f ms, p99 %.2f ms, max %.2f ms (%s)", n, ms(p50), ms(p99), ms(worst), what)
	t.Logf("%d writes, %d rounds of reads, no failure", writes.Load(), reads.Load())
	if writes.Load() == 0 || reads.Load() == 0 {
		t.Fatal("no load")
	}

	// The rebuilt read models equal an incremental build of the same log.
	e.caughtUp(t)
	head := ok(e.store.Head(ctx)).Position
	if err := projections.WaitFor(ctx, incrPool, head, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	rebuilt, incremental := e.dump(t), dumpPool(t, incrPool)
	for table, rows := range incremental {
		if len(rows) == 0 {
			t.Errorf("table %s is empty", table)
		}
		if !slices.Equal(rows, rebuilt[table]) {
			t.Errorf("table %s: %d rows rebuilt under load, %d built incrementally", table, len(rebuilt[table]), len(rows))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// A reader that keeps a live table busy (here a transaction that read it
// and stays open) does not stall the other readers behind the swap: the
// swap gives up its lock after the lock timeout and tries again later,
// and the readers queued behind it go on meanwhile.
func TestSwapDoesNotQueueReadersBehindABusyTable(t *testing.T) {
	e := newEnv(t, projections.Audit{})
	e.start(t)
	scenario(t, e, 3, 1)
	e.caughtUp(t)

	busy, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := busy.QueryRow(ctx, `SELECT count(*) FROM proj_audit`).Scan(&n); err != nil || n == 0 {
		busy.Rollback(ctx)
		t.Fatalf("audit rows: %d %v", n, err)
	}
	const hold = 1500 * time.Millisecond
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		time.Sleep(hold)
		busy.Commit(ctx)
	}()
	defer func() { <-committed }()

	type result struct {
		res projections.RebuildResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := e.proj.RebuildReport(ctx, "audit")
		done <- result{res, err}
	}()
	r := projections.NewReader(e.pool)
	var worst time.Duration
	var reads int
	for {
		select {
		case got := <-done:
			if got.err != nil {
				t.Fatal(got.err)
			}
			t.Logf("swap after %d attempts; %d reads meanwhile, the slowest %.1f ms", got.res.Attempts, reads, ms(worst))
			if got.res.Attempts < 2 {
				t.Errorf("the swap took its lock in %d attempt(s) while a transaction held the table", got.res.Attempts)
			}
			if worst >= hold/3 {
				t.Errorf("a read waited %v behind the swap", worst)
			}
			return
		default:
		}
		start := time.Now()
		if _, _, err := r.AuditFeed(ctx, "acme", projections.AuditFilter{}, 0, 5); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
		reads++
	}
}
