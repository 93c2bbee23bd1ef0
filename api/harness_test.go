package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/crypto"
	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/internal/pgtest"
	"stele.dev/stele/internal/syncbuf"
	"stele.dev/stele/projections"
)

// Every request the tests make, and every response they get, is checked
// against the OpenAPI description (the contract tests). Requests a test
// makes malformed on purpose are marked and only their responses are
// checked. When the whole package runs, TestMain also fails if some
// operation of the description was never exercised.
func TestMain(m *testing.M) {
	flag.Parse()
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", openapi3filter.PlainBodyDecoder)
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
	code := pgtest.Main(m)
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && !testing.Short() {
		if missing := contract.unexercised(); len(missing) > 0 {
			fmt.Fprintf(os.Stderr, "contract: %d operations of the OpenAPI description were never exercised by a test: %s\n",
				len(missing), strings.Join(missing, ", "))
			code = 1
		}
	}
	os.Exit(code)
}

var ctx = context.Background()

// contract holds the description and what the tests exercised.
var contract = &contractState{hit: map[string]bool{}}

type contractState struct {
	once sync.Once
	doc  *openapi3.T
	err  error
	mu   sync.Mutex
	hit  map[string]bool
}

func (c *contractState) load() (*openapi3.T, error) {
	c.once.Do(func() {
		b, err := api.OpenAPI()
		if err != nil {
			c.err = err
			return
		}
		loader := openapi3.NewLoader()
		c.doc, c.err = loader.LoadFromData(b)
		if c.err == nil {
			c.err = c.doc.Validate(loader.Context)
		}
	})
	return c.doc, c.err
}

func (c *contractState) unexercised() []string {
	doc, err := c.load()
	if err != nil {
		return []string{"(description does not load: " + err.Error() + ")"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if !c.hit[op.OperationID] {
				out = append(out, op.OperationID+" ("+method+" "+path+")")
			}
		}
	}
	sort.Strings(out)
	return out
}

// validatingTransport checks requests and responses against the
// description.
type validatingTransport struct {
	t      testing.TB
	base   http.RoundTripper
	router routers.Router
}

// invalidHeader marks a request that breaks the contract on purpose; the
// transport removes it before sending.
const invalidHeader = "X-Test-Invalid-Request"

func newValidatingTransport(t testing.TB, base http.RoundTripper, serverURL string) *validatingTransport {
	t.Helper()
	doc, err := contract.load()
	if err != nil {
		t.Fatalf("the OpenAPI description: %v", err)
	}
	d := *doc
	d.Servers = openapi3.Servers{{URL: serverURL}}
	router, err := gorillamux.NewRouter(&d)
	if err != nil {
		t.Fatal(err)
	}
	return &validatingTransport{t: t, base: base, router: router}
}

var validationOptions = &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	invalid := req.Header.Get(invalidHeader) != ""
	req.Header.Del(invalidHeader)
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	route, params, routeErr := v.router.FindRoute(req)
	var input *openapi3filter.RequestValidationInput
	if routeErr == nil {
		contract.mu.Lock()
		contract.hit[route.Operation.OperationID] = true
		contract.mu.Unlock()
		check := req.Clone(req.Context())
		check.Body = io.NopCloser(bytes.NewReader(reqBody))
		input = &openapi3filter.RequestValidationInput{Request: check, PathParams: params, Route: route, Options: validationOptions}
		if !invalid {
			if err := openapi3filter.ValidateRequest(req.Context(), input); err != nil {
				v.t.Errorf("contract: request %s %s does not fit the description: %v", req.Method, req.URL.Path, err)
			}
		}
	} else if !invalid {
		v.t.Errorf("contract: %s %s is not in the description: %v", req.Method, req.URL.Path, routeErr)
	}
	resp, err := v.base.RoundTrip(req)
	if err != nil || input == nil {
		return resp, err
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp, nil // a stream: its events are checked by the test
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.ResponseValidationInput{RequestValidationInput: input, Status: resp.StatusCode, Header: resp.Header, Options: validationOptions}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		v.t.Errorf("contract: response %d to %s %s does not fit the description: %v\nbody: %.500s", resp.StatusCode, req.Method, req.URL.Path, err, body)
	}
	if resp.StatusCode >= 400 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		v.t.Errorf("contract: error %d to %s %s is not a problem document (%s)", resp.StatusCode, req.Method, req.URL.Path, resp.Header.Get("Content-Type"))
	}
	return resp, nil
}

// harness runs the whole server against a PostgreSQL schema of its own:
// ledger, application layer, catalog, projector and API, over TLS.
type harness struct {
	t      testing.TB
	URL    string
	srv    *httptest.Server
	API    *api.Server
	App    *app.Service
	Store  *postgres.Store
	Pool   *pgxpool.Pool
	Reader *projections.Reader
	Logs   *syncbuf.Buffer
	client *http.Client

	// Projector keeps the read models; StopProjector and StartProjector
	// pause and resume it.
	Projector   *projections.Projector
	stopProject func()

	// Owner is the bootstrap owner token of acme; Ada (owner), Bob
	// (developer) and Eve (viewer) are people of acme, signed in with
	// session credentials; Olga owns globex, another tenant.
	Owner, Ada, Bob, Eve, Olga string
}

// harnessOption changes the API's configuration before it starts.
type harnessOption func(*api.Config)

func newHarness(t testing.TB, opts ...harnessOption) *harness {
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
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: logger})
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
	cat := app.NewCatalog()
	svc, err := app.New(app.Config{Store: store, Material: pgstore.New(pool), KEK: kek, Logger: logger, Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	bg, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); cat.Run(bg, store) }()
	proj := projections.New(projections.Config{Pool: pool, Store: store, Logger: logger}, projections.All()...)
	if _, err := proj.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	cfg := api.Config{App: svc, Reader: projections.NewReader(pool), Pool: pool, Ledger: store, Logger: logger, Secure: true,
		History: &projections.History{Pool: pool, Store: store}}
	for _, o := range opts {
		o(&cfg)
	}
	server, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(server.Handler())
	t.Cleanup(srv.Close)
	h := &harness{t: t, URL: srv.URL, srv: srv, API: server, App: svc, Store: store, Pool: pool, Reader: cfg.Reader, Logs: logs, Projector: proj}
	h.StartProjector()
	t.Cleanup(h.StopProjector)
	t.Cleanup(func() { // on failure, show what the server logged as a warning or worse
		if t.Failed() {
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, `"level":"WARN"`) {
					t.Log("server: " + line)
				}
			}
		}
	})
	h.client = h.newClient(nil)

	tok, created, err := svc.Bootstrap(ctx, "acme", "Acme", "ada@example.com", 24*time.Hour)
	if err != nil || !created {
		t.Fatalf("bootstrap: %v %v", created, err)
	}
	h.Owner = tok.Secret
	owner := app.Request{Actor: domain.Actor{Kind: domain.ActorToken, ID: tok.ID}, RequestID: "harness"}
	must(svc.GrantRole(ctx, owner, "acme", "bob@example.com", domain.RoleDeveloper, ""))
	must(svc.GrantRole(ctx, owner, "acme", "eve@example.com", domain.RoleViewer, ""))
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "harness"}
	must(svc.CreateOrganization(ctx, olga, "globex", "Globex"))
	h.Ada, h.Bob, h.Eve, h.Olga = h.signIn("ada@example.com"), h.signIn("bob@example.com"), h.signIn("eve@example.com"), h.signIn("olga@example.com")
	return h
}

// StartProjector runs the projector (newHarness starts it).
func (h *harness) StartProjector() {
	c, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); h.Projector.Run(c) }()
	h.stopProject = func() { cancel(); <-done }
}

// StopProjector stops the projector until StartProjector: the read models
// stay where they are while the log grows.
func (h *harness) StopProjector() {
	if h.stopProject != nil {
		h.stopProject()
		h.stopProject = nil
	}
}

// signIn starts a (development) session for a person and returns its
// credential, usable as a bearer token.
func (h *harness) signIn(user string) string {
	h.t.Helper()
	req := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: user}, RequestID: "harness"}
	s, _, err := h.App.StartSession(ctx, req, app.SessionSpec{User: user, Method: domain.SessionDev, TTL: time.Hour})
	if err != nil {
		h.t.Fatal(err)
	}
	return s.Credential
}

// newClient returns an HTTP client of the test server that checks the
// contract, with a cookie jar when jar is true... or the given jar.
func (h *harness) newClient(jar http.CookieJar) *http.Client {
	base := h.srv.Client().Transport
	return &http.Client{Transport: newValidatingTransport(h.t, base, h.URL), Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// newJar returns an empty cookie jar.
func newJar() http.CookieJar {
	j, _ := cookiejar.New(nil)
	return j
}

// call is one request of a test.
type call struct {
	method, path string
	cred         string // a bearer credential
	body         any    // JSON-encoded, unless []byte or string
	contentType  string // of a []byte or string body
	header       map[string]string
	invalid      bool // the request breaks the contract on purpose
	client       *http.Client
}

// response is what came back.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (h *harness) do(c call) response {
	h.t.Helper()
	var body io.Reader
	ct := c.contentType
	switch b := c.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		body = bytes.NewReader(j)
		if ct == "" {
			ct = "application/json"
		}
	}
	req, err := http.NewRequestWithContext(ctx, c.method, h.URL+c.path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if c.cred != "" {
		req.Header.Set("Authorization", "Bearer "+c.cred)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	if c.invalid {
		req.Header.Set(invalidHeader, "1")
	}
	client := c.client
	if client == nil {
		client = h.client
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// get, post, put, patch and del are shorthands.
func (h *harness) get(path, cred string) response {
	h.t.Helper()
	return h.do(call{method: http.MethodGet, path: path, cred: cred})
}

func (h *harness) post(path, cred string, body any) response {
	h.t.Helper()
	return h.do(call{method: http.MethodPost, path: path, cred: cred, body: body})
}

func (h *harness) put(path, cred string, body any) response {
	h.t.Helper()
	return h.do(call{method: http.MethodPut, path: path, cred: cred, body: body})
}

func (h *harness) patch(path, cred string, body any) response {
	h.t.Helper()
	return h.do(call{method: http.MethodPatch, path: path, cred: cred, body: body})
}

func (h *harness) del(path, cred string) response {
	h.t.Helper()
	return h.do(call{method: http.MethodDelete, path: path, cred: cred})
}

// expect fails the test unless the status is want, showing the body.
func (r response) expect(t testing.TB, want int) response {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

// problemCode is the code of a problem answer.
func (r response) problemCode(t testing.TB) string {
	t.Helper()
	var p api.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("not a problem document (%d): %s", r.status, r.body)
	}
	return p.Code
}

// expectProblem fails unless the answer is a problem with this status and code.
func (r response) expectProblem(t testing.TB, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (%s): %s", r.status, status, code, r.body)
	}
	if got := r.problemCode(t); got != code {
		t.Fatalf("code %q, want %q: %s", got, code, r.body)
	}
}

// decode reads a JSON answer into v.
func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// position is the X-Stele-Position of a write's answer.
func (r response) position(t testing.TB) string {
	t.Helper()
	p := r.header.Get("X-Stele-Position")
	if p == "" {
		t.Fatalf("no X-Stele-Position on %d: %s", r.status, r.body)
	}
	return p
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

// operations lists the description's operation ids (for tests that walk
// every endpoint).
func operations(t testing.TB) []string {
	doc, err := contract.load()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			ids = append(ids, op.OperationID)
		}
	}
	slices.Sort(ids)
	return ids
}
