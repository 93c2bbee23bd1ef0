package api_test

import (
	"errors"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// histAt formats a time for a query.
func histAt(t time.Time) string { return url.QueryEscape(t.UTC().Format(time.RFC3339Nano)) }

// histRecordedAt is when the event at position was recorded.
func histRecordedAt(t *testing.T, h *harness, position uint64) time.Time {
	t.Helper()
	recs := must(h.Store.ReadAll(ctx, position, 1))
	if len(recs) != 1 || recs[0].Position != position {
		t.Fatalf("no record at %d", position)
	}
	return recs[0].RecordedAt
}

// histSecret is what the application said of a secret at some moment,
// in the shape of the history's answer.
type histSecret struct {
	Name      string
	Version   uint64
	Deleted   bool
	Destroyed bool
	Metadata  api.Metadata
}

// histState reads an environment's secrets through the application
// layer, as they are now.
func histState(t *testing.T, h *harness, env string, names ...string) []histSecret {
	t.Helper()
	var out []histSecret
	slices.Sort(names)
	for _, name := range names {
		info, err := h.App.Secret(ctx, audAda.Actor, audRef(env, name))
		if errors.Is(err, domain.ErrNotFound) {
			continue // not created yet
		}
		if err != nil {
			t.Fatal(err)
		}
		destroyed := false
		for _, v := range info.Versions {
			if v.Version == info.Current {
				destroyed = v.Destroyed
			}
		}
		tags := info.Metadata.Tags
		if tags == nil {
			tags = []string{}
		}
		out = append(out, histSecret{Name: name, Version: info.Current, Deleted: info.Deleted, Destroyed: destroyed,
			Metadata: api.Metadata{Description: info.Metadata.Description, Tags: tags, Owner: info.Metadata.Owner, RotationSeconds: info.Metadata.RotationSeconds}})
	}
	return out
}

func histOf(items []api.SecretThen) []histSecret {
	var out []histSecret
	for _, x := range items {
		out = append(out, histSecret{Name: x.Name, Version: x.Version, Deleted: x.Deleted, Destroyed: x.Destroyed, Metadata: x.Metadata})
	}
	return out
}

// The history of an environment at a position or time equals what the
// application layer said of it at that moment.
func TestEnvironmentHistory(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.ReadWait = 300 * time.Millisecond })
	audEnv(t, h)
	names := []string{"DB_URL", "API_KEY", "OLD"}
	type snapshot struct {
		position uint64
		state    []histSecret
	}
	var snaps []snapshot
	snap := func() {
		snaps = append(snaps, snapshot{must(h.Store.Head(ctx)).Position, histState(t, h, "production", names...)})
	}
	const value1, value2 = "postgres://first-plaintext", "postgres://second-plaintext"
	snap() // nothing yet
	must(h.App.SetSecret(ctx, audAda, audRef("production", "DB_URL"), app.SetSecret{Value: []byte(value1),
		Metadata: domain.SecretMetadata{Description: "the database", Tags: []string{"db"}, Owner: "ada@example.com"}}))
	must(h.App.SetSecret(ctx, audAda, audRef("production", "OLD"), app.SetSecret{Value: []byte("old")}))
	snap()
	must(h.App.SetSecret(ctx, audBob, audRef("production", "DB_URL"), app.SetSecret{Value: []byte(value2)}))
	must(h.App.SetSecret(ctx, audAda, audRef("production", "API_KEY"), app.SetSecret{Value: []byte("k1")}))
	must(h.App.SetSecret(ctx, audAda, audRef("staging", "DB_URL"), app.SetSecret{Value: []byte("elsewhere")}))
	snap()
	must(h.App.UpdateSecretMetadata(ctx, audAda, audRef("production", "DB_URL"), domain.SecretMetadata{Description: "the main database", RotationSeconds: 86400}))
	must(h.App.DeleteSecret(ctx, audAda, audRef("production", "OLD")))
	must(h.App.SetSecret(ctx, audAda, audRef("production", "API_KEY"), app.SetSecret{Value: []byte("k2")}))
	must(h.App.DestroySecretVersion(ctx, audAda, audRef("production", "API_KEY"), 2))
	snap()
	head := audCaughtUp(t, h)

	base := "/v1/orgs/acme/projects/web/envs/production/history"
	for i, s := range snaps {
		var byPos, byTime api.EnvHistory
		h.get(base+"?position="+strconv.FormatUint(s.position, 10), h.Ada).expect(t, 200).decode(t, &byPos)
		if got := histOf(byPos.Items); !reflect.DeepEqual(got, s.state) {
			t.Fatalf("snapshot %d at position %d:\n got  %+v\n want %+v", i, s.position, got, s.state)
		}
		if byPos.Position != s.position {
			t.Fatalf("answered for position %d, asked %d", byPos.Position, s.position)
		}
		if s.position == 0 {
			continue
		}
		// A time just after the event, before the next: the same state.
		at := histRecordedAt(t, h, s.position)
		h.get(base+"?at="+histAt(at), h.Owner).expect(t, 200).decode(t, &byTime)
		if !reflect.DeepEqual(histOf(byTime.Items), s.state) || byTime.Position != s.position {
			t.Fatalf("snapshot %d at %s: position %d, %+v", i, at, byTime.Position, byTime.Items)
		}
		if byPos.At == nil || !byPos.At.Equal(at) {
			t.Fatalf("position %d answered with time %v, recorded %s", s.position, byPos.At, at)
		}
	}
	// The last change of each secret is named, and no value appears.
	var now api.EnvHistory
	r := h.get(base+"?position="+strconv.FormatUint(head, 10), h.Ada).expect(t, 200)
	r.decode(t, &now)
	for _, x := range now.Items {
		if x.ChangedBy == "" || x.Position == 0 || x.Position > head || x.ChangedAt.IsZero() {
			t.Fatalf("secret %s has no last change: %+v", x.Name, x)
		}
	}
	for _, v := range []string{value1, value2, "elsewhere", "k1"} {
		if strings.Contains(string(r.body), v) {
			t.Fatalf("a value is in the history: %s", r.body)
		}
	}
	// Before the log began: nothing.
	var before api.EnvHistory
	h.get(base+"?at=2001-01-01T00:00:00Z", h.Ada).expect(t, 200).decode(t, &before)
	if before.Position != 0 || len(before.Items) != 0 {
		t.Fatalf("before the log: %+v", before)
	}

	// Not yet: a moment the read models have not reached.
	h.get(base+"?position="+strconv.FormatUint(head+1000, 10), h.Ada).expectProblem(t, 503, "not_yet")
	h.get(base+"?at="+histAt(time.Now().Add(time.Hour)), h.Ada).expectProblem(t, 503, "not_yet")
	// Bad input.
	h.get(base, h.Ada).expectProblem(t, 400, "invalid_request")
	h.get(base+"?position=3&at="+histAt(time.Now()), h.Ada).expectProblem(t, 400, "invalid_request")
	h.do(call{method: "GET", path: base + "?position=-1", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")
	h.do(call{method: "GET", path: base + "?at=noon", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")
	// Access: a developer may not; a project admin may; another tenant
	// and unknown environments are not found.
	must(h.App.GrantRole(ctx, audAda, "acme", "dan@example.com", domain.RoleAdmin, "web"))
	dan := h.signIn("dan@example.com")
	pos := audCaughtUp(t, h)
	q := "?position=" + strconv.FormatUint(pos, 10)
	h.get(base+q, h.Bob).expectProblem(t, 403, "forbidden")
	h.get(base+q, dan).expect(t, 200)
	h.get(base+q, h.Olga).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/web/envs/qa/history"+q, h.Ada).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/api/envs/production/history"+q, h.Ada).expectProblem(t, 404, "not_found")
	if p := must(h.Store.Head(ctx)).Position; p != pos {
		t.Fatalf("history reads appended %d events", p-pos)
	}
}

// Members and tokens at a moment equal what the access read model held
// then.
func TestAccessAtPointInTime(t *testing.T) {
	h := newHarness(t)
	audEnv(t, h)
	type state struct {
		position uint64
		members  []projections.Member
		tokens   []projections.Token
	}
	var states []state
	snap := func() {
		p := audCaughtUp(t, h)
		states = append(states, state{p, must(h.Reader.Members(ctx, "acme")), must(h.Reader.Tokens(ctx, "acme"))})
	}
	snap()
	must(h.App.GrantRole(ctx, audAda, "acme", "carol@example.com", domain.RoleAdmin, ""))
	must(h.App.GrantRole(ctx, audAda, "acme", "dan@example.com", domain.RoleDeveloper, "web"))
	tok, _ := audMust2(h.App.IssueToken(ctx, audAda, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web",
		Environments: []string{"staging"}, TTL: time.Hour}))
	snap()
	must(h.App.RevokeRole(ctx, audAda, "acme", "bob@example.com", ""))
	must(h.App.GrantRole(ctx, audAda, "acme", "eve@example.com", domain.RoleAdmin, ""))
	must(h.App.RevokeToken(ctx, audAda, "acme", tok.ID, "rotated"))
	snap()

	for i, s := range states {
		var got api.AccessThen
		h.get("/v1/orgs/acme/access?position="+strconv.FormatUint(s.position, 10), h.Ada).expect(t, 200).decode(t, &got)
		var wantGrants, gotGrants []string
		for _, m := range s.members {
			wantGrants = append(wantGrants, m.UserID+"|"+m.Project+"|"+m.Role)
		}
		for _, g := range got.Grants {
			gotGrants = append(gotGrants, g.User+"|"+g.Project+"|"+g.Role)
		}
		slices.Sort(wantGrants)
		slices.Sort(gotGrants)
		if !slices.Equal(gotGrants, wantGrants) {
			t.Fatalf("state %d (position %d): grants %v, want %v", i, s.position, gotGrants, wantGrants)
		}
		var wantToks, gotToks []string
		for _, k := range s.tokens {
			wantToks = append(wantToks, k.ID+"|"+k.Name+"|"+k.Role+"|"+k.Project+"|"+strings.Join(k.Environments, ",")+"|"+strconv.FormatBool(k.RevokedAt != nil))
		}
		for _, k := range got.Tokens {
			gotToks = append(gotToks, k.ID+"|"+k.Name+"|"+k.Role+"|"+k.Project+"|"+strings.Join(k.Environments, ",")+"|"+strconv.FormatBool(k.Revoked))
			if k.Expired {
				t.Fatalf("token %s expired already: %+v", k.ID, k)
			}
		}
		slices.Sort(wantToks)
		slices.Sort(gotToks)
		if !slices.Equal(gotToks, wantToks) {
			t.Fatalf("state %d (position %d): tokens %v, want %v", i, s.position, gotToks, wantToks)
		}
		// The same moment named by its time.
		var byTime api.AccessThen
		h.get("/v1/orgs/acme/access?at="+histAt(histRecordedAt(t, h, s.position)), h.Owner).expect(t, 200).decode(t, &byTime)
		if byTime.Position != s.position || !reflect.DeepEqual(byTime.Grants, got.Grants) || !reflect.DeepEqual(byTime.Tokens, got.Tokens) {
			t.Fatalf("state %d by time: %+v, by position %+v", i, byTime, got)
		}
	}
	if len(states[1].members) <= len(states[0].members) || len(states[2].tokens) != 2 {
		t.Fatalf("the scenario did not change access: %+v", states)
	}
	// Before the organization existed: empty.
	var empty api.AccessThen
	h.get("/v1/orgs/acme/access?position=0", h.Ada).expect(t, 200).decode(t, &empty)
	if len(empty.Grants) != 0 || len(empty.Tokens) != 0 || empty.At != nil {
		t.Fatalf("at position 0: %+v", empty)
	}
	// A token's expiry is judged at the time asked for.
	var later api.AccessThen
	past := time.Now().Add(-time.Second)
	h.get("/v1/orgs/acme/access?at="+histAt(past), h.Ada).expect(t, 200).decode(t, &later)
	for _, k := range later.Tokens {
		if k.Expired != !past.Before(k.ExpiresAt) {
			t.Fatalf("token %+v at %s", k, past)
		}
	}

	h.get("/v1/orgs/acme/access?position=1", h.Eve).expect(t, 200)                                           // eve is an admin now
	h.get("/v1/orgs/acme/access?position=1", h.Bob).expectProblem(t, 404, "not_found")                       // no longer a member
	h.get("/v1/orgs/acme/access?position=1", h.signIn("dan@example.com")).expectProblem(t, 404, "not_found") // a project member only
	must(h.App.GrantRole(ctx, audAda, "acme", "fay@example.com", domain.RoleDeveloper, ""))
	h.get("/v1/orgs/acme/access?position=1", h.signIn("fay@example.com")).expectProblem(t, 403, "forbidden")
	h.get("/v1/orgs/acme/access?position=1", h.Olga).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/access", h.Ada).expectProblem(t, 400, "invalid_request")
}

// Who could read a secret, before and after a role is revoked, and who
// did read it.
func TestWhoCouldReadAndWhoRead(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.ReadWait = 300 * time.Millisecond })
	audEnv(t, h)
	ref := audRef("production", "DB_URL")
	const value = "postgres://plaintext-who-read"
	must(h.App.SetSecret(ctx, audAda, ref, app.SetSecret{Value: []byte(value)}))
	must(h.App.GrantRole(ctx, audAda, "acme", "dan@example.com", domain.RoleDeveloper, "web"))
	ci, _ := audMust2(h.App.IssueToken(ctx, audAda, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleDeveloper, Project: "web",
		Environments: []string{"production"}, TTL: time.Hour}))
	stg, _ := audMust2(h.App.IssueToken(ctx, audAda, "acme", app.TokenSpec{Name: "stg", Role: domain.RoleDeveloper, Project: "web",
		Environments: []string{"staging"}, TTL: time.Hour}))
	_ = stg
	ciReq := app.Request{Actor: domain.Actor{Kind: domain.ActorToken, ID: ci.ID}, RequestID: "ci"}
	start := time.Now()
	r1 := must(h.App.RevealSecret(ctx, audBob, ref, 0, "deploy", domain.ChannelRun))
	r2 := must(h.App.RevealSecret(ctx, ciReq, ref, 1, "", domain.ChannelCLI))
	before := audCaughtUp(t, h)
	must(h.App.RevokeRole(ctx, audAda, "acme", "bob@example.com", ""))
	must(h.App.RevokeRole(ctx, audAda, "acme", "dan@example.com", "web"))
	after := audCaughtUp(t, h)

	base := "/v1/orgs/acme/projects/web/envs/production/secrets/DB_URL/"
	var could api.CouldReadAnswer
	h.get(base+"could-read?position="+strconv.FormatUint(before, 10), h.Ada).expect(t, 200).decode(t, &could)
	want := []api.CouldReadThen{
		{Actor: "token:" + ci.ID, Role: "developer", Via: "token"},
		{Actor: "user:ada@example.com", Role: "owner", Via: "organization"},
		{Actor: "user:bob@example.com", Role: "developer", Via: "organization"},
		{Actor: "user:dan@example.com", Role: "developer", Via: "project"},
	}
	// The bootstrap token is an owner of the whole organization.
	boot := "token:" + strings.SplitN(strings.TrimPrefix(h.Owner, "stele_tok_acme."), ".", 2)[0]
	want = append(want, api.CouldReadThen{Actor: boot, Role: "owner", Via: "token"})
	slices.SortFunc(want, func(a, b api.CouldReadThen) int { return strings.Compare(a.Actor, b.Actor) })
	if !reflect.DeepEqual(could.Items, want) {
		t.Fatalf("who could read before the revoke:\n got  %+v\n want %+v", could.Items, want)
	}
	h.get(base+"could-read?position="+strconv.FormatUint(after, 10), h.Ada).expect(t, 200).decode(t, &could)
	for _, c := range could.Items {
		if c.Actor == "user:bob@example.com" || c.Actor == "user:dan@example.com" || c.Actor == "user:eve@example.com" || c.Actor == "token:"+stg.ID {
			t.Fatalf("after the revoke %s still could: %+v", c.Actor, could.Items)
		}
	}
	if len(could.Items) != len(want)-2 {
		t.Fatalf("after the revoke: %+v", could.Items)
	}
	// By time, an hour on: the tokens have expired by then... which is in
	// the future, so not yet.
	h.get(base+"could-read?at="+histAt(time.Now().Add(time.Hour)), h.Ada).expectProblem(t, 503, "not_yet")
	h.get(base+"could-read?position=0", h.Ada).expect(t, 200).decode(t, &could)
	if len(could.Items) != 0 {
		t.Fatalf("before the log: %+v", could.Items)
	}

	// Who read it: both reads, with channel, reason and version.
	var reads api.SecretReads
	h.get(base+"reads?from="+histAt(start.Add(-time.Minute)), h.Ada).expect(t, 200).decode(t, &reads)
	if len(reads.Items) != 2 {
		t.Fatalf("reads: %+v", reads.Items)
	}
	if x := reads.Items[0]; x.Actor != "user:bob@example.com" || x.ActorKind != "user" || x.Channel != "cli-run" || x.Reason != "deploy" ||
		x.Version != 1 || x.Position != r1.Position {
		t.Fatalf("first read %+v", x)
	}
	if x := reads.Items[1]; x.Actor != "token:"+ci.ID || x.ActorKind != "token" || x.Channel != "cli" || x.Position != r2.Position ||
		!x.RecordedAt.Equal(histRecordedAt(t, h, r2.Position)) {
		t.Fatalf("second read %+v", x)
	}
	// A window that ends between the two reads holds the first only.
	h.get(base+"reads?to="+histAt(histRecordedAt(t, h, r2.Position)), h.Ada).expect(t, 200).decode(t, &reads)
	if len(reads.Items) != 1 || reads.Items[0].Position != r1.Position {
		t.Fatalf("reads before the second: %+v", reads.Items)
	}
	h.get(base+"reads?from=2001-01-01T00:00:00Z&to=2001-02-01T00:00:00Z", h.Ada).expect(t, 200).decode(t, &reads)
	if len(reads.Items) != 0 {
		t.Fatalf("reads in 2001: %+v", reads.Items)
	}
	// Reads elsewhere do not count.
	h.get("/v1/orgs/acme/projects/web/envs/staging/secrets/DB_URL/reads", h.Ada).expectProblem(t, 404, "not_found")
	raw := h.get(base+"reads?min_position="+strconv.FormatUint(after, 10), h.Ada).expect(t, 200).body
	if strings.Contains(string(raw), value) {
		t.Fatal("a value is in the reads")
	}
	h.get(base+"reads?to="+histAt(time.Now().Add(time.Hour)), h.Ada).expectProblem(t, 503, "not_yet")
	h.get(base+"reads?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", h.Ada).expectProblem(t, 400, "invalid_request")
	h.do(call{method: "GET", path: base + "reads?from=today", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")

	// Access: developers and viewers may not; another tenant and unknown
	// secrets are not found.
	q := "?position=" + strconv.FormatUint(after, 10)
	h.get(base+"could-read"+q, h.Eve).expectProblem(t, 403, "forbidden")
	h.get(base+"reads", h.Eve).expectProblem(t, 403, "forbidden")
	h.get(base+"could-read"+q, h.Olga).expectProblem(t, 404, "not_found")
	h.get(base+"reads", h.Olga).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/web/envs/production/secrets/NOPE/could-read"+q, h.Ada).expectProblem(t, 404, "not_found")
	h.get("/v1/orgs/acme/projects/web/envs/production/secrets/NOPE/reads", h.Ada).expectProblem(t, 404, "not_found")
	h.get(base+"could-read", h.Ada).expectProblem(t, 400, "invalid_request")
}
