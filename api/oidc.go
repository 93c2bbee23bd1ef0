package api

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"golang.org/x/oauth2"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// OIDCConfig configures sign-in with an OpenID Connect provider: the
// authorization-code flow with PKCE (S256), state and nonce.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL, exactly as its discovery
	// document states it. It must use https, except on a loopback host
	// (a provider on the developer's own machine).
	Issuer string
	// ClientID is Stele's client at the provider; the provider must allow
	// the redirect URI <public URL>/v1/auth/callback for it.
	ClientID string
	// ClientSecret authenticates a confidential client at the token
	// endpoint; empty for a public client, which PKCE alone protects.
	ClientSecret string
	// SessionTTL is how long a browser session lasts (default 12 hours,
	// at most domain.MaxSessionLifetime).
	SessionTTL time.Duration
	// NoEmailVerifiedClaim says the provider never sends email_verified
	// (it releases only addresses it verified): an address without the
	// claim is then accepted. An address the provider marks unverified
	// (email_verified false) is always refused.
	NoEmailVerifiedClaim bool
	// HTTPClient talks to the provider (discovery, keys, token and
	// userinfo endpoints); a client with a 10-second timeout when nil.
	HTTPClient *http.Client
}

// Sign-in limits.
const (
	// defaultSessionTTL is how long a browser session lasts unless
	// configured otherwise.
	defaultSessionTTL = 12 * time.Hour
	// oidcFlowTTL bounds the time between starting a sign-in and coming
	// back from the provider.
	oidcFlowTTL = 10 * time.Minute
	// maxReturnTo bounds the return_to path.
	maxReturnTo = 2000
	// discoveryRetry is the least time between two discovery attempts
	// after one failed, so an unreachable provider is not hammered.
	discoveryRetry = 5 * time.Second
)

// oidcProvider is the configured provider. Discovery happens on first
// use (and again after a failure), so a provider that is briefly
// unreachable does not stop the server from starting.
type oidcProvider struct {
	cfg    OIDCConfig
	client *http.Client

	mu      sync.Mutex
	ready   *oidcEndpoints
	lastTry time.Time
	lastErr error
}

// oidcEndpoints is what discovery found.
type oidcEndpoints struct {
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	endpoint oauth2.Endpoint
}

func newOIDCProvider(_ context.Context, cfg OIDCConfig) (*oidcProvider, error) {
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("api: OpenID issuer %q: want an absolute URL with no query", cfg.Issuer)
	}
	if u.Scheme != "https" && (u.Scheme != "http" || !loopbackHost(u.Hostname())) {
		return nil, fmt.Errorf("api: OpenID issuer %q: want https (http only on a loopback host)", cfg.Issuer)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("api: OpenID sign-in needs a client id")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = defaultSessionTTL
	}
	if cfg.SessionTTL < time.Minute || cfg.SessionTTL > domain.MaxSessionLifetime {
		return nil, fmt.Errorf("api: OpenID session lifetime %s: want 1m to %s", cfg.SessionTTL, domain.MaxSessionLifetime)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &oidcProvider{cfg: cfg, client: client}, nil
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// errProviderUnreachable: discovery failed recently; the next attempt
// waits a little.
var errProviderUnreachable = errors.New("the OpenID provider could not be reached")

// endpoints returns the provider's endpoints, discovering them first
// when needed.
func (p *oidcProvider) endpoints(ctx context.Context) (*oidcEndpoints, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready != nil {
		return p.ready, nil
	}
	if !p.lastTry.IsZero() && time.Since(p.lastTry) < discoveryRetry {
		return nil, fmt.Errorf("%w: %v", errProviderUnreachable, p.lastErr)
	}
	p.lastTry = time.Now()
	// The provider keeps the client of this context for its key set,
	// which outlives the request.
	dctx, cancel := context.WithTimeout(p.clientContext(context.WithoutCancel(ctx)), 10*time.Second)
	defer cancel()
	prov, err := oidc.NewProvider(dctx, p.cfg.Issuer)
	if err != nil {
		p.lastErr = err
		return nil, fmt.Errorf("%w: %v", errProviderUnreachable, err)
	}
	p.ready = &oidcEndpoints{provider: prov, endpoint: prov.Endpoint(),
		verifier: prov.Verifier(&oidc.Config{ClientID: p.cfg.ClientID})}
	return p.ready, nil
}

// clientContext makes go-oidc and oauth2 use the provider's client.
func (p *oidcProvider) clientContext(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, p.client)
}

// oauth returns the OAuth 2.0 client configuration for a request (the
// redirect URI follows the server's public URL).
func (s *Server) oauth(r *http.Request, ep *oidcEndpoints) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     s.oidc.cfg.ClientID,
		ClientSecret: s.oidc.cfg.ClientSecret,
		Endpoint:     ep.endpoint,
		RedirectURL:  s.publicURL(r) + "/v1/auth/callback",
		Scopes:       []string{oidc.ScopeOpenID, "email"},
	}
}

// mountAuth: sign-in and sign-out. The OpenID endpoints exist only when a
// provider is configured, the development sign-in only when enabled;
// otherwise they answer 404 like unknown endpoints.
func (s *Server) mountAuth(r chi.Router) {
	r.Get("/auth/methods", s.authMethods)
	r.Post("/auth/logout", s.logout)
	if s.oidc != nil {
		r.Get("/auth/login", s.oidcLogin)
		r.Get("/auth/callback", s.oidcCallback)
	}
	if s.cfg.DevSignIn {
		r.Get("/auth/dev", s.devSignInPage)
		r.Post("/auth/dev", s.devSignIn)
	}
}

// AuthMethod is a way for people to sign in to this server.
type AuthMethod struct {
	// Method is oidc or dev.
	Method string `json:"method"`
	// LoginURL is where a browser goes to sign in this way.
	LoginURL string `json:"login_url"`
	// Issuer is the OpenID provider (oidc).
	Issuer string `json:"issuer,omitempty"`
	// Warning says what is wrong with the method (dev).
	Warning string `json:"warning,omitempty"`
}

const devWarning = "Development sign-in is enabled: anyone can sign in as anyone. Never use it with real secrets."

func (s *Server) authMethods(w http.ResponseWriter, r *http.Request) {
	items := []AuthMethod{}
	if s.oidc != nil {
		items = append(items, AuthMethod{Method: string(domain.SessionOIDC), LoginURL: "/v1/auth/login", Issuer: s.oidc.cfg.Issuer})
	}
	if s.cfg.DevSignIn {
		items = append(items, AuthMethod{Method: string(domain.SessionDev), LoginURL: "/v1/auth/dev", Warning: devWarning})
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

// oidcFlow is what a browser keeps between starting a sign-in and coming
// back from the provider, in a short-lived cookie limited to the
// callback: any server process can finish a sign-in another started.
// The cookie holds no credential: the verifier is useless without a
// code, which the provider sends only to the registered redirect URI.
type oidcFlow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	ReturnTo string `json:"r"`
	Expires  int64  `json:"e"` // Unix seconds
}

// The flow cookie cannot take the __Host- prefix, which requires Path=/;
// __Secure- still keeps plain-HTTP origins from setting it.
func (s *Server) flowCookieName() string {
	if s.cfg.Secure {
		return "__Secure-stele_oidc"
	}
	return "stele_oidc"
}

// flowCookiePath is the callback's path (under the public URL's path).
func (s *Server) flowCookiePath() string {
	p := "/v1/auth/callback"
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil {
			p = strings.TrimRight(u.Path, "/") + p
		}
	}
	return p
}

func (s *Server) setFlowCookie(w http.ResponseWriter, f oidcFlow) {
	b, _ := json.Marshal(f)
	http.SetCookie(w, &http.Cookie{Name: s.flowCookieName(), Value: base64.RawURLEncoding.EncodeToString(b),
		Path: s.flowCookiePath(), MaxAge: int(oidcFlowTTL / time.Second), HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
}

func (s *Server) clearFlowCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: s.flowCookieName(), Value: "", Path: s.flowCookiePath(), MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
}

// readFlow returns the sign-in the browser started, if it is well formed
// and not too old.
func (s *Server) readFlow(r *http.Request) (oidcFlow, bool) {
	var f oidcFlow
	ck, err := r.Cookie(s.flowCookieName())
	if err != nil || len(ck.Value) > 4096 {
		return f, false
	}
	b, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil || json.Unmarshal(b, &f) != nil {
		return f, false
	}
	if len(f.State) < 32 || len(f.Nonce) < 32 || len(f.Verifier) < 43 || s.now().Unix() > f.Expires {
		return f, false
	}
	if _, ok := safeReturnTo(f.ReturnTo); !ok {
		return f, false
	}
	return f, true
}

// safeReturnTo accepts only a path of this server: it starts with one
// "/" (not "//", which is another host), holds no backslash (which some
// browsers read as "/"), no control character or space (which browsers
// strip, turning "/\t/evil" into "//evil"), and parses as a path with no
// scheme or host. Empty means "/".
func safeReturnTo(v string) (string, bool) {
	if v == "" {
		return "/", true
	}
	if len(v) > maxReturnTo || v[0] != '/' || strings.HasPrefix(v, "//") {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == 0x7f || c == '\\' || c >= 0x80 {
			return "", false
		}
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "", false
	}
	return v, true
}

// oidcLogin starts a sign-in: it keeps state, nonce and the PKCE
// verifier in the flow cookie and sends the browser to the provider.
func (s *Server) oidcLogin(w http.ResponseWriter, r *http.Request) {
	returnTo, ok := safeReturnTo(r.URL.Query().Get("return_to"))
	if !ok {
		s.authProblem(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "return_to",
			Detail: "return_to: want a path of this server, such as /orgs"})
		return
	}
	ep, err := s.oidc.endpoints(r.Context())
	if err != nil {
		s.providerUnreachable(w, r, err)
		return
	}
	state, err1 := randomToken()
	nonce, err2 := randomToken()
	if err := errors.Join(err1, err2); err != nil {
		s.fail(w, r, err)
		return
	}
	verifier := oauth2.GenerateVerifier()
	s.setFlowCookie(w, oidcFlow{State: state, Nonce: nonce, Verifier: verifier, ReturnTo: returnTo, Expires: s.now().Add(oidcFlowTTL).Unix()})
	target := s.oauth(r, ep).AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
}

func (s *Server) providerUnreachable(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn("OpenID provider unreachable", "issuer", s.oidc.cfg.Issuer, "err", err, "request_id", middleware.GetReqID(r.Context()))
	retryAfter(w, int(discoveryRetry/time.Second))
	s.authProblem(w, r, Problem{Status: http.StatusServiceUnavailable, Code: "not_ready",
		Detail: "the OpenID provider cannot be reached right now; try again shortly"})
}

// providerErrorCode is the grammar of an OAuth error code (RFC 6749).
var providerErrorCode = regexp.MustCompile(`^[a-z_]{1,64}$`)

// oidcCallback finishes a sign-in. The flow cookie is cleared whatever
// happens: each started sign-in gets one attempt.
func (s *Server) oidcCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	flow, haveFlow := s.readFlow(r)
	s.clearFlowCookie(w)
	refuse := func(status int, code, detail, reason string) {
		s.log.Info("sign-in refused", "method", "oidc", "reason", reason, "request_id", middleware.GetReqID(r.Context()), "client", s.clientAddr(r))
		s.authProblem(w, r, Problem{Status: status, Code: code, Detail: detail})
	}
	if e := q.Get("error"); e != "" {
		if !providerErrorCode.MatchString(e) {
			e = "unknown_error"
		}
		refuse(http.StatusUnauthorized, "unauthenticated", "the OpenID provider did not sign you in ("+e+")", "provider error "+e)
		return
	}
	if !haveFlow {
		refuse(http.StatusBadRequest, "invalid_request", "no sign-in is in progress in this browser, or it took too long; start again at /v1/auth/login", "no flow cookie")
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(flow.State)) != 1 {
		refuse(http.StatusBadRequest, "invalid_request", "the sign-in state does not match the one this browser started; start again at /v1/auth/login", "state mismatch")
		return
	}
	// RFC 9207: a provider that names itself must be ours.
	if iss := q.Get("iss"); iss != "" && iss != s.oidc.cfg.Issuer {
		refuse(http.StatusUnauthorized, "unauthenticated", "the answer comes from another OpenID provider", "issuer mismatch")
		return
	}
	code := q.Get("code")
	if code == "" || len(code) > 4096 {
		refuse(http.StatusBadRequest, "invalid_request", "the OpenID provider sent no sign-in code", "no code")
		return
	}
	ep, err := s.oidc.endpoints(r.Context())
	if err != nil {
		s.providerUnreachable(w, r, err)
		return
	}
	ctx := s.oidc.clientContext(r.Context())
	conf := s.oauth(r, ep)
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(flow.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			reason := re.ErrorCode
			if !providerErrorCode.MatchString(reason) {
				reason = fmt.Sprintf("status %d", re.Response.StatusCode)
			}
			refuse(http.StatusUnauthorized, "unauthenticated", "the OpenID provider did not accept the sign-in code", "code exchange refused: "+reason)
			return
		}
		s.providerUnreachable(w, r, err)
		return
	}
	user, reason, err := s.oidcUser(ctx, ep, tok, flow.Nonce)
	if err != nil {
		s.providerUnreachable(w, r, err)
		return
	}
	if reason != "" {
		status, code := http.StatusUnauthorized, "unauthenticated"
		if strings.HasPrefix(reason, "e-mail") {
			status, code = http.StatusForbidden, "forbidden"
		}
		refuse(status, code, "the OpenID provider's answer does not sign you in: "+reason, reason)
		return
	}
	if _, _, ok := s.startBrowserSession(w, r, user, domain.SessionOIDC, s.oidc.cfg.Issuer, s.oidc.cfg.SessionTTL); !ok {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, flow.ReturnTo, http.StatusFound)
}

// claimBool reads a boolean claim that some providers send as a string.
type claimBool struct{ set, value bool }

func (b *claimBool) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case "true", `"true"`:
		*b = claimBool{true, true}
	case "false", `"false"`:
		*b = claimBool{true, false}
	case "null":
		*b = claimBool{}
	default:
		return fmt.Errorf("not a boolean: %.20s", data)
	}
	return nil
}

// personClaims are the claims Stele reads from an ID token or userinfo.
type personClaims struct {
	Subject       string    `json:"sub"`
	Email         string    `json:"email"`
	EmailVerified claimBool `json:"email_verified"`
	AZP           string    `json:"azp"`
}

// oidcUser verifies the ID token of a token response (signature,
// issuer, audience, expiry, nonce, authorized party, access-token hash)
// and says who signed in. A refusal is a non-empty reason (one starting
// with "e-mail" when the person is known but cannot be a Stele user); an
// error means the provider could not be reached.
func (s *Server) oidcUser(ctx context.Context, ep *oidcEndpoints, tok *oauth2.Token, nonce string) (user, reason string, err error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", "no ID token", nil
	}
	idt, err := ep.verifier.Verify(ctx, raw)
	if err != nil {
		return "", "the ID token does not verify: " + err.Error(), nil
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return "", "the ID token's nonce does not match", nil
	}
	var c personClaims
	if err := idt.Claims(&c); err != nil {
		return "", "the ID token's claims do not decode", nil
	}
	if len(idt.Audience) > 1 && c.AZP != s.oidc.cfg.ClientID {
		return "", "the ID token was issued to another party", nil
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return "", "the access token does not match the ID token", nil
		}
	}
	if c.Email == "" {
		// Many providers put the e-mail address in userinfo only.
		ui, err := ep.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		var ue *url.Error
		switch {
		case errors.As(err, &ue):
			return "", "", err
		case err != nil:
			return "", "userinfo is not usable: " + err.Error(), nil
		}
		var uc personClaims
		if err := ui.Claims(&uc); err != nil {
			return "", "userinfo does not decode", nil
		}
		if uc.Subject != idt.Subject {
			return "", "userinfo names another subject than the ID token", nil
		}
		c.Email, c.EmailVerified = uc.Email, uc.EmailVerified
	}
	return emailUser(c.Email, c.EmailVerified, s.oidc.cfg.NoEmailVerifiedClaim)
}

// emailUser decides whether a provider's e-mail claims name a Stele user.
func emailUser(email string, verified claimBool, noVerifiedClaim bool) (user, reason string, err error) {
	switch {
	case email == "":
		return "", "e-mail: the provider released no e-mail address (Stele knows people by e-mail; ask for the email scope)", nil
	case verified.set && !verified.value:
		return "", "e-mail: the provider has not verified the address", nil
	case !verified.set && !noVerifiedClaim:
		return "", "e-mail: the provider does not say that it verified the address", nil
	}
	user = strings.ToLower(email)
	if !strings.Contains(user, "@") || !domain.ValidUserID(user) {
		return "", "e-mail: the address cannot name a Stele user", nil
	}
	return user, "", nil
}

// startBrowserSession signs a person in: it ends the browser's previous
// session, if any, starts a new one and sets the session cookies. On
// failure it answers and returns false. It sets X-Stele-Position.
func (s *Server) startBrowserSession(w http.ResponseWriter, r *http.Request, user string, method domain.SessionMethod, issuer string, ttl time.Duration) (app.Session, app.Result, bool) {
	if c, ok := r.Context().Value(callerKey{}).(caller); ok && c.cookie && c.id.SessionID != "" {
		req := s.request(r)
		req.IdempotencyKey = ""
		if _, err := s.cfg.App.EndSession(r.Context(), req, c.id.SessionID, "signed in again"); err != nil {
			s.log.Warn("ending the previous session failed", "err", err, "request_id", middleware.GetReqID(r.Context()))
		}
	}
	req := s.request(r)
	req.Actor = domain.Actor{Kind: domain.ActorUser, ID: user}
	sess, res, err := s.cfg.App.StartSession(r.Context(), req, app.SessionSpec{User: user, Method: method, Issuer: issuer, TTL: ttl})
	if err != nil {
		s.fail(w, r, err)
		return sess, res, false
	}
	if err := s.setSessionCookies(w, sess.Credential, sess.ExpiresAt); err != nil {
		s.fail(w, r, err)
		return sess, res, false
	}
	noteActor(r, req.Actor.String())
	w.Header().Set("X-Stele-Position", strconv.FormatUint(res.Position, 10))
	s.log.Info("signed in", "user", user, "method", string(method), "session", sess.ID,
		"request_id", middleware.GetReqID(r.Context()), "client", s.clientAddr(r))
	return sess, res, true
}

// logout ends the caller's session (a browser's cookie or a CLI's bearer
// credential) and clears the session cookies.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	id, ok := identity(r)
	if !ok {
		s.clearSessionCookies(w)
		s.fail(w, r, app.ErrUnauthenticated)
		return
	}
	if id.SessionID == "" {
		problem(w, r, http.StatusForbidden, "forbidden", "a service token does not sign out; revoke it instead")
		return
	}
	res, err := s.cfg.App.EndSession(r.Context(), s.request(r), id.SessionID, "signed out")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.clearSessionCookies(w)
	wrote(w, http.StatusOK, res, nil)
}

// wantsHTML: the request comes from a browser page that asked for HTML.
func wantsHTML(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mt == "text/html" {
			return true
		}
	}
	return false
}

// authProblem answers a sign-in failure: a small page to a browser, a
// problem document to anyone else.
func (s *Server) authProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	if !wantsHTML(r) {
		writeProblemDoc(w, r, p)
		return
	}
	retry := ""
	if s.oidc != nil {
		retry = "/v1/auth/login"
	} else if s.cfg.DevSignIn {
		retry = "/v1/auth/dev"
	}
	s.page(w, r, p.Status, authPage{Title: problemTitles[p.Code], Message: p.Detail, Retry: retry,
		RequestID: middleware.GetReqID(r.Context())})
}

// authPage is a sign-in page: a message, and the development sign-in
// form when it is enabled.
type authPage struct {
	Title     string
	Message   string
	Error     string
	Retry     string
	RequestID string
	Dev       bool
	Form      bool
	Email     string
	ReturnTo  string
	// CSRF is the browser's CSRF cookie, echoed by the form: a browser
	// that is signed in already must send it to sign in again.
	CSRF string
}

// authPageHTML has no script and no inline style (the page policy
// allows neither).
var authPageHTML = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{{.Title}} · Stele</title>
</head>
<body>
<main>
{{if .Dev}}<p role="alert"><strong>Warning: development sign-in is enabled.</strong> Anyone can sign in as anyone on this server. Never use it with real secrets.</p>
{{end}}<h1>{{.Title}}</h1>
{{if .Message}}<p>{{.Message}}</p>
{{end}}{{if .Error}}<p role="alert" id="error">{{.Error}}</p>
{{end}}{{if .Form}}<form method="post" action="/v1/auth/dev">
<p><label for="email">E-mail address</label>
<input id="email" name="email" type="email" autocomplete="email" required maxlength="254" value="{{.Email}}"{{if .Error}} aria-describedby="error"{{end}}></p>
<input type="hidden" name="return_to" value="{{.ReturnTo}}">
{{if .CSRF}}<input type="hidden" name="csrf_token" value="{{.CSRF}}">
{{end}}<p><button type="submit">Sign in</button></p>
</form>
{{end}}{{if .Retry}}<p><a href="{{.Retry}}">Sign in again</a></p>
{{end}}{{if .RequestID}}<p>Request id: <code>{{.RequestID}}</code></p>
{{end}}</main>
</body>
</html>
`))

// page writes a sign-in page under the page policy.
func (s *Server) page(w http.ResponseWriter, r *http.Request, status int, p authPage) {
	p.Dev = s.cfg.DevSignIn
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", pageCSP)
	h.Del("X-Stele-Position")
	w.WriteHeader(status)
	if err := authPageHTML.Execute(w, p); err != nil {
		s.log.Warn("page failed", "err", err, "request_id", middleware.GetReqID(r.Context()))
	}
}
