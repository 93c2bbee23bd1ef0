package api_test

import (
	"fmt"
	"testing"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

const secKeyset = secDev + "/keyset"

var secDevEnv = app.Env{Org: "acme", Project: "web", Env: "dev"}

func secGetKeyset(t *testing.T, h *harness, cred string, position any) api.Keyset {
	t.Helper()
	var ks api.Keyset
	h.get(secAt(secKeyset, fmt.Sprint(position)), cred).expect(t, 200).decode(t, &ks)
	return ks
}

func secKeysetChanged(t *testing.T, r response) api.KeysetChanged {
	t.Helper()
	var out api.KeysetChanged
	r.decode(t, &out)
	if out.Position == 0 || fmt.Sprint(out.Position) != r.position(t) {
		t.Fatalf("a key change answered position %d, header %q", out.Position, r.header.Get("X-Stele-Position"))
	}
	return out
}

func secKey(ks api.Keyset, id int64) (api.KeysetKey, bool) {
	for _, k := range ks.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return api.KeysetKey{}, false
}

// A rotation makes a new primary key; the keyset's status then shows the
// values still to reseal until the resealer has done its work.
func TestKeysetRotateAndReseal(t *testing.T) {
	h := secSetup(t)
	h.put(secDev+"/secrets/A", h.Bob, map[string]any{"value": "rotate-value-a1"}).expect(t, 201)
	h.put(secDev+"/secrets/A", h.Bob, map[string]any{"value": "rotate-value-a2"}).expect(t, 200)
	pos := h.put(secDev+"/secrets/B", h.Bob, map[string]any{"value": "rotate-value-b1"}).expect(t, 201).position(t)

	before := secGetKeyset(t, h, h.Eve, pos)
	if len(before.Keys) != 1 || !before.Keys[0].Primary || before.Keys[0].State != "enabled" || before.Keys[0].ID != before.PrimaryKey ||
		!before.Reseal.Complete || before.Reseal.Pending != 0 || *before.Reseal.Sealed != 2 || *before.Reseal.Values != 2 ||
		before.RotationSeconds == nil || *before.RotationSeconds <= 0 || before.RotationDue || before.LastRotation != nil || *before.Rotations != 0 ||
		before.Project != "web" || before.Env != "dev" {
		t.Fatalf("before the rotation: %+v", before)
	}

	// Rotating needs the admin role; another tenant sees nothing.
	h.post(secKeyset+"/rotate", h.Bob, map[string]any{"reason": "x"}).expectProblem(t, 403, "forbidden")
	h.post(secKeyset+"/rotate", h.Eve, nil).expectProblem(t, 403, "forbidden")
	h.post(secKeyset+"/rotate", h.Olga, nil).expectProblem(t, 404, "not_found")
	h.get(secKeyset, h.Olga).expectProblem(t, 404, "not_found")
	h.post("/v1/orgs/acme/projects/web/envs/nowhere/keyset/rotate", h.Ada, nil).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/web/envs/nowhere/keyset", h.Ada).expectProblem(t, 404, "not_found")
	h.do(call{method: "POST", path: secKeyset + "/rotate", cred: h.Ada, body: map[string]any{"reason": "x", "extra": 1}, invalid: true}).expectProblem(t, 400, "invalid_json")

	r := h.post(secKeyset+"/rotate", h.Ada, map[string]any{"reason": "suspected leak"}).expect(t, 200)
	rot := secKeysetChanged(t, r)
	if rot.PrimaryKey == before.PrimaryKey || len(rot.Keys) != 2 || rot.Reseal.Complete || rot.Reseal.Pending != 2 {
		t.Fatalf("the rotation answered %+v", rot)
	}
	if k, _ := secKey(rot.Keyset, rot.PrimaryKey); !k.Primary || k.State != "enabled" {
		t.Fatalf("the new primary: %+v", rot.Keys)
	}

	after := secGetKeyset(t, h, h.Eve, rot.Position)
	if after.PrimaryKey != rot.PrimaryKey || after.LastRotation == nil || *after.Rotations != 1 || after.Reseal.Complete ||
		*after.Reseal.Sealed != 0 || *after.Reseal.Values != 2 || after.Reseal.Pending != 2 {
		t.Fatalf("after the rotation: %+v", after)
	}
	if old, ok := secKey(after, before.PrimaryKey); !ok || old.Primary || old.State != "enabled" {
		t.Fatalf("the old key after the rotation: %+v", after.Keys)
	}
	// New values use the new key at once.
	pos = h.put(secDev+"/secrets/C", h.Bob, map[string]any{"value": "rotate-value-c1"}).expect(t, 201).position(t)
	if ks := secGetKeyset(t, h, h.Eve, pos); *ks.Reseal.Sealed != 1 || *ks.Reseal.Values != 3 {
		t.Fatalf("after a write under the new key: %+v", ks.Reseal)
	}

	// The resealer (run by the server's key maintenance) finishes the job.
	rep := must(h.App.Reseal(ctx, secDevEnv))
	if rep.Resealed != 2 || rep.Remaining != 0 {
		t.Fatalf("reseal: %+v", rep)
	}
	done := secGetKeyset(t, h, h.Eve, must(h.App.Head(ctx)))
	if !done.Reseal.Complete || *done.Reseal.Sealed != 3 || done.Reseal.Pending != 0 {
		t.Fatalf("after resealing: %+v", done.Reseal)
	}
	for name, want := range map[string]string{"A": "rotate-value-a2", "B": "rotate-value-b1", "C": "rotate-value-c1"} {
		if v, _ := secReveal(t, h, name, nil); *v.Value != want {
			t.Fatalf("%s reads %q after the rotation", name, *v.Value)
		}
	}
	if v, _ := secReveal(t, h, "A", map[string]any{"version": 1}); *v.Value != "rotate-value-a1" {
		t.Fatal("an old version sealed by the old key no longer reads")
	}

	// The organization's dashboard lists it; another tenant learns nothing.
	var list struct{ Items []api.Keyset }
	h.get(secAt("/v1/orgs/acme/keysets", fmt.Sprint(must(h.App.Head(ctx)))), h.Eve).expect(t, 200).decode(t, &list)
	if len(list.Items) != 1 || list.Items[0].PrimaryKey != rot.PrimaryKey || !list.Items[0].Reseal.Complete {
		t.Fatalf("the organization's keysets: %+v", list.Items)
	}
	h.get("/v1/orgs/acme/keysets", h.Olga).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/globex/keysets", h.Olga).expect(t, 200).decode(t, &list)
	if len(list.Items) != 0 {
		t.Fatalf("globex lists %+v", list.Items)
	}
	secNoLeak(t, h, "rotate-value-a1", "rotate-value-a2", "rotate-value-b1", "rotate-value-c1")
}

// Disabling and destroying keys: the order they need, who may, and
// crypto-shredding of what only a destroyed key sealed.
func TestKeyDisableEnableDestroy(t *testing.T) {
	h := secSetup(t)
	h.put(secDev+"/secrets/OLD", h.Bob, map[string]any{"value": "shred-me-please-1"}).expect(t, 201)
	h.put(secDev+"/secrets/OLD", h.Bob, map[string]any{"value": "keep-me-please-2"}).expect(t, 200)
	rot := secKeysetChanged(t, h.post(secKeyset+"/rotate", h.Ada, nil).expect(t, 200))
	k1, k2 := int64(0), rot.PrimaryKey
	for _, k := range rot.Keys {
		if !k.Primary {
			k1 = k.ID
		}
	}
	key := func(id int64) string { return fmt.Sprintf("%s/keys/%d", secKeyset, id) }

	// Not while values still wait to be resealed under the new key.
	h.post(key(k1)+"/disable", h.Ada, nil).expectProblem(t, 409, "conflict")
	must(h.App.Reseal(ctx, secDevEnv))
	h.post(key(k2)+"/disable", h.Ada, nil).expectProblem(t, 409, "conflict") // the primary
	h.del(key(k1), h.Ada).expectProblem(t, 409, "conflict")                  // enabled: disable first
	h.post(key(k1)+"/disable", h.Bob, nil).expectProblem(t, 403, "forbidden")
	h.post(key(k1)+"/disable", h.Olga, nil).expectProblem(t, 404, "not_found")
	h.post(key(999)+"/disable", h.Ada, nil).expectProblem(t, 404, "not_found")
	h.do(call{method: "POST", path: secKeyset + "/keys/first/disable", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")

	dis := secKeysetChanged(t, h.post(key(k1)+"/disable", h.Ada, nil).expect(t, 200))
	if k, _ := secKey(dis.Keyset, k1); k.State != "disabled" {
		t.Fatalf("after disabling: %+v", dis.Keys)
	}
	h.post(key(k1)+"/disable", h.Ada, nil).expectProblem(t, 409, "conflict")
	// What only the disabled key seals cannot be read; the current value was resealed.
	h.post(secDev+"/secrets/OLD/reveal", h.Bob, map[string]any{"version": 1}).expectProblem(t, 409, "conflict")
	if v, _ := secReveal(t, h, "OLD", nil); *v.Value != "keep-me-please-2" {
		t.Fatal("the current value does not read")
	}
	// Enabling brings it back.
	h.post(key(k1)+"/enable", h.Bob, nil).expectProblem(t, 403, "forbidden")
	secKeysetChanged(t, h.post(key(k1)+"/enable", h.Ada, nil).expect(t, 200))
	h.post(key(k1)+"/enable", h.Ada, nil).expectProblem(t, 409, "conflict")
	if v, _ := secReveal(t, h, "OLD", map[string]any{"version": 1}); *v.Value != "shred-me-please-1" {
		t.Fatal("a re-enabled key does not read")
	}
	secKeysetChanged(t, h.post(key(k1)+"/disable", h.Ada, nil).expect(t, 200))

	// Destroying needs the owner role: not a developer, not even an admin.
	adminReq := secAda()
	must(h.App.GrantRole(ctx, adminReq, "acme", "adam@example.com", domain.RoleAdmin, ""))
	adam := h.signIn("adam@example.com")
	h.del(key(k1), h.Bob).expectProblem(t, 403, "forbidden")
	h.del(key(k1), adam).expectProblem(t, 403, "forbidden")
	h.del(key(k1), h.Olga).expectProblem(t, 404, "not_found")
	r := h.del(key(k1), h.Ada).expect(t, 200)
	gone := secKeysetChanged(t, r)
	if k, _ := secKey(gone.Keyset, k1); k.State != "destroyed" {
		t.Fatalf("after destroying: %+v", gone.Keys)
	}
	// Crypto-shredding: the version only that key sealed is gone for good.
	h.post(secDev+"/secrets/OLD/reveal", h.Bob, map[string]any{"version": 1}).expectProblem(t, 410, "destroyed")
	if v, _ := secReveal(t, h, "OLD", nil); *v.Value != "keep-me-please-2" {
		t.Fatal("the current value does not read after the destruction")
	}
	h.del(key(k1), h.Ada).expectProblem(t, 410, "destroyed")
	h.post(key(k1)+"/enable", h.Ada, nil).expectProblem(t, 410, "destroyed")
	ks := secGetKeyset(t, h, h.Eve, r.position(t))
	if k, _ := secKey(ks, k1); k.State != "destroyed" || k.StateChangedAt == nil || ks.PrimaryKey != k2 {
		t.Fatalf("the keyset read after destroying: %+v", ks)
	}
	secNoLeak(t, h, "shred-me-please-1", "keep-me-please-2")
}

// The organization's keysets, for a caller whose role covers one project.
func TestKeysetsListScope(t *testing.T) {
	h := secSetup(t)
	ada := secAda()
	must(h.App.CreateProject(ctx, ada, "acme", "api", "API"))
	must(h.App.CreateEnvironment(ctx, ada, app.Env{Org: "acme", Project: "api", Env: "prod"}, app.EnvSpec{Production: true}))
	must(h.App.GrantRole(ctx, ada, "acme", "pat@example.com", domain.RoleDeveloper, "api"))
	pat := h.signIn("pat@example.com")
	head := fmt.Sprint(must(h.App.Head(ctx)))
	var list struct{ Items []api.Keyset }
	h.get(secAt("/v1/orgs/acme/keysets", head), h.Owner).expect(t, 200).decode(t, &list)
	if len(list.Items) != 2 || list.Items[0].Project != "api" || list.Items[1].Project != "web" {
		t.Fatalf("the owner sees %+v", list.Items)
	}
	h.get(secAt("/v1/orgs/acme/keysets", head), pat).expect(t, 200).decode(t, &list)
	if len(list.Items) != 1 || list.Items[0].Project != "api" || list.Items[0].Env != "prod" {
		t.Fatalf("a member of project api sees %+v", list.Items)
	}
	h.get(secAt("/v1/orgs/acme/projects/web/envs/dev/keyset", head), pat).expectProblem(t, 404, "not_found")
	h.get(secAt("/v1/orgs/acme/projects/api/envs/prod/keyset", head), pat).expect(t, 200)
	h.do(call{method: "GET", path: "/v1/orgs/acme/keysets?min_position=later", cred: pat, invalid: true}).expectProblem(t, 400, "invalid_request")
}
