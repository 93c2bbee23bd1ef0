package api

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/domain"
)

// The compliance reports: tables drawn from the read models (with the
// dashboard's queries where it has them), as JSON or CSV, for an
// organization's auditors (the audit permission, organization-wide).
//
//	stale-secrets      secrets whose value is older than their rotation interval
//	production-reads   reads of production values by people (not machines)
//	old-keys           data keys that outlived their environment's rotation interval
//	approvals          approval requests people approved: by whom, for whom, which keys
//	production-tokens  live service tokens that may reveal production values

// reportMaxRows caps a report's rows; a report cut there says so
// (truncated, and the X-Stele-Truncated header).
const reportMaxRows = 100_000

// Report is a report's answer. Columns name the items' fields in order
// (the CSV export's header).
type Report struct {
	Report      string    `json:"report"`
	Org         string    `json:"org"`
	GeneratedAt time.Time `json:"generated_at"`
	// From and To are the window of reports over a period.
	From *time.Time `json:"from,omitempty"`
	To   *time.Time `json:"to,omitempty"`
	// Days is stale-secrets' age limit for secrets without their own
	// rotation interval (0: such secrets are not listed).
	Days      int      `json:"days,omitempty"`
	Columns   []string `json:"columns"`
	Items     any      `json:"items"`
	Truncated bool     `json:"truncated,omitempty"`
}

// StaleSecretRow is a secret not rotated within its interval.
type StaleSecretRow struct {
	Project    string `json:"project"`
	Env        string `json:"env"`
	Production bool   `json:"production"`
	Name       string `json:"name"`
	Version    int64  `json:"version"`
	Owner      string `json:"owner"`
	// IntervalSeconds is the interval the value outlived: its own
	// rotation interval (Policy "secret") or the report's days (Policy
	// "days").
	IntervalSeconds int64     `json:"interval_seconds"`
	Policy          string    `json:"policy"`
	ValueSetAt      time.Time `json:"value_set_at"`
	AgeDays         int       `json:"age_days"`
	OverdueDays     int       `json:"overdue_days"`
}

// ProductionReadRow is a read of a production value by a person.
type ProductionReadRow struct {
	RecordedAt time.Time `json:"recorded_at"`
	Actor      string    `json:"actor"`
	Project    string    `json:"project"`
	Env        string    `json:"env"`
	Secret     string    `json:"secret"`
	Version    int64     `json:"version"`
	Channel    string    `json:"channel"`
	Reason     string    `json:"reason"`
	Position   uint64    `json:"position"`
}

// OldKeyRow is a data key, not destroyed, older than its environment's
// rotation interval.
type OldKeyRow struct {
	Project         string    `json:"project"`
	Env             string    `json:"env"`
	Production      bool      `json:"production"`
	KeyID           int64     `json:"key_id"`
	State           string    `json:"state"`
	Primary         bool      `json:"primary"`
	AddedAt         time.Time `json:"added_at"`
	AgeDays         int       `json:"age_days"`
	RotationSeconds int64     `json:"rotation_seconds"`
	OverdueDays     int       `json:"overdue_days"`
}

// ApprovalGrantedRow is an approval request that people approved.
type ApprovalGrantedRow struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Project string `json:"project"`
	Env     string `json:"env"`
	// Requester is who the approval was for; ApprovedBy who approved.
	Requester  string   `json:"requester"`
	ApprovedBy []string `json:"approved_by"`
	Required   int32    `json:"approvals_required"`
	// Keys are the keys asked for; GrantedKeys those every approver let
	// through; DeliveredKeys those delivered.
	Keys          []string   `json:"keys"`
	GrantedKeys   []string   `json:"granted_keys"`
	DeliveredKeys []string   `json:"delivered_keys"`
	Status        string     `json:"status"`
	RequestedAt   time.Time  `json:"requested_at"`
	DecidedAt     *time.Time `json:"decided_at,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
}

// ProductionTokenRow is a live service token that may reveal the values
// of production environments.
type ProductionTokenRow struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Role         string   `json:"role"`
	Project      string   `json:"project"`
	Environments []string `json:"environments"`
	// ProductionEnvs are the production environments (project/env) it
	// covers.
	ProductionEnvs []string  `json:"production_envs"`
	ExpiresAt      time.Time `json:"expires_at"`
	IssuedBy       string    `json:"issued_by"`
	IssuedAt       time.Time `json:"issued_at"`
}

// reportSpec is one report: the read models it waits for, whether it
// takes a window or days, its columns, and how it is built.
type reportSpec struct {
	models       []string
	window, days bool
	columns      []string
	build        func(s *Server, r *http.Request, q reportQuery) (items any, truncated bool, err error)
}

// reportQuery is what a report is asked for.
type reportQuery struct {
	org      string
	from, to time.Time
	days     int
	now      time.Time
}

var reports = map[string]reportSpec{
	"stale-secrets": {models: []string{"secrets", "directory"}, days: true, build: (*Server).reportStaleSecrets,
		columns: []string{"project", "env", "production", "name", "version", "owner", "interval_seconds", "policy", "value_set_at", "age_days", "overdue_days"}},
	"production-reads": {models: []string{"access", "directory"}, window: true, build: (*Server).reportProductionReads,
		columns: []string{"recorded_at", "actor", "project", "env", "secret", "version", "channel", "reason", "position"}},
	"old-keys": {models: []string{"keys", "secrets", "directory"}, build: (*Server).reportOldKeys,
		columns: []string{"project", "env", "production", "key_id", "state", "primary", "added_at", "age_days", "rotation_seconds", "overdue_days"}},
	"approvals": {models: []string{"approvals"}, window: true, build: (*Server).reportApprovals,
		columns: []string{"id", "kind", "project", "env", "requester", "approved_by", "approvals_required", "keys", "granted_keys", "delivered_keys",
			"status", "requested_at", "decided_at", "delivered_at"}},
	"production-tokens": {models: []string{"access_control", "directory"}, build: (*Server).reportProductionTokens,
		columns: []string{"id", "name", "role", "project", "environments", "production_envs", "expires_at", "issued_by", "issued_at"}},
}

// reportNames lists the reports, in order.
func reportNames() []string {
	var out []string
	for name := range reports {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	org, name := chi.URLParam(r, "org"), chi.URLParam(r, "report")
	if _, ok := s.authorize(w, r, org, "", "", domain.PermReadAudit); !ok {
		return
	}
	spec, known := reports[name]
	if !known {
		problem(w, r, http.StatusNotFound, "not_found", "no report "+name+"; the reports are "+strings.Join(reportNames(), ", "))
		return
	}
	if !validQuery(w, r) {
		return
	}
	bad := func(field, detail string) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Detail: field + ": " + detail})
	}
	q := reportQuery{org: org, now: s.now().UTC()}
	in := r.URL.Query()
	format := in.Get("format")
	switch format {
	case "", "json", "csv":
	default:
		bad("format", "want json or csv")
		return
	}
	for _, p := range []string{"from", "to"} {
		if in.Get(p) != "" && !spec.window {
			bad(p, "the "+name+" report covers no period")
			return
		}
	}
	if in.Get("days") != "" && !spec.days {
		bad("days", "only stale-secrets takes days")
		return
	}
	var ok bool
	if q.from, q.to, ok = queryWindow(w, r); !ok {
		return
	}
	if q.days, ok = queryInt(w, r, "days", 0, 0, 36500); !ok {
		return
	}
	if !s.awaitPosition(w, r, spec.models...) {
		return
	}
	items, truncated, err := spec.build(s, r, q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := Report{Report: name, Org: org, GeneratedAt: q.now, Days: q.days, Columns: spec.columns, Items: items, Truncated: truncated}
	if spec.window {
		to := q.to
		if to.IsZero() {
			to = q.now
		}
		out.To = &to
		if !q.from.IsZero() {
			out.From = &q.from
		}
	}
	if truncated {
		w.Header().Set("X-Stele-Truncated", "true")
	}
	if format != "csv" {
		writeJSON(w, http.StatusOK, out)
		return
	}
	body, err := reportCSV(spec.columns, items)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": org + "-" + name + "-" + q.now.Format("20060102T150405Z") + ".csv"}))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// reportCSV writes rows (a slice of structs) as CSV under a header of
// columns: each cell is the JSON field of that name, a list joined with
// spaces, null empty; cells that a spreadsheet would take for a formula
// are guarded as in the audit feed's export.
func reportCSV(columns []string, rows any) ([]byte, error) {
	b, err := json.Marshal(rows)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var items []map[string]any
	if err := dec.Decode(&items); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	cw.UseCRLF = true
	cw.Write(columns)
	rec := make([]string, len(columns))
	for _, it := range items {
		for i, c := range columns {
			rec[i] = guardCell(reportCell(it[c]))
		}
		cw.Write(rec)
	}
	cw.Flush()
	return buf.Bytes(), cw.Error()
}

func reportCell(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = reportCell(e)
		}
		return strings.Join(parts, " ")
	}
	return fmt.Sprint(v)
}

// wholeDays counts whole days in d (none when negative).
func wholeDays(d time.Duration) int { return int(max(d, 0) / (24 * time.Hour)) }

// productionOf maps an organization's environments to their production
// flag.
func (s *Server) productionOf(r *http.Request, org string) (map[[2]string]bool, error) {
	envs, err := s.cfg.Reader.Environments(r.Context(), org, "")
	if err != nil {
		return nil, err
	}
	out := make(map[[2]string]bool, len(envs))
	for _, e := range envs {
		out[[2]string{e.Project, e.ID}] = e.Production
	}
	return out, nil
}

// reportStaleSecrets: the dashboard's secrets not rotated in time, with
// how long overdue.
func (s *Server) reportStaleSecrets(r *http.Request, q reportQuery) (any, bool, error) {
	older := time.Duration(q.days) * 24 * time.Hour
	rows, err := s.cfg.Reader.SecretsNotRotated(r.Context(), q.org, older, q.now)
	if err != nil {
		return nil, false, err
	}
	prod, err := s.productionOf(r, q.org)
	if err != nil {
		return nil, false, err
	}
	out := []StaleSecretRow{}
	for _, x := range rows {
		interval, policy := time.Duration(x.RotationSeconds)*time.Second, "secret"
		if x.RotationSeconds <= 0 {
			interval, policy = older, "days"
		}
		age := q.now.Sub(x.ValueUpdatedAt)
		out = append(out, StaleSecretRow{Project: x.Project, Env: x.Env, Production: prod[[2]string{x.Project, x.Env}], Name: x.Name, Version: x.Version,
			Owner: x.Owner, IntervalSeconds: int64(interval / time.Second), Policy: policy, ValueSetAt: x.ValueUpdatedAt.UTC(),
			AgeDays: wholeDays(age), OverdueDays: wholeDays(age - interval)})
		if len(out) == reportMaxRows {
			return out, len(rows) > reportMaxRows, nil
		}
	}
	return out, false, nil
}

// reportProductionReads: every read of a production value by a person
// in the window (the dashboard counts them by actor).
func (s *Server) reportProductionReads(r *http.Request, q reportQuery) (any, bool, error) {
	to := q.to
	if to.IsZero() {
		to = q.now
	}
	reads, err := s.cfg.Reader.ProductionReads(r.Context(), q.org, string(domain.ActorUser), q.from, to, reportMaxRows+1)
	if err != nil {
		return nil, false, err
	}
	truncated := len(reads) > reportMaxRows
	if truncated {
		reads = reads[:reportMaxRows]
	}
	out := make([]ProductionReadRow, len(reads))
	for i, x := range reads {
		out[i] = ProductionReadRow{RecordedAt: x.RecordedAt.UTC(), Actor: x.Actor, Project: x.Project, Env: x.Env, Secret: x.Name, Version: x.Version,
			Channel: x.Channel, Reason: x.Reason, Position: x.Position}
	}
	return out, truncated, nil
}

// reportOldKeys: the keys of the dashboard's keysets, not destroyed,
// older than their environment's rotation interval.
func (s *Server) reportOldKeys(r *http.Request, q reportQuery) (any, bool, error) {
	sets, envs, err := s.keysetRead(r, q.org)
	if err != nil {
		return nil, false, err
	}
	out := []OldKeyRow{}
	for _, set := range sets {
		env := envs[[2]string{set.Project, set.Env}]
		interval, production := domain.DefaultRotationInterval, false
		if env != nil {
			production = env.Production
			if env.RotationSeconds > 0 {
				interval = time.Duration(env.RotationSeconds) * time.Second
			}
		}
		for _, k := range set.Keys {
			age := q.now.Sub(k.AddedAt)
			if k.State == string(domain.KeyStateDestroyed) || age <= interval {
				continue
			}
			out = append(out, OldKeyRow{Project: set.Project, Env: set.Env, Production: production, KeyID: k.ID, State: k.State, Primary: k.Primary,
				AddedAt: k.AddedAt.UTC(), AgeDays: wholeDays(age), RotationSeconds: int64(interval / time.Second), OverdueDays: wholeDays(age - interval)})
		}
	}
	return out, false, nil
}

// reportApprovals: the requests people approved, requested in the window.
func (s *Server) reportApprovals(r *http.Request, q reportQuery) (any, bool, error) {
	to := q.to
	if to.IsZero() {
		to = q.now
	}
	rows, err := s.cfg.Reader.ApprovalsGranted(r.Context(), q.org, q.from, to, q.now, reportMaxRows+1)
	if err != nil {
		return nil, false, err
	}
	truncated := len(rows) > reportMaxRows
	if truncated {
		rows = rows[:reportMaxRows]
	}
	out := make([]ApprovalGrantedRow, len(rows))
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	for i, a := range rows {
		row := ApprovalGrantedRow{ID: a.ID, Kind: a.Kind, Project: a.Project, Env: a.Env, Requester: a.Requester, ApprovedBy: nonNil(a.ApprovedBy),
			Required: max(a.ApprovalsRequired, 1), Keys: []string{}, GrantedKeys: nonNil(a.GrantedKeys), DeliveredKeys: []string{}, Status: a.Status,
			RequestedAt: a.RequestedAt.UTC()}
		for _, k := range a.Keys {
			row.Keys = append(row.Keys, k.Name)
		}
		for _, k := range a.DeliveredKeys {
			row.DeliveredKeys = append(row.DeliveredKeys, k.Name)
		}
		if a.DecidedAt != nil {
			t := a.DecidedAt.UTC()
			row.DecidedAt = &t
		}
		if a.DeliveredAt != nil {
			t := a.DeliveredAt.UTC()
			row.DeliveredAt = &t
		}
		out[i] = row
	}
	return out, truncated, nil
}

// reportProductionTokens: tokens neither revoked nor expired whose role
// may reveal values and whose scope covers a production environment.
func (s *Server) reportProductionTokens(r *http.Request, q reportQuery) (any, bool, error) {
	tokens, err := s.cfg.Reader.Tokens(r.Context(), q.org)
	if err != nil {
		return nil, false, err
	}
	envs, err := s.cfg.Reader.Environments(r.Context(), q.org, "")
	if err != nil {
		return nil, false, err
	}
	out := []ProductionTokenRow{}
	for _, t := range tokens {
		role, err := domain.ParseRole(t.Role)
		if err != nil || !role.Can(domain.PermRevealValue) || t.RevokedAt != nil || !q.now.Before(t.ExpiresAt) {
			continue
		}
		var covered []string
		for _, e := range envs {
			if e.Production && (t.Project == "" || t.Project == e.Project) && (len(t.Environments) == 0 || slices.Contains(t.Environments, e.ID)) {
				covered = append(covered, e.Project+"/"+e.ID)
			}
		}
		if len(covered) == 0 {
			continue
		}
		scoped := t.Environments
		if scoped == nil {
			scoped = []string{}
		}
		out = append(out, ProductionTokenRow{ID: t.ID, Name: t.Name, Role: t.Role, Project: t.Project, Environments: scoped, ProductionEnvs: covered,
			ExpiresAt: t.ExpiresAt.UTC(), IssuedBy: t.IssuedBy, IssuedAt: t.IssuedAt.UTC()})
	}
	return out, false, nil
}
