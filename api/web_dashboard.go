package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// The dashboard, the audit feed and the list of approval requests: pages
// drawn from the read models, with the API's authorization. The
// dashboard's cards each decide what the caller's role lets it see, and
// say so instead of failing the whole page.

func (s *Server) mountDashboardPages(r chi.Router) {
	r.Get("/orgs/{org}", s.dashboardPage)
	r.Get("/orgs/{org}/audit", s.auditWebPage)
	r.Get("/orgs/{org}/approvals", s.approvalsWebPage)
}

// The dashboard's periods.
const (
	dashDefaultDays  = 14
	dashMaxDays      = 90
	dashDefaultStale = 90
	dashMaxStale     = 3650
	// dashListed caps the rows of the dashboard's tables.
	dashListed = 200
	// dashBars caps the bars of a chart (the table lists the rest).
	dashBars = 15
)

// activityKinds are the kinds of events the activity chart stacks, in
// order; activityKind sorts an event type into one.
var activityKinds = []string{"Secret changes", "Reads of values", "Access changes", "Keys", "Approvals", "Other"}

func activityKind(action string) int {
	switch {
	case action == auditViewed:
		return 1
	case action == "secret.resealed":
		return 3 // a key's work, not a change of the value
	case strings.HasPrefix(action, "secret."):
		return 0
	case strings.HasPrefix(action, "organization.role_"), strings.HasPrefix(action, "organization.token_"), strings.HasPrefix(action, "session."):
		return 2
	case strings.HasPrefix(action, "keyset."):
		return 3
	case strings.HasPrefix(action, "approval."):
		return 4
	}
	return 5
}

// dashboardPage is what the dashboard shows. A nil card is one the
// caller may not see; its Why field says why.
type dashboardPage struct {
	Days, StaleDays int
	DayChoices      []int
	Problem         string
	From, To        time.Time
	// Audit: the caller may read the audit-derived cards (activity,
	// reads of production secrets); AuditWhy says why not.
	Audit        bool
	AuditWhy     string
	Activity     *dashActivity
	ProdReads    *dashProdReads
	Stale        *dashStale
	StaleWhy     string
	Keys         *dashKeys
	KeysWhy      string
	Approvals    *dashApprovals
	ApprovalsWhy string
	Ledger       *dashLedger
	LedgerWhy    string
}

// dashActivity is the activity card: events per day by kind.
type dashActivity struct {
	Chart  stackedChart
	Kinds  []string
	Rows   []dashActivityRow
	Totals []int64
	Total  int64
}

type dashActivityRow struct {
	Day    string
	Counts []int64
	Total  int64
}

// dashProdReads is the card of the reads of production values by actor.
type dashProdReads struct {
	Chart barChart
	// Envs are the environments flagged production.
	Envs  []string
	Rows  []projections.ActorReads
	Total int64
}

// dashStale lists the secrets not rotated in time.
type dashStale struct {
	Rows []dashStaleRow
	More int
}

type dashStaleRow struct {
	Project, Env, Name string
	Version            int64
	SetAt              time.Time
	AgeDays            int
	// Policy says how often the secret's own policy wants it rotated
	// ("": no policy, the page's N applies).
	Policy string
}

// dashKeys is the card of the keysets: primary key age and reseal.
type dashKeys struct {
	AgeChart, ResealChart barChart
	Rows                  []dashKeyRow
}

type dashKeyRow struct {
	Project, Env string
	PrimaryKey   int64
	PrimarySince time.Time
	AgeDays      int
	// Rotation says how often the environment's keys rotate.
	Rotation       string
	Due            bool
	Sealed, Values int64
	Complete       bool
}

// dashApprovals lists the pending requests the caller may decide.
type dashApprovals struct {
	Rows []ApprovalSummary
}

// dashLedger is the ledger's status.
type dashLedger struct {
	S projections.LedgerStatus
	// Failure is the last verification's failure, streams withheld.
	Failure string
}

func (s *Server) dashboardPage(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	// Every chart's read model, for a dashboard that shows a write just made.
	if _, ok := s.orgScope(w, r, org); !ok || !s.awaitPosition(w, r, "audit", "access", "secrets", "keys", "approvals", "directory", "ledger") {
		return
	}
	id, _ := identity(r)
	p := dashboardPage{Days: dashDefaultDays, StaleDays: dashDefaultStale, DayChoices: []int{7, 14, 30, 90}}
	status := http.StatusOK
	q := r.URL.Query()
	if v := q.Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > dashMaxDays {
			status, p.Problem = http.StatusBadRequest, fmt.Sprintf("days: want a number of days from 1 to %d; showing the last %d.", dashMaxDays, dashDefaultDays)
		} else {
			p.Days = n
		}
	}
	if v := q.Get("stale_days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > dashMaxStale {
			status = http.StatusBadRequest
			p.Problem = strings.TrimSpace(p.Problem + " " + fmt.Sprintf("stale_days: want a number of days from 1 to %d; showing %d.", dashMaxStale, dashDefaultStale))
		} else {
			p.StaleDays = n
		}
	}
	if !slices.Contains(p.DayChoices, p.Days) {
		p.DayChoices = append(p.DayChoices, p.Days)
		slices.Sort(p.DayChoices)
	}
	now := s.now().UTC()
	today := now.Truncate(24 * time.Hour)
	p.From, p.To = today.AddDate(0, 0, 1-p.Days), now

	var err error
	// Audit-derived cards: the audit permission, organization-wide, as
	// the API's audit endpoints ask.
	if _, aerr := s.cfg.App.Authorize(r.Context(), id.Actor, org, "", "", domain.PermReadAudit); aerr == nil {
		p.Audit = true
		if p.Activity, err = s.dashActivity(r, org, p.From, p.To, p.Days); err == nil {
			p.ProdReads, err = s.dashProdReads(r, org, p.From, p.To)
		}
	} else if errors.Is(aerr, domain.ErrForbidden) {
		p.AuditWhy = "Your role does not let you read the audit trail (admins and owners of the whole organization can), so the activity and the reads of production values are not shown."
	} else {
		err = aerr
	}
	if err == nil {
		p.Stale, p.StaleWhy, err = s.dashStale(r, org, id.Actor, p.StaleDays, now)
	}
	if err == nil {
		p.Keys, p.KeysWhy, err = s.dashKeys(r, org, id.Actor, now)
	}
	if err == nil {
		var rows []projections.ApprovalInfo
		var refusal error
		rows, refusal, err = s.approvable(r, org, id.Actor, "pending")
		if refusal != nil {
			p.ApprovalsWhy = "Your role does not let you approve requests in this organization, so its pending requests are not listed."
		} else if err == nil {
			p.Approvals = &dashApprovals{}
			for _, a := range rows {
				p.Approvals.Rows = append(p.Approvals.Rows, approvalSummary(a))
			}
		}
	}
	if err == nil {
		p.Ledger, p.LedgerWhy, err = s.dashLedger(r)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, status, "dashboard", pageData{Title: "Dashboard of " + org, Section: "dashboard", Content: p})
}

// dashActivity counts the events per day and kind, for days days up to
// to.
func (s *Server) dashActivity(r *http.Request, org string, from, to time.Time, days int) (*dashActivity, error) {
	counts, err := s.cfg.Reader.AuditActivity(r.Context(), org, from, to)
	if err != nil {
		return nil, err
	}
	a := &dashActivity{Kinds: activityKinds, Totals: make([]int64, len(activityKinds))}
	index := map[string]int{}
	for i := range days {
		day := from.AddDate(0, 0, i).Format(time.DateOnly)
		index[day] = i
		a.Rows = append(a.Rows, dashActivityRow{Day: day, Counts: make([]int64, len(activityKinds))})
	}
	for _, c := range counts {
		i, ok := index[c.Day.UTC().Format(time.DateOnly)]
		if !ok {
			continue
		}
		k := activityKind(c.Action)
		a.Rows[i].Counts[k] += c.Events
		a.Rows[i].Total += c.Events
		a.Totals[k] += c.Events
		a.Total += c.Events
	}
	series := make([]chartSeries, len(activityKinds))
	for k, name := range activityKinds {
		series[k] = chartSeries{Name: name, Values: make([]int64, days)}
		for i, row := range a.Rows {
			series[k].Values[i] = row.Counts[k]
		}
	}
	cats := make([]string, days)
	for i, row := range a.Rows {
		cats[i] = row.Day[5:] // MM-DD
	}
	a.Chart = stackedChart{Title: "Events per day, by kind", Unit: "events", Categories: cats, Series: series,
		Summary: fmt.Sprintf("%d events in the last %d days (UTC), from %s to %s; the table below gives each day's numbers.",
			a.Total, days, a.Rows[0].Day, a.Rows[len(a.Rows)-1].Day),
		Empty: "No events in this period."}
	return a, nil
}

// dashProdReads counts the reads of production values by actor.
func (s *Server) dashProdReads(r *http.Request, org string, from, to time.Time) (*dashProdReads, error) {
	envs, err := s.cfg.Reader.Environments(r.Context(), org, "")
	if err != nil {
		return nil, err
	}
	p := &dashProdReads{}
	for _, e := range envs {
		if e.Production {
			p.Envs = append(p.Envs, e.Project+"/"+e.ID)
		}
	}
	if p.Rows, err = s.cfg.Reader.ProductionReadsByActor(r.Context(), org, from, to); err != nil {
		return nil, err
	}
	var bars []chartBar
	for i, a := range p.Rows {
		p.Total += a.Reads
		if i < dashBars {
			bars = append(bars, chartBar{Label: a.Actor, Value: a.Reads, Series: 1})
		}
	}
	summary := fmt.Sprintf("%d reads of production values by %d %s since %s.", p.Total, len(p.Rows), dashPlural(len(p.Rows), "actor", "actors"), from.Format(time.DateOnly))
	if len(p.Rows) > dashBars {
		summary += fmt.Sprintf(" The %d actors with the most reads are drawn; the table lists all.", dashBars)
	}
	p.Chart = barChart{Title: "Reads of production values, by actor", Summary: summary, Bars: bars, Unit: "reads", UnitOne: "read",
		Empty: "No production value was read in this period."}
	return p, nil
}

// dashEvery says how often an interval of seconds comes (0: daily, the
// default).
func dashEvery(seconds int64) string {
	switch {
	case seconds <= 0 || seconds == 86400:
		return "daily"
	case seconds%86400 == 0:
		return fmt.Sprintf("every %d days", seconds/86400)
	case seconds%3600 == 0:
		return fmt.Sprintf("every %d %s", seconds/3600, dashPlural(int(seconds/3600), "hour", "hours"))
	}
	return fmt.Sprintf("every %d seconds", seconds)
}

func dashPlural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// dashEnvAuth answers, once per environment, whether an actor may do perm
// there.
type dashEnvAuth struct {
	s     *Server
	r     *http.Request
	actor domain.Actor
	org   string
	perm  domain.Permission
	seen  map[[2]string]bool
}

func (s *Server) newDashEnvAuth(r *http.Request, org string, actor domain.Actor, perm domain.Permission) *dashEnvAuth {
	return &dashEnvAuth{s: s, r: r, actor: actor, org: org, perm: perm, seen: map[[2]string]bool{}}
}

func (a *dashEnvAuth) ok(project, env string) (bool, error) {
	k := [2]string{project, env}
	if v, seen := a.seen[k]; seen {
		return v, nil
	}
	_, err := a.s.cfg.App.Authorize(a.r.Context(), a.actor, a.org, project, env, a.perm)
	if err != nil && !errors.Is(err, domain.ErrForbidden) {
		return false, err
	}
	a.seen[k] = err == nil
	return err == nil, nil
}

// dashStale lists the secrets the caller may see whose value is older
// than their rotation policy, or than days for those without one.
func (s *Server) dashStale(r *http.Request, org string, actor domain.Actor, days int, now time.Time) (*dashStale, string, error) {
	rows, err := s.cfg.Reader.SecretsNotRotated(r.Context(), org, time.Duration(days)*24*time.Hour, now)
	if err != nil {
		return nil, "", err
	}
	auth := s.newDashEnvAuth(r, org, actor, domain.PermReadMetadata)
	out := &dashStale{}
	for _, x := range rows {
		ok, err := auth.ok(x.Project, x.Env)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			continue
		}
		if len(out.Rows) == dashListed {
			out.More++
			continue
		}
		row := dashStaleRow{Project: x.Project, Env: x.Env, Name: x.Name, Version: x.Version, SetAt: x.ValueUpdatedAt.UTC(),
			AgeDays: int(now.Sub(x.ValueUpdatedAt) / (24 * time.Hour))}
		if x.RotationSeconds > 0 {
			row.Policy = dashEvery(x.RotationSeconds)
		}
		out.Rows = append(out.Rows, row)
	}
	return out, "", nil
}

// dashKeys shows the keysets the caller may see (as the API's list of
// keysets does): the age of their primary keys and the reseal.
func (s *Server) dashKeys(r *http.Request, org string, actor domain.Actor, now time.Time) (*dashKeys, string, error) {
	sets, envs, err := s.keysetRead(r, org)
	if err != nil {
		return nil, "", err
	}
	auth := s.newDashEnvAuth(r, org, actor, domain.PermReadMetadata)
	k := &dashKeys{}
	var ages, reseals []chartBar
	for _, set := range sets {
		ok, err := auth.ok(set.Project, set.Env)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			continue
		}
		v := keysetView(set, envs[[2]string{set.Project, set.Env}], now)
		row := dashKeyRow{Project: set.Project, Env: set.Env, PrimaryKey: set.PrimaryKey, PrimarySince: set.PrimarySince.UTC(),
			AgeDays: int(now.Sub(set.PrimarySince) / (24 * time.Hour)), Due: v.RotationDue, Sealed: set.Sealed, Values: set.Values,
			Complete: set.Sealed >= set.Values}
		if v.RotationSeconds != nil {
			row.Rotation = dashEvery(*v.RotationSeconds)
		}
		k.Rows = append(k.Rows, row)
		if len(k.Rows) > dashBars {
			continue
		}
		label := set.Project + "/" + set.Env
		text := fmt.Sprintf("%d %s", row.AgeDays, dashPlural(row.AgeDays, "day", "days"))
		series := 3
		if row.Due {
			text += ", rotation due"
			series = 4
		}
		ages = append(ages, chartBar{Label: label, Value: int64(row.AgeDays), Text: text, Series: series})
		rt := fmt.Sprintf("%d of %d sealed", set.Sealed, set.Values)
		if set.Values == 0 {
			rt = "no values"
		}
		reseals = append(reseals, chartBar{Label: label, Value: set.Sealed, Of: max(set.Values, 1), Text: rt, Series: 0})
	}
	if len(k.Rows) == 0 && len(sets) > 0 {
		return nil, "Your role does not let you see any of this organization's keysets.", nil
	}
	more := ""
	if len(k.Rows) > dashBars {
		more = fmt.Sprintf(" The first %d are drawn; the table lists all.", dashBars)
	}
	due := 0
	for _, row := range k.Rows {
		if row.Due {
			due++
		}
	}
	k.AgeChart = barChart{Title: "Age of each keyset's primary key", Bars: ages, Unit: "days", Empty: "No keysets yet.",
		Summary: fmt.Sprintf("%d %s, %d due for rotation.%s", len(k.Rows), dashPlural(len(k.Rows), "keyset", "keysets"), due, more)}
	k.ResealChart = barChart{Title: "Values sealed by the primary key", Bars: reseals, Empty: "No keysets yet.",
		Summary: "For each keyset, how many of its current values are sealed by its primary key; the rest wait for the reseal." + more}
	return k, "", nil
}

// dashLedger reads the ledger's status (any signed-in person may).
func (s *Server) dashLedger(r *http.Request) (*dashLedger, string, error) {
	if s.cfg.Pool == nil {
		return nil, "The ledger's status is not available on this server.", nil
	}
	st, err := projections.LedgerState(r.Context(), s.cfg.Pool)
	if err != nil {
		return nil, "", err
	}
	return &dashLedger{S: st, Failure: quoted.ReplaceAllString(st.Failure, `"…"`)}, "", nil
}

// approvable returns an organization's requests (status "": all), newest
// first, in the environments where actor may approve, as the API's list
// does. refusal is set when the actor may approve nowhere in org.
func (s *Server) approvable(r *http.Request, org string, actor domain.Actor, status string) (rows []projections.ApprovalInfo, refusal, err error) {
	_, orgErr := s.cfg.App.Authorize(r.Context(), actor, org, "", "", domain.PermApprove)
	if orgErr != nil && !errors.Is(orgErr, domain.ErrForbidden) {
		return nil, nil, orgErr
	}
	if orgErr != nil {
		projects, err := s.cfg.Reader.Projects(r.Context(), org)
		if err != nil {
			return nil, nil, err
		}
		refusal = orgErr
		for _, p := range projects {
			_, err := s.cfg.App.Authorize(r.Context(), actor, org, p.ID, "", domain.PermApprove)
			if err == nil {
				refusal = nil
				break
			}
			var fe *domain.ForbiddenError
			if errors.As(err, &fe) && !fe.Outsider {
				refusal = err
			} else if !errors.Is(err, domain.ErrForbidden) {
				return nil, nil, err
			}
		}
		if refusal != nil {
			return nil, refusal, nil
		}
	}
	all, err := s.cfg.Reader.Approvals(r.Context(), org, status, s.now())
	if err != nil {
		return nil, nil, err
	}
	auth := s.newDashEnvAuth(r, org, actor, domain.PermApprove)
	for _, a := range all {
		ok, err := auth.ok(a.Project, a.Env)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			rows = append(rows, a)
		}
	}
	return rows, nil, nil
}

// approvalsWebPage lists the requests the caller may decide: the pending
// ones, then the latest decided.
type approvalsWebPage struct {
	Pending []ApprovalSummary
	Decided []ApprovalSummary
	More    int
}

func (s *Server) approvalsWebPage(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.orgScope(w, r, org); !ok || !s.awaitPosition(w, r, "approvals", "directory") {
		return
	}
	id, _ := identity(r)
	rows, refusal, err := s.approvable(r, org, id.Actor, "")
	if refusal != nil {
		err = refusal
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var p approvalsWebPage
	for _, a := range rows {
		switch {
		case a.Status == string(domain.StatusPending):
			p.Pending = append(p.Pending, approvalSummary(a))
		case len(p.Decided) < dashListed/4:
			p.Decided = append(p.Decided, approvalSummary(a))
		default:
			p.More++
		}
	}
	s.render(w, r, http.StatusOK, "approvals", pageData{Title: "Approval requests", Section: "approvals", Content: p})
}

// auditWebPage is the audit feed's page.
type auditWebPage struct {
	// Form is what the filters' form shows.
	Form    auditForm
	Kinds   []string
	Problem string
	Items   []AuditEntry
	// Next is the next page's link; First the newest page's (when this
	// is not it); CSV the export of every entry the filters match.
	Next, First, CSV string
}

// auditForm holds the filters as typed.
type auditForm struct {
	Actor, ActorKind, Action, Secret, Project, Env, From, To string
}

// auditTimeLayouts are the times the form takes, all in UTC: a date, a
// datetime-local input's value, or RFC 3339.
var auditTimeLayouts = []string{time.DateOnly, "2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339Nano}

// auditFormTime reads a time of the form; "" when empty.
func auditFormTime(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, true
	}
	for _, l := range auditTimeLayouts {
		if t, err := time.Parse(l, v); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// auditLocalTime is a time as a datetime-local input shows it (UTC).
func auditLocalTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	t = t.UTC()
	if t.Second() == 0 && t.Nanosecond() == 0 {
		return t.Format("2006-01-02T15:04")
	}
	return t.Format("2006-01-02T15:04:05")
}

func (s *Server) auditWebPage(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.authorize(w, r, org, "", "", domain.PermReadAudit); !ok || !s.awaitPosition(w, r, "audit", "access") {
		return
	}
	in := r.URL.Query()
	p := auditWebPage{Kinds: []string{string(domain.ActorUser), string(domain.ActorToken), string(domain.ActorSystem), string(domain.ActorAnonymous)}}
	f := auditForm{Actor: strings.TrimSpace(in.Get("actor")), ActorKind: in.Get("actor_kind"), Action: strings.TrimSpace(in.Get("action")),
		Secret: strings.TrimSpace(in.Get("secret")), Project: strings.TrimSpace(in.Get("project")), Env: strings.TrimSpace(in.Get("env"))}
	// The filters in the API's form: the page's links and the CSV
	// export use these.
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	actor := f.Actor
	if actor != "" && !strings.Contains(actor, ":") {
		actor = "user:" + actor // a person, by e-mail address
	}
	if strings.HasPrefix(actor, "user:") && strings.Contains(actor, "@") {
		actor = strings.ToLower(actor)
	}
	set("actor", actor)
	set("actor_kind", f.ActorKind)
	set("action", f.Action)
	set("secret", f.Secret)
	set("project", f.Project)
	set("env", f.Env)
	var problems []string
	for _, name := range []string{"from", "to"} {
		t, ok := auditFormTime(in.Get(name))
		if !ok {
			problems = append(problems, name+": want a date (2026-01-31), a time in UTC (2026-01-31T23:00) or an RFC 3339 time")
			continue
		}
		if !t.IsZero() {
			q.Set(name, t.Format(time.RFC3339Nano))
		}
		if name == "from" {
			f.From = auditLocalTime(t)
		} else {
			f.To = auditLocalTime(t)
		}
	}
	if f.From == "" {
		f.From = strings.TrimSpace(in.Get("from"))
	}
	if f.To == "" {
		f.To = strings.TrimSpace(in.Get("to"))
	}
	p.Form = f
	var filter projections.AuditFilter
	if len(problems) == 0 {
		// The API's own validation of the filters.
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery = q.Encode()
		var cw dashCapture
		var ok bool
		if filter, ok = s.auditFilter(&cw, r2); !ok {
			var prob Problem
			if err := json.Unmarshal(cw.buf.Bytes(), &prob); err != nil || prob.Detail == "" {
				prob.Detail = "the filters do not parse"
			}
			problems = append(problems, prob.Detail)
		}
	}
	cursor, err := parseCursor(in.Get("cursor"))
	if err != nil {
		problems = append(problems, "cursor: "+err.Error())
	}
	if len(problems) > 0 {
		p.Problem = strings.Join(problems, "; ")
		s.render(w, r, http.StatusBadRequest, "audit", pageData{Title: "Audit trail", Section: "audit", Content: p})
		return
	}
	entries, next, err := s.auditPage(r, org, filter, cursor, projections.DefaultAuditPage)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Items = entries
	base := "/orgs/" + url.PathEscape(org) + "/audit"
	if next > 0 {
		nq := dashCloneQuery(q)
		nq.Set("cursor", strconv.FormatUint(next, 10))
		p.Next = base + "?" + nq.Encode()
	}
	if cursor > 0 {
		p.First = base
		if len(q) > 0 {
			p.First += "?" + q.Encode()
		}
	}
	cq := dashCloneQuery(q)
	cq.Set("format", "csv")
	p.CSV = "/v1/orgs/" + url.PathEscape(org) + "/audit?" + cq.Encode()
	s.render(w, r, http.StatusOK, "audit", pageData{Title: "Audit trail", Section: "audit", Content: p})
}

func dashCloneQuery(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// dashCapture keeps what a helper of the API answers, so that a page
// can show the problem in place.
type dashCapture struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (c *dashCapture) Header() http.Header {
	if c.header == nil {
		c.header = http.Header{}
	}
	return c.header
}

func (c *dashCapture) WriteHeader(code int)        { c.status = code }
func (c *dashCapture) Write(b []byte) (int, error) { return c.buf.Write(b) }
