package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// Change notifications: GET …/envs/{env}/changes is a stream of
// server-sent events, one for every event of the log that changes the
// current value or the existence of a secret of the environment. It says
// which secret changed, how, and where in the log; never a value. Clients
// (`stele run --watch`) then fetch the new values, which is itself a
// recorded read.
//
// One goroutine per server process follows the log (the hub's tail) and
// fans the changes out to the open streams by environment; it starts with
// the first stream and stops with the last. A stream that resumes from an
// earlier position (Last-Event-ID) reads the part of the log it missed
// once, on its own, and then takes the tail's changes.

// Change is one change notification: the data of an SSE event "change".
type Change struct {
	Position uint64 `json:"position"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	// Version is the version the event is about (absent when it has none).
	Version uint64 `json:"version,omitempty"`
}

// changeTypes are the secret events that change a current value or
// whether a secret exists. Metadata changes, reseals (the same value under
// a new key) and reads are not changes of the value.
var changeTypes = map[string]bool{
	domain.SecretCreated{}.EventType():          true,
	domain.SecretUpdated{}.EventType():          true,
	domain.SecretRolledBack{}.EventType():       true,
	domain.SecretDeleted{}.EventType():          true,
	domain.SecretRestored{}.EventType():         true,
	domain.SecretVersionDestroyed{}.EventType(): true,
}

// changeStreamPrefix starts the stream of every secret
// (domain.SecretStream).
var changeStreamPrefix = domain.SecretStream("", "", "", "")[:len("secret/")]

// changeEnvKey names an environment in the hub.
func changeEnvKey(org, project, env string) string { return org + "/" + project + "/" + env }

// changeOf says whether rec changes a secret, and which: the environment
// (its hub key) and the secret's name. It reads only the stream and type.
func changeOf(rec eventstore.Record) (env, name string, ok bool) {
	if !changeTypes[rec.Type] {
		return "", "", false
	}
	rest, ok := strings.CutPrefix(rec.StreamID, changeStreamPrefix)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 || strings.Count(rest[:i], "/") != 2 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// changeFrom is the notification of a record that changeOf accepted. Only
// the version is read from the event's data.
func changeFrom(rec eventstore.Record, name string) Change {
	var d struct {
		Version uint64 `json:"version"`
	}
	_ = json.Unmarshal(rec.Data, &d)
	return Change{Position: rec.Position, Name: name, Type: rec.Type, Version: d.Version}
}

// changeSubBuffer is how many changes a stream may fall behind the tail
// before the hub ends it (its client then resumes with Last-Event-ID).
const changeSubBuffer = 256

// changeSub is one open stream, subscribed to one environment.
type changeSub struct {
	env  string
	ch   chan Change
	done chan struct{} // closed when the hub ends the stream
	once sync.Once
	// ended and removed are guarded by the hub's mutex.
	ended, removed bool
	// why says why the hub ended it (for the request log).
	why string
}

func (c *changeSub) end(why string) {
	c.once.Do(func() { c.why = why; close(c.done) })
}

// errHubClosed: the server is shutting down.
var errHubClosed = errors.New("api: the server is shutting down")

// changeHub follows the log once for every stream of the process.
type changeHub struct {
	src changeSource
	log *slog.Logger

	mu     sync.Mutex
	subs   map[string]map[*changeSub]struct{}
	n      int    // subscribers, ended ones included until they leave
	pos    uint64 // the tail has dispatched every change up to pos
	gen    uint64 // the current tail's generation; a stopped tail's dispatches are ignored
	stop   context.CancelFunc
	closed bool
	tails  sync.WaitGroup
}

// changeSource is the part of the ledger the hub reads.
type changeSource interface {
	Head(ctx context.Context) (eventstore.Head, error)
	ReadAll(ctx context.Context, from uint64, limit int) ([]eventstore.Record, error)
	Wait(ctx context.Context, position uint64) (eventstore.Head, error)
}

func newChangeHub(src changeSource, log *slog.Logger) *changeHub {
	return &changeHub{src: src, log: log, subs: map[string]map[*changeSub]struct{}{}}
}

// subscribe opens a stream of env's changes. The hub delivers every
// change after live (the tail's position when it subscribed) to the
// subscriber's channel; what lies between the subscriber's own start and
// live is the subscriber's to read. The first subscriber starts the tail
// at the log's head.
func (h *changeHub) subscribe(ctx context.Context, env string) (sub *changeSub, live uint64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, 0, errHubClosed
	}
	if h.stop == nil {
		head, err := h.src.Head(ctx)
		if err != nil {
			return nil, 0, err
		}
		h.pos = head.Position
		h.gen++
		tctx, cancel := context.WithCancel(context.Background())
		h.stop = cancel
		h.tails.Add(1)
		go h.tail(tctx, h.gen, h.pos+1)
	}
	sub = &changeSub{env: env, ch: make(chan Change, changeSubBuffer), done: make(chan struct{})}
	if h.subs[env] == nil {
		h.subs[env] = map[*changeSub]struct{}{}
	}
	h.subs[env][sub] = struct{}{}
	h.n++
	return sub, h.pos, nil
}

// unsubscribe removes a stream; the last one stops the tail.
func (h *changeHub) unsubscribe(sub *changeSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub.removed {
		return
	}
	sub.removed = true
	if m := h.subs[sub.env]; m != nil {
		delete(m, sub)
		if len(m) == 0 {
			delete(h.subs, sub.env)
		}
	}
	h.n--
	if h.n == 0 {
		h.stopTail()
	}
}

// stopTail stops the running tail, if any (h.mu held).
func (h *changeHub) stopTail() {
	if h.stop != nil {
		h.stop()
		h.stop = nil
		h.gen++
	}
}

// endAll ends every open stream (h.mu held).
func (h *changeHub) endAll(why string) {
	for _, m := range h.subs {
		for sub := range m {
			sub.ended = true
			sub.end(why)
		}
	}
}

// close ends every stream, stops the tail and refuses new streams.
func (h *changeHub) close() {
	h.mu.Lock()
	h.closed = true
	h.endAll("the server is shutting down")
	h.stopTail()
	h.mu.Unlock()
	h.tails.Wait()
}

// stats says how many streams are open and whether the tail runs.
func (h *changeHub) stats() (streams int, tailing bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n, h.stop != nil
}

// tail follows the log from position from on and dispatches its changes,
// until ctx ends. When the log cannot be read it ends every stream (the
// clients resume from their last event) and stops; the next stream starts
// a new tail.
func (h *changeHub) tail(ctx context.Context, gen, from uint64) {
	defer h.tails.Done()
	for {
		recs, err := h.src.ReadAll(ctx, from, 500)
		if err == nil && len(recs) == 0 {
			if _, err = h.src.Wait(ctx, from); err == nil {
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.log.Warn("change notifications: the log could not be read; ending the open change streams", "err", err, "position", from)
			h.mu.Lock()
			if h.gen == gen {
				h.endAll("the log could not be read")
				h.stop = nil
				h.gen++
			}
			h.mu.Unlock()
			return
		}
		if !h.dispatch(gen, recs) {
			return
		}
		from = recs[len(recs)-1].Position + 1
	}
}

// dispatch hands recs' changes to the streams of their environments. A
// stream too far behind to take one is ended. It returns false when the
// tail is no longer the current one.
func (h *changeHub) dispatch(gen uint64, recs []eventstore.Record) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen != gen {
		return false
	}
	for _, rec := range recs {
		env, name, ok := changeOf(rec)
		if !ok || len(h.subs[env]) == 0 {
			continue
		}
		c := changeFrom(rec, name)
		for sub := range h.subs[env] {
			if sub.ended {
				continue
			}
			select {
			case sub.ch <- c:
			default:
				sub.ended = true
				sub.end("the client fell too far behind")
			}
		}
	}
	h.pos = recs[len(recs)-1].Position
	return true
}

// changesPage is how many records a resuming stream reads at once.
const changesPage = 500

// changeWriteWait bounds each write to a change stream.
const changeWriteWait = 30 * time.Second

// watchChanges serves GET …/envs/{env}/changes.
func (s *Server) watchChanges(w http.ResponseWriter, r *http.Request) {
	e := secEnv(r)
	if negotiate(r.Header.Get("Accept"), "text/event-stream") == "" {
		problem(w, r, http.StatusNotAcceptable, "not_acceptable", "changes are served as text/event-stream")
		return
	}
	if _, ok := s.authorize(w, r, e.Org, e.Project, e.Env, domain.PermReadMetadata); !ok {
		return
	}
	id, _ := identity(r)
	if err := s.cfg.App.CheckEnvironment(r.Context(), id.Actor, e); err != nil {
		s.fail(w, r, err)
		return
	}
	if s.changes == nil {
		s.fail(w, r, errNoLedger)
		return
	}
	// Where to start: Last-Event-ID (a reconnecting client) over after
	// (which a reconnecting EventSource repeats), else the head.
	field, v := "Last-Event-ID", strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if v == "" {
		field, v = "after", r.URL.Query().Get("after")
	}
	var after uint64
	if v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Detail: field + ": want a log position (0 or more)"})
			return
		}
		after = n
	}
	head, err := s.cfg.Ledger.Head(r.Context())
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	if v == "" {
		after = head.Position
	} else if after > head.Position {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field,
			Detail: fmt.Sprintf("%s: position %d is beyond the log's head (%d)", field, after, head.Position)})
		return
	}
	env := changeEnvKey(e.Org, e.Project, e.Env)
	sub, live, err := s.changes.subscribe(r.Context(), env)
	if errors.Is(err, errHubClosed) {
		retryAfter(w, 1)
		problem(w, r, http.StatusServiceUnavailable, "not_ready", "the server is shutting down; connect again")
		return
	}
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	defer s.changes.unsubscribe(sub)
	s.closeOnShutdown(r)

	ctx := r.Context()
	reqID := middleware.GetReqID(ctx)
	rc := http.NewResponseController(w)
	// Each write gets a deadline of its own, instead of the server's
	// WriteTimeout (if any), which would cut every stream at that age: a
	// client that stops reading is let go, one that reads stays.
	deadline := func() {
		_ = rc.SetWriteDeadline(time.Now().Add(changeWriteWait))
	}
	flush := func() bool {
		err := rc.Flush()
		return err == nil || errors.Is(err, http.ErrNotSupported)
	}
	// stillAllowed re-checks the credential and the caller's access: a
	// revoked token, an ended session or a withdrawn role ends the stream.
	cred := s.credentialOf(r)
	stillAllowed := func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		now, err := s.cfg.App.Authenticate(cctx, cred)
		if err == nil && now.Actor != id.Actor {
			err = errors.New("the credential names another actor")
		}
		if err == nil {
			_, err = s.cfg.App.Authorize(cctx, id.Actor, e.Org, e.Project, e.Env, domain.PermReadMetadata)
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Info("change stream ended: the caller's access no longer holds", "reason", err.Error(), "request_id", reqID, "actor", id.Actor.String())
			}
			return false
		}
		return true
	}
	send := func(cs []Change) bool {
		if len(cs) == 0 {
			return true
		}
		if !stillAllowed() {
			return false
		}
		deadline()
		for _, c := range cs {
			b, err := json.Marshal(c)
			if err != nil {
				return false
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: change\ndata: %s\n\n", c.Position, b); err != nil {
				return false
			}
		}
		return flush()
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // proxies: do not hold events back
	deadline()
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, ": ready\n\n"); err != nil || !flush() {
		return
	}

	// What the stream missed before the tail took it over: (after, live].
	last := after
	for from := after + 1; from <= live; {
		recs, err := s.cfg.Ledger.ReadAll(ctx, from, changesPage)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("change stream ended: the log could not be read", "err", err, "request_id", reqID)
			}
			return
		}
		if len(recs) == 0 {
			break
		}
		var batch []Change
		for _, rec := range recs {
			if rec.Position > live {
				break
			}
			if en, name, ok := changeOf(rec); ok && en == env {
				batch = append(batch, changeFrom(rec, name))
			}
		}
		if !send(batch) {
			return
		}
		from = recs[len(recs)-1].Position + 1
	}
	last = max(last, live)

	keepAlive := time.NewTicker(s.cfg.KeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.done:
			s.log.Info("change stream ended by the server", "reason", sub.why, "request_id", reqID)
			return
		case c := <-sub.ch:
			batch := []Change{c}
		more:
			for len(batch) < changesPage {
				select {
				case c := <-sub.ch:
					batch = append(batch, c)
				default:
					break more
				}
			}
			fresh := batch[:0]
			for _, c := range batch {
				if c.Position > last {
					fresh = append(fresh, c)
				}
			}
			if !send(fresh) {
				return
			}
			if len(fresh) > 0 {
				last = fresh[len(fresh)-1].Position
			}
		case <-keepAlive.C:
			if !stillAllowed() {
				return
			}
			deadline()
			if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil || !flush() {
				return
			}
		}
	}
}

// credentialOf is the credential a request was authenticated by: its
// bearer credential, else its session cookie.
func (s *Server) credentialOf(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		_, cred, _ := strings.Cut(h, " ")
		return strings.TrimSpace(cred)
	}
	if ck, err := r.Cookie(s.sessionCookieName()); err == nil {
		return ck.Value
	}
	return ""
}

// closeOnShutdown makes the http.Server that serves r end the change
// streams when it shuts down: Shutdown waits for every active request,
// and a stream would otherwise hold it up to its deadline.
func (s *Server) closeOnShutdown(r *http.Request) {
	hs, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	if _, loaded := s.shutdownHooks.LoadOrStore(hs, true); !loaded {
		hs.RegisterOnShutdown(s.Close)
	}
}
