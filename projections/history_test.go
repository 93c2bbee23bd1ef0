package projections_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/projections"
)

// Point in time equals a replay of the log up to that position.
func TestPointInTimeEqualsReplay(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	scenario(t, e, 6, 3)
	e.caughtUp(t)
	h := projections.History{Pool: e.pool, Store: e.store, Wait: 200 * time.Millisecond}
	head := ok(e.store.Head(ctx))
	all := readAll(t, e)
	for _, p := range []uint64{1, 9, head.Position / 3, head.Position / 2, head.Position - 5, head.Position} {
		got := ok(h.SecretsAt(ctx, "acme", "web", "production", p))
		want := replaySecrets(t, all, p)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("secrets at %d:\n got  %+v\n want %+v", p, got, want)
		}
	}
	// Times map to positions.
	for _, r := range []eventstore.Record{all[0], all[len(all)/2], all[len(all)-1]} {
		p := ok(h.PositionAt(ctx, r.RecordedAt))
		if p < r.Position || all[p-1].RecordedAt.After(r.RecordedAt) || (int(p) < len(all) && !all[p].RecordedAt.After(r.RecordedAt)) {
			t.Fatalf("PositionAt(%s) = %d for record %d", r.RecordedAt, p, r.Position)
		}
	}
	if p := ok(h.PositionAt(ctx, all[0].RecordedAt.Add(-time.Hour))); p != 0 {
		t.Fatalf("before the log: %d", p)
	}
	if _, err := h.SecretsAt(ctx, "acme", "web", "production", head.Position+1000); !errors.Is(err, projections.ErrNotYet) {
		t.Fatalf("a position beyond the projection: %v", err)
	}
}

func readAll(t *testing.T, e *env) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for from := uint64(1); ; {
		recs := ok(e.store.ReadAll(ctx, from, 1000))
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Position + 1
	}
}

// replaySecrets folds the log's first p records, stream by stream.
func replaySecrets(t *testing.T, all []eventstore.Record, p uint64) []projections.SecretAt {
	t.Helper()
	type st struct {
		s                      *domain.Secret
		created, last, valueAt eventstore.Record
		name                   string
		keys                   map[uint64]uint32 // version → the key that sealed it last
	}
	byStream := map[string]*st{}
	var order []string
	for _, r := range all[:p] {
		if !strings.HasPrefix(r.StreamID, "secret/acme/web/production/") {
			continue
		}
		x := byStream[r.StreamID]
		if x == nil {
			x = &st{s: domain.NewSecret(), name: r.StreamID[len("secret/acme/web/production/"):], keys: map[uint64]uint32{}}
			byStream[r.StreamID] = x
			order = append(order, r.StreamID)
		}
		ev := ok(domain.Decode(r.Type, r.Data))
		x.s.Apply(ev)
		// Reads and reseals are not changes.
		if r.Type != "secret.viewed" && r.Type != "secret.resealed" {
			x.last = r
		}
		switch r.Type {
		case "secret.created":
			x.created, x.valueAt = r, r
		case "secret.updated", "secret.rolled_back":
			x.valueAt = r
		}
		if cur, _ := x.s.Version(0); r.Type != "secret.viewed" && r.Type != "secret.deleted" && r.Type != "secret.restored" &&
			r.Type != "secret.metadata_updated" && r.Type != "secret.version_destroyed" {
			// A new version or a reseal: the key sealing it now. A reseal
			// may be of another version than the current.
			if rs, isReseal := ev.(domain.SecretResealed); isReseal {
				x.keys[rs.Version] = rs.Value.KeyID
			} else {
				x.keys[cur.Version] = cur.Value.KeyID
			}
		}
	}
	var out []projections.SecretAt
	names := map[string]*st{}
	var sorted []string
	for _, k := range order {
		names[byStream[k].name] = byStream[k]
		sorted = append(sorted, byStream[k].name)
	}
	sortStrings(sorted)
	for _, n := range sorted {
		x := names[n]
		cur, _ := x.s.Version(0)
		out = append(out, projections.SecretAt{Name: n, Version: cur.Version, KeyID: x.keys[cur.Version], Deleted: x.s.Deleted(), Destroyed: cur.Destroyed,
			Metadata: x.s.Metadata(), CreatedAt: x.created.RecordedAt, CreatedBy: x.created.Metadata.Actor,
			ChangedAt: x.last.RecordedAt, ChangedBy: x.last.Metadata.Actor, Position: x.last.Position, ValueSetAt: x.valueAt.RecordedAt})
	}
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestWhoCouldReadAndWhoRead(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	h := projections.History{Pool: e.pool, Store: e.store}
	ok(e.svc.CreateOrganization(ctx, ada, "acme", "Acme"))
	ok(e.svc.CreateProject(ctx, ada, "acme", "web", "Web"))
	ok(e.svc.CreateEnvironment(ctx, ada, prod, app.EnvSpec{Production: true}))
	ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB_URL"}
	ok(e.svc.SetSecret(ctx, ada, ref, app.SetSecret{Value: []byte("v")}))
	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleDeveloper, "web"))
	ok(e.svc.GrantRole(ctx, ada, "acme", "eve", domain.RoleViewer, ""))
	tok, _ := ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web", Environments: []string{"production"}, TTL: time.Hour}))
	before := ok(e.store.Head(ctx)).Position
	start := time.Now()
	ok(e.svc.RevealSecret(ctx, bob, ref, 0, "deploy", domain.ChannelRun))
	ok(e.svc.RevokeRole(ctx, ada, "acme", "bob", "web"))
	after := ok(e.store.Head(ctx)).Position
	e.caughtUp(t)

	could := ok(h.WhoCouldRead(ctx, ref, before))
	want := []projections.CouldRead{
		{Actor: "token:" + tok.ID, Role: domain.RoleDeveloper, Via: "token"},
		{Actor: "user:ada", Role: domain.RoleOwner, Via: "organization"},
		{Actor: "user:bob", Role: domain.RoleDeveloper, Via: "project"},
	}
	if !reflect.DeepEqual(could, want) {
		t.Fatalf("who could read before the revoke:\n got  %+v\n want %+v", could, want)
	}
	could = ok(h.WhoCouldRead(ctx, ref, after))
	if len(could) != 2 || could[1].Actor != "user:ada" {
		t.Fatalf("after the revoke bob still could: %+v", could)
	}
	reads := ok(h.WhoRead(ctx, ref, start.Add(-time.Minute), time.Now().Add(time.Minute)))
	if len(reads) != 1 || reads[0].Actor != "user:bob" || reads[0].Channel != "cli-run" || reads[0].Reason != "deploy" {
		t.Fatalf("who read: %+v", reads)
	}
	if r := ok(h.WhoRead(ctx, ref, start.Add(-2*time.Hour), start.Add(-time.Hour))); len(r) != 0 {
		t.Fatalf("reads outside the window: %+v", r)
	}
	acc := ok(h.AccessAt(ctx, "acme", before))
	if len(acc.Grants) != 3 || len(acc.Tokens) != 1 {
		t.Fatalf("access at %d: %+v", before, acc)
	}
}

// Values at a point in time: the history names the version a secret had,
// and only a caller allowed to reveal it reads that version's value, which
// appends a secret.viewed event of its own.
func TestValueAtAPointInTime(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	h := projections.History{Pool: e.pool, Store: e.store, Wait: time.Second}
	eve := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "eve"}}
	ok(e.svc.CreateOrganization(ctx, ada, "acme", "Acme"))
	ok(e.svc.CreateProject(ctx, ada, "acme", "web", "Web"))
	ok(e.svc.CreateEnvironment(ctx, ada, prod, app.EnvSpec{Production: true}))
	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleDeveloper, "web"))
	ok(e.svc.GrantRole(ctx, ada, "acme", "eve", domain.RoleViewer, ""))
	ref := domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB_URL"}
	ok(e.svc.SetSecret(ctx, ada, ref, app.SetSecret{Value: []byte("postgres://old")}))
	then := ok(e.store.Head(ctx)).Position
	ok(e.svc.SetSecret(ctx, ada, ref, app.SetSecret{Value: []byte("postgres://new")}))
	e.caughtUp(t)

	at := ok(h.SecretsAt(ctx, "acme", "web", "production", then))
	if len(at) != 1 || at[0].Name != "DB_URL" || at[0].Version != 1 {
		t.Fatalf("secrets at %d: %+v", then, at)
	}
	before := ok(e.store.Head(ctx)).Position
	if _, err := e.svc.RevealSecret(ctx, eve, ref, at[0].Version, "audit", domain.ChannelAPI); !errors.Is(err, domain.ErrForbidden) {
		t.Fatalf("a viewer revealed a value: %v", err)
	}
	if p := ok(e.store.Head(ctx)).Position; p != before {
		t.Fatalf("a refused reveal appended %d events", p-before)
	}
	got := ok(e.svc.RevealSecret(ctx, bob, ref, at[0].Version, "incident review", domain.ChannelAPI))
	if string(got.Value) != "postgres://old" || got.Version != 1 {
		t.Fatalf("value at %d: %q version %d", then, got.Value, got.Version)
	}
	rec := ok(e.store.ReadAll(ctx, got.Position, 1))[0]
	ev := ok(domain.Decode(rec.Type, rec.Data))
	if v, isView := ev.(domain.SecretViewed); !isView || v.Version != 1 || v.Reason != "incident review" || rec.Metadata.Actor != "user:bob" {
		t.Fatalf("the reveal recorded %s %+v by %s", rec.Type, ev, rec.Metadata.Actor)
	}
}
