package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"stele.dev/stele/app"
	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/memstore"
	"stele.dev/stele/eventstore/verify"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type fixture struct {
	svc      *app.Service
	store    eventstore.Store
	material crypto.MaterialStore
	catalog  *app.Catalog
	clock    *clock
	logs     *bytes.Buffer
	kek      crypto.KEK
}

func newKEK(t testing.TB) crypto.KEK {
	t.Helper()
	uri, err := crypto.CreateLocalMasterKey(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenKEK(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

// newFixture builds a service on store and material (memory ones when nil).
func newFixture(t testing.TB, store eventstore.Store, material crypto.MaterialStore, kek crypto.KEK) *fixture {
	t.Helper()
	return newFixtureWith(t, store, material, kek, nil)
}

func newFixtureWith(t testing.TB, store eventstore.Store, material crypto.MaterialStore, kek crypto.KEK, openKEK func(string) (crypto.KEK, error)) *fixture {
	t.Helper()
	if store == nil {
		store = memstore.New(nil)
	}
	if material == nil {
		material = crypto.NewMemoryMaterialStore()
	}
	if kek == nil {
		kek = newKEK(t)
	}
	f := &fixture{store: store, material: material, catalog: app.NewCatalog(), clock: &clock{now: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)},
		logs: &bytes.Buffer{}, kek: kek}
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, f.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := app.New(app.Config{Store: store, Material: material, KEK: kek, OpenKEK: openKEK, Now: f.clock.Now, Logger: logger, Catalog: f.catalog})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.catalog.Run(ctx, store) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

var (
	ctx   = context.Background()
	ada   = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada"}, RequestID: "r-ada", ClientAddr: "192.0.2.1"}
	bob   = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "bob"}, RequestID: "r-bob"}
	eve   = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "eve"}, RequestID: "r-eve"}
	prod  = app.Env{Org: "acme", Project: "web", Env: "production"}
	dbURL = domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB_URL"}
)

// ok returns v, failing the test (by panicking with err) when err is set.
func ok[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

// setup creates acme/web/production with ada (owner), bob (developer)
// and eve (viewer).
func (f *fixture) setup(t testing.TB) {
	t.Helper()
	ok(f.svc.CreateOrganization(ctx, ada, "acme", "Acme"))
	ok(f.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleDeveloper, ""))
	ok(f.svc.GrantRole(ctx, ada, "acme", "eve", domain.RoleViewer, ""))
	ok(f.svc.CreateProject(ctx, ada, "acme", "web", "Web"))
	ok(f.svc.CreateEnvironment(ctx, ada, prod, app.EnvSpec{Name: "Production", Production: true}))
}

func (f *fixture) set(t testing.TB, req app.Request, ref domain.SecretRef, value string) app.Result {
	t.Helper()
	return ok(f.svc.SetSecret(ctx, req, ref, app.SetSecret{Value: []byte(value)}))
}

func (f *fixture) reveal(t testing.TB, req app.Request, ref domain.SecretRef, version uint64) string {
	t.Helper()
	return string(ok(f.svc.RevealSecret(ctx, req, ref, version, "test", domain.ChannelAPI)).Value)
}

func records(t testing.TB, s eventstore.Store) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for from := uint64(1); ; {
		recs, err := s.ReadAll(ctx, from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Position + 1
	}
}

func TestSecretLifecycle(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	r1 := f.set(t, bob, dbURL, "postgres://one")
	r2 := f.set(t, bob, dbURL, "postgres://two")
	if r1.Version != 1 || r2.Version != 2 || r2.Position <= r1.Position {
		t.Fatalf("versions %+v %+v", r1, r2)
	}
	if got := f.reveal(t, bob, dbURL, 0); got != "postgres://two" {
		t.Fatalf("current value %q", got)
	}
	if got := f.reveal(t, bob, dbURL, 1); got != "postgres://one" {
		t.Fatalf("version 1 %q", got)
	}
	// Check-and-set.
	if _, err := f.svc.SetSecret(ctx, bob, dbURL, app.SetSecret{Value: []byte("x"), IfVersion: 1}); !errors.Is(err, domain.ErrVersionMismatch) {
		t.Fatalf("stale check-and-set: %v", err)
	}
	if r := ok(f.svc.SetSecret(ctx, bob, dbURL, app.SetSecret{Value: []byte("postgres://three"), IfVersion: 2})); r.Version != 3 {
		t.Fatalf("check-and-set: %+v", r)
	}
	// Roles.
	if _, err := f.svc.SetSecret(ctx, eve, dbURL, app.SetSecret{Value: []byte("x")}); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a viewer updated: %v", err)
	}
	if _, err := f.svc.RevealSecret(ctx, eve, dbURL, 0, "", domain.ChannelAPI); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a viewer read a value: %v", err)
	}
	stranger := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "mallory"}}
	if _, err := f.svc.RevealSecret(ctx, stranger, dbURL, 0, "", domain.ChannelAPI); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a stranger read a value: %v", err)
	}
	if info := ok(f.svc.Secret(ctx, eve.Actor, dbURL)); info.Current != 3 || len(info.Versions) != 3 {
		t.Fatalf("metadata for a viewer: %+v", info)
	}
	// Limits and missing things.
	if _, err := f.svc.SetSecret(ctx, bob, dbURL, app.SetSecret{Value: make([]byte, crypto.MaxValueSize+1)}); !errors.Is(err, app.ErrValueTooLarge) {
		t.Fatalf("oversize value: %v", err)
	}
	if _, err := f.svc.SetSecret(ctx, bob, domain.SecretRef{Org: "acme", Project: "web", Env: "nope", Name: "X"}, app.SetSecret{Value: []byte("x")}); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("secret in a missing environment: %v", err)
	}
	// Rollback, delete, restore, destroy.
	if r := ok(f.svc.RollbackSecret(ctx, bob, dbURL, 1)); r.Version != 4 {
		t.Fatalf("rollback: %+v", r)
	}
	if got := f.reveal(t, bob, dbURL, 0); got != "postgres://one" {
		t.Fatalf("after rollback %q", got)
	}
	ok(f.svc.DeleteSecret(ctx, bob, dbURL))
	if _, err := f.svc.RevealSecret(ctx, bob, dbURL, 0, "", domain.ChannelAPI); !errors.Is(err, domain.ErrDeleted) {
		t.Fatalf("read of a deleted secret: %v", err)
	}
	ok(f.svc.RestoreSecret(ctx, bob, dbURL))
	if _, err := f.svc.DestroySecretVersion(ctx, bob, dbURL, 2); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a developer destroyed a version: %v", err)
	}
	ok(f.svc.DestroySecretVersion(ctx, ada, dbURL, 2))
	if _, err := f.svc.RevealSecret(ctx, bob, dbURL, 2, "", domain.ChannelAPI); !errors.Is(err, domain.ErrDestroyed) {
		t.Fatalf("read of a destroyed version: %v", err)
	}
	if _, err := f.svc.RollbackSecret(ctx, bob, dbURL, 2); !errors.Is(err, domain.ErrDestroyed) {
		t.Fatalf("rollback to a destroyed version: %v", err)
	}

	// Every read is in the log, with its reason and channel, and the actor.
	views := 0
	for _, r := range records(t, f.store) {
		if r.Type == "secret.viewed" {
			views++
			if r.Metadata.Actor != "user:bob" || r.Metadata.Tenant != "acme" || r.Metadata.RequestID != "r-bob" || !strings.Contains(string(r.Data), `"channel":"api"`) {
				t.Fatalf("view event %+v %s", r.Metadata, r.Data)
			}
		}
	}
	if views != 3 {
		t.Fatalf("%d views in the log, want 3", views)
	}
	assertNoPlaintext(t, f, "postgres://one", "postgres://two", "postgres://three")
}

// assertNoPlaintext scans every event and the logs for each value, as
// bytes, base64 and hex.
func assertNoPlaintext(t *testing.T, f *fixture, values ...string) {
	t.Helper()
	var hay [][]byte
	for _, r := range records(t, f.store) {
		hay = append(hay, r.Data, []byte(fmt.Sprintf("%+v", r.Metadata)))
	}
	hay = append(hay, f.logs.Bytes())
	for _, v := range values {
		for _, needle := range forms(v) {
			for _, h := range hay {
				if bytes.Contains(h, needle) {
					t.Fatalf("plaintext %q found (as %q)", v, needle)
				}
			}
		}
	}
}

// forms returns the ways a value could be written down.
func forms(v string) [][]byte {
	b := []byte(v)
	return [][]byte{b, []byte(base64.StdEncoding.EncodeToString(b)), []byte(base64.RawStdEncoding.EncodeToString(b)),
		[]byte(base64.URLEncoding.EncodeToString(b)), []byte(hex.EncodeToString(b))}
}

func TestIdempotencyKeys(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	req := bob
	req.IdempotencyKey = "deploy-42"
	r1 := ok(f.svc.SetSecret(ctx, req, dbURL, app.SetSecret{Value: []byte("v1")}))
	head1 := ok(f.store.Head(ctx))
	r2 := ok(f.svc.SetSecret(ctx, req, dbURL, app.SetSecret{Value: []byte("v1")}))
	if !r2.Replayed || r2.Position != r1.Position || r2.Version != 1 {
		t.Fatalf("retry = %+v, first = %+v", r2, r1)
	}
	if h := ok(f.store.Head(ctx)); h.Position != head1.Position {
		t.Fatalf("a retried command appended: head %d → %d", head1.Position, h.Position)
	}
	// A check-and-set retried after it succeeded still answers with the success.
	cas := bob
	cas.IdempotencyKey = "cas-1"
	first := ok(f.svc.SetSecret(ctx, cas, dbURL, app.SetSecret{Value: []byte("v2"), IfVersion: 1}))
	again := ok(f.svc.SetSecret(ctx, cas, dbURL, app.SetSecret{Value: []byte("v2"), IfVersion: 1}))
	if !again.Replayed || again.Version != 2 || again.Position != first.Position {
		t.Fatalf("retried check-and-set = %+v", again)
	}
	// The same key for the same command with another value, or other
	// metadata, is refused and writes nothing.
	head2 := ok(f.store.Head(ctx))
	if _, err := f.svc.SetSecret(ctx, req, dbURL, app.SetSecret{Value: []byte("v1-changed")}); !errors.Is(err, app.ErrIdempotencyKeyReused) {
		t.Fatalf("a key reused with another value: %v", err)
	}
	if _, err := f.svc.SetSecret(ctx, req, dbURL, app.SetSecret{Value: []byte("v1"), Metadata: domain.SecretMetadata{Description: "other"}}); !errors.Is(err, app.ErrIdempotencyKeyReused) {
		t.Fatalf("a key reused with other metadata: %v", err)
	}
	if h := ok(f.store.Head(ctx)); h.Position != head2.Position {
		t.Fatalf("a refused reuse appended: head %d → %d", head2.Position, h.Position)
	}
	// The same key for another command is refused.
	if _, err := f.svc.DeleteSecret(ctx, req, dbURL); !errors.Is(err, app.ErrIdempotencyKeyReused) {
		t.Fatalf("a key reused for another command: %v", err)
	}
	// Another person's identical key is theirs alone.
	other := ada
	other.IdempotencyKey = "deploy-42"
	if r := ok(f.svc.SetSecret(ctx, other, dbURL, app.SetSecret{Value: []byte("v3")})); r.Replayed || r.Version != 3 {
		t.Fatalf("another actor's key collided: %+v", r)
	}
}

func TestRotationResealAndCryptoShredding(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	names := []string{"A", "B", "C", "D"}
	for _, n := range names {
		ref := dbURL
		ref.Name = n
		f.set(t, bob, ref, "old-"+n)
	}
	st0 := ok(f.svc.KeysetStatus(ctx, ada, prod))
	if len(st0.Keys) != 1 || !st0.ResealComplete {
		t.Fatalf("new keyset: %+v", st0)
	}
	if _, err := f.svc.RotateKeyset(ctx, bob, prod, "manual"); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a developer rotated: %v", err)
	}
	st := ok(f.svc.RotateKeyset(ctx, ada, prod, "manual"))
	if st.Primary == st0.Primary || len(st.Keys) != 2 || st.ResealComplete || st.Pending != 4 {
		t.Fatalf("after rotation: %+v", st)
	}
	// New writes use the new primary; old values still read.
	a := dbURL
	a.Name = "A"
	f.set(t, bob, a, "new-A")
	if info := ok(f.svc.Secret(ctx, bob.Actor, a)); info.Versions[1].KeyID != st.Primary || info.Versions[0].KeyID != st0.Primary {
		t.Fatalf("keys of A's versions: %+v", info.Versions)
	}
	// The old key is in use until resealed.
	if _, err := f.svc.DisableKey(ctx, ada, prod, st0.Primary); !errors.Is(err, domain.ErrState) {
		t.Fatalf("disabled a key still in use: %v", err)
	}
	rep := ok(f.svc.Reseal(ctx, prod))
	if rep.Resealed != 3 || rep.Remaining != 0 {
		t.Fatalf("reseal: %+v", rep)
	}
	st = ok(f.svc.KeysetStatus(ctx, ada, prod))
	if !st.ResealComplete || st.Pending != 0 {
		t.Fatalf("after reseal: %+v", st)
	}
	for _, n := range names[1:] {
		ref := dbURL
		ref.Name = n
		if got := f.reveal(t, bob, ref, 0); got != "old-"+n {
			t.Fatalf("%s after reseal: %q", n, got)
		}
	}
	ok(f.svc.DisableKey(ctx, ada, prod, st0.Primary))
	// A's version 1 was sealed by the old key only: disabled, it cannot be read…
	if _, err := f.svc.RevealSecret(ctx, bob, a, 1, "", domain.ChannelAPI); !errors.Is(err, domain.ErrState) {
		t.Fatalf("read under a disabled key: %v", err)
	}
	if _, err := f.svc.DestroyKey(ctx, ada, prod, st.Primary); !errors.Is(err, domain.ErrState) {
		t.Fatalf("destroyed the primary: %v", err)
	}
	if _, err := f.svc.DestroyKey(ctx, bob, prod, st0.Primary); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a developer destroyed a key: %v", err)
	}
	// …destroyed, it is gone for good, and so is its material.
	st = ok(f.svc.DestroyKey(ctx, ada, prod, st0.Primary))
	if _, err := f.svc.RevealSecret(ctx, bob, a, 1, "", domain.ChannelAPI); !errors.Is(err, domain.ErrDestroyed) {
		t.Fatalf("read under a destroyed key: %v", err)
	}
	if got := f.reveal(t, bob, a, 0); got != "new-A" {
		t.Fatalf("current value after destroy: %q", got)
	}
	vs := ok(f.material.Versions(ctx, prod.String()))
	if len(vs) != 1 || vs[0] != st.MaterialVersion {
		t.Fatalf("material versions kept: %v (want only %d)", vs, st.MaterialVersion)
	}
	m := ok(f.material.Get(ctx, prod.String(), vs[0]))
	ks := ok(crypto.UnwrapKeyset(m.Wrapped, f.kek, crypto.KeysetAD("acme", "web", "production")))
	for _, k := range ks.Keys() {
		if uint32(k.ID) == st0.Primary {
			t.Fatal("the stored keyset still holds the destroyed key")
		}
	}
	// The log still verifies.
	rep2, err := verify.Store(ctx, f.store, verify.Options{})
	if err != nil {
		t.Fatalf("verify after crypto-shredding: %v", err)
	}
	if rep2.Events == 0 {
		t.Fatal("nothing verified")
	}
	assertNoPlaintext(t, f, "old-A", "old-B", "old-C", "old-D", "new-A")
}

func TestScheduledRotationCatchesUp(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	f.set(t, bob, dbURL, "v")
	first := ok(f.svc.KeysetStatus(ctx, ada, prod))
	f.svc.MaintainKeys(ctx)
	if st := ok(f.svc.KeysetStatus(ctx, ada, prod)); st.Primary != first.Primary {
		t.Fatal("rotated before the interval")
	}
	f.clock.Add(25 * time.Hour) // the server was down past the daily rotation
	f.svc.MaintainKeys(ctx)
	st := ok(f.svc.KeysetStatus(ctx, ada, prod))
	if st.Primary == first.Primary || !st.ResealComplete || st.RotationDue {
		t.Fatalf("after catching up: %+v", st)
	}
	// A second server sharing the log does not rotate again.
	g := newFixture(t, f.store, f.material, f.kek)
	g.clock.now = f.clock.Now()
	g.svc.MaintainKeys(ctx)
	if st2 := ok(f.svc.KeysetStatus(ctx, ada, prod)); st2.Primary != st.Primary || len(st2.Keys) != 2 {
		t.Fatalf("rotated twice: %+v", st2)
	}
	if got := f.reveal(t, bob, dbURL, 0); got != "v" {
		t.Fatalf("value after scheduled rotation: %q", got)
	}
}

func TestTokens(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	f.set(t, bob, dbURL, "secret-value")
	ok(f.svc.CreateEnvironment(ctx, ada, app.Env{Org: "acme", Project: "web", Env: "staging"}, app.EnvSpec{}))
	tok, _, err := f.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "deploy", Role: domain.RoleDeveloper, Project: "web",
		Environments: []string{"production"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Secret, "stele_tok_acme."+tok.ID+".") {
		t.Fatalf("token secret %q", tok.Secret)
	}
	ci := app.Request{Actor: domain.Actor{Kind: domain.ActorToken, ID: tok.ID}}
	if got := f.reveal(t, ci, dbURL, 0); got != "secret-value" {
		t.Fatalf("token read %q", got)
	}
	staging := dbURL
	staging.Env = "staging"
	if _, err := f.svc.SetSecret(ctx, ci, staging, app.SetSecret{Value: []byte("x")}); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a production token wrote to staging: %v", err)
	}
	f.clock.Add(2 * time.Hour)
	if _, err := f.svc.RevealSecret(ctx, ci, dbURL, 0, "", domain.ChannelRun); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("an expired token read: %v", err)
	}
	for _, r := range records(t, f.store) {
		if bytes.Contains(r.Data, []byte(tok.Secret)) {
			t.Fatal("the token secret is in the log")
		}
	}
	if !strings.Contains(recordsText(t, f), app.TokenSecretHash(tok.Secret)) {
		t.Fatal("the token's hash is not recorded")
	}
}

func recordsText(t *testing.T, f *fixture) string {
	var b strings.Builder
	for _, r := range records(t, f.store) {
		b.Write(r.Data)
	}
	return b.String()
}

func TestApprovalFlow(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	api := dbURL
	api.Name = "API_KEY"
	f.set(t, bob, dbURL, "db-secret")
	f.set(t, bob, api, "api-secret")
	ok(f.svc.CreateBundle(ctx, ada, "acme", "web", "backend", []domain.BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}))
	pub, priv, err := crypto.GenerateBoxKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	ticket, _, err := f.svc.RequestApproval(ctx, eve, app.ApprovalSpec{Kind: domain.ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
		Bundle: "backend", PublicKey: pub[:]})
	if err != nil {
		t.Fatal(err)
	}
	if len(ticket.UserCode) != 9 || ticket.ExpiresAt.Sub(f.clock.Now()) != 5*time.Minute {
		t.Fatalf("ticket %+v", ticket)
	}
	if _, err := f.svc.Approve(ctx, eve, ticket.ID, []string{"DB_URL"}); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a viewer approved: %v", err)
	}
	if _, err := f.svc.Collect(ctx, eve, ticket.ID); !errors.Is(err, domain.ErrState) {
		t.Fatalf("collected before approval: %v", err)
	}
	ok(f.svc.Approve(ctx, bob, ticket.ID, []string{"DB_URL"}))
	if _, err := f.svc.Collect(ctx, bob, ticket.ID); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("someone else collected: %v", err)
	}
	d := ok(f.svc.Collect(ctx, eve, ticket.ID))
	plain := ok(crypto.OpenSealed(d.Sealed, pub, priv))
	if string(plain) != `{"DB_URL":"db-secret"}` {
		t.Fatalf("delivered %s", plain)
	}
	if _, err := f.svc.Collect(ctx, eve, ticket.ID); !errors.Is(err, domain.ErrState) {
		t.Fatalf("collected twice: %v", err)
	}
	// The requester cannot approve their own request.
	t2, _, _ := f.svc.RequestApproval(ctx, bob, app.ApprovalSpec{Kind: domain.ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
		Keys: []string{"API_KEY"}, PublicKey: pub[:]})
	if _, err := f.svc.Approve(ctx, bob, t2.ID, []string{"API_KEY"}); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("self-approval: %v", err)
	}
	// An expired request cannot be approved.
	f.clock.Add(6 * time.Minute)
	if _, err := f.svc.Approve(ctx, ada, t2.ID, []string{"API_KEY"}); !errors.Is(err, domain.ErrExpired) {
		t.Fatalf("approved an expired request: %v", err)
	}
	viewed := 0
	for _, r := range records(t, f.store) {
		if r.Type == "secret.viewed" && strings.Contains(string(r.Data), "approval-delivery") {
			viewed++
			if r.Metadata.Actor != "user:eve" {
				t.Fatalf("delivery view recorded for %s", r.Metadata.Actor)
			}
		}
	}
	if viewed != 1 {
		t.Fatalf("%d delivery views", viewed)
	}
	assertNoPlaintext(t, f, "db-secret", "api-secret")
}

func TestMain(m *testing.M) { os.Exit(mainWithPG(m)) }

func TestExpiredRequestsAreRecorded(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	f.set(t, bob, dbURL, "v")
	pub, _, _ := crypto.GenerateBoxKeyPair()
	ticket, _, err := f.svc.RequestApproval(ctx, eve, app.ApprovalSpec{Kind: domain.ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
		Keys: []string{"DB_URL"}, PublicKey: pub[:], TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if n := ok(f.svc.ExpireApprovals(ctx)); n != 0 {
		t.Fatalf("expired %d before the deadline", n)
	}
	f.clock.Add(2 * time.Minute)
	f.svc.MaintainKeys(ctx)
	expired := 0
	for _, r := range records(t, f.store) {
		if r.Type == "approval.expired" && r.StreamID == domain.ApprovalStream(ticket.ID) {
			expired++
			if r.Metadata.Actor != "system:approvals" || r.Metadata.Tenant != "acme" {
				t.Fatalf("expiry metadata %+v", r.Metadata)
			}
		}
	}
	if expired != 1 {
		t.Fatalf("%d expiry events", expired)
	}
	if n := ok(f.svc.ExpireApprovals(ctx)); n != 0 {
		t.Fatalf("expired again: %d", n)
	}
}

// KEK rotation: a server with a new KEK rewraps a keyset made under the old
// one; afterwards the old KEK is not needed.
func TestRewrapUnderANewKEK(t *testing.T) {
	f := newFixture(t, nil, nil, nil)
	f.setup(t)
	f.set(t, bob, dbURL, "under-the-old-kek")
	oldKEK := f.kek
	newKEK := newKEK(t)
	g := newFixtureWith(t, f.store, f.material, newKEK, func(uri string) (crypto.KEK, error) {
		if uri == oldKEK.URI() {
			return oldKEK, nil
		}
		return nil, errors.New("unknown KEK")
	})
	st := ok(g.svc.RewrapKeyset(ctx, ada, prod))
	if st.KEK != newKEK.URI() {
		t.Fatalf("after rewrap the keyset names %s", st.KEK)
	}
	// A server holding only the new KEK reads the value.
	h := newFixtureWith(t, f.store, f.material, newKEK, nil)
	if got := h.reveal(t, bob, dbURL, 0); got != "under-the-old-kek" {
		t.Fatalf("read after rewrap: %q", got)
	}
	if _, err := f.svc.RevealSecret(ctx, bob, dbURL, 0, "", domain.ChannelAPI); err == nil {
		t.Fatal("a server with only the old KEK still unwraps the rewrapped keyset")
	}
}
