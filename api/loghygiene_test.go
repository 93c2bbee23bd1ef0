package api_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"stele.dev/stele/api"
)

// The server's log after a full scenario through HTTP (a token issued and
// used, values set, revealed one by one and in bulk, imported, exported
// and rolled back, a sign-in of a CLI approved and collected, a
// development sign-in in a browser, a secrets request approved and
// collected, keys rotated) holds none of the values and none of the
// credentials used, in any common encoding, while it does hold the
// requests themselves.
func TestLogsHoldNoValuesOrCredentials(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	var secrets []string // every value and credential of the scenario
	keep := func(s string) string { secrets = append(secrets, s); return s }

	h.post("/v1/orgs/acme/projects", h.Ada, map[string]any{"id": "web", "name": "Web"}).expect(t, 201)
	h.post("/v1/orgs/acme/projects/web/envs", h.Ada, map[string]any{"id": "production", "production": true}).expect(t, 201)
	env := "/v1/orgs/acme/projects/web/envs/production"

	var issued struct {
		Secret string `json:"secret"`
	}
	h.post("/v1/orgs/acme/tokens", h.Ada, map[string]any{"name": "ci", "role": "developer", "ttl_seconds": 3600}).expect(t, 201).decode(t, &issued)
	ci := keep(issued.Secret)
	if ci == "" {
		t.Fatal("no token secret")
	}
	keep(h.Owner)
	keep(h.Ada)
	keep(h.Bob)

	dbURL := keep("postgres://app:Tr0ub4dor&3@db.internal:5432/prod")
	apiKey := keep("sk_live_4eC39HqLyjWDarjtT1zdp7dc")
	multi := keep("-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n-----END KEY-----")
	h.put(env+"/secrets/DB_URL", ci, map[string]any{"value": dbURL}).expect(t, 201)
	h.put(env+"/secrets/API_KEY", h.Bob, map[string]any{"value": apiKey, "description": "payments"}).expect(t, 201)
	h.put(env+"/secrets/TLS_KEY", h.Bob, map[string]any{"value_base64": base64.StdEncoding.EncodeToString([]byte(multi))}).expect(t, 201)
	rotated := keep("postgres://app:n3w-p4ss@db.internal:5432/prod")
	h.do(call{method: "PUT", path: env + "/secrets/DB_URL", cred: ci, body: map[string]any{"value": rotated}, header: map[string]string{"If-Match": `"1"`}}).expect(t, 200)
	h.post(env+"/secrets/DB_URL/reveal", ci, map[string]any{"reason": "deploy"}).expect(t, 200)
	h.post(env+"/secrets/DB_URL/rollback", h.Bob, map[string]any{"version": 1}).expect(t, 200)
	h.post(env+"/reveal", h.Bob, map[string]any{"names": []string{"DB_URL", "API_KEY", "TLS_KEY"}, "reason": "bulk"}).expect(t, 200)
	imported := keep("imported-v@lue-$HOME-`id`")
	h.do(call{method: "POST", path: env + "/import", cred: h.Bob, body: "IMPORTED='" + imported + "'\n", contentType: "text/plain"}).expect(t, 200)
	h.post(env+"/export", h.Bob, map[string]any{"format": "dotenv"}).expect(t, 200)
	h.do(call{method: "PUT", path: env + "/secrets/API_KEY", cred: h.Bob, body: map[string]any{"value": keep("stale-write-value")},
		header: map[string]string{"If-Match": `"7"`}}).expectProblem(t, 412, "version_mismatch")
	bad := keep("this value is refused because its name is not a variable name")
	h.do(call{method: "PUT", path: env + "/secrets/not-a-name", cred: h.Bob, body: map[string]any{"value": bad}, invalid: true}).expectProblem(t, 400, "invalid_request")
	h.post(env+"/keyset/rotate", h.Ada, map[string]any{"reason": "scheduled"}).expect(t, 200)

	// A CLI signs in: an anonymous sign-in request, approved by Bob.
	keys := newApprKeys(t)
	var login api.ApprovalCreated
	h.post("/v1/approvals", "", map[string]any{"kind": "login", "public_key": keys.public()}).expect(t, 201).decode(t, &login)
	keep(login.PollToken)
	h.post("/v1/approvals/"+login.ID+"/approve", h.Bob, map[string]any{}).expect(t, 200)
	var d api.ApprovalDelivery
	h.post("/v1/approvals/"+login.ID+"/collect", "", map[string]any{"poll_token": login.PollToken}).expect(t, 200).decode(t, &d)
	var sess struct {
		Credential string `json:"credential"`
	}
	if err := json.Unmarshal(keys.open(t, d), &sess); err != nil || sess.Credential == "" {
		t.Fatalf("the sign-in delivery: %v", err)
	}
	keep(sess.Credential)
	h.get("/v1/me", sess.Credential).expect(t, 200)

	// A request for secrets, approved and collected.
	var ask api.ApprovalCreated
	h.post("/v1/approvals", "", map[string]any{"kind": "secrets", "public_key": keys.public(), "org": "acme", "project": "web", "env": "production",
		"keys": []string{"API_KEY", "TLS_KEY"}}).expect(t, 201).decode(t, &ask)
	keep(ask.PollToken)
	h.post("/v1/approvals/"+ask.ID+"/approve", h.Ada, map[string]any{"keys": []string{"API_KEY", "TLS_KEY"}}).expect(t, 200)
	h.post("/v1/approvals/"+ask.ID+"/collect", "", map[string]any{"poll_token": ask.PollToken}).expect(t, 200)

	// A browser signs in with the development sign-in and writes with
	// its cookie and CSRF token.
	jar := newJar()
	browser := h.newClient(jar)
	h.do(call{method: "POST", path: "/v1/auth/dev", body: map[string]any{"email": "ada@example.com"}, client: browser}).expect(t, 201)
	u, _ := url.Parse(h.URL)
	var csrf string
	for _, c := range jar.Cookies(u) {
		keep(c.Value)
		if strings.Contains(c.Name, "csrf") {
			csrf = c.Value
		}
	}
	h.do(call{method: "PATCH", path: env + "/secrets/DB_URL", body: map[string]any{"description": "primary"}, client: browser,
		header: map[string]string{"X-CSRF-Token": csrf}}).expect(t, 200)
	h.do(call{method: "POST", path: "/v1/auth/logout", client: browser, header: map[string]string{"X-CSRF-Token": csrf}}).expect(t, 200)

	// A refused credential is logged as refused, without itself.
	wrong := keep(ci[:len(ci)-4] + "AAAA")
	h.get("/v1/me", wrong).expectProblem(t, 401, "unauthenticated")
	h.do(call{method: http.MethodDelete, path: "/v1/orgs/acme/tokens/" + strings.Split(ci, ".")[1], cred: ci}).expect(t, 200)

	logs := h.Logs.String()
	lines := strings.Count(logs, "\n")
	if lines < 30 || !strings.Contains(logs, `"route":"/v1/orgs/{org}/projects/{project}/envs/{env}/secrets/{name}/reveal"`) ||
		!strings.Contains(logs, "credential refused") {
		t.Fatalf("the log does not show the scenario (%d lines)", lines)
	}
	for _, s := range secrets {
		for _, form := range encodings(s) {
			if len(form) >= 8 && strings.Contains(logs, form) {
				t.Errorf("the log holds %.12q… (as %.20q…)", s, form)
			}
		}
		// The secret part of a credential alone.
		if i := strings.LastIndex(s, "."); strings.HasPrefix(s, "stele_") && i > 0 && strings.Contains(logs, s[i+1:]) {
			t.Errorf("the log holds the secret part of %.16q…", s)
		}
	}
	t.Logf("%d log lines searched for %d values and credentials", lines, len(secrets))
}

// encodings are the forms a value could take in a log line.
func encodings(s string) []string {
	b := []byte(s)
	j, _ := json.Marshal(s)
	return []string{s, strings.Trim(string(j), `"`), base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b), hex.EncodeToString(b), url.QueryEscape(s)}
}
