package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/eventstore/storetest"
	"stele.dev/stele/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// newPool connects to url and migrates the ledger schema there.
func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

func openStore(t testing.TB, pool *pgxpool.Pool, opts postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newStore returns a store in a fresh schema of its own.
func newStore(t testing.TB) (*postgres.Store, *pgxpool.Pool) {
	pool := newPool(t, pgtest.Schema(t))
	return openStore(t, pool, postgres.Options{}), pool
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store { s, _ := newStore(t); return s })
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	s, pool := newStore(t)
	if _, err := s.Append(t.Context(), "s", eventstore.Any, storetest.Ev("thing.happened", "x")); err != nil {
		t.Fatal(err)
	}
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if h, _ := s.Head(t.Context()); h.Position != 1 {
		t.Fatalf("head after re-migrate: %d", h.Position)
	}
}

func TestOpenWithoutMigrationSaysSo(t *testing.T) {
	pool, err := pgxpool.New(t.Context(), pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = postgres.Open(t.Context(), pool, postgres.Options{})
	if err == nil || !contains(err.Error(), "stele migrate") {
		t.Fatalf("Open on an empty schema: %v, want advice to migrate", err)
	}
}

// The database itself refuses to change or remove ledger rows, whatever
// the application does.
func TestLedgerTablesAreAppendOnly(t *testing.T) {
	s, pool := newStore(t)
	if _, err := s.Append(t.Context(), "s", eventstore.Any, storetest.Ev("thing.happened", "x")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCheckpoint(t.Context(), eventstore.Checkpoint{Size: 1, Note: []byte("n"), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`UPDATE ledger_events SET data = 'x'`,
		`DELETE FROM ledger_events`,
		`TRUNCATE ledger_events`,
		`UPDATE ledger_checkpoints SET note = 'x'`,
		`DELETE FROM ledger_checkpoints`,
		`TRUNCATE ledger_checkpoints`,
	} {
		_, err := pool.Exec(t.Context(), sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !contains(pgErr.Message, "append-only") {
			t.Errorf("%s: %v, want refusal", sql, err)
		}
	}
	recs, err := s.ReadAll(t.Context(), 1, 0)
	if err != nil || len(recs) != 1 || string(recs[0].Data) != "x" {
		t.Fatalf("ledger changed: %v %v", recs, err)
	}
}

// Two stores on separate pools stand for two server processes sharing one
// database: their appends interleave into one contiguous chain, and each
// one's Wait wakes on the other's commits.
func TestTwoProcessesShareOneLog(t *testing.T) {
	url := pgtest.Schema(t)
	a := openStore(t, newPool(t, url), postgres.Options{})
	b := openStore(t, newPool(t, url), postgres.Options{})

	woke := make(chan eventstore.Head, 1)
	go func() {
		h, err := a.Wait(t.Context(), 1)
		if err == nil {
			woke <- h
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := b.Append(t.Context(), "from-b", eventstore.NoStream, storetest.Ev("thing.happened", "b0")); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-woke:
		if h.Position != 1 {
			t.Fatalf("a woke at %d", h.Position)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("store a did not wake on store b's commit")
	}

	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		for i, s := range []*postgres.Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stream := fmt.Sprintf("w-%d-%d", i, w)
				for n := range each {
					if _, err := s.Append(context.Background(), stream, eventstore.Exactly(uint64(n)), storetest.Ev("thing.happened", stream)); err != nil {
						t.Errorf("%s: %v", stream, err)
						return
					}
				}
			}()
		}
	}
	// Both also contend for one stream: exactly one wins each version.
	var conflicts, wins sync.Map
	for i, s := range []*postgres.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range 30 {
				_, err := s.Append(context.Background(), "shared", eventstore.Exactly(uint64(v)), storetest.Ev("thing.happened", fmt.Sprint(i)))
				switch {
				case err == nil:
					wins.Store(v, i)
				case errors.Is(err, eventstore.ErrConflict):
					conflicts.Store(v, i)
				default:
					t.Errorf("shared v%d: %v", v, err)
				}
			}
		}()
	}
	wg.Wait()
	all, err := readAll(a)
	if err != nil {
		t.Fatal(err)
	}
	storetest.CheckChain(t, all)
	shared := 0
	for _, r := range all {
		if r.StreamID == "shared" {
			shared++
		}
	}
	want := 1 + 2*writers*each
	if len(all)-shared != want {
		t.Fatalf("%d events outside the shared stream, want %d", len(all)-shared, want)
	}
	if h, _ := b.Head(t.Context()); h.Position != uint64(len(all)) {
		t.Fatalf("head %d, log holds %d", h.Position, len(all))
	}
	// Interleaving processes make each other's fast path stale: the
	// database refuses it and the slow path redoes the batch.
	sa, sb := a.Stats(), b.Stats()
	if sa.Refused+sb.Refused == 0 || sa.SlowBatches == 0 || sb.SlowBatches == 0 {
		t.Errorf("no fast-path refusals between two processes: %+v %+v", sa, sb)
	}
	if sa.Events+sb.Events != uint64(len(all)) {
		t.Errorf("stats count %d events, the log holds %d", sa.Events+sb.Events, len(all))
	}
}

// One process appending alone commits all but its first batch in one round trip.
func TestFastPathIsTheCommonCase(t *testing.T) {
	s, _ := newStore(t)
	for i := range 50 {
		if _, err := s.Append(t.Context(), "s", eventstore.Exactly(uint64(i)), storetest.Ev("thing.happened", "x")); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.SlowBatches != 1 || st.FastBatches != 49 || st.Refused != 0 || st.Events != 50 {
		t.Fatalf("stats %+v: want 1 slow batch, then 49 fast ones", st)
	}
	// A retry of a stored append goes the slow way and writes nothing.
	ev := storetest.Ev("thing.happened", "y")
	if _, err := s.Append(t.Context(), "s", eventstore.Any, ev); err != nil {
		t.Fatal(err)
	}
	res, err := s.Append(t.Context(), "s", eventstore.Any, ev)
	if err != nil || !res.Replayed || res.LastPosition != 51 {
		t.Fatalf("retry = %+v, %v", res, err)
	}
	if st := s.Stats(); st.Refused != 1 || st.Events != 51 {
		t.Fatalf("stats after a retry %+v: want one refusal (the stored event id) and no new event", st)
	}
}

func readAll(s eventstore.Store) ([]eventstore.Record, error) {
	var out []eventstore.Record
	for from := uint64(1); ; {
		recs, err := s.ReadAll(context.Background(), from, 1000)
		if err != nil || len(recs) == 0 {
			return out, err
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Position + 1
	}
}

// Recorded times never go back, even when the clock does.
func TestRecordedTimeNeverDecreases(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	s := openStore(t, newPool(t, pgtest.Schema(t)), postgres.Options{Now: clock})
	if _, err := s.Append(t.Context(), "s", eventstore.Any, storetest.Ev("thing.happened", "1")); err != nil {
		t.Fatal(err)
	}
	set(now.Add(-time.Hour))
	if _, err := s.Append(t.Context(), "s", eventstore.Any, storetest.Ev("thing.happened", "2")); err != nil {
		t.Fatal(err)
	}
	recs, _ := s.ReadAll(t.Context(), 1, 0)
	if len(recs) != 2 || !recs[1].RecordedAt.Equal(recs[0].RecordedAt) {
		t.Fatalf("recorded times %v, %v: want the second clamped to the first", recs[0].RecordedAt, recs[1].RecordedAt)
	}
}

// A cancelled caller whose append is already queued gets either a
// context error (nothing written) or the real result, never a lie.
func TestCancelledAppendsAreEitherWrittenOrNot(t *testing.T) {
	s, _ := newStore(t)
	type out struct {
		id  eventstore.ID
		err error
	}
	results := make(chan out, 200)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%7)*200*time.Microsecond)
			defer cancel()
			ev := storetest.Ev("thing.happened", fmt.Sprint(i))
			_, err := s.Append(ctx, fmt.Sprintf("s-%d", i), eventstore.NoStream, ev)
			results <- out{ev.ID, err}
		}()
	}
	wg.Wait()
	close(results)
	all, err := readAll(s)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[eventstore.ID]bool{}
	for _, r := range all {
		stored[r.ID] = true
	}
	for r := range results {
		if (r.err == nil) != stored[r.id] {
			t.Fatalf("append returned %v but stored=%v", r.err, stored[r.id])
		}
		if r.err != nil && !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("unexpected error %v", r.err)
		}
	}
}

func TestClosedStoreRefusesAppends(t *testing.T) {
	s, _ := newStore(t)
	s.Close()
	if _, err := s.Append(t.Context(), "s", eventstore.Any, storetest.Ev("thing.happened", "x")); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("append after Close: %v", err)
	}
}

func TestVerifierKeyIsSetOnce(t *testing.T) {
	s, _ := newStore(t)
	if _, ok, err := s.VerifierKey(t.Context()); err != nil || ok {
		t.Fatalf("fresh ledger has a key: %v %v", ok, err)
	}
	got, err := s.SetVerifierKey(t.Context(), "first")
	if err != nil || got != "first" {
		t.Fatalf("SetVerifierKey = %q, %v", got, err)
	}
	got, err = s.SetVerifierKey(t.Context(), "second")
	if err != nil || got != "first" {
		t.Fatalf("second SetVerifierKey = %q, %v; want the first kept", got, err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// ScanLog streams exactly what ReadAll and ReadTree read: the canonical
// encoding of each record, its stored hash and its stored tree hashes, in
// order, in batches, for any range.
func TestScanLogMatchesReadAll(t *testing.T) {
	s, _ := newStore(t)
	for i := range 5000 {
		ev := storetest.Ev("thing.happened", fmt.Sprint(i))
		if i%7 == 0 {
			ev.Metadata.CausationID, ev.Metadata.CorrelationID = "cause-ü", fmt.Sprint("corr-", i)
		}
		if i%11 == 0 {
			ev.Data = nil
		}
		if _, err := s.Append(t.Context(), fmt.Sprintf("s-%d", i%13), eventstore.Any, ev); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := readAll(s)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := s.ReadTree(t.Context(), 1, len(recs))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		block uint64
		rng   [2]uint64
	}{
		{0, [2]uint64{1, 5000}}, {0, [2]uint64{1, 1 << 62}}, {0, [2]uint64{17, 4200}}, {0, [2]uint64{4999, 5000}},
		{0, [2]uint64{6000, 7000}}, {0, [2]uint64{5, 4}},
		// Two connections taking turns by blocks of 300 or 1000 positions.
		{300, [2]uint64{1, 5000}}, {300, [2]uint64{17, 4200}}, {1000, [2]uint64{1, 1 << 62}}, {1000, [2]uint64{2500, 4999}},
	} {
		rng := c.rng
		restore := func() {}
		if c.block > 0 {
			restore = postgres.SetScanBlock(c.block)
		}
		var got []eventstore.StoredEvent
		batches := 0
		err := s.ScanLog(t.Context(), rng[0], rng[1], func(b []eventstore.StoredEvent) error {
			batches++
			got = append(got, b...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		from, to := rng[0], min(rng[1], uint64(len(recs)))
		want := 0
		if from <= to {
			want = int(to - from + 1)
		}
		if len(got) != want {
			t.Fatalf("range %v: %d events in %d batches, want %d", rng, len(got), batches, want)
		}
		for i, e := range got {
			r := &recs[int(from)-1+i]
			if string(e.Canonical) != string(eventstore.AppendCanonical(nil, r)) || e.Hash != r.Hash {
				t.Fatalf("range %v: position %d differs from ReadAll", rng, r.Position)
			}
			var tr []byte
			for _, h := range tree[int(from)-1+i].Hashes {
				tr = append(tr, h[:]...)
			}
			if string(e.Tree) != string(tr) {
				t.Fatalf("range %v: position %d: tree hashes differ from ReadTree", rng, r.Position)
			}
		}
		restore()
	}
	defer postgres.SetScanBlock(300)()
	// An error from fn stops the scan and is returned.
	stop := errors.New("stop")
	if err := s.ScanLog(t.Context(), 1, 5000, func([]eventstore.StoredEvent) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ScanLog = %v, want the callback's error", err)
	}
}
