package api

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// The audit feed: one entry per event of an organization, newest first,
// filtered and paged by log position, or exported whole as CSV or JSON
// Lines. Entries say who did what to which object, when and from where;
// events carry no plaintext value, so neither does the feed.

func (s *Server) mountAudit(r chi.Router) {
	r.Get("/orgs/{org}/audit", s.auditFeed)
	r.Get("/orgs/{org}/stats/reads", s.readStats)
	r.Get("/orgs/{org}/audit/evidence", s.auditEvidence)
	s.mountHistory(r)
}

// AuditEntry is one event of the audit feed. Version, Channel and Reason
// are set for reads of a secret's value (secret.viewed).
type AuditEntry struct {
	Position   uint64    `json:"position"`
	RecordedAt time.Time `json:"recorded_at"`
	Actor      string    `json:"actor"`
	ActorKind  string    `json:"actor_kind"`
	Action     string    `json:"action"`
	Stream     string    `json:"stream"`
	Project    string    `json:"project,omitempty"`
	Env        string    `json:"env,omitempty"`
	Secret     string    `json:"secret,omitempty"`
	Target     string    `json:"target"`
	Version    uint64    `json:"version,omitempty"`
	Channel    string    `json:"channel,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	RequestID  string    `json:"request_id,omitempty"`
	ClientAddr string    `json:"client_addr,omitempty"`
}

// AuditPage is a page of the audit feed.
type AuditPage struct {
	Items      []AuditEntry `json:"items"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// auditViewed is the event type of a read of a value.
const auditViewed = "secret.viewed"

// actionRE: an event type ("secret.viewed"), a category ("secret") or a
// prefix ("secret.", "secret.*", "secret.v*").
var actionRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]*)*\*?$`)

// auditFilter reads the feed's filters from the query; on a bad one it
// answers and returns false.
func (s *Server) auditFilter(w http.ResponseWriter, r *http.Request) (projections.AuditFilter, bool) {
	var f projections.AuditFilter
	if !validQuery(w, r) {
		return f, false
	}
	q := r.URL.Query()
	bad := func(field, detail string) (projections.AuditFilter, bool) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Detail: field + ": " + detail})
		return f, false
	}
	if v := q.Get("actor"); v != "" {
		a, err := domain.ParseActor(v)
		if err != nil {
			return bad("actor", "want kind:id, as user:ada@example.com or token:<id>")
		}
		f.Actor = a.String()
	}
	switch v := q.Get("actor_kind"); v {
	case "", string(domain.ActorUser), string(domain.ActorToken), string(domain.ActorSystem), string(domain.ActorAnonymous):
		f.ActorKind = v
	default:
		return bad("actor_kind", "want user, token, system or anonymous")
	}
	if v := q.Get("action"); v != "" {
		if len(v) > 100 || !actionRE.MatchString(v) {
			return bad("action", "want an event type (secret.viewed), a category (secret) or a prefix (secret.*)")
		}
		f.Action = v
	}
	if v := q.Get("secret"); v != "" {
		if !domain.ValidSecretName(v) {
			return bad("secret", "want a secret name")
		}
		f.Secret = v
	}
	if v := q.Get("project"); v != "" {
		if !domain.ValidSlug(v) {
			return bad("project", "want a project slug")
		}
		f.Project = v
	}
	if v := q.Get("env"); v != "" {
		if !domain.ValidSlug(v) {
			return bad("env", "want an environment slug")
		}
		f.Env = v
	}
	var ok bool
	if f.From, ok = queryTime(w, r, "from"); !ok {
		return f, false
	}
	if f.To, ok = queryTime(w, r, "to"); !ok {
		return f, false
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return bad("to", "the window is empty: want from before to")
	}
	return f, true
}

// validQuery answers 400 when the query string does not parse (such as
// a pair separated by ';'), which r.URL.Query would silently drop.
func validQuery(w http.ResponseWriter, r *http.Request) bool {
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		problem(w, r, http.StatusBadRequest, "invalid_request", "the query string does not parse: separate parameters with '&' and escape reserved characters")
		return false
	}
	return true
}

// queryTime reads an optional RFC 3339 time from the query (zero when
// absent), in UTC; on a bad value it answers and returns false.
// queryWindow reads the optional from and to query parameters; when both
// are given, from must come before to. On a bad value it answers and
// returns false.
func queryWindow(w http.ResponseWriter, r *http.Request) (from, to time.Time, ok bool) {
	if from, ok = queryTime(w, r, "from"); !ok {
		return
	}
	if to, ok = queryTime(w, r, "to"); !ok {
		return
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "to", Detail: "to: the window is empty: want from before to"})
		return from, to, false
	}
	return from, to, true
}

func queryTime(w http.ResponseWriter, r *http.Request, name string) (time.Time, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, true
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: name,
			Detail: name + ": want an RFC 3339 time, as 2026-01-31T23:00:00Z"})
		return time.Time{}, false
	}
	return t.UTC(), true
}

// parseCursor reads a feed cursor: the position below which the next page
// starts.
func parseCursor(v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	p, err := strconv.ParseUint(v, 10, 63)
	if err != nil || p == 0 {
		return 0, errors.New("not a cursor of this feed")
	}
	return p, nil
}

func (s *Server) auditFeed(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.authorize(w, r, org, "", "", domain.PermReadAudit); !ok {
		return
	}
	f, ok := s.auditFilter(w, r)
	if !ok {
		return
	}
	format := r.URL.Query().Get("format")
	switch format {
	case "", "json", "csv", "jsonl":
	default:
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "format", Detail: "format: want json, csv or jsonl"})
		return
	}
	cursor, err := parseCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "cursor", Detail: "cursor: " + err.Error()})
		return
	}
	limit, ok := queryInt(w, r, "limit", projections.DefaultAuditPage, 1, projections.MaxAuditPage)
	if !ok {
		return
	}
	if !s.awaitPosition(w, r, "audit", "access") {
		return
	}
	if format == "csv" || format == "jsonl" {
		s.exportAudit(w, r, org, f, cursor, format)
		return
	}
	entries, next, err := s.auditPage(r, org, f, cursor, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := AuditPage{Items: entries}
	if next > 0 {
		page.NextCursor = strconv.FormatUint(next, 10)
	}
	writeJSON(w, http.StatusOK, page)
}

// auditPage reads one page of the feed, with the details of the reads in
// it (version, channel, reason) from the access read model.
func (s *Server) auditPage(r *http.Request, org string, f projections.AuditFilter, cursor uint64, limit int) ([]AuditEntry, uint64, error) {
	rows, next, err := s.cfg.Reader.AuditFeed(r.Context(), org, f, cursor, limit)
	if err != nil {
		return nil, 0, err
	}
	var viewed []uint64
	for _, row := range rows {
		if row.Action == auditViewed {
			viewed = append(viewed, row.Position)
		}
	}
	reads := map[uint64]projections.SecretRead{}
	if len(viewed) > 0 {
		// The access read model follows the log like the audit one; make
		// sure it holds the reads of this page (viewed is newest first).
		if err := projections.WaitFor(r.Context(), s.cfg.Pool, viewed[0], s.cfg.ReadWait, "access"); err != nil {
			return nil, 0, err
		}
		rs, err := s.cfg.Reader.ReadsAt(r.Context(), org, viewed)
		if err != nil {
			return nil, 0, err
		}
		for _, x := range rs {
			reads[x.Position] = x
		}
	}
	out := make([]AuditEntry, len(rows))
	for i, row := range rows {
		e := AuditEntry{Position: row.Position, RecordedAt: row.RecordedAt.UTC(), Actor: row.Actor, ActorKind: row.ActorKind, Action: row.Action,
			Stream: row.Stream, Project: row.Project, Env: row.Env, Target: row.Target, RequestID: row.RequestID, ClientAddr: row.ClientAddr}
		if strings.HasPrefix(row.Stream, "secret/") {
			e.Secret = row.Target
		}
		if x, ok := reads[row.Position]; ok {
			e.Version, e.Channel, e.Reason = uint64(x.Version), x.Channel, x.Reason
		}
		out[i] = e
	}
	return out, next, nil
}

// auditCSVHeader names the columns of the CSV export.
var auditCSVHeader = []string{"position", "recorded_at", "actor", "actor_kind", "action", "project", "env", "secret", "target",
	"stream", "version", "channel", "reason", "request_id", "client_addr"}

func (e AuditEntry) csvRecord() []string {
	version := ""
	if e.Version > 0 {
		version = strconv.FormatUint(e.Version, 10)
	}
	rec := []string{strconv.FormatUint(e.Position, 10), e.RecordedAt.Format(time.RFC3339Nano), e.Actor, e.ActorKind, e.Action,
		e.Project, e.Env, e.Secret, e.Target, e.Stream, version, e.Channel, e.Reason, e.RequestID, e.ClientAddr}
	for i := range rec {
		rec[i] = guardCell(rec[i])
	}
	return rec
}

// guardCell keeps a spreadsheet from reading a cell as a formula: text
// that starts with = + - @ (or a tab or carriage return, which some
// spreadsheets skip before looking) gets a leading apostrophe.
func guardCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// exportAudit streams every entry of the feed that matches f, from
// cursor down, page by page: as CSV (RFC 4180, with a header row) or as
// JSON Lines. Entries appended while the export runs are not included,
// so the export is the feed as of its first page. An error after the
// first bytes aborts the response, so that a client never takes a
// truncated export for a whole one.
func (s *Server) exportAudit(w http.ResponseWriter, r *http.Request, org string, f projections.AuditFilter, cursor uint64, format string) {
	entries, next, err := s.auditPage(r, org, f, cursor, projections.MaxAuditPage)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := org + "-audit-" + s.now().UTC().Format("20060102T150405Z")
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	var write func([]AuditEntry) error
	var flush func() error
	rc := http.NewResponseController(w)
	if format == "csv" {
		h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name + ".csv"}))
		cw := csv.NewWriter(w)
		cw.UseCRLF = true
		if err := cw.Write(auditCSVHeader); err != nil {
			return
		}
		write = func(es []AuditEntry) error {
			for _, e := range es {
				if err := cw.Write(e.csvRecord()); err != nil {
					return err
				}
			}
			cw.Flush()
			return cw.Error()
		}
	} else {
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name + ".jsonl"}))
		enc := json.NewEncoder(w)
		write = func(es []AuditEntry) error {
			for _, e := range es {
				if err := enc.Encode(e); err != nil {
					return err
				}
			}
			return nil
		}
	}
	flush = func() error {
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	}
	w.WriteHeader(http.StatusOK)
	for {
		if err := write(entries); err != nil {
			return // the client left
		}
		if err := flush(); err != nil {
			return
		}
		if next == 0 {
			return
		}
		if entries, next, err = s.auditPage(r, org, f, next, projections.MaxAuditPage); err != nil {
			if r.Context().Err() == nil {
				s.log.Error("audit export failed", "err", err, "request_id", middleware.GetReqID(r.Context()))
			}
			panic(http.ErrAbortHandler)
		}
	}
}

// ReadStat counts the reads of one secret's values on one day (UTC) by
// one kind of actor.
type ReadStat struct {
	Day       string `json:"day"`
	Project   string `json:"project"`
	Env       string `json:"env"`
	Name      string `json:"name"`
	ActorKind string `json:"actor_kind"`
	Reads     int64  `json:"reads"`
}

// readStats answers the reads of an organization's secret values per
// secret, day and kind of actor, for the days that overlap [from, to).
func (s *Server) readStats(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.authorize(w, r, org, "", "", domain.PermReadAudit); !ok {
		return
	}
	if !validQuery(w, r) {
		return
	}
	from, to, ok := queryWindow(w, r)
	if !ok {
		return
	}
	if !s.awaitPosition(w, r, "access") {
		return
	}
	stats, err := s.cfg.Reader.AccessStats(r.Context(), org, from, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]ReadStat, len(stats))
	for i, x := range stats {
		out[i] = ReadStat{Day: x.Day.UTC().Format(time.DateOnly), Project: x.Project, Env: x.Env, Name: x.Name, ActorKind: x.ActorKind, Reads: x.Reads}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": out})
}
