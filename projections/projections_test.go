package projections_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/app"
	"stele.dev/stele/crypto"
	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/internal/pgtest"
	"stele.dev/stele/projections"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var ctx = context.Background()

type env struct {
	pool  *pgxpool.Pool
	store *postgres.Store
	svc   *app.Service
	proj  *projections.Projector
	stop  func()
}

// newEnv runs the ledger, the application layer and a projector (not yet
// started) in a schema of their own.
func newEnv(t testing.TB, projs ...projections.Projection) *env {
	t.Helper()
	pool, err := pgxpool.New(ctx, pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for _, m := range []func(context.Context, *pgxpool.Pool) error{postgres.Migrate, pgstore.Migrate, projections.Migrate} {
		if err := m(ctx, pool); err != nil {
			t.Fatal(err)
		}
	}
	store, err := postgres.Open(ctx, pool, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	uri, err := crypto.CreateLocalMasterKey(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenKEK(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := app.New(app.Config{Store: store, Material: pgstore.New(pool), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	if len(projs) == 0 {
		projs = projections.All()
	}
	return &env{pool: pool, store: store, svc: svc, proj: projections.New(projections.Config{Pool: pool, Store: store}, projs...)}
}

// start runs the projector until the test ends.
func (e *env) start(t testing.TB) {
	t.Helper()
	c, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.proj.Run(c) }()
	e.stop = func() { cancel(); <-done }
	t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
		}
	})
}

// caughtUp waits until every projection has applied the log's head.
func (e *env) caughtUp(t testing.TB) {
	t.Helper()
	h, err := e.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := projections.WaitFor(ctx, e.pool, h.Position, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// dump returns every row of every projection table, as text, sorted.
func (e *env) dump(t testing.TB) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, p := range e.proj.Projections() {
		for _, table := range p.Tables() {
			rows, err := e.pool.Query(ctx, `SELECT t::text FROM `+pgx.Identifier{table}.Sanitize()+` t`)
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

var (
	ada  = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada"}, RequestID: "r1", ClientAddr: "192.0.2.1"}
	bob  = app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "bob"}, RequestID: "r2"}
	prod = app.Env{Org: "acme", Project: "web", Env: "production"}
)

func ok[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

// scenario drives a varied history through the application layer.
func scenario(t testing.TB, e *env, secrets, rounds int) {
	t.Helper()
	ok(e.svc.CreateOrganization(ctx, ada, "acme", "Acme"))
	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleDeveloper, ""))
	ok(e.svc.CreateProject(ctx, ada, "acme", "web", "Web"))
	ok(e.svc.CreateEnvironment(ctx, ada, prod, app.EnvSpec{Production: true}))
	ok(e.svc.CreateEnvironment(ctx, ada, app.Env{Org: "acme", Project: "web", Env: "staging"}, app.EnvSpec{}))
	ok(e.svc.CreateBundle(ctx, ada, "acme", "web", "backend", []domain.BundleKey{{Name: "S0", Required: true}, {Name: "S1"}}))
	ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web", TTL: time.Hour}))
	for r := range rounds {
		for i := range secrets {
			ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: fmt.Sprintf("S%d", i)}
			ok(e.svc.SetSecret(ctx, bob, ref, app.SetSecret{Value: []byte(fmt.Sprintf("value-%d-%d", i, r)), Metadata: domain.SecretMetadata{Description: "d", Tags: []string{"a", "b"}}}))
			if i%3 == 0 {
				ok(e.svc.RevealSecret(ctx, bob, ref, 0, "test", domain.ChannelAPI))
			}
		}
	}
	s1 := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "S1"}
	if rounds > 1 {
		ok(e.svc.RollbackSecret(ctx, bob, s1, 1))
		ok(e.svc.DestroySecretVersion(ctx, ada, s1, 1))
	}
	ok(e.svc.DeleteSecret(ctx, bob, s1))
	ok(e.svc.RotateKeyset(ctx, ada, prod, "test"))

	// The directory, access control, keys and approvals read models. No
	// value is revealed from here on.
	ok(e.svc.RenameOrganization(ctx, ada, "acme", "Acme Inc"))
	staging := app.Env{Org: "acme", Project: "web", Env: "staging"}
	stagingName, twoHours := "Staging", 2*time.Hour
	ok(e.svc.UpdateEnvironment(ctx, ada, staging, app.EnvUpdate{Name: &stagingName, Rotation: &twoHours, Approval: &domain.ApprovalPolicy{Reveal: true, Approvers: 2}}))
	ok(e.svc.UpdateBundle(ctx, ada, "acme", "web", "backend", []domain.BundleKey{{Name: "S1", Required: true}, {Name: "S0"}, {Name: "S2"}}))
	ok(e.svc.CreateBundle(ctx, ada, "acme", "web", "legacy", []domain.BundleKey{{Name: "S0"}}))
	ok(e.svc.DeleteBundle(ctx, ada, "acme", "web", "legacy"))
	s0 := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "S0"}
	ok(e.svc.UpdateSecretMetadata(ctx, ada, s0, domain.SecretMetadata{Description: "d", Tags: []string{"a", "b"}, Owner: "bob", RotationSeconds: 3600}))
	ok(e.svc.GrantRole(ctx, ada, "acme", "carol", domain.RoleViewer, "web"))
	ok(e.svc.GrantRole(ctx, ada, "acme", "erin", domain.RoleDeveloper, "web"))
	ok(e.svc.GrantRole(ctx, ada, "acme", "dave", domain.RoleAdmin, ""))
	ok(e.svc.RevokeRole(ctx, ada, "acme", "dave", ""))
	deploy, _ := ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "deploy", Role: domain.RoleViewer, Project: "web",
		Environments: []string{"staging"}, TTL: 24 * time.Hour}))
	ok(e.svc.RevokeToken(ctx, ada, "acme", deploy.ID, "leaked"))
	erin := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "erin"}, RequestID: "r3"}
	pub := make([]byte, 32)
	request := func(spec app.ApprovalSpec) string {
		spec.Kind, spec.Org, spec.Project, spec.Env, spec.PublicKey = domain.ApprovalSecrets, "acme", "web", "production", pub
		tk, _ := ok3(e.svc.RequestApproval(ctx, bob, spec))
		return tk.ID
	}
	// Approved by two, not collected.
	two := request(app.ApprovalSpec{Bundle: "backend", Approvals: 2})
	ok(e.svc.Approve(ctx, ada, two, []string{"S0", "S1"}))
	ok(e.svc.Approve(ctx, erin, two, []string{"S1", "S2"}))
	// Delivered: its key has no value, so nothing is revealed.
	none := request(app.ApprovalSpec{Keys: []string{"NONE"}})
	ok(e.svc.Approve(ctx, ada, none, []string{"NONE"}))
	ok(e.svc.Collect(ctx, bob, none))
	denied := request(app.ApprovalSpec{Keys: []string{"S2"}})
	ok(e.svc.Deny(ctx, ada, denied, "not today"))
	request(app.ApprovalSpec{Keys: []string{"S3"}})                        // pending
	request(app.ApprovalSpec{Keys: []string{"S4"}, TTL: time.Millisecond}) // expired below
	// A sign-in request belongs to no organization.
	anon := app.Request{Actor: domain.Actor{Kind: domain.ActorAnonymous, ID: "cli"}, ClientAddr: "198.51.100.7"}
	ok3(e.svc.RequestApproval(ctx, anon, app.ApprovalSpec{Kind: domain.ApprovalLogin, PublicKey: pub}))

	// Resealing, disabling the old key and expiring requests need the
	// catalog: a second service, with the same KEK, follows the log.
	st := ok(e.svc.KeysetStatus(ctx, ada, prod))
	kek := ok(crypto.OpenKEK(ctx, st.KEK))
	cat := app.NewCatalog()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); cat.Run(cctx, e.store) }()
	defer func() { cancel(); <-done }()
	keeper := ok(app.New(app.Config{Store: e.store, Material: pgstore.New(e.pool), KEK: kek, Catalog: cat}))
	ok(keeper.Reseal(ctx, prod))
	for _, k := range st.Keys {
		if !k.Primary {
			ok(keeper.DisableKey(ctx, ada, prod, k.ID))
		}
	}
	if n := ok(keeper.ExpireApprovals(ctx)); n != 1 {
		t.Fatalf("expired %d requests, want 1", n)
	}

	// The ledger read model: a verification's outcome, as the server
	// appends it after a full verification.
	verified := domain.LedgerVerified{Events: 1, Head: strings.Repeat("ab", 32), Root: strings.Repeat("cd", 32), OK: true, Seconds: 0.5}
	ok(e.store.Append(ctx, domain.LedgerStream, eventstore.Any, eventstore.Event{ID: eventstore.NewID(), Type: verified.EventType(),
		Data: ok(domain.Encode(verified)), Metadata: eventstore.Metadata{Actor: "system:verifier", RequestID: "verify"}}))
}

func ok3[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return a, b
}

func TestProjectionsFollowTheLog(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	scenario(t, e, 5, 3)
	e.caughtUp(t)
	var current int64
	var deleted bool
	var tags []string
	if err := e.pool.QueryRow(ctx, `SELECT current_version, deleted, tags FROM proj_secrets WHERE name = 'S1'`).Scan(&current, &deleted, &tags); err != nil {
		t.Fatal(err)
	}
	if current != 4 || !deleted || strings.Join(tags, ",") != "a,b" {
		t.Fatalf("S1: version %d deleted %v tags %v", current, deleted, tags)
	}
	var versions, destroyed int
	e.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE destroyed AND ciphertext IS NULL) FROM proj_secret_versions WHERE name = 'S1'`).Scan(&versions, &destroyed)
	if versions != 4 || destroyed != 1 {
		t.Fatalf("S1 versions %d, destroyed %d", versions, destroyed)
	}
	var audit, head int64
	e.pool.QueryRow(ctx, `SELECT count(*), max(position) FROM proj_audit`).Scan(&audit, &head)
	h := ok(e.store.Head(ctx))
	if uint64(audit) != h.Position || uint64(head) != h.Position {
		t.Fatalf("audit has %d rows up to %d; head %d", audit, head, h.Position)
	}
	var reads, daily int64
	e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM proj_secret_reads), (SELECT sum(reads) FROM proj_access_daily)`).Scan(&reads, &daily)
	if reads != 6 || daily != 6 {
		t.Fatalf("reads %d, daily sum %d; want 6", reads, daily)
	}
	sts := ok(projections.Statuses(ctx, e.pool, e.store, time.Now()))
	for _, s := range sts {
		if s.LagEvents != 0 || s.Status != "live" {
			t.Fatalf("status %+v", s)
		}
	}
}

// Rebuild equals incremental, byte for byte, while the live projector runs.
func TestRebuildEqualsIncremental(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	scenario(t, e, 20, 4)
	e.caughtUp(t)
	before := e.dump(t)
	for _, p := range e.proj.Projections() {
		if err := e.proj.Rebuild(ctx, p.Name()); err != nil {
			t.Fatalf("rebuild %s: %v", p.Name(), err)
		}
	}
	e.caughtUp(t)
	after := e.dump(t)
	for table, rows := range before {
		if len(rows) == 0 {
			t.Errorf("table %s is empty: the scenario does not exercise it", table)
		}
		if !slices.Equal(rows, after[table]) {
			t.Errorf("table %s differs after a rebuild: %d rows before, %d after", table, len(rows), len(after[table]))
		}
	}
	// No shadow tables or states are left.
	var left int
	e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE '%\_\_next'`).Scan(&left)
	var states int
	e.pool.QueryRow(ctx, `SELECT count(*) FROM projection_state WHERE name LIKE '%#next'`).Scan(&states)
	if left != 0 || states != 0 {
		t.Fatalf("%d shadow tables and %d shadow states left", left, states)
	}
}
