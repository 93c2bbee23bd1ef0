package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"

	"stele.dev/stele/api"
	"stele.dev/stele/domain"
)

func init() {
	// Sign-in pages are HTML; the contract checks their status and headers.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
}

// testProvider is a real OpenID provider running in the test: the op
// package of github.com/zitadel/oidc with the module's example storage
// and login page (username and password), served over TLS by its own
// httptest server, so its issuer is https and no insecure mode is
// needed. Its users:
//
//	grace    Grace@Example.COM, verified
//	mallory  mallory@example.com, not verified (the claim is left out)
//	nobody   no e-mail address
//	odd      "not-an-address", verified
//
// all with the password "verysecure".
type testProvider struct {
	srv    *httptest.Server
	Issuer string
	// client talks to the provider as the browser does (no redirects
	// followed, no contract checks: the provider is not Stele).
	client *http.Client

	mu      sync.Mutex
	handler http.Handler
	// forgeEmail, when set, rewrites the e-mail claim of every ID token
	// the token endpoint issues, keeping the provider's signature.
	forgeEmail atomic.Value // string
	// userinfo, when set, changes the claims of userinfo answers.
	userinfo atomic.Value // func(map[string]any)
}

const (
	testClientID     = "stele"
	testClientSecret = "client-secret-of-stele"
	testPassword     = "verysecure"
)

func newTestProvider(t *testing.T) *testProvider {
	t.Helper()
	p := &testProvider{}
	p.forgeEmail.Store("")
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		h := p.handler
		p.mu.Unlock()
		if h == nil {
			http.Error(w, "not started", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	p.Issuer = p.srv.URL
	p.client = &http.Client{Transport: p.srv.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return p
}

// option configures the API to sign in with this provider.
func (p *testProvider) option(change ...func(*api.OIDCConfig)) harnessOption {
	return func(c *api.Config) {
		c.OIDC = &api.OIDCConfig{Issuer: p.Issuer, ClientID: testClientID, ClientSecret: testClientSecret, HTTPClient: p.srv.Client()}
		for _, f := range change {
			f(c.OIDC)
		}
	}
}

// start runs the provider with Stele's client registered for the
// harness's callback. claimsInIDToken puts the e-mail claims in the ID
// token; otherwise (the default of many providers) they come only from
// userinfo.
func (p *testProvider) start(t *testing.T, h *harness, claimsInIDToken bool) {
	t.Helper()
	users := opUsers{
		"grace":   {ID: "grace", Username: "grace", Password: testPassword, Email: "Grace@Example.COM", EmailVerified: true, PreferredLanguage: language.English},
		"mallory": {ID: "mallory", Username: "mallory", Password: testPassword, Email: "mallory@example.com", EmailVerified: false, PreferredLanguage: language.English},
		"nobody":  {ID: "nobody", Username: "nobody", Password: testPassword, EmailVerified: true, PreferredLanguage: language.English},
		"odd":     {ID: "odd", Username: "odd", Password: testPassword, Email: "not-an-address", EmailVerified: true, PreferredLanguage: language.English},
	}
	clients := map[string]*storage.Client{testClientID: storage.WebClient(testClientID, testClientSecret, h.URL+"/v1/auth/callback")}
	st := opStorage{Storage: storage.NewStorageWithClients(users, clients), claimsInIDToken: claimsInIDToken}
	router := exampleop.SetupServer(p.Issuer, st, nil, false)
	p.mu.Lock()
	p.handler = p.forging(router)
	p.mu.Unlock()
}

// forging rewrites the provider's answers when a test asks it to: the
// e-mail claim of ID tokens (forgeEmail; the provider's signature is
// kept, so it no longer matches) and userinfo (userinfo).
func (p *testProvider) forging(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forge := p.forgeEmail.Load().(string)
		change, _ := p.userinfo.Load().(func(map[string]any))
		var rewrite func(map[string]any)
		switch {
		case forge != "" && strings.HasSuffix(r.URL.Path, "/token"):
			rewrite = func(body map[string]any) {
				tok, ok := body["id_token"].(string)
				if !ok {
					return
				}
				parts := strings.Split(tok, ".")
				payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
				var claims map[string]any
				_ = json.Unmarshal(payload, &claims)
				claims["email"], claims["email_verified"] = forge, true
				payload, _ = json.Marshal(claims)
				parts[1] = base64.RawURLEncoding.EncodeToString(payload)
				body["id_token"] = strings.Join(parts, ".")
			}
		case change != nil && strings.HasSuffix(r.URL.Path, "/userinfo"):
			rewrite = change
		default:
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err == nil {
			rewrite(body)
		}
		b, _ := json.Marshal(body)
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		w.Write(b)
	})
}

// opStorage is the example storage; with claimsInIDToken its clients
// ask for the userinfo claims in the ID token too.
type opStorage struct {
	*storage.Storage
	claimsInIDToken bool
}

func (s opStorage) GetClientByClientID(c context.Context, id string) (op.Client, error) {
	cl, err := s.Storage.GetClientByClientID(c, id)
	if err != nil || !s.claimsInIDToken {
		return cl, err
	}
	return idTokenClaims{cl}, nil
}

type idTokenClaims struct{ op.Client }

func (idTokenClaims) IDTokenUserinfoClaimsAssertion() bool { return true }

// opUsers is the provider's user directory.
type opUsers map[string]*storage.User

func (u opUsers) GetUserByID(id string) *storage.User { return u[id] }
func (u opUsers) GetUserByUsername(name string) *storage.User {
	for _, x := range u {
		if x.Username == name {
			return x
		}
	}
	return nil
}
func (u opUsers) ExampleClientID() string { return "service" }

// resolve reads the Location of a redirect, relative to the request.
func resolve(t *testing.T, base string, header http.Header) *url.URL {
	t.Helper()
	loc := header.Get("Location")
	if loc == "" {
		t.Fatalf("no Location in %v", header)
	}
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u, err := b.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// providerLogin plays the browser at the provider: it follows the
// authorization URL to the login page, signs in as username and
// returns the URL the provider sends the browser back to (Stele's
// callback, with code and state).
func (p *testProvider) providerLogin(t *testing.T, authURL *url.URL, username string) *url.URL {
	t.Helper()
	resp, err := p.client.Get(authURL.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorization endpoint: %d %s", resp.StatusCode, body)
	}
	loginPage := resolve(t, authURL.String(), resp.Header)
	id := loginPage.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("login page %s names no request", loginPage)
	}
	resp, err = p.client.PostForm(p.Issuer+"/login/username", url.Values{"id": {id}, "username": {username}, "password": {testPassword}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("provider login: %d %s", resp.StatusCode, body)
	}
	next := resolve(t, p.Issuer+"/login/username", resp.Header)
	resp, err = p.client.Get(next.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("provider callback: %d %s", resp.StatusCode, body)
	}
	return resolve(t, next.String(), resp.Header)
}

// setCookies are the cookies a response sets, by name.
func setCookies(r response) map[string]*http.Cookie {
	out := map[string]*http.Cookie{}
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		out[c.Name] = c
	}
	return out
}

// sessionsStarted counts the sessions the ledger has started.
func sessionsStarted(t *testing.T, h *harness) []domain.SessionStarted {
	t.Helper()
	recs, err := h.Store.ReadAll(ctx, 1, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	var out []domain.SessionStarted
	for _, r := range recs {
		if r.Type == "session.started" {
			var s domain.SessionStarted
			if err := json.Unmarshal(r.Data, &s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
	}
	return out
}

// oidcHarness is a harness signing people in with a test provider.
func oidcHarness(t *testing.T, claimsInIDToken bool, change ...func(*api.OIDCConfig)) (*harness, *testProvider) {
	t.Helper()
	p := newTestProvider(t)
	h := newHarness(t, p.option(change...))
	p.start(t, h, claimsInIDToken)
	return h, p
}

// startSignIn asks Stele to start a sign-in and checks the redirect and
// the flow cookie; it returns the authorization URL and the cookie.
func startSignIn(t *testing.T, h *harness, p *testProvider, client *http.Client, returnTo string) (*url.URL, *http.Cookie) {
	t.Helper()
	path := "/v1/auth/login"
	if returnTo != "" {
		path += "?return_to=" + url.QueryEscape(returnTo)
	}
	r := h.do(call{method: "GET", path: path, client: client}).expect(t, http.StatusFound)
	auth := resolve(t, h.URL+path, r.header)
	if !strings.HasPrefix(auth.String(), p.Issuer+"/") {
		t.Fatalf("sign-in goes to %s, not to the provider %s", auth, p.Issuer)
	}
	flow := setCookies(r)["__Secure-stele_oidc"]
	if flow == nil {
		t.Fatalf("no flow cookie in %v", r.header["Set-Cookie"])
	}
	return auth, flow
}

func TestSignInOIDCFlow(t *testing.T) {
	h, p := oidcHarness(t, false)
	before := len(sessionsStarted(t, h))
	browser := h.newClient(newJar())

	auth, flow := startSignIn(t, h, p, browser, "/orgs/acme?tab=secrets")
	q := auth.Query()
	for k, want := range map[string]string{
		"response_type":         "code",
		"client_id":             testClientID,
		"redirect_uri":          h.URL + "/v1/auth/callback",
		"code_challenge_method": "S256",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("authorization URL %s: %q, want %q", k, got, want)
		}
	}
	if len(q.Get("code_challenge")) != 43 || len(q.Get("state")) < 32 || len(q.Get("nonce")) < 32 {
		t.Errorf("authorization URL lacks a S256 challenge, state or nonce: %s", auth)
	}
	if scopes := strings.Fields(q.Get("scope")); len(scopes) != 2 || scopes[0] != "openid" || scopes[1] != "email" {
		t.Errorf("scopes %q", q.Get("scope"))
	}
	if !flow.HttpOnly || !flow.Secure || flow.SameSite != http.SameSiteLaxMode || flow.Path != "/v1/auth/callback" || flow.MaxAge <= 0 || flow.MaxAge > 600 {
		t.Errorf("flow cookie attributes: %+v", flow)
	}
	if strings.Contains(flow.Value, q.Get("code_challenge")) {
		t.Error("the flow cookie holds the challenge rather than the verifier")
	}

	callback := p.providerLogin(t, auth, "grace")
	if callback.Query().Get("state") != q.Get("state") || callback.Query().Get("code") == "" {
		t.Fatalf("the provider came back with %s", callback)
	}
	code := callback.Query().Get("code")
	r := h.do(call{method: "GET", path: callback.RequestURI(), client: browser}).expect(t, http.StatusFound)
	if loc := r.header.Get("Location"); loc != "/orgs/acme?tab=secrets" {
		t.Fatalf("signed in, then sent to %q", loc)
	}
	r.position(t)
	ck := setCookies(r)
	session, csrf, cleared := ck["__Host-stele_session"], ck["__Host-stele_csrf"], ck["__Secure-stele_oidc"]
	if session == nil || csrf == nil || cleared == nil {
		t.Fatalf("cookies set: %v", r.header["Set-Cookie"])
	}
	if !session.HttpOnly || !session.Secure || session.SameSite != http.SameSiteLaxMode || session.Path != "/" || session.Domain != "" || !strings.HasPrefix(session.Value, "stele_ses_") {
		t.Errorf("session cookie attributes: %+v", session)
	}
	if csrf.HttpOnly || !csrf.Secure || csrf.SameSite != http.SameSiteStrictMode || csrf.Path != "/" || len(csrf.Value) < 16 {
		t.Errorf("CSRF cookie attributes: %+v", csrf)
	}
	if cleared.MaxAge >= 0 || cleared.Path != "/v1/auth/callback" {
		t.Errorf("the flow cookie is not cleared: %+v", cleared)
	}

	var me api.Me
	h.do(call{method: "GET", path: "/v1/me", client: browser}).expect(t, 200).decode(t, &me)
	if me.Actor != "user:grace@example.com" || me.Method != "oidc" || me.Kind != "user" {
		t.Fatalf("signed in as %+v", me)
	}
	started := sessionsStarted(t, h)
	if len(started) != before+1 {
		t.Fatalf("%d sessions started, want %d", len(started), before+1)
	}
	last := started[len(started)-1]
	if last.User != "grace@example.com" || last.Method != domain.SessionOIDC || last.Issuer != p.Issuer {
		t.Fatalf("session started: %+v", last)
	}
	if !last.ExpiresAt.Equal(me.ExpiresAt) {
		t.Fatalf("expiry %s vs %s", last.ExpiresAt, me.ExpiresAt)
	}
	if ttl := time.Until(me.ExpiresAt); ttl < 12*time.Hour-time.Minute || ttl > 12*time.Hour {
		t.Fatalf("the session lasts %s, not 12h", ttl)
	}
	if !session.Expires.Equal(me.ExpiresAt) {
		t.Fatalf("the cookie expires at %s, the session at %s", session.Expires, me.ExpiresAt)
	}

	// Replaying the callback signs nobody in: the flow cookie is gone...
	h.do(call{method: "GET", path: callback.RequestURI(), client: browser}).expectProblem(t, 400, "invalid_request")
	// ...and with the old flow cookie put back, the provider refuses the
	// used code.
	h.do(call{method: "GET", path: callback.RequestURI(), header: map[string]string{"Cookie": flow.Name + "=" + flow.Value}}).
		expectProblem(t, 401, "unauthenticated")
	if n := len(sessionsStarted(t, h)); n != before+1 {
		t.Fatalf("a replayed callback started a session (%d)", n)
	}

	// A write with the cookie but without the CSRF header is refused and
	// changes nothing.
	h.do(call{method: "POST", path: "/v1/auth/logout", client: browser}).expectProblem(t, 403, "csrf_failed")
	h.do(call{method: "GET", path: "/v1/me", client: browser}).expect(t, 200)
	// With it, sign-out ends the session and clears the cookies.
	out := h.do(call{method: "POST", path: "/v1/auth/logout", client: browser, header: map[string]string{"X-CSRF-Token": csrf.Value}}).expect(t, 200)
	out.position(t)
	for _, name := range []string{"__Host-stele_session", "__Host-stele_csrf"} {
		if c := setCookies(out)[name]; c == nil || c.MaxAge >= 0 {
			t.Errorf("sign-out leaves %s: %v", name, out.header["Set-Cookie"])
		}
	}
	h.do(call{method: "GET", path: "/v1/me", client: browser}).expectProblem(t, 401, "unauthenticated")
	// The old cookie, kept by someone, no longer works either.
	h.do(call{method: "GET", path: "/v1/me", header: map[string]string{"Cookie": session.Name + "=" + session.Value}}).expectProblem(t, 401, "unauthenticated")
	h.get("/v1/me", session.Value).expectProblem(t, 401, "unauthenticated")

	// Nothing secret reached the server's log: not the code, the
	// credential, the flow cookie (verifier and nonce) or any token.
	logs := h.Logs.String()
	if !strings.Contains(logs, `"signed in"`) {
		t.Fatal("the sign-in is not logged")
	}
	for what, s := range map[string]string{"code": code, "credential": session.Value, "credential secret": session.Value[strings.LastIndex(session.Value, ".")+1:],
		"CSRF token": csrf.Value, "flow cookie": flow.Value, "client secret": testClientSecret, "a JWT": "eyJ"} {
		if strings.Contains(logs, s) {
			t.Errorf("the %s reached the log", what)
		}
	}
}

// The e-mail claims come from the ID token when the provider puts them
// there; and a browser that signs in again ends its previous session.
func TestSignInClaimsInIDToken(t *testing.T) {
	h, p := oidcHarness(t, true, func(c *api.OIDCConfig) { c.SessionTTL = 2 * time.Hour })
	browser := h.newClient(newJar())
	signIn := func() *http.Cookie {
		auth, _ := startSignIn(t, h, p, browser, "")
		r := h.do(call{method: "GET", path: p.providerLogin(t, auth, "grace").RequestURI(), client: browser}).expect(t, http.StatusFound)
		if loc := r.header.Get("Location"); loc != "/" {
			t.Fatalf("without return_to, sent to %q", loc)
		}
		return setCookies(r)["__Host-stele_session"]
	}
	first := signIn()
	var me api.Me
	h.do(call{method: "GET", path: "/v1/me", client: browser}).expect(t, 200).decode(t, &me)
	if me.User != "grace@example.com" || me.Method != "oidc" {
		t.Fatalf("signed in as %+v", me)
	}
	if ttl := time.Until(me.ExpiresAt); ttl < 2*time.Hour-time.Minute || ttl > 2*time.Hour {
		t.Fatalf("the session lasts %s, not the configured 2h", ttl)
	}
	second := signIn()
	if first.Value == second.Value {
		t.Fatal("a second sign-in reused the session")
	}
	h.get("/v1/me", first.Value).expectProblem(t, 401, "unauthenticated")
	h.get("/v1/me", second.Value).expect(t, 200)
}

func TestSignInRefusesForgedCallbacks(t *testing.T) {
	h, p := oidcHarness(t, true)
	before := len(sessionsStarted(t, h))
	flowValue := func(c *http.Cookie) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(c.Value)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	encode := func(m map[string]any) string {
		b, _ := json.Marshal(m)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	callbackWith := func(cb *url.URL, cookie string) response {
		return h.do(call{method: "GET", path: cb.RequestURI(), header: map[string]string{"Cookie": "__Secure-stele_oidc=" + cookie}})
	}

	t.Run("state mismatch", func(t *testing.T) {
		auth, flow := startSignIn(t, h, p, h.client, "")
		cb := p.providerLogin(t, auth, "grace")
		q := cb.Query()
		q.Set("state", q.Get("state")[1:]+"x")
		cb.RawQuery = q.Encode()
		callbackWith(cb, flow.Value).expectProblem(t, 400, "invalid_request")
	})
	t.Run("no sign-in in this browser", func(t *testing.T) {
		auth, _ := startSignIn(t, h, p, h.client, "")
		cb := p.providerLogin(t, auth, "grace")
		h.do(call{method: "GET", path: cb.RequestURI()}).expectProblem(t, 400, "invalid_request")
	})
	t.Run("forged code", func(t *testing.T) {
		auth, flow := startSignIn(t, h, p, h.client, "")
		cb := h.URL + "/v1/auth/callback?code=forged-code&state=" + auth.Query().Get("state")
		callbackWith(must(url.Parse(cb)), flow.Value).expectProblem(t, 401, "unauthenticated")
	})
	t.Run("wrong PKCE verifier", func(t *testing.T) {
		auth, flow := startSignIn(t, h, p, h.client, "")
		cb := p.providerLogin(t, auth, "grace")
		m := flowValue(flow)
		m["v"] = strings.Repeat("A", 43)
		callbackWith(cb, encode(m)).expectProblem(t, 401, "unauthenticated")
	})
	t.Run("nonce of another sign-in", func(t *testing.T) {
		// The code and verifier of sign-in B with the nonce of sign-in A:
		// the ID token carries B's nonce.
		_, flowA := startSignIn(t, h, p, h.client, "")
		authB, flowB := startSignIn(t, h, p, h.client, "")
		cb := p.providerLogin(t, authB, "grace")
		m := flowValue(flowB)
		m["n"] = flowValue(flowA)["n"]
		callbackWith(cb, encode(m)).expectProblem(t, 401, "unauthenticated")
	})
	t.Run("provider error", func(t *testing.T) {
		auth, flow := startSignIn(t, h, p, h.client, "")
		cb := must(url.Parse(h.URL + "/v1/auth/callback?error=access_denied&error_description=no&state=" + auth.Query().Get("state")))
		r := callbackWith(cb, flow.Value)
		r.expectProblem(t, 401, "unauthenticated")
		if !strings.Contains(string(r.body), "access_denied") {
			t.Fatalf("the provider's error is not named: %s", r.body)
		}
	})
	t.Run("ID token altered", func(t *testing.T) {
		// A token response whose ID token claims to be Ada: the
		// provider's signature no longer matches.
		p.forgeEmail.Store("ada@example.com")
		defer p.forgeEmail.Store("")
		auth, flow := startSignIn(t, h, p, h.client, "")
		callbackWith(p.providerLogin(t, auth, "grace"), flow.Value).expectProblem(t, 401, "unauthenticated")
	})
	t.Run("another issuer", func(t *testing.T) {
		auth, flow := startSignIn(t, h, p, h.client, "")
		cb := p.providerLogin(t, auth, "grace")
		q := cb.Query()
		q.Set("iss", "https://evil.example")
		cb.RawQuery = q.Encode()
		callbackWith(cb, flow.Value).expectProblem(t, 401, "unauthenticated")
	})
	t.Run("expired flow", func(t *testing.T) {
		auth, flow := startSignIn(t, h, p, h.client, "")
		cb := p.providerLogin(t, auth, "grace")
		m := flowValue(flow)
		m["e"] = 1
		callbackWith(cb, encode(m)).expectProblem(t, 400, "invalid_request")
	})
	t.Run("garbage cookie", func(t *testing.T) {
		auth, _ := startSignIn(t, h, p, h.client, "")
		callbackWith(p.providerLogin(t, auth, "grace"), "%%%not-base64").expectProblem(t, 400, "invalid_request")
	})
	if n := len(sessionsStarted(t, h)); n != before {
		t.Fatalf("a refused callback started a session (%d, want %d)", n, before)
	}
	// The same flow, untouched, works: the refusals above are not
	// accidents of the set-up.
	browser := h.newClient(newJar())
	auth, _ := startSignIn(t, h, p, browser, "")
	h.do(call{method: "GET", path: p.providerLogin(t, auth, "grace").RequestURI(), client: browser}).expect(t, http.StatusFound)
	if strings.Contains(h.Logs.String(), "eyJ") {
		t.Fatal("a token reached the log")
	}
}

func TestSignInEmailChecks(t *testing.T) {
	for _, inToken := range []bool{false, true} {
		h, p := oidcHarness(t, inToken)
		before := len(sessionsStarted(t, h))
		for _, c := range []struct {
			user string
			code string
		}{{"mallory", "forbidden"}, {"nobody", "forbidden"}, {"odd", "forbidden"}} {
			auth, flow := startSignIn(t, h, p, h.client, "")
			r := h.do(call{method: "GET", path: p.providerLogin(t, auth, c.user).RequestURI(), header: map[string]string{"Cookie": flow.Name + "=" + flow.Value}})
			r.expectProblem(t, 403, c.code)
			if _, ok := setCookies(r)["__Host-stele_session"]; ok {
				t.Fatalf("%s (claims in ID token %v): refused but given a session cookie", c.user, inToken)
			}
		}
		if n := len(sessionsStarted(t, h)); n != before {
			t.Fatalf("a refused person got a session (claims in ID token %v)", inToken)
		}
	}
	// A provider that never sends email_verified: the address is taken
	// as it comes (still lowercased and checked).
	h, p := oidcHarness(t, false, func(c *api.OIDCConfig) { c.NoEmailVerifiedClaim = true })
	browser := h.newClient(newJar())
	auth, _ := startSignIn(t, h, p, browser, "")
	h.do(call{method: "GET", path: p.providerLogin(t, auth, "mallory").RequestURI(), client: browser}).expect(t, http.StatusFound)
	var me api.Me
	h.do(call{method: "GET", path: "/v1/me", client: browser}).expect(t, 200).decode(t, &me)
	if me.User != "mallory@example.com" {
		t.Fatalf("signed in as %+v", me)
	}
	refused := func(user string, status int, code string) {
		t.Helper()
		n := len(sessionsStarted(t, h))
		auth, flow := startSignIn(t, h, p, h.client, "")
		h.do(call{method: "GET", path: p.providerLogin(t, auth, user).RequestURI(), header: map[string]string{"Cookie": flow.Name + "=" + flow.Value}}).
			expectProblem(t, status, code)
		if len(sessionsStarted(t, h)) != n {
			t.Fatalf("%s was refused but got a session", user)
		}
	}
	refused("odd", 403, "forbidden")
	// An address the provider says it has not verified is refused even so
	// (some providers send the claim as a string).
	p.userinfo.Store(func(c map[string]any) { c["email_verified"] = "false" })
	refused("grace", 403, "forbidden")
	p.userinfo.Store(func(c map[string]any) { c["email_verified"] = false })
	refused("grace", 403, "forbidden")
	p.userinfo.Store(func(c map[string]any) { c["email_verified"] = "maybe" })
	refused("grace", 401, "unauthenticated")
	// Userinfo about someone else than the ID token's subject.
	p.userinfo.Store(func(c map[string]any) { c["sub"] = "mallory" })
	refused("grace", 401, "unauthenticated")
}

func TestSignInReturnTo(t *testing.T) {
	h, p := oidcHarness(t, false)
	for _, bad := range []string{
		"https://evil.example/", "//evil.example/x", "/\\evil.example", "\\\\evil.example", "/\t/evil.example", "/ /evil.example",
		"javascript:alert(1)", "evil.example", "/x\r\nSet-Cookie: a=b", "http:/evil.example", "/é", strings.Repeat("/a", 1001),
	} {
		r := h.do(call{method: "GET", path: "/v1/auth/login?return_to=" + url.QueryEscape(bad), invalid: len(bad) > 2000})
		r.expectProblem(t, 400, "invalid_request")
		if len(setCookies(r)) != 0 || r.header.Get("Location") != "" {
			t.Fatalf("return_to %q: refused, yet %v %v", bad, r.header["Set-Cookie"], r.header.Get("Location"))
		}
		var doc api.Problem
		r.decode(t, &doc)
		if doc.Field != "return_to" {
			t.Fatalf("return_to %q: field %q", bad, doc.Field)
		}
	}
	for _, good := range []string{"/", "/orgs/acme/projects?x=1&y=%2F%2Fz", "/a/b#frag"} {
		browser := h.newClient(newJar())
		auth, _ := startSignIn(t, h, p, browser, good)
		r := h.do(call{method: "GET", path: p.providerLogin(t, auth, "grace").RequestURI(), client: browser}).expect(t, http.StatusFound)
		if loc := r.header.Get("Location"); loc != good {
			t.Fatalf("return_to %q: sent to %q", good, loc)
		}
	}
}

func TestSignInUnreachableProvider(t *testing.T) {
	p := newTestProvider(t) // never started: it answers 503 to discovery
	h := newHarness(t, p.option())
	r := h.get("/v1/auth/login", "")
	r.expectProblem(t, 503, "not_ready")
	if r.header.Get("Retry-After") == "" || len(setCookies(r)) != 0 {
		t.Fatalf("unreachable provider: Retry-After %q, cookies %v", r.header.Get("Retry-After"), r.header["Set-Cookie"])
	}
	if !strings.Contains(h.Logs.String(), "OpenID provider unreachable") {
		t.Fatal("the failure is not logged")
	}
	// Misconfigurations stop the server from starting.
	for _, bad := range []api.OIDCConfig{
		{Issuer: "http://id.example.com", ClientID: "x"},
		{Issuer: "https://id.example.com"},
		{Issuer: "id.example.com", ClientID: "x"},
		{Issuer: "https://id.example.com", ClientID: "x", SessionTTL: 100 * 24 * time.Hour},
	} {
		cfg := bad
		if _, err := api.New(api.Config{App: h.App, OIDC: &cfg}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestSignInNotConfigured(t *testing.T) {
	h := newHarness(t)
	h.get("/v1/auth/login", "").expectProblem(t, 404, "not_found")
	h.get("/v1/auth/callback?code=x&state=y", "").expectProblem(t, 404, "not_found")
	h.get("/v1/auth/dev", "").expectProblem(t, 404, "not_found")
	h.post("/v1/auth/dev", "", map[string]string{"email": "ada@example.com"}).expectProblem(t, 404, "not_found")
	var methods struct {
		Items []api.AuthMethod `json:"items"`
	}
	h.get("/v1/auth/methods", "").expect(t, 200).decode(t, &methods)
	if methods.Items == nil || len(methods.Items) != 0 {
		t.Fatalf("methods %+v", methods)
	}
	if r := h.get("/v1/auth/methods", ""); r.header.Get("X-Stele-Dev-Sign-In") != "" {
		t.Fatal("dev sign-in header without dev sign-in")
	}
}

func TestSignInMethods(t *testing.T) {
	p := newTestProvider(t)
	h := newHarness(t, p.option(), func(c *api.Config) { c.DevSignIn = true })
	var methods struct {
		Items []api.AuthMethod `json:"items"`
	}
	h.get("/v1/auth/methods", "").expect(t, 200).decode(t, &methods)
	if len(methods.Items) != 2 || methods.Items[0].Method != "oidc" || methods.Items[0].Issuer != p.Issuer || methods.Items[0].LoginURL != "/v1/auth/login" ||
		methods.Items[1].Method != "dev" || methods.Items[1].LoginURL != "/v1/auth/dev" || methods.Items[1].Warning == "" {
		t.Fatalf("methods %+v", methods.Items)
	}
}

func TestSignInLogout(t *testing.T) {
	h := newHarness(t)
	// A CLI signs out with its bearer session.
	r := h.post("/v1/auth/logout", h.Bob, nil).expect(t, 200)
	var w api.Written
	r.decode(t, &w)
	if w.Position == 0 || r.position(t) == "" {
		t.Fatalf("sign-out answered %s", r.body)
	}
	h.get("/v1/me", h.Bob).expectProblem(t, 401, "unauthenticated")
	h.post("/v1/auth/logout", h.Bob, nil).expectProblem(t, 401, "unauthenticated")
	h.get("/v1/me", h.Eve).expect(t, 200) // only that session ended
	// A service token does not sign out.
	h.post("/v1/auth/logout", h.Owner, nil).expectProblem(t, 403, "forbidden")
	h.get("/v1/me", h.Owner).expect(t, 200)
	// Nobody signed in.
	r = h.post("/v1/auth/logout", "", nil)
	r.expectProblem(t, 401, "unauthenticated")
	// A cookie session from another site: refused without the CSRF
	// header, and with a foreign Origin even with it.
	cookie := "__Host-stele_session=" + h.Eve + "; __Host-stele_csrf=0123456789abcdef0123"
	h.do(call{method: "POST", path: "/v1/auth/logout", header: map[string]string{"Cookie": cookie}}).expectProblem(t, 403, "csrf_failed")
	h.do(call{method: "POST", path: "/v1/auth/logout", header: map[string]string{"Cookie": cookie, "X-CSRF-Token": "0123456789abcdef0123", "Origin": "https://evil.example"}}).
		expectProblem(t, 403, "csrf_failed")
	h.get("/v1/me", h.Eve).expect(t, 200)
	h.do(call{method: "POST", path: "/v1/auth/logout", header: map[string]string{"Cookie": cookie, "X-CSRF-Token": "0123456789abcdef0123", "Origin": h.URL}}).expect(t, 200)
	h.get("/v1/me", h.Eve).expectProblem(t, 401, "unauthenticated")
}

func TestSignInDev(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn = true })
	before := len(sessionsStarted(t, h))

	page := h.do(call{method: "GET", path: "/v1/auth/dev?return_to=%2Forgs"}).expect(t, 200)
	body := string(page.body)
	if ct := page.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("page served as %q", ct)
	}
	csp := page.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("page CSP %q", csp)
	}
	for _, want := range []string{`<label for="email">`, `id="email" name="email"`, `action="/v1/auth/dev"`, `method="post"`,
		"Anyone can sign in as anyone", `name="return_to" value="/orgs"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "style=") || strings.Contains(body, "onclick") {
		t.Errorf("the page has inline script or style:\n%s", body)
	}
	if page.header.Get("X-Stele-Dev-Sign-In") == "" {
		t.Fatal("no X-Stele-Dev-Sign-In header")
	}
	h.do(call{method: "GET", path: "/v1/auth/dev?return_to=%2F%2Fevil.example"}).expectProblem(t, 400, "invalid_request")

	// The form: a redirect to return_to, and the cookies.
	browser := h.newClient(newJar())
	r := h.do(call{method: "POST", path: "/v1/auth/dev", client: browser, body: "email=%20Dev%40Example.com&return_to=%2Forgs%2Facme",
		contentType: "application/x-www-form-urlencoded", header: map[string]string{"Origin": h.URL}}).expect(t, http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "/orgs/acme" {
		t.Fatalf("form sign-in sent to %q", loc)
	}
	pos := r.position(t)
	if c := setCookies(r)["__Host-stele_session"]; c == nil || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode {
		t.Fatalf("session cookie %v", r.header["Set-Cookie"])
	}
	var me api.Me
	h.do(call{method: "GET", path: "/v1/me?min_position=" + pos, client: browser}).expect(t, 200).decode(t, &me)
	if me.User != "dev@example.com" || me.Method != "dev" || !me.DevSignIn {
		t.Fatalf("signed in as %+v", me)
	}
	// Signed in, the browser signs in as someone else: the page carries
	// the CSRF token the form must echo, and the previous session ends.
	firstSession, firstCSRF := setCookies(r)["__Host-stele_session"], setCookies(r)["__Host-stele_csrf"]
	again := h.do(call{method: "GET", path: "/v1/auth/dev", client: browser}).expect(t, 200)
	if !strings.Contains(string(again.body), `name="csrf_token" value="`+firstCSRF.Value+`"`) {
		t.Fatalf("the page of a signed-in browser lacks the CSRF token:\n%s", again.body)
	}
	h.do(call{method: "POST", path: "/v1/auth/dev", client: browser, body: "email=eve%40example.com",
		contentType: "application/x-www-form-urlencoded"}).expectProblem(t, 403, "csrf_failed")
	h.do(call{method: "POST", path: "/v1/auth/dev", client: browser, body: "email=eve%40example.com&csrf_token=" + url.QueryEscape(firstCSRF.Value),
		contentType: "application/x-www-form-urlencoded"}).expect(t, http.StatusSeeOther)
	h.do(call{method: "GET", path: "/v1/me", client: browser}).expect(t, 200).decode(t, &me)
	if me.User != "eve@example.com" {
		t.Fatalf("signed in again as %+v", me)
	}
	h.get("/v1/me", firstSession.Value).expectProblem(t, 401, "unauthenticated")

	// JSON: the session's person and expiry, never the credential.
	r = h.post("/v1/auth/dev", "", map[string]string{"email": "ada@example.com"}).expect(t, http.StatusCreated)
	var s api.DevSession
	r.decode(t, &s)
	cred := setCookies(r)["__Host-stele_session"]
	if s.User != "ada@example.com" || s.Method != "dev" || s.Position == 0 || r.position(t) == "" || cred == nil || s.ExpiresAt.IsZero() {
		t.Fatalf("JSON sign-in: %s %v", r.body, r.header["Set-Cookie"])
	}
	if strings.Contains(string(r.body), cred.Value) || strings.Contains(string(r.body), "stele_ses_") {
		t.Fatal("the credential is in the body")
	}
	h.get("/v1/me", cred.Value).expect(t, 200).decode(t, &me)
	if me.User != "ada@example.com" || len(me.Roles) != 1 || me.Roles[0].Role != "owner" {
		t.Fatalf("dev session of ada: %+v", me)
	}

	// Bad input signs nobody in.
	n := len(sessionsStarted(t, h))
	r = h.post("/v1/auth/dev", "", map[string]string{"email": "not an address"})
	r.expectProblem(t, 400, "invalid_request")
	var doc api.Problem
	r.decode(t, &doc)
	if doc.Field != "email" {
		t.Fatalf("field %q", doc.Field)
	}
	h.post("/v1/auth/dev", "", map[string]string{"email": ""}).expectProblem(t, 400, "invalid_request")
	h.do(call{method: "POST", path: "/v1/auth/dev", body: map[string]string{"email": "a@example.com", "role": "owner"}, invalid: true}).expectProblem(t, 400, "invalid_json")
	h.do(call{method: "POST", path: "/v1/auth/dev", body: "email=a%40example.com&role=owner", contentType: "application/x-www-form-urlencoded", invalid: true}).
		expectProblem(t, 400, "invalid_request")
	h.do(call{method: "POST", path: "/v1/auth/dev", body: "email=a%40example.com&return_to=https%3A%2F%2Fevil.example", contentType: "application/x-www-form-urlencoded"}).
		expectProblem(t, 400, "invalid_request")
	h.do(call{method: "POST", path: "/v1/auth/dev", body: "a@example.com", contentType: "text/plain", invalid: true}).expectProblem(t, 415, "unsupported_media_type")
	// Posted from another site (login CSRF).
	for _, hdr := range []map[string]string{{"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}} {
		h.do(call{method: "POST", path: "/v1/auth/dev", body: "email=a%40example.com", contentType: "application/x-www-form-urlencoded", header: hdr}).
			expectProblem(t, 403, "csrf_failed")
	}
	if got := len(sessionsStarted(t, h)); got != n {
		t.Fatalf("bad input started %d sessions", got-n)
	}
	if got := len(sessionsStarted(t, h)); got != before+3 {
		t.Fatalf("%d sessions, want %d", got, before+3)
	}
	if strings.Contains(h.Logs.String(), cred.Value[strings.LastIndex(cred.Value, ".")+1:]) {
		t.Fatal("a credential reached the log")
	}
}

// Browsers get pages, not problem documents, when sign-in fails; every
// page says when the development sign-in is on.
func TestSignInErrorPages(t *testing.T) {
	p := newTestProvider(t)
	h := newHarness(t, p.option(), func(c *api.Config) { c.DevSignIn = true })
	p.start(t, h, false)
	raw := h.srv.Client() // pages are checked here, not by the contract transport
	get := func(path string, hdr map[string]string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", h.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	html := map[string]string{"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
	resp, body := get("/v1/auth/callback?code=x&state=y", html)
	if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("error page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("error page CSP %q", csp)
	}
	for _, want := range []string{"Invalid request", "no sign-in is in progress", "Anyone can sign in as anyone", `href="/v1/auth/login"`, resp.Header.Get("X-Request-Id")} {
		if !strings.Contains(body, want) {
			t.Errorf("the error page lacks %q:\n%s", want, body)
		}
	}
	// The provider's words are escaped, not markup.
	resp, body = get("/v1/auth/callback?error=%3Cscript%3Ealert(1)%3C/script%3E", html)
	if resp.StatusCode != 401 || strings.Contains(body, "<script") || !strings.Contains(body, "unknown_error") {
		t.Fatalf("provider error page: %d\n%s", resp.StatusCode, body)
	}
	// A form posted with a bad address shows the form again with the error.
	req, _ := http.NewRequest("POST", h.URL+"/v1/auth/dev", strings.NewReader("email=%3Cb%3Ex&return_to=%2F"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", html["Accept"])
	resp, err := raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), `role="alert" id="error"`) || strings.Contains(string(b), "<b>x") || !strings.Contains(string(b), "&lt;b&gt;x") {
		t.Fatalf("form error page: %d\n%s", resp.StatusCode, b)
	}
}

// Without TLS the cookies lose their prefixes (which require Secure
// origins), but keep their attributes.
func TestSignInCookiesWithoutTLSPrefix(t *testing.T) {
	h := newHarness(t, func(c *api.Config) { c.DevSignIn, c.Secure = true, false })
	r := h.post("/v1/auth/dev", "", map[string]string{"email": "ada@example.com"}).expect(t, http.StatusCreated)
	ck := setCookies(r)
	if c := ck["stele_session"]; c == nil || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || ck["__Host-stele_session"] != nil {
		t.Fatalf("cookies %v", r.header["Set-Cookie"])
	}
	if ck["stele_csrf"] == nil {
		t.Fatalf("no CSRF cookie: %v", r.header["Set-Cookie"])
	}
}
