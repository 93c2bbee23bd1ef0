package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/app"
	"stele.dev/stele/crypto"
	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// readModelsOf reads what the read models serve of org now, in the shape
// of History.OrgAt.
func readModelsOf(t *testing.T, r *projections.Reader, org string, position uint64) projections.OrgState {
	t.Helper()
	st := projections.OrgState{Position: position}
	o, err := r.Organization(ctx, org)
	switch {
	case errors.Is(err, projections.ErrNotFound):
	case err != nil:
		t.Fatal(err)
	default:
		st.Organization = &o
	}
	st.Projects = ok(r.Projects(ctx, org))
	st.Environments = ok(r.Environments(ctx, org, ""))
	st.Secrets = ok(r.Secrets(ctx, org, "", ""))
	st.Keysets = ok(r.Keysets(ctx, org))
	st.Members = ok(r.Members(ctx, org))
	st.Tokens = ok(r.Tokens(ctx, org))
	return st
}

// canon is v as JSON values, with every time in UTC, so that two states
// compare field by field whatever time zone a driver gave their times,
// and nil lists equal empty ones.
func canon(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(e)
			}
		case nil:
			return []any{} // a nil list: the same as an empty one
		case string:
			if tm, err := time.Parse(time.RFC3339Nano, x); err == nil {
				return tm.UTC().Format(time.RFC3339Nano)
			}
		}
		return v
	}
	return walk(out)
}

// firstDiff names the first place where a and b differ.
func firstDiff(path string, a, b any) string {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: %v vs %v", path, a, b)
		}
		keys := map[string]bool{}
		for k := range x {
			keys[k] = true
		}
		for k := range y {
			keys[k] = true
		}
		var ks []string
		for k := range keys {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			if d := firstDiff(path+"."+k, x[k], y[k]); d != "" {
				return d
			}
		}
		return ""
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%s: %d items vs %v", path, len(x), b)
		}
		for i := range x {
			if d := firstDiff(fmt.Sprintf("%s[%d]", path, i), x[i], y[i]); d != "" {
				return d
			}
		}
		return ""
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Sprintf("%s: %v vs %v", path, a, b)
	}
	return ""
}

// An organization replayed at a position equals, field by field, what
// the read models served when they were at that position: its directory,
// secrets, keysets, members and tokens. Another organization's changes
// never show.
func TestReplayEqualsTheReadModelsThen(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	h := projections.History{Pool: e.pool, Store: e.store, Wait: 2 * time.Second}
	r := projections.NewReader(e.pool)
	type snap struct {
		position uint64
		state    projections.OrgState
	}
	var snaps []snap
	snapshot := func() {
		t.Helper()
		e.caughtUp(t)
		p := ok(e.store.Head(ctx)).Position
		st := readModelsOf(t, r, "acme", p)
		if now := ok(e.store.Head(ctx)).Position; now != p {
			t.Fatalf("the log moved during the snapshot: %d → %d", p, now)
		}
		snaps = append(snaps, snap{p, st})
	}
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga"}, RequestID: "o"}
	globex := app.Env{Org: "globex", Project: "web", Env: "production"}
	other := func(i int) { // another tenant's changes, between acme's
		ok(e.svc.SetSecret(ctx, olga, domain.SecretRef{Org: "globex", Project: "web", Env: "production", Name: fmt.Sprintf("G%d", i)},
			app.SetSecret{Value: []byte("globex")}))
	}
	ok(e.svc.CreateOrganization(ctx, olga, "globex", "Globex"))
	ok(e.svc.CreateProject(ctx, olga, "globex", "web", "Web"))
	ok(e.svc.CreateEnvironment(ctx, olga, globex, app.EnvSpec{Production: true}))
	snapshot() // acme does not exist yet

	ok(e.svc.CreateOrganization(ctx, ada, "acme", "Acme"))
	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleDeveloper, ""))
	ok(e.svc.CreateProject(ctx, ada, "acme", "web", "Web"))
	ok(e.svc.CreateEnvironment(ctx, ada, prod, app.EnvSpec{Production: true}))
	snapshot() // an organization with an empty environment

	staging := app.Env{Org: "acme", Project: "web", Env: "staging"}
	ok(e.svc.CreateEnvironment(ctx, ada, staging, app.EnvSpec{}))
	ref := func(env, name string) domain.SecretRef {
		return domain.SecretRef{Org: "acme", Project: "web", Env: env, Name: name}
	}
	ok(e.svc.SetSecret(ctx, bob, ref("production", "DB_URL"), app.SetSecret{Value: []byte("v1"),
		Metadata: domain.SecretMetadata{Description: "db", Tags: []string{"a"}, Owner: "bob", RotationSeconds: 86400}}))
	ok(e.svc.SetSecret(ctx, ada, ref("production", "API_KEY"), app.SetSecret{Value: []byte("k1")}))
	ok(e.svc.SetSecret(ctx, ada, ref("staging", "DB_URL"), app.SetSecret{Value: []byte("s1")}))
	other(1)
	tok, _ := ok3(e.svc.IssueToken(ctx, ada, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web",
		Environments: []string{"staging"}, TTL: time.Hour}))
	ok(e.svc.RevealSecret(ctx, bob, ref("production", "DB_URL"), 0, "deploy", domain.ChannelRun))
	snapshot() // secrets, a token, a read (not a change)

	ok(e.svc.SetSecret(ctx, ada, ref("production", "DB_URL"), app.SetSecret{Value: []byte("v2")}))
	ok(e.svc.RollbackSecret(ctx, ada, ref("production", "DB_URL"), 1))
	ok(e.svc.UpdateSecretMetadata(ctx, ada, ref("production", "API_KEY"), domain.SecretMetadata{Description: "the key", Tags: []string{"x", "y"}}))
	ok(e.svc.DeleteSecret(ctx, ada, ref("staging", "DB_URL")))
	ok(e.svc.RotateKeyset(ctx, ada, prod, "manual"))
	ok(e.svc.RenameOrganization(ctx, ada, "acme", "Acme Inc"))
	ok(e.svc.RenameProject(ctx, ada, "acme", "web", "The Web"))
	name, rot := "Staging", 2*time.Hour
	ok(e.svc.UpdateEnvironment(ctx, ada, staging, app.EnvUpdate{Name: &name, Rotation: &rot, Approval: &domain.ApprovalPolicy{Reveal: true, Approvers: 2}}))
	ok(e.svc.GrantRole(ctx, ada, "acme", "carol", domain.RoleViewer, "web"))
	ok(e.svc.GrantRole(ctx, ada, "acme", "bob", domain.RoleAdmin, "web"))
	other(2)
	snapshot() // a rollback, a rotation not yet resealed; renames and settings

	// Resealing and the keys' states need the catalog: a second service,
	// with the same KEK, follows the log.
	st := ok(e.svc.KeysetStatus(ctx, ada, prod))
	kek := ok(crypto.OpenKEK(ctx, st.KEK))
	cat := app.NewCatalog()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); cat.Run(cctx, e.store) }()
	defer func() { cancel(); <-done }()
	keeper := ok(app.New(app.Config{Store: e.store, Material: pgstore.New(e.pool), KEK: kek, Catalog: cat}))
	ok(keeper.Reseal(ctx, prod))
	var old uint32
	for _, k := range st.Keys {
		if !k.Primary {
			old = k.ID
		}
	}
	ok(keeper.DisableKey(ctx, ada, prod, old))
	snapshot() // resealed, the old key disabled

	ok(keeper.DestroyKey(ctx, ada, prod, old))
	ok(e.svc.DestroySecretVersion(ctx, ada, ref("production", "API_KEY"), 1))
	ok(e.svc.RestoreSecret(ctx, ada, ref("staging", "DB_URL")))
	ok(e.svc.RevokeToken(ctx, ada, "acme", tok.ID, "rotated"))
	ok(e.svc.RevokeRole(ctx, ada, "acme", "carol", "web"))
	other(3)
	snapshot() // a destroyed key and version, revocations

	// Later changes, which no replay at the snapshots may show.
	ok(e.svc.SetSecret(ctx, ada, ref("production", "LATER"), app.SetSecret{Value: []byte("later")}))
	ok(e.svc.CreateEnvironment(ctx, ada, app.Env{Org: "acme", Project: "web", Env: "qa"}, app.EnvSpec{}))
	ok(e.svc.GrantRole(ctx, ada, "acme", "zoe", domain.RoleOwner, ""))
	ok(e.svc.RotateKeyset(ctx, ada, staging, "later"))
	e.caughtUp(t)

	for i, s := range snaps {
		got := ok(h.OrgAt(ctx, "acme", s.position))
		a, b := canon(t, got), canon(t, s.state)
		if d := firstDiff("state", a, b); d != "" {
			t.Fatalf("snapshot %d at position %d: the replay differs from the read models then (replay vs read models): %s", i, s.position, d)
		}
		for _, x := range got.Secrets {
			if x.Org != "acme" || x.Name == "LATER" || strings.HasPrefix(x.Name, "G") {
				t.Fatalf("snapshot %d: a secret that does not belong: %+v", i, x)
			}
		}
	}
	if len(snaps[5].state.Keysets) != 2 || len(snaps[5].state.Keysets[0].Keys) != 2 || snaps[5].state.Keysets[0].Keys[0].State != "destroyed" {
		t.Fatalf("the scenario did not reach a destroyed key: %+v", snaps[5].state.Keysets)
	}
	// The whole organization now, too; and positions the read models
	// have not reached.
	head := ok(e.store.Head(ctx)).Position
	if d := firstDiff("now", canon(t, ok(h.OrgAt(ctx, "acme", head))), canon(t, readModelsOf(t, r, "acme", head))); d != "" {
		t.Fatalf("at the head: %s", d)
	}
	if _, err := h.OrgAt(ctx, "acme", head+100); !errors.Is(err, projections.ErrNotYet) {
		t.Fatalf("a position beyond the read models: %v", err)
	}
	if st := ok(h.OrgAt(ctx, "nobody", head)); st.Organization != nil || len(st.Secrets)+len(st.Members)+len(st.Keysets) != 0 {
		t.Fatalf("an organization that does not exist: %+v", st)
	}
}
