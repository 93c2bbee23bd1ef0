package witness_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/memstore"
	"stele.dev/stele/eventstore/witness"
	"stele.dev/stele/eventstore/witness/witnesstest"
	"stele.dev/stele/internal/pgtest"
	"stele.dev/stele/internal/syncbuf"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var ctx = context.Background()

func TestParse(t *testing.T) {
	wt, err := witnesstest.New("witness.example/w1")
	if err != nil {
		t.Fatal(err)
	}
	vkey := wt.VerifierKey()
	for _, tc := range []struct {
		spec, url string
	}{
		{vkey + "@https://witness.example/w1", "https://witness.example/w1"},
		{vkey + "@https://witness.example/w1/", "https://witness.example/w1"},
		{" " + vkey + "@http://127.0.0.1:8080 ", "http://127.0.0.1:8080"},
		{vkey + "@https://user@witness.example/x@y", "https://user@witness.example/x@y"},
	} {
		w, err := witness.Parse(tc.spec)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.spec, err)
		}
		if w.Name != "witness.example/w1" || w.Key != vkey || w.URL != tc.url || w.Verifier().KeyHash() == 0 {
			t.Fatalf("Parse(%q) = %+v", tc.spec, w)
		}
		if again, err := witness.Parse(w.String()); err != nil || again.String() != w.String() {
			t.Fatalf("round trip of %q: %v %v", w.String(), again, err)
		}
	}
	for _, spec := range []string{
		"", vkey, "@https://witness.example", vkey + "@ftp://witness.example", vkey + "@https://",
		"witness.example/w1+0000+AAAA@https://witness.example", vkey + "x@https://witness.example",
		vkey + "@https://witness.example/?q=1",
	} {
		if _, err := witness.Parse(spec); err == nil {
			t.Errorf("Parse(%q) succeeded", spec)
		}
	}
}

// fixture is a log in memory with a signer, a witness over HTTP that
// trusts the log's key, and a cosigner with its table in PostgreSQL.
type fixture struct {
	log     *memstore.Store
	signer  *checkpoint.Signer
	cpr     *checkpoint.Checkpointer
	wt      *witnesstest.Witness
	srv     *httptest.Server
	w       witness.Witness
	store   *witness.Store
	pool    *pgxpool.Pool
	c       *witness.Cosigner
	logs    *syncbuf.Buffer
	counter int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	skey, _, err := checkpoint.GenerateKey("stele.test/witness")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureWith(t, memstore.New(nil), signer)
}

func newFixtureWith(t *testing.T, st *memstore.Store, signer *checkpoint.Signer) *fixture {
	t.Helper()
	wt, err := witnesstest.New("witness.test/w1")
	if err != nil {
		t.Fatal(err)
	}
	if err := wt.Trust(signer.Verifier().String()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(wt)
	t.Cleanup(srv.Close)
	w, err := witness.Parse(wt.VerifierKey() + "@" + srv.URL + "/prefix")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{log: st, signer: signer, cpr: &checkpoint.Checkpointer{Store: st, Signer: signer}, wt: wt, srv: srv, w: w}
	f.pool = newPool(t)
	f.store = witness.NewStore(f.pool)
	f.logs = &syncbuf.Buffer{}
	f.c = &witness.Cosigner{Log: st, Store: f.store, Witnesses: []witness.Witness{w}, Poll: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(f.logs, nil))}
	return f
}

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(ctx, pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := witness.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := witness.Migrate(ctx, pool); err != nil { // a no-op the second time
		t.Fatal(err)
	}
	return pool
}

// grow appends n events and signs a checkpoint.
func (f *fixture) grow(t *testing.T, n int) eventstore.Checkpoint {
	t.Helper()
	for range n {
		f.counter++
		ev := eventstore.Event{ID: eventstore.NewID(), Type: "secret.updated", Data: fmt.Appendf(nil, `{"n":%d}`, f.counter),
			Metadata: eventstore.Metadata{Actor: "user:ada", Tenant: "org-1"}}
		if _, err := f.log.Append(ctx, "secret-1", eventstore.Any, ev); err != nil {
			t.Fatal(err)
		}
	}
	cp, err := f.cpr.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// checkCosigned checks, as an auditor would, that the note with the
// stored cosignatures verifies under the log's key and the witness's.
func (f *fixture) checkCosigned(t *testing.T, cp eventstore.Checkpoint) witness.Cosignature {
	t.Helper()
	cs, err := f.store.Cosignatures(ctx, cp.Size, cp.Root)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Witness != f.wt.Name() || cs[0].Key != f.wt.VerifierKey() || cs[0].Size != cp.Size || cs[0].Root != cp.Root {
		t.Fatalf("cosignatures of %d: %+v", cp.Size, cs)
	}
	if d := time.Since(cs[0].CosignedAt); d < -time.Minute || d > time.Minute || cs[0].ReceivedAt.IsZero() {
		t.Fatalf("cosigned at %s, received at %s", cs[0].CosignedAt, cs[0].ReceivedAt)
	}
	signed := witness.AppendCosignatures(cp.Note, cs)
	wv, err := fnote.NewVerifierForCosignatureV1(f.wt.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(f.signer.Verifier().Note(), wv))
	if err != nil || len(n.Sigs) != 2 {
		t.Fatalf("the cosigned note does not verify: %v\n%s", err, signed)
	}
	parsed, _, _, err := log.ParseCheckpoint(signed, f.signer.Origin(), f.signer.Verifier().Note(), wv)
	if err != nil || parsed.Size != cp.Size || !bytes.Equal(parsed.Hash, cp.Root[:]) {
		t.Fatalf("ParseCheckpoint: %+v %v", parsed, err)
	}
	return cs[0]
}

func TestCosign(t *testing.T) {
	f := newFixture(t)
	// No checkpoint, or only the empty tree's: nothing to send.
	if ok, err := f.c.Submit(ctx, f.w); ok || err != nil {
		t.Fatalf("Submit with no checkpoint: %v %v", ok, err)
	}
	cp1 := f.grow(t, 5)
	if ok, err := f.c.Submit(ctx, f.w); !ok || err != nil {
		t.Fatalf("Submit: %v %v", ok, err)
	}
	f.checkCosigned(t, cp1)
	if got := f.wt.Size(f.signer.Origin()); got != cp1.Size {
		t.Fatalf("the witness holds size %d, want %d", got, cp1.Size)
	}
	// Nothing new: no request.
	if ok, err := f.c.Submit(ctx, f.w); ok || err != nil {
		t.Fatalf("Submit again: %v %v", ok, err)
	}
	// The next one goes with a consistency proof from the first (sizes
	// that make a proof of several hashes).
	for _, n := range []int{1, 7, 30, 100} {
		cp := f.grow(t, n)
		if ok, err := f.c.Submit(ctx, f.w); !ok || err != nil {
			t.Fatalf("Submit at %d: %v %v", cp.Size, ok, err)
		}
		f.checkCosigned(t, cp)
	}
	if st := f.wt.Statuses(); len(st) != 5 || st[0] != 200 || st[4] != 200 {
		t.Fatalf("the witness answered %v", st)
	}
	// The listing, newest first.
	ws, err := f.store.Witnessed(ctx, 0, 2)
	if err != nil || len(ws) != 2 || ws[0].Size != 143 || ws[1].Size != 43 || len(ws[0].Cosignatures) != 1 {
		t.Fatalf("Witnessed = %+v, %v", ws, err)
	}
	ws, err = f.store.Witnessed(ctx, 43, 10)
	if err != nil || len(ws) != 3 || ws[0].Size != 13 || ws[2].Size != 5 {
		t.Fatalf("Witnessed below 43 = %+v, %v", ws, err)
	}
	st, err := f.c.Status(ctx)
	if err != nil || len(st) != 1 || st[0].Latest == nil || st[0].Latest.Size != 143 || st[0].LastError != "" || st[0].Failures != 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	// A second cosignature of the same size is ignored.
	again := f.checkCosigned(t, eventstore.Checkpoint{Size: 5, Root: cp1.Root, Note: cp1.Note})
	again.Signature = "AAAA"
	if err := f.store.Add(ctx, again); err != nil {
		t.Fatal(err)
	}
	f.checkCosigned(t, cp1)
}

// A witness that knows a newer size than this server thinks answers 409
// with it; the cosigner resends with a proof from that size.
func TestConflictSize(t *testing.T) {
	f := newFixture(t)
	cp1 := f.grow(t, 10)
	if ok, err := f.c.Submit(ctx, f.w); !ok || err != nil {
		t.Fatalf("Submit: %v %v", ok, err)
	}
	// Someone else (another server of this log) brings the witness to a
	// newer checkpoint.
	cp2 := f.grow(t, 10)
	body, err := witness.Request(ctx, f.log, cp2, cp1.Size)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(f.srv.URL+"/prefix/add-checkpoint", "", bytes.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("direct add-checkpoint: %v %v", resp, err)
	}
	resp.Body.Close()
	cp3 := f.grow(t, 10)
	if ok, err := f.c.Submit(ctx, f.w); !ok || err != nil {
		t.Fatalf("Submit after the witness moved on: %v %v", ok, err)
	}
	f.checkCosigned(t, cp3)
	if st := f.wt.Statuses(); fmt.Sprint(st) != "[200 200 409 200]" {
		t.Fatalf("the witness answered %v", st)
	}
	if !strings.Contains(f.logs.String(), "witness holds another size") {
		t.Fatalf("no log line about the 409:\n%s", f.logs)
	}

	// A server that holds no cosignature (a new table) starts from 0 and
	// learns the witness's size the same way.
	c2 := &witness.Cosigner{Log: f.log, Store: witness.NewStore(newPool(t)), Witnesses: []witness.Witness{f.w}}
	cp4 := f.grow(t, 1)
	if ok, err := c2.Submit(ctx, f.w); !ok || err != nil {
		t.Fatalf("Submit from a fresh table: %v %v", ok, err)
	}
	if st := f.wt.Statuses(); fmt.Sprint(st[4:]) != "[409 200]" {
		t.Fatalf("the witness answered %v", st)
	}
	if cs, err := c2.Cosignatures(ctx, cp4.Size, cp4.Root); err != nil || len(cs) != 1 {
		t.Fatalf("fresh table: %+v %v", cs, err)
	}
}

// A log that forks (another history under the same key) is refused by a
// witness that saw the first: at the same size with 409 and no size
// (ErrConflict), at a larger one with 422 (the proof fails).
func TestConflictFork(t *testing.T) {
	f := newFixture(t)
	cp := f.grow(t, 8)
	if ok, err := f.c.Submit(ctx, f.w); !ok || err != nil {
		t.Fatalf("Submit: %v %v", ok, err)
	}
	fork := &fixture{log: memstore.New(nil), signer: f.signer, counter: 1000}
	fork.cpr = &checkpoint.Checkpointer{Store: fork.log, Signer: f.signer}
	forked := fork.grow(t, 8)
	if forked.Size != cp.Size || forked.Root == cp.Root {
		t.Fatal("the fork is not a fork")
	}
	store := witness.NewStore(newPool(t))
	c := &witness.Cosigner{Log: fork.log, Store: store, Witnesses: []witness.Witness{f.w}}
	if ok, err := c.Submit(ctx, f.w); ok || !errors.Is(err, witness.ErrConflict) {
		t.Fatalf("Submit of a fork at the same size: %v %v", ok, err)
	}
	fork.grow(t, 5)
	if ok, err := c.Submit(ctx, f.w); ok || !errors.Is(err, witness.ErrRefused) || !strings.Contains(err.Error(), "consistency proof") {
		t.Fatalf("Submit of a fork at a larger size: %v %v", ok, err)
	}
	if ws, err := store.Witnessed(ctx, 0, 10); err != nil || len(ws) != 0 {
		t.Fatalf("stored %+v %v", ws, err)
	}
	if got := f.wt.Size(f.signer.Origin()); got != cp.Size {
		t.Fatalf("the witness moved to %d", got)
	}
}

// Cosignatures that do not verify are refused, logged and not stored.
func TestBadCosignature(t *testing.T) {
	for _, mode := range []witnesstest.Mode{witnesstest.WrongKey, witnesstest.Corrupt} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			f := newFixture(t)
			f.wt.SetMode(mode)
			cp := f.grow(t, 3)
			if ok, err := f.c.Submit(ctx, f.w); ok || !errors.Is(err, witness.ErrBadCosignature) {
				t.Fatalf("Submit: %v %v", ok, err)
			}
			if cs, err := f.store.Cosignatures(ctx, cp.Size, cp.Root); err != nil || len(cs) != 0 {
				t.Fatalf("stored %+v %v", cs, err)
			}
			// Run logs it as an error and keeps trying.
			run, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); f.c.Run(run) }()
			waitFor(t, func() bool { return strings.Contains(f.logs.String(), "witness cosignature refused") })
			stop()
			<-done
			if !strings.Contains(f.logs.String(), "level=ERROR") {
				t.Fatalf("logs:\n%s", f.logs)
			}
			st, err := f.c.Status(ctx)
			if err != nil || st[0].Latest != nil || !strings.Contains(st[0].LastError, "no valid cosignature") || st[0].Failures == 0 {
				t.Fatalf("Status = %+v %v", st, err)
			}
		})
	}
}

// A witness that is down holds up nothing: checkpoints go on, and the
// cosigner retries with backoff until it is back.
func TestWitnessDown(t *testing.T) {
	for _, mode := range []witnesstest.Mode{witnesstest.Down, witnesstest.Unavailable} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			f := newFixture(t)
			f.wt.SetMode(mode)
			run, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); f.c.Run(run) }()
			defer func() { stop(); <-done }()
			cp := f.grow(t, 4)
			waitFor(t, func() bool { return len(f.wt.Statuses()) >= 3 })
			cp = f.grow(t, 4) // the log goes on
			st, err := f.c.Status(ctx)
			if err != nil || st[0].LastError == "" || st[0].Failures == 0 || st[0].NextAttempt.IsZero() || st[0].Latest != nil {
				t.Fatalf("Status while down = %+v %v", st, err)
			}
			if !strings.Contains(f.logs.String(), "witness unavailable") || !strings.Contains(f.logs.String(), "level=WARN") {
				t.Fatalf("logs:\n%s", f.logs)
			}
			f.wt.SetMode(witnesstest.Normal)
			waitFor(t, func() bool {
				cs, err := f.store.Cosignatures(ctx, cp.Size, cp.Root)
				return err == nil && len(cs) == 1
			})
			f.checkCosigned(t, cp)
			waitFor(t, func() bool {
				st, err := f.c.Status(ctx)
				return err == nil && st[0].LastError == "" && st[0].Failures == 0
			})
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The worked example of docs/ledger-format.md §9: the vectors' checkpoint
// cosigned by a test witness verifies with the quoted witness key.
func TestDocsCosignatureExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/ledger-format.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(doc), "## 9. Tiles and witnesses")
	if !ok {
		t.Fatal("no section 9")
	}
	blocks := strings.Split(sec, "```\n")
	var vkey, cosigned string
	for i := 1; i < len(blocks); i += 2 {
		b := blocks[i]
		switch {
		case strings.HasPrefix(b, "example.com/stele/test-witness+"):
			vkey = strings.TrimSpace(b)
		case strings.HasPrefix(b, "example.com/stele/test-vectors\n"):
			cosigned = b
		}
	}
	if vkey == "" || cosigned == "" {
		t.Fatal("the example's key or note is missing")
	}
	logNote, line, ok := strings.Cut(cosigned, "— example.com/stele/test-witness ")
	if !ok {
		t.Fatal("no witness line")
	}
	w, err := witness.New(vkey, "https://witness.example")
	if err != nil {
		t.Fatal(err)
	}
	logKey := "example.com/stele/test-vectors+57c1fd3a+AYFGZA8CSTr0+8VP4zOI513CyTeuC3cnzCsq+xt1GZo+"
	lv, err := checkpoint.NewVerifier(logKey)
	if err != nil {
		t.Fatal(err)
	}
	size, root, err := lv.Open([]byte(logNote))
	if err != nil || size != 3 {
		t.Fatalf("the log's note: %d %v", size, err)
	}
	cs, err := witness.Open(eventstore.Checkpoint{Size: size, Root: root, Note: []byte(logNote)}, []byte("— example.com/stele/test-witness "+line), w, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if cs.CosignedAt.Unix() != 1795340000 || cs.Line() != "— example.com/stele/test-witness "+line {
		t.Fatalf("cosignature %+v", cs)
	}
	if _, _, _, err := log.ParseCheckpoint([]byte(cosigned), "example.com/stele/test-vectors", lv.Note(), w.Verifier()); err != nil {
		t.Fatal(err)
	}
}
