package api_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// served is what the API's own reads answered of acme while the log
// stood at position: the parts of a replay, in its shapes and orders.
type served struct {
	position     uint64
	projects     []api.Project
	environments []api.Environment
	secrets      []api.ReplaySecret
	keysets      []api.Keyset
	members      []api.Member
	tokens       []api.ServiceToken
}

// serve reads everything an owner may read of acme, with min_position
// at the head, and checks that the log did not move meanwhile.
func serve(t *testing.T, h *harness) served {
	t.Helper()
	p := audCaughtUp(t, h)
	q := "min_position=" + strconv.FormatUint(p, 10)
	list := func(path string, v any) {
		t.Helper()
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		var page struct {
			Items json.RawMessage `json:"items"`
		}
		h.get(path+sep+q, h.Owner).expect(t, 200).decode(t, &page)
		if err := json.Unmarshal(page.Items, v); err != nil {
			t.Fatal(err)
		}
	}
	s := served{position: p}
	list("/v1/orgs/acme/projects", &s.projects)
	for _, pr := range s.projects {
		var envs []api.Environment
		list("/v1/orgs/acme/projects/"+pr.ID+"/envs", &envs)
		s.environments = append(s.environments, envs...)
		for _, e := range envs {
			var secrets []api.SecretMeta
			list("/v1/orgs/acme/projects/"+pr.ID+"/envs/"+e.ID+"/secrets?include_deleted=true", &secrets)
			for _, x := range secrets {
				s.secrets = append(s.secrets, api.ReplaySecret{Project: pr.ID, Env: e.ID, SecretMeta: x})
			}
		}
	}
	slices.SortFunc(s.secrets, func(a, b api.ReplaySecret) int {
		return strings.Compare(a.Project+"/"+a.Env+"/"+a.Name, b.Project+"/"+b.Env+"/"+b.Name)
	})
	list("/v1/orgs/acme/keysets", &s.keysets)
	list("/v1/orgs/acme/members", &s.members)
	list("/v1/orgs/acme/tokens", &s.tokens)
	if now := must(h.Store.Head(ctx)).Position; now != p {
		t.Fatalf("the log moved while the reads were served: %d → %d", p, now)
	}
	return s
}

// sameJSON fails unless got and want encode alike, naming the first item
// that differs.
func sameJSON[T any](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d items, the API served %d:\n got  %s\n want %s", what, len(got), len(want), must(json.Marshal(got)), must(json.Marshal(want)))
	}
	for i := range got {
		g, w := must(json.Marshal(got[i])), must(json.Marshal(want[i]))
		if string(g) != string(w) {
			t.Fatalf("%s[%d] differs from what the API served then:\n replay %s\n served %s", what, i, g, w)
		}
	}
}

// noAges zeroes the keys' ages, which depend on when they are asked.
func noAges(ks []api.Keyset) []api.Keyset {
	out := slices.Clone(ks)
	for i := range out {
		out[i].Keys = slices.Clone(out[i].Keys)
		for j := range out[i].Keys {
			out[i].Keys[j].AgeSeconds = 0
		}
	}
	return out
}

// stele audit replay's endpoint: an organization at a position equals,
// field by field, what the API's reads served when the log was at that
// position; the same moment named by its time answers the same; before
// the organization existed it is empty; no value and no other tenant's
// object ever shows.
func TestOrgReplayEqualsWhatWasServed(t *testing.T) {
	h := newHarness(t)
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "o"}
	must(h.App.CreateProject(ctx, olga, "globex", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, olga, app.Env{Org: "globex", Project: "web", Env: "production"}, app.EnvSpec{Production: true}))
	globex := func(i int) {
		must(h.App.SetSecret(ctx, olga, domain.SecretRef{Org: "globex", Project: "web", Env: "production", Name: fmt.Sprintf("GLOBEX_%d", i)},
			app.SetSecret{Value: []byte("globex-plaintext")}))
	}
	var snaps []served
	snaps = append(snaps, serve(t, h)) // acme with its owners, no project yet

	audEnv(t, h)
	const v1, v2 = "postgres://replay-first", "postgres://replay-second"
	must(h.App.SetSecret(ctx, audAda, audRef("production", "DB_URL"), app.SetSecret{Value: []byte(v1),
		Metadata: domain.SecretMetadata{Description: "the database", Tags: []string{"db"}, Owner: "ada@example.com", RotationSeconds: 30 * 86400}}))
	must(h.App.SetSecret(ctx, audBob, audRef("production", "API_KEY"), app.SetSecret{Value: []byte("k1")}))
	must(h.App.SetSecret(ctx, audAda, audRef("staging", "DB_URL"), app.SetSecret{Value: []byte("staging-plaintext")}))
	tok, _ := audMust2(h.App.IssueToken(ctx, audAda, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web",
		Environments: []string{"production"}, TTL: 48 * time.Hour}))
	must(h.App.RevealSecret(ctx, audBob, audRef("production", "DB_URL"), 0, "deploy", domain.ChannelAPI))
	globex(1)
	snaps = append(snaps, serve(t, h))

	prod := app.Env{Org: "acme", Project: "web", Env: "production"}
	must(h.App.SetSecret(ctx, audBob, audRef("production", "DB_URL"), app.SetSecret{Value: []byte(v2)}))
	must(h.App.RotateKeyset(ctx, audAda, prod, "replay test"))
	must(h.App.DeleteSecret(ctx, audAda, audRef("staging", "DB_URL")))
	must(h.App.GrantRole(ctx, audAda, "acme", "carol@example.com", domain.RoleAdmin, "web"))
	must(h.App.RenameProject(ctx, audAda, "acme", "web", "The web"))
	approvers := 2
	must(h.App.UpdateEnvironment(ctx, audAda, app.Env{Org: "acme", Project: "web", Env: "staging"}, app.EnvUpdate{Approval: &domain.ApprovalPolicy{Change: true, Approvers: approvers}}))
	globex(2)
	snaps = append(snaps, serve(t, h)) // a rotation waiting for its reseal

	st := must(h.App.KeysetStatus(ctx, audAda, prod))
	must(h.App.Reseal(ctx, prod))
	var old uint32
	for _, k := range st.Keys {
		if !k.Primary {
			old = k.ID
		}
	}
	must(h.App.DisableKey(ctx, audAda, prod, old))
	must(h.App.DestroyKey(ctx, audAda, prod, old))
	must(h.App.DestroySecretVersion(ctx, audAda, audRef("production", "API_KEY"), 1))
	must(h.App.RevokeToken(ctx, audAda, "acme", tok.ID, "rotated"))
	must(h.App.RevokeRole(ctx, audAda, "acme", "eve@example.com", ""))
	globex(3)
	snaps = append(snaps, serve(t, h)) // resealed, a destroyed key and version, revocations

	// Later changes, which no replay of the snapshots may show.
	must(h.App.SetSecret(ctx, audAda, audRef("production", "LATER"), app.SetSecret{Value: []byte("later")}))
	must(h.App.GrantRole(ctx, audAda, "acme", "zoe@example.com", domain.RoleOwner, ""))
	audCaughtUp(t, h)

	for i, s := range snaps {
		var got api.OrgReplay
		r := h.get("/v1/orgs/acme/replay?position="+strconv.FormatUint(s.position, 10), h.Ada).expect(t, 200)
		r.decode(t, &got)
		if got.Position != s.position || got.At == nil || got.Organization == nil || got.Organization.ID != "acme" {
			t.Fatalf("snapshot %d: answered %+v", i, got.Moment)
		}
		what := fmt.Sprintf("snapshot %d (position %d): ", i, s.position)
		sameJSON(t, what+"projects", got.Projects, s.projects)
		sameJSON(t, what+"environments", got.Environments, s.environments)
		sameJSON(t, what+"secrets", got.Secrets, s.secrets)
		sameJSON(t, what+"keysets", noAges(got.Keysets), noAges(s.keysets))
		sameJSON(t, what+"members", got.Members, s.members)
		sameJSON(t, what+"tokens", got.Tokens, s.tokens)
		for _, v := range []string{v1, v2, "k1", "staging-plaintext", "globex", "LATER", "zoe@"} {
			if strings.Contains(string(r.body), v) {
				t.Fatalf("snapshot %d: %q shows in the replay", i, v)
			}
		}
		// The same moment named by its time.
		var byTime api.OrgReplay
		h.get("/v1/orgs/acme/replay?at="+histAt(histRecordedAt(t, h, s.position)), h.Owner).expect(t, 200).decode(t, &byTime)
		if byTime.Position != s.position || string(must(json.Marshal(byTime))) != string(must(json.Marshal(got))) {
			t.Fatalf("snapshot %d by time: position %d", i, byTime.Position)
		}
	}
	last := snaps[len(snaps)-1]
	if len(last.keysets) != 2 || last.keysets[0].Keys[0].State != "destroyed" || len(last.tokens) != 2 || last.tokens[1].Status != "revoked" {
		t.Fatalf("the scenario did not reach a destroyed key and a revoked token: %+v %+v", last.keysets, last.tokens)
	}
	// Before acme existed: nothing.
	var empty api.OrgReplay
	h.get("/v1/orgs/acme/replay?position=0", h.Ada).expect(t, 200).decode(t, &empty)
	if empty.Organization != nil || len(empty.Projects)+len(empty.Secrets)+len(empty.Members)+len(empty.Tokens)+len(empty.Keysets) != 0 || empty.At != nil {
		t.Fatalf("at position 0: %+v", empty)
	}
	// Access, and bad input.
	head := audCaughtUp(t, h)
	q := "?position=" + strconv.FormatUint(head, 10)
	h.get("/v1/orgs/acme/replay"+q, h.Bob).expectProblem(t, 403, "forbidden")
	h.get("/v1/orgs/acme/replay"+q, h.Olga).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/replay"+q, "").expectProblem(t, 401, "unauthenticated")
	h.get("/v1/orgs/acme/replay", h.Ada).expectProblem(t, 400, "invalid_request")
	h.do(call{method: "GET", path: "/v1/orgs/acme/replay?position=x", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")
	h.get("/v1/orgs/acme/replay?position="+strconv.FormatUint(head+1000, 10), h.Ada).expectProblem(t, 503, "not_yet")
	h.get("/v1/orgs/acme/replay?at="+histAt(time.Now().Add(time.Hour)), h.Ada).expectProblem(t, 503, "not_yet")
	if p := must(h.Store.Head(ctx)).Position; p != head {
		t.Fatalf("replays appended %d events", p-head)
	}
}
