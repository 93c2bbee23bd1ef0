package api_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/projections"
)

// The authorization matrix: every operation of the description, called
// by an anonymous client, by a person of another organization, and by a
// viewer, a developer, an admin and an owner of acme; and, for the
// operations on an organization's resources, by each of acme's people on
// the same resources of another organization. Each call is allowed (a
// success) or denied with exactly the answer the access model prescribes:
// 401 for anonymous callers, 404 for outsiders (another tenant's
// resources look absent), 403 for members below the role the operation
// needs. Every operation must have a row; one that cannot run here says
// why and which test covers it.

// The least role an operation needs; public and signedIn need none.
const (
	public   = "public"    // anyone, signed in or not
	signedIn = "signed-in" // any valid credential
)

var roleRank = map[string]int{"viewer": 1, "developer": 2, "admin": 3, "owner": 4}

// caller is one principal of the matrix.
type mcaller struct {
	name string // anon, outsider, viewer, developer, admin, owner
	user string // the person, for fresh sessions
	cred string
}

// mrule is one operation's row.
type mrule struct {
	op     string
	method string
	// path is the operation's path on acme's resources for caller who;
	// an operation that changes state uses resources of who's own, made
	// by setup, so that every allowed caller can succeed.
	path  func(who string) string
	body  func(who string) any
	ctype string // of a string body
	min   string
	setup func(t *testing.T, who string)
	// fresh: the call ends the credential (sign-out), so each caller uses
	// a new session of their own.
	fresh bool
	// outsiderNotFound: a public operation where a signed-in caller acts
	// as themselves, so another organization's person gets 404.
	outsiderNotFound bool
	// skip explains why the operation is not called here.
	skip string
}

func TestAuthorizationMatrix(t *testing.T) {
	skey, _, err := checkpoint.GenerateKey("stele.test/matrix")
	if err != nil {
		t.Fatal(err)
	}
	signer := must(checkpoint.NewSigner(skey))
	h := newHarness(t, func(c *api.Config) {
		c.Ready = readiness{c.Ledger.(*postgres.Store)}
		c.DevSignIn = true
		c.RatePerSecond, c.RateBurst = 1e6, 1e6
		c.CheckpointKey = signer.Verifier()
	})
	own := ownerRequest(t, h)
	adminUser := "adam@example.com"
	must(h.App.GrantRole(ctx, own, "acme", adminUser, domain.RoleAdmin, ""))
	callers := []mcaller{
		{name: "anon"},
		{name: "outsider", user: "olga@example.com", cred: h.Olga},
		{name: "viewer", user: "eve@example.com", cred: h.Eve},
		{name: "developer", user: "bob@example.com", cred: h.Bob},
		{name: "admin", user: adminUser, cred: h.signIn(adminUser)},
		{name: "owner", user: "ada@example.com", cred: h.Ada},
	}

	// acme and globex both hold web/production with DB_URL and a bundle,
	// so that another tenant's resources exist when they answer 404.
	prod := app.Env{Org: "acme", Project: "web", Env: "production"}
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "matrix"}
	for _, x := range []struct {
		req app.Request
		env app.Env
	}{{own, prod}, {olga, app.Env{Org: "globex", Project: "web", Env: "production"}}} {
		must(h.App.CreateProject(ctx, x.req, x.env.Org, "web", "Web"))
		must(h.App.CreateEnvironment(ctx, x.req, x.env, app.EnvSpec{Production: true}))
		for _, v := range []string{"v1", "v2"} {
			must(h.App.SetSecret(ctx, x.req, domain.SecretRef{Org: x.env.Org, Project: "web", Env: "production", Name: "DB_URL"}, app.SetSecret{Value: []byte("matrix-" + v)}))
		}
		must(h.App.CreateBundle(ctx, x.req, x.env.Org, "web", "backend", []domain.BundleKey{{Name: "DB_URL", Required: true}}))
	}
	tok, _, err := h.App.IssueToken(ctx, own, "acme", app.TokenSpec{Name: "ci", Role: domain.RoleViewer, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	must((&checkpoint.Checkpointer{Store: h.Store, Signer: signer}).Checkpoint(ctx))

	settle := func(t *testing.T) {
		t.Helper()
		if err := projections.WaitFor(ctx, h.Pool, must(h.App.Head(ctx)), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	up := strings.ToUpper
	env := "/v1/orgs/acme/projects/web/envs/production"
	fixed := func(p string) func(string) string { return func(string) string { return p } }
	ref := func(name string) domain.SecretRef {
		return domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: name}
	}
	set := func(name string, values ...string) {
		for _, v := range values {
			must(h.App.SetSecret(ctx, own, ref(name), app.SetSecret{Value: []byte(v)}))
		}
	}
	// A key of production's keyset that is not the primary, for each caller:
	// rotate, reseal, and optionally disable the old primary.
	keyOf := map[string]uint32{}
	spareKey := func(t *testing.T, who string, disable bool) {
		old := must(h.App.KeysetStatus(ctx, own, prod)).Primary
		must(h.App.RotateKeyset(ctx, own, prod, "matrix "+who))
		must(h.App.Reseal(ctx, prod))
		if disable {
			must(h.App.DisableKey(ctx, own, prod, old))
		}
		keyOf[who] = old
	}
	pub := base64.StdEncoding.EncodeToString(make([]byte, 32))
	approvalOf, pollOf := map[string]string{}, map[string]string{}
	newRequest := func(t *testing.T, who string) {
		r := h.post("/v1/approvals", "", map[string]any{"kind": "secrets", "public_key": pub, "org": "acme", "project": "web", "env": "production",
			"keys": []string{"DB_URL"}}).expect(t, 201)
		var c api.ApprovalCreated
		r.decode(t, &c)
		approvalOf[who], pollOf[who] = c.ID, c.PollToken
	}
	tokenOf := map[string]string{}
	// fullTile: a checkpoint covers a full tile (256 events).
	fullTile := func(t *testing.T, who string) {
		if must(h.Store.LatestCheckpoint(ctx)).Size < 256 {
			fill(t, h, 256)
			must((&checkpoint.Checkpointer{Store: h.Store, Signer: signer}).Checkpoint(ctx))
		}
	}

	rules := []mrule{
		{op: "health", method: "GET", path: fixed("/healthz"), min: public},
		{op: "ready", method: "GET", path: fixed("/readyz"), min: public},
		{op: "metrics", method: "GET", path: fixed("/metrics"), min: public},
		{op: "openapi", method: "GET", path: fixed("/v1/openapi.yaml"), min: public},
		{op: "getMe", method: "GET", path: fixed("/v1/me"), min: signedIn},
		{op: "listAuthMethods", method: "GET", path: fixed("/v1/auth/methods"), min: public},
		{op: "startSignIn", skip: "needs an OpenID provider; anyone may start a sign-in (signin_test.go runs it against a real provider)"},
		{op: "finishSignIn", skip: "needs an OpenID provider and a flow cookie; signin_test.go covers forged and replayed callbacks"},
		{op: "getDevSignInPage", method: "GET", path: fixed("/v1/auth/dev"), min: public},
		{op: "devSignIn", method: "POST", path: fixed("/v1/auth/dev"), body: func(who string) any { return map[string]any{"email": "dev-" + who + "@example.com"} }, min: public},
		{op: "signOut", method: "POST", path: fixed("/v1/auth/logout"), min: signedIn, fresh: true},

		{op: "listOrgs", method: "GET", path: fixed("/v1/orgs"), min: signedIn},
		{op: "createOrg", method: "POST", path: fixed("/v1/orgs"), body: func(who string) any { return map[string]any{"id": "org-" + who, "name": "Org " + who} }, min: signedIn},
		{op: "getOrg", method: "GET", path: fixed("/v1/orgs/acme"), min: "viewer"},
		{op: "updateOrg", method: "PATCH", path: fixed("/v1/orgs/acme"), body: func(who string) any { return map[string]any{"name": "Acme " + who} }, min: "admin"},
		{op: "listMembers", method: "GET", path: fixed("/v1/orgs/acme/members"), min: "viewer"},
		{op: "grantOrgRole", method: "PUT", path: func(who string) string { return "/v1/orgs/acme/members/g-" + who + "@example.com" },
			body: func(string) any { return map[string]any{"role": "viewer"} }, min: "admin"},
		{op: "revokeOrgRole", method: "DELETE", path: func(who string) string { return "/v1/orgs/acme/members/r-" + who + "@example.com" }, min: "admin",
			setup: func(t *testing.T, who string) {
				must(h.App.GrantRole(ctx, own, "acme", "r-"+who+"@example.com", domain.RoleViewer, ""))
			}},
		{op: "grantProjectRole", method: "PUT", path: func(who string) string { return "/v1/orgs/acme/projects/web/members/gp-" + who + "@example.com" },
			body: func(string) any { return map[string]any{"role": "developer"} }, min: "admin"},
		{op: "revokeProjectRole", method: "DELETE", path: func(who string) string { return "/v1/orgs/acme/projects/web/members/rp-" + who + "@example.com" }, min: "admin",
			setup: func(t *testing.T, who string) {
				must(h.App.GrantRole(ctx, own, "acme", "rp-"+who+"@example.com", domain.RoleViewer, "web"))
			}},

		{op: "listProjects", method: "GET", path: fixed("/v1/orgs/acme/projects"), min: "viewer"},
		{op: "createProject", method: "POST", path: fixed("/v1/orgs/acme/projects"), body: func(who string) any { return map[string]any{"id": "p-" + who, "name": "P"} }, min: "admin"},
		{op: "getProject", method: "GET", path: fixed("/v1/orgs/acme/projects/web"), min: "viewer"},
		{op: "updateProject", method: "PATCH", path: fixed("/v1/orgs/acme/projects/web"), body: func(who string) any { return map[string]any{"name": "Web " + who} }, min: "admin"},
		{op: "listEnvironments", method: "GET", path: fixed("/v1/orgs/acme/projects/web/envs"), min: "viewer"},
		{op: "createEnvironment", method: "POST", path: fixed("/v1/orgs/acme/projects/web/envs"), body: func(who string) any { return map[string]any{"id": "e-" + who} }, min: "admin"},
		{op: "getEnvironment", method: "GET", path: fixed(env), min: "viewer"},
		{op: "updateEnvironment", method: "PATCH", path: fixed(env), body: func(who string) any { return map[string]any{"name": "Production " + who} }, min: "admin"},
		{op: "listBundles", method: "GET", path: fixed("/v1/orgs/acme/projects/web/bundles"), min: "viewer"},
		{op: "createBundle", method: "POST", path: fixed("/v1/orgs/acme/projects/web/bundles"),
			body: func(who string) any {
				return map[string]any{"id": "b-" + who, "keys": []map[string]any{{"name": "DB_URL"}}}
			}, min: "admin"},
		{op: "getBundle", method: "GET", path: fixed("/v1/orgs/acme/projects/web/bundles/backend"), min: "viewer"},
		{op: "replaceBundle", method: "PUT", path: func(who string) string { return "/v1/orgs/acme/projects/web/bundles/rb-" + who },
			body: func(string) any { return map[string]any{"keys": []map[string]any{{"name": "API_KEY"}}} }, min: "admin",
			setup: func(t *testing.T, who string) {
				must(h.App.CreateBundle(ctx, own, "acme", "web", "rb-"+who, []domain.BundleKey{{Name: "DB_URL"}}))
			}},
		{op: "deleteBundle", method: "DELETE", path: func(who string) string { return "/v1/orgs/acme/projects/web/bundles/db-" + who }, min: "admin",
			setup: func(t *testing.T, who string) {
				must(h.App.CreateBundle(ctx, own, "acme", "web", "db-"+who, []domain.BundleKey{{Name: "DB_URL"}}))
			}},

		{op: "listTokens", method: "GET", path: fixed("/v1/orgs/acme/tokens"), min: "viewer"},
		{op: "issueToken", method: "POST", path: fixed("/v1/orgs/acme/tokens"),
			body: func(who string) any { return map[string]any{"name": "t-" + who, "role": "viewer", "ttl_seconds": 3600} }, min: "admin"},
		{op: "getToken", method: "GET", path: fixed("/v1/orgs/acme/tokens/" + tok.ID), min: "viewer"},
		{op: "revokeToken", method: "DELETE", path: func(who string) string { return "/v1/orgs/acme/tokens/" + tokenOf[who] }, min: "admin",
			setup: func(t *testing.T, who string) {
				x, _, err := h.App.IssueToken(ctx, own, "acme", app.TokenSpec{Name: "rt-" + who, Role: domain.RoleViewer, TTL: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				tokenOf[who] = x.ID
			}},

		{op: "listSecrets", method: "GET", path: fixed(env + "/secrets"), min: "viewer"},
		{op: "getSecret", method: "GET", path: fixed(env + "/secrets/DB_URL"), min: "viewer"},
		{op: "putSecret", method: "PUT", path: func(who string) string { return env + "/secrets/P_" + up(who) },
			body: func(string) any { return map[string]any{"value": "matrix value"} }, min: "developer"},
		{op: "patchSecret", method: "PATCH", path: fixed(env + "/secrets/DB_URL"), body: func(who string) any { return map[string]any{"description": "by " + who} }, min: "developer"},
		{op: "deleteSecret", method: "DELETE", path: func(who string) string { return env + "/secrets/D_" + up(who) }, min: "developer",
			setup: func(t *testing.T, who string) { set("D_"+up(who), "x") }},
		{op: "restoreSecret", method: "POST", path: func(who string) string { return env + "/secrets/R_" + up(who) + "/restore" }, min: "developer",
			setup: func(t *testing.T, who string) {
				set("R_"+up(who), "x")
				must(h.App.DeleteSecret(ctx, own, ref("R_"+up(who))))
			}},
		{op: "listSecretVersions", method: "GET", path: fixed(env + "/secrets/DB_URL/versions"), min: "viewer"},
		{op: "destroySecretVersion", method: "DELETE", path: func(who string) string { return env + "/secrets/X_" + up(who) + "/versions/1" }, min: "admin",
			setup: func(t *testing.T, who string) { set("X_"+up(who), "a", "b") }},
		{op: "rollbackSecret", method: "POST", path: func(who string) string { return env + "/secrets/B_" + up(who) + "/rollback" },
			body: func(string) any { return map[string]any{"version": 1} }, min: "developer",
			setup: func(t *testing.T, who string) { set("B_"+up(who), "a", "b") }},
		{op: "revealSecret", method: "POST", path: fixed(env + "/secrets/DB_URL/reveal"), body: func(string) any { return map[string]any{"reason": "matrix"} }, min: "developer"},
		{op: "revealSecrets", method: "POST", path: fixed(env + "/reveal"), body: func(string) any { return map[string]any{"names": []string{"DB_URL"}} }, min: "developer"},
		{op: "importSecrets", method: "POST", path: fixed(env + "/import"), body: func(who string) any { return "I_" + up(who) + "=imported\n" }, ctype: "text/plain", min: "developer"},
		{op: "exportSecrets", method: "POST", path: fixed(env + "/export"), body: func(string) any { return map[string]any{"format": "json", "names": []string{"DB_URL"}} }, min: "developer"},
		{op: "watchChanges", skip: "a stream that stays open while allowed; changes_test.go checks viewers and up, other tenants (404), anonymous callers (401) and revoked access"},

		{op: "listKeysets", method: "GET", path: fixed("/v1/orgs/acme/keysets"), min: "viewer"},
		{op: "getKeyset", method: "GET", path: fixed(env + "/keyset"), min: "viewer"},
		{op: "rotateKeyset", method: "POST", path: fixed(env + "/keyset/rotate"), body: func(who string) any { return map[string]any{"reason": "by " + who} }, min: "admin"},
		{op: "disableKey", method: "POST", path: func(who string) string { return fmt.Sprintf("%s/keyset/keys/%d/disable", env, keyOf[who]) }, min: "admin",
			setup: func(t *testing.T, who string) { spareKey(t, who, false) }},
		{op: "enableKey", method: "POST", path: func(who string) string { return fmt.Sprintf("%s/keyset/keys/%d/enable", env, keyOf[who]) }, min: "admin",
			setup: func(t *testing.T, who string) { spareKey(t, who, true) }},
		{op: "destroyKey", method: "DELETE", path: func(who string) string { return fmt.Sprintf("%s/keyset/keys/%d", env, keyOf[who]) }, min: "owner",
			setup: func(t *testing.T, who string) { spareKey(t, who, true) }},

		{op: "createApproval", method: "POST", path: fixed("/v1/approvals"), min: public, outsiderNotFound: true,
			body: func(string) any {
				return map[string]any{"kind": "secrets", "public_key": pub, "org": "acme", "project": "web", "env": "production", "keys": []string{"DB_URL"}}
			}},
		{op: "getApproval", method: "GET", path: func(who string) string { return "/v1/approvals/" + approvalOf[who] }, min: "developer", setup: newRequest},
		{op: "approveApproval", method: "POST", path: func(who string) string { return "/v1/approvals/" + approvalOf[who] + "/approve" },
			body: func(string) any { return map[string]any{"keys": []string{"DB_URL"}} }, min: "developer", setup: newRequest},
		{op: "denyApproval", method: "POST", path: func(who string) string { return "/v1/approvals/" + approvalOf[who] + "/deny" },
			body: func(string) any { return map[string]any{"reason": "matrix"} }, min: "developer", setup: newRequest},
		{op: "collectApproval", method: "POST", path: func(who string) string { return "/v1/approvals/" + approvalOf[who] + "/collect" },
			body: func(who string) any { return map[string]any{"poll_token": pollOf[who], "wait_seconds": 0} }, min: public, setup: newRequest},
		{op: "listApprovals", method: "GET", path: fixed("/v1/orgs/acme/approvals"), min: "developer"},

		{op: "listAuditEvents", method: "GET", path: fixed("/v1/orgs/acme/audit"), min: "admin"},
		{op: "getReadStats", method: "GET", path: fixed("/v1/orgs/acme/stats/reads"), min: "admin"},
		{op: "getAuditEvidence", method: "GET", path: fixed("/v1/orgs/acme/audit/evidence?from=2000-01-01T00:00:00Z"), min: "admin",
			setup: func(t *testing.T, who string) {
				must((&checkpoint.Checkpointer{Store: h.Store, Signer: signer}).Checkpoint(ctx))
			}},
		{op: "getAccessAt", method: "GET", path: func(string) string { return fmt.Sprintf("/v1/orgs/acme/access?position=%d", must(h.App.Head(ctx))) }, min: "admin"},
		{op: "getEnvironmentHistory", method: "GET", path: func(string) string { return fmt.Sprintf("%s/history?position=%d", env, must(h.App.Head(ctx))) }, min: "admin"},
		{op: "getSecretCouldRead", method: "GET", path: func(string) string {
			return fmt.Sprintf("%s/secrets/DB_URL/could-read?position=%d", env, must(h.App.Head(ctx)))
		}, min: "admin"},
		{op: "listSecretReads", method: "GET", path: fixed(env + "/secrets/DB_URL/reads"), min: "admin"},
		{op: "getOrgReplay", method: "GET", path: func(string) string { return fmt.Sprintf("/v1/orgs/acme/replay?position=%d", must(h.App.Head(ctx))) }, min: "admin"},
		{op: "getReport", method: "GET", path: fixed("/v1/orgs/acme/reports/production-tokens"), min: "admin"},

		{op: "getLedgerHead", method: "GET", path: fixed("/v1/ledger/head"), min: signedIn},
		{op: "getLedgerCheckpoint", method: "GET", path: fixed("/v1/ledger/checkpoint"), min: signedIn},
		{op: "getLedgerStatus", method: "GET", path: fixed("/v1/ledger/status"), min: signedIn},
		{op: "getLedgerKey", method: "GET", path: fixed("/v1/ledger/key"), min: signedIn},
		{op: "getLedgerConsistencyProof", method: "GET", path: fixed("/v1/ledger/proof/consistency?from=1"), min: signedIn},
		{op: "getLedgerInclusionProof", method: "GET", path: fixed("/v1/ledger/proof/inclusion?position=1"), min: signedIn},
		{op: "getLedgerWitnessed", method: "GET", path: fixed("/v1/ledger/witnessed"), min: signedIn},
		// The log for transparency-log clients: signed-in callers here;
		// public with PublicLog (tiles_test.go).
		{op: "getLogCheckpoint", method: "GET", path: fixed("/v1/ledger/log/checkpoint"), min: signedIn},
		{op: "getLogPartialTile", method: "GET", path: fixed("/v1/ledger/log/tile/0/000.p/1"), min: signedIn},
		{op: "getLogPartialEntryBundle", method: "GET", path: fixed("/v1/ledger/log/tile/entries/000.p/1"), min: signedIn},
		{op: "getLogTile", method: "GET", path: fixed("/v1/ledger/log/tile/0/000"), min: signedIn, setup: fullTile},
		{op: "getLogEntryBundle", method: "GET", path: fixed("/v1/ledger/log/tile/entries/000"), min: signedIn, setup: fullTile},
	}

	// Every operation has exactly one row.
	seen := map[string]bool{}
	for _, r := range rules {
		if seen[r.op] {
			t.Fatalf("two rows for %s", r.op)
		}
		seen[r.op] = true
	}
	for _, op := range operations(t) {
		if !seen[op] {
			t.Errorf("the matrix has no row for operation %s", op)
		}
		delete(seen, op)
	}
	for op := range seen {
		t.Errorf("the matrix has a row for %s, which the description does not have", op)
	}

	allowedFor := func(min, who string) bool {
		switch {
		case min == public:
			return true
		case who == "anon":
			return false
		case min == signedIn:
			return true
		case who == "outsider":
			return false
		}
		return roleRank[who] >= roleRank[min]
	}
	checked := 0
	for _, r := range rules {
		if r.skip != "" {
			t.Logf("%s: not called here: %s", r.op, r.skip)
			continue
		}
		t.Run(r.op, func(t *testing.T) {
			call1 := func(who, path, cred string, body any) response {
				c := call{method: r.method, path: path, cred: cred, body: body, contentType: r.ctype}
				if r.method == http.MethodGet && strings.HasPrefix(path, "/v1/") && !strings.Contains(path, "?") && !strings.HasPrefix(path, "/v1/auth") &&
					path != "/v1/openapi.yaml" && !strings.HasPrefix(path, "/v1/approvals") {
					c.path += fmt.Sprintf("?min_position=%d", must(h.App.Head(ctx)))
				}
				return h.do(c)
			}
			for _, c := range callers {
				if r.setup != nil {
					r.setup(t, c.name)
				}
				settle(t)
				var body any
				if r.body != nil {
					body = r.body(c.name)
				}
				cred := c.cred
				if r.fresh && c.user != "" {
					cred = h.signIn(c.user)
				}
				resp := call1(c.name, r.path(c.name), cred, body)
				checked++
				switch {
				case r.outsiderNotFound && c.name == "outsider":
					if resp.status != 404 || resp.problemCode(t) != "not_found" {
						t.Errorf("%s as another organization's owner: %d, want 404 not_found: %s", r.op, resp.status, resp.body)
					}
				case allowedFor(r.min, c.name):
					if resp.status >= 400 {
						t.Errorf("%s as %s: %d, want it allowed: %s", r.op, c.name, resp.status, resp.body)
					}
				case c.name == "anon":
					if resp.status != 401 || resp.problemCode(t) != "unauthenticated" {
						t.Errorf("%s as anonymous: %d, want 401 unauthenticated: %s", r.op, resp.status, resp.body)
					}
				case c.name == "outsider":
					if resp.status != 404 || resp.problemCode(t) != "not_found" {
						t.Errorf("%s as another organization's owner: %d, want 404 not_found: %s", r.op, resp.status, resp.body)
					}
				default:
					if resp.status != 403 || resp.problemCode(t) != "forbidden" {
						t.Errorf("%s as %s (below %s): %d, want 403 forbidden: %s", r.op, c.name, r.min, resp.status, resp.body)
					}
				}
			}
			// The same operation on another organization's resources.
			path := r.path("owner")
			if r.min == public || r.min == signedIn || !strings.HasPrefix(path, "/v1/orgs/acme") {
				return
			}
			other := "/v1/orgs/globex" + strings.TrimPrefix(path, "/v1/orgs/acme")
			var body any
			if r.body != nil {
				body = r.body("owner")
			}
			for _, c := range callers[2:] {
				resp := call1(c.name, other, c.cred, body)
				checked++
				if resp.status != 404 || resp.problemCode(t) != "not_found" {
					t.Errorf("%s as acme's %s on globex: %d, want 404 not_found: %s", r.op, c.name, resp.status, resp.body)
				}
			}
		})
	}
	t.Logf("%d calls checked over %d operations", checked, len(rules))
	if !slices.ContainsFunc(rules, func(r mrule) bool { return r.min == "owner" }) {
		t.Fatal("no operation needs an owner: the matrix would not tell admin from owner")
	}
}
