package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/internal/syncbuf"
)

// chgArrive is how long a change may take to reach a stream.
const chgArrive = 3 * time.Second

// sseEvent is one server-sent event, or a comment line.
type sseEvent struct {
	comment         string
	id, event, data string
}

// sseStream is an open change stream, read by a goroutine of its own.
type sseStream struct {
	t      *testing.T
	resp   *http.Response
	cancel context.CancelFunc
	events chan sseEvent
	ended  chan struct{}   // closed when the body ends
	raw    *syncbuf.Buffer // every byte read
}

// watch opens a change stream; a refusal is returned as a response.
func (h *harness) watch(t *testing.T, path, cred string, header map[string]string, invalid bool) (*sseStream, response) {
	t.Helper()
	return watchWith(t, h.client, h.URL, path, cred, header, invalid)
}

func watchWith(t *testing.T, client *http.Client, base, path, cred string, header map[string]string, invalid bool) (*sseStream, response) {
	t.Helper()
	cctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if invalid {
		req.Header.Set(invalidHeader, "1")
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return nil, response{status: resp.StatusCode, header: resp.Header, body: b}
	}
	s := &sseStream{t: t, resp: resp, cancel: cancel, events: make(chan sseEvent, 1000), ended: make(chan struct{}), raw: &syncbuf.Buffer{}}
	go s.read()
	t.Cleanup(s.close)
	return s, response{status: resp.StatusCode, header: resp.Header}
}

func (s *sseStream) read() {
	defer close(s.ended)
	defer s.resp.Body.Close()
	sc := bufio.NewScanner(io.TeeReader(s.resp.Body, s.raw))
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev != (sseEvent{}) {
				s.events <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			s.events <- sseEvent{comment: strings.TrimSpace(line[1:])}
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "id":
				ev.id = v
			case "event":
				ev.event = v
			case "data":
				ev.data += v
			default:
				s.events <- sseEvent{comment: "unknown field " + k}
			}
		}
	}
}

func (s *sseStream) close() {
	s.cancel()
	<-s.ended
}

// next returns the next event or comment, or fails after d.
func (s *sseStream) next(d time.Duration) (sseEvent, bool) {
	s.t.Helper()
	select {
	case ev := <-s.events:
		return ev, true
	case <-time.After(d):
		return sseEvent{}, false
	}
}

// ready waits for the ": ready" comment that opens a stream.
func (s *sseStream) ready() {
	s.t.Helper()
	ev, ok := s.next(chgArrive)
	if !ok || ev.comment != "ready" {
		s.t.Fatalf("the stream did not open with ': ready': %+v (%v)", ev, ok)
	}
}

// change waits for the next change event (skipping keepalives) and
// checks it against the description's Change schema and its id.
func (s *sseStream) change() api.Change {
	s.t.Helper()
	deadline := time.After(chgArrive)
	for {
		select {
		case ev := <-s.events:
			if ev.comment == "keepalive" {
				continue
			}
			if ev.event != "change" {
				s.t.Fatalf("unexpected %+v", ev)
			}
			var raw any
			if err := json.Unmarshal([]byte(ev.data), &raw); err != nil {
				s.t.Fatalf("change data %q: %v", ev.data, err)
			}
			doc, _ := contract.load()
			if err := doc.Components.Schemas["Change"].Value.VisitJSON(raw); err != nil {
				s.t.Fatalf("change data %s does not fit the Change schema: %v", ev.data, err)
			}
			var c api.Change
			json.Unmarshal([]byte(ev.data), &c)
			if ev.id != strconv.FormatUint(c.Position, 10) {
				s.t.Fatalf("event id %q, position %d", ev.id, c.Position)
			}
			return c
		case <-s.ended:
			s.t.Fatal("the stream ended while a change was awaited")
		case <-deadline:
			s.t.Fatalf("no change within %s", chgArrive)
		}
	}
}

// expectChange waits for a change and compares it.
func (s *sseStream) expectChange(position uint64, name, typ string, version uint64) {
	s.t.Helper()
	c := s.change()
	if c != (api.Change{Position: position, Name: name, Type: typ, Version: version}) {
		s.t.Fatalf("change %+v, want %d %s %s v%d", c, position, name, typ, version)
	}
}

// waitEnd waits for the server to end the stream; no change may come
// before.
func (s *sseStream) waitEnd(d time.Duration) {
	s.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-s.events:
			if ev.event != "" {
				s.t.Fatalf("a change arrived on a stream that should end: %+v", ev)
			}
		case <-s.ended:
			return
		case <-deadline:
			s.t.Fatalf("the stream did not end within %s", d)
		}
	}
}

// pos is the log position a write answered.
func pos(t *testing.T, r response) uint64 {
	t.Helper()
	return must(strconv.ParseUint(r.position(t), 10, 64))
}

// chgMetric reads one unlabelled metric's value.
func chgMetric(t *testing.T, h *harness, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(string(h.get("/metrics", "").expect(t, 200).body))
	if m == nil {
		t.Fatalf("no metric %s", name)
	}
	return m[1]
}

// waitMetric waits until a metric has a value.
func waitMetric(t *testing.T, h *harness, name, want string) {
	t.Helper()
	deadline := time.Now().Add(chgArrive)
	for chgMetric(t, h, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %s, want %s", name, chgMetric(t, h, name), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A change made by another client reaches every stream of its
// environment within moments, as the secret's name, the event's type and
// version and its position; metadata changes, reads and the changes of
// other environments and tenants do not; no value is ever in a stream;
// and one tail serves every stream of the process.
func TestChangesStream(t *testing.T) {
	h := secSetup(t)
	must(h.App.CreateEnvironment(ctx, secAda(), app.Env{Org: "acme", Project: "web", Env: "staging"}, app.EnvSpec{}))
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "changes-test"}
	must(h.App.CreateProject(ctx, olga, "globex", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, olga, app.Env{Org: "globex", Project: "web", Env: "dev"}, app.EnvSpec{}))
	if got := chgMetric(t, h, "stele_change_tail_running"); got != "0" {
		t.Fatalf("a tail runs before any stream: %s", got)
	}

	eve, r := h.watch(t, secDev+"/changes", h.Eve, nil, false)
	if eve == nil {
		t.Fatalf("viewer's stream refused: %d %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/event-stream" || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("stream served as %q, %q", ct, r.header.Get("Cache-Control"))
	}
	eve.ready()
	bob, _ := h.watch(t, secDev+"/changes", h.Bob, nil, false)
	bob.ready()
	other, _ := h.watch(t, "/v1/orgs/acme/projects/web/envs/staging/changes", h.Eve, nil, false)
	other.ready()
	if chgMetric(t, h, "stele_change_streams") != "3" || chgMetric(t, h, "stele_change_tail_running") != "1" {
		t.Fatalf("3 streams: %s streams, tail %s", chgMetric(t, h, "stele_change_streams"), chgMetric(t, h, "stele_change_tail_running"))
	}

	values := []string{"changes-value-0001", "changes-value-0002", "changes-value-0003", "changes-staging-value", "changes-globex-value"}
	start := time.Now()
	p := pos(t, h.put(secDev+"/secrets/DB_URL", h.Bob, map[string]any{"value": values[0]}).expect(t, 201))
	eve.expectChange(p, "DB_URL", "secret.created", 1)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the change took %s to arrive", d)
	}
	bob.expectChange(p, "DB_URL", "secret.created", 1)

	// Not changes of the value: metadata, reads. Not this environment's:
	// staging's, globex's.
	h.patch(secDev+"/secrets/DB_URL", h.Bob, map[string]any{"description": "the database"}).expect(t, 200)
	h.post(secDev+"/secrets/DB_URL/reveal", h.Bob, nil).expect(t, 200)
	ps := pos(t, h.put("/v1/orgs/acme/projects/web/envs/staging/secrets/DB_URL", h.Bob, map[string]any{"value": values[3]}).expect(t, 201))
	h.put("/v1/orgs/globex/projects/web/envs/dev/secrets/DB_URL", h.Olga, map[string]any{"value": values[4]}).expect(t, 201)
	other.expectChange(ps, "DB_URL", "secret.created", 1)

	// The next change of dev is the next event on dev's streams.
	p = pos(t, h.put(secDev+"/secrets/DB_URL", h.Bob, map[string]any{"value": values[1]}).expect(t, 200))
	eve.expectChange(p, "DB_URL", "secret.updated", 2)
	p = pos(t, h.put(secDev+"/secrets/DB_URL", h.Bob, map[string]any{"value": values[2]}).expect(t, 200))
	eve.expectChange(p, "DB_URL", "secret.updated", 3)
	p = pos(t, h.post(secDev+"/secrets/DB_URL/rollback", h.Bob, map[string]any{"version": 1}).expect(t, 200))
	eve.expectChange(p, "DB_URL", "secret.rolled_back", 4)
	p = pos(t, h.del(secDev+"/secrets/DB_URL/versions/2", h.Ada).expect(t, 200))
	eve.expectChange(p, "DB_URL", "secret.version_destroyed", 2)
	p = pos(t, h.del(secDev+"/secrets/DB_URL", h.Bob).expect(t, 200))
	eve.expectChange(p, "DB_URL", "secret.deleted", 4)
	p = pos(t, h.post(secDev+"/secrets/DB_URL/restore", h.Bob, nil).expect(t, 200))
	eve.expectChange(p, "DB_URL", "secret.restored", 4)
	// A bulk import: one change per variable, in order.
	imp, _ := secImport(t, h, "dev", "", "text/plain", "A_ONE=changes-import-1\nA_TWO=changes-import-2\n", nil)
	first := eve.change()
	second := eve.change()
	if first.Name != "A_ONE" || second.Name != "A_TWO" || second.Position != imp.Position || first.Type != "secret.created" {
		t.Fatalf("import changes %+v %+v, import at %d", first, second, imp.Position)
	}
	for i := 0; i < 7; i++ { // bob's stream saw the same, in the same order
		bob.change()
	}
	if c := bob.change(); c != second {
		t.Fatalf("bob's stream: %+v, eve's %+v", c, second)
	}

	// Closing the streams stops the tail.
	for _, s := range []*sseStream{eve, bob, other} {
		s.close()
	}
	waitMetric(t, h, "stele_change_streams", "0")
	waitMetric(t, h, "stele_change_tail_running", "0")
	// A new stream starts a new one.
	again, _ := h.watch(t, secDev+"/changes", h.Eve, nil, false)
	again.ready()
	p = pos(t, h.put(secDev+"/secrets/LATER", h.Bob, map[string]any{"value": "changes-later-value"}).expect(t, 201))
	again.expectChange(p, "LATER", "secret.created", 1)

	for _, s := range []*sseStream{eve, bob, other, again} {
		for _, v := range append(values, "changes-import-1", "changes-later-value") {
			if strings.Contains(s.raw.String(), v) {
				t.Fatalf("a stream carries a value: %s", s.raw.String())
			}
		}
	}
	secNoLeak(t, h, values...)
}

// A stream resumes after Last-Event-ID (or after): the changes since are
// sent first, in order, then the new ones, each once.
func TestChangesResume(t *testing.T) {
	h := secSetup(t)
	p1 := pos(t, h.put(secDev+"/secrets/ONE", h.Bob, map[string]any{"value": "resume-value-1"}).expect(t, 201))
	h.patch(secDev+"/secrets/ONE", h.Bob, map[string]any{"description": "not a change"}).expect(t, 200)
	p2 := pos(t, h.put(secDev+"/secrets/TWO", h.Bob, map[string]any{"value": "resume-value-2"}).expect(t, 201))
	p3 := pos(t, h.put(secDev+"/secrets/ONE", h.Bob, map[string]any{"value": "resume-value-3"}).expect(t, 200))

	s, _ := h.watch(t, fmt.Sprintf("%s/changes?after=%d", secDev, p1), h.Eve, nil, false)
	s.ready()
	s.expectChange(p2, "TWO", "secret.created", 1)
	s.expectChange(p3, "ONE", "secret.updated", 2)
	p4 := pos(t, h.del(secDev+"/secrets/TWO", h.Bob).expect(t, 200))
	s.expectChange(p4, "TWO", "secret.deleted", 1)
	s.close()

	// Last-Event-ID wins over after (an EventSource repeats its URL).
	s, _ = h.watch(t, secDev+"/changes?after=0", h.Eve, map[string]string{"Last-Event-ID": strconv.FormatUint(p3, 10)}, false)
	s.ready()
	s.expectChange(p4, "TWO", "secret.deleted", 1)
	p5 := pos(t, h.post(secDev+"/secrets/TWO/restore", h.Bob, nil).expect(t, 200))
	s.expectChange(p5, "TWO", "secret.restored", 1)
	s.close()

	// From the start of the log; and, by default, from the head: nothing
	// old, only what comes.
	s, _ = h.watch(t, secDev+"/changes?after=0", h.Eve, nil, false)
	s.ready()
	for _, want := range []uint64{p1, p2, p3, p4, p5} {
		if c := s.change(); c.Position != want {
			t.Fatalf("from 0: change at %d, want %d", c.Position, want)
		}
	}
	s.close()
	s, _ = h.watch(t, secDev+"/changes", h.Eve, nil, false)
	s.ready()
	p6 := pos(t, h.put(secDev+"/secrets/THREE", h.Bob, map[string]any{"value": "resume-value-6"}).expect(t, 201))
	s.expectChange(p6, "THREE", "secret.created", 1)
	s.close()

	// While another stream keeps the tail running, a resuming one still
	// gets what it missed, then the new changes, each once.
	live, _ := h.watch(t, secDev+"/changes", h.Bob, nil, false)
	live.ready()
	s, _ = h.watch(t, secDev+"/changes", h.Eve, map[string]string{"Last-Event-ID": strconv.FormatUint(p5, 10)}, false)
	s.ready()
	p7 := pos(t, h.put(secDev+"/secrets/THREE", h.Bob, map[string]any{"value": "resume-value-7"}).expect(t, 200))
	s.expectChange(p6, "THREE", "secret.created", 1)
	s.expectChange(p7, "THREE", "secret.updated", 2)
	live.expectChange(p7, "THREE", "secret.updated", 2)

	// Bad positions.
	head := must(h.App.Head(ctx))
	for _, c := range []struct {
		query, lastID, field string
	}{
		{"?after=x", "", "after"},
		{"?after=-1", "", "after"},
		{fmt.Sprintf("?after=%d", head+10), "", "after"},
		{"", "abc", "Last-Event-ID"},
		{"?after=1", fmt.Sprint(head + 10), "Last-Event-ID"},
	} {
		hdr := map[string]string{}
		if c.lastID != "" {
			hdr["Last-Event-ID"] = c.lastID
		}
		_, r := h.watch(t, secDev+"/changes"+c.query, h.Eve, hdr, true)
		r.expectProblem(t, 400, "invalid_request")
		var p api.Problem
		r.decode(t, &p)
		if p.Field != c.field {
			t.Errorf("%q %q: field %q, want %q", c.query, c.lastID, p.Field, c.field)
		}
	}
}

// Who may follow an environment: its viewers and up; another tenant's
// people and anyone not signed in learn nothing; a revoked token's stream
// ends before the next change reaches it.
func TestChangesAccess(t *testing.T) {
	h := secSetup(t)
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "changes-test"}
	must(h.App.CreateProject(ctx, olga, "globex", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, olga, app.Env{Org: "globex", Project: "web", Env: "dev"}, app.EnvSpec{}))

	_, r := h.watch(t, secDev+"/changes", h.Olga, nil, false)
	r.expectProblem(t, 404, "not_found")
	_, r = h.watch(t, "/v1/orgs/globex/projects/web/envs/dev/changes", h.Ada, nil, false)
	r.expectProblem(t, 404, "not_found")
	_, r = h.watch(t, "/v1/orgs/acme/projects/web/envs/nowhere/changes", h.Ada, nil, false)
	r.expectProblem(t, 404, "not_found")
	_, r = h.watch(t, secDev+"/changes", "", nil, false)
	r.expectProblem(t, 401, "unauthenticated")
	r = h.do(call{method: "GET", path: secDev + "/changes", cred: h.Eve, header: map[string]string{"Accept": "application/json"}})
	r.expectProblem(t, 406, "not_acceptable")

	// A token of acme's, revoked while its stream is open.
	var tok struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	h.post("/v1/orgs/acme/tokens", h.Ada, map[string]any{"name": "watcher", "role": "viewer", "ttl_seconds": 3600}).expect(t, 201).decode(t, &tok)
	s, _ := h.watch(t, secDev+"/changes", tok.Secret, nil, false)
	s.ready()
	p := pos(t, h.put(secDev+"/secrets/WATCHED", h.Bob, map[string]any{"value": "watched-value-1"}).expect(t, 201))
	s.expectChange(p, "WATCHED", "secret.created", 1)
	h.del("/v1/orgs/acme/tokens/"+tok.ID, h.Ada).expect(t, 200)
	h.put(secDev+"/secrets/WATCHED", h.Bob, map[string]any{"value": "watched-value-2"}).expect(t, 200)
	s.waitEnd(chgArrive)
	_, r = h.watch(t, secDev+"/changes", tok.Secret, nil, false)
	r.expectProblem(t, 401, "unauthenticated")

	// A person whose role is withdrawn.
	must(h.App.GrantRole(ctx, secAda(), "acme", "vic@example.com", domain.RoleViewer, ""))
	vic := h.signIn("vic@example.com")
	s, _ = h.watch(t, secDev+"/changes", vic, nil, false)
	s.ready()
	h.del("/v1/orgs/acme/members/vic@example.com", h.Ada).expect(t, 200)
	h.put(secDev+"/secrets/WATCHED", h.Bob, map[string]any{"value": "watched-value-3"}).expect(t, 200)
	s.waitEnd(chgArrive)
}

// A stream ends when its request's context does (the client goes away),
// sends keepalives while there is nothing to say, and the server's
// shutdown ends the open streams instead of waiting for them.
func TestChangesEndAndShutdown(t *testing.T) {
	h := secSetup(t)
	h2 := newHarness(t, func(c *api.Config) { c.KeepAlive = 50 * time.Millisecond })
	must(h2.App.CreateProject(ctx, secAda(), "acme", "web", "Web"))
	must(h2.App.CreateEnvironment(ctx, secAda(), app.Env{Org: "acme", Project: "web", Env: "dev"}, app.EnvSpec{}))

	s, _ := h2.watch(t, secDev+"/changes", h2.Eve, nil, false)
	s.ready()
	for i := 0; i < 2; i++ {
		if ev, ok := s.next(chgArrive); !ok || ev.comment != "keepalive" {
			t.Fatalf("no keepalive: %+v", ev)
		}
	}
	s.close()
	waitMetric(t, h2, "stele_change_streams", "0")
	waitMetric(t, h2, "stele_change_tail_running", "0")
	deadline := time.Now().Add(chgArrive)
	for !strings.Contains(h2.Logs.String(), `"route":"/v1/orgs/{org}/projects/{project}/envs/{env}/changes"`) {
		if time.Now().After(deadline) {
			t.Fatal("the stream's request did not end with its context")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The server's own http.Server, shut down with two streams open.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Its WriteTimeout does not cut the streams: each write has a
	// deadline of its own.
	srv := &http.Server{Handler: h.API.Handler(), ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 300 * time.Millisecond}
	go srv.Serve(ln)
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: newValidatingTransport(t, &http.Transport{}, base)}
	a, _ := watchWith(t, client, base, secDev+"/changes", h.Eve, nil, false)
	a.ready()
	b, _ := watchWith(t, client, base, secDev+"/changes", h.Bob, nil, false)
	b.ready()
	time.Sleep(600 * time.Millisecond)
	p := pos(t, h.put(secDev+"/secrets/AFTER_TIMEOUT", h.Bob, map[string]any{"value": "after-timeout-value"}).expect(t, 201))
	a.expectChange(p, "AFTER_TIMEOUT", "secret.created", 1)
	b.expectChange(p, "AFTER_TIMEOUT", "secret.created", 1)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v after %s", err, time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
	a.waitEnd(chgArrive)
	b.waitEnd(chgArrive)
	// The API is closed: a new stream is refused until it is restarted.
	_, r := h.watch(t, secDev+"/changes", h.Eve, nil, false)
	r.expectProblem(t, 503, "not_ready")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
}
