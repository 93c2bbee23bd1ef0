package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// The members and tokens pages: who holds which role, service tokens,
// and the forms that grant and revoke roles and issue and revoke
// tokens. The application layer decides every change (no granting above
// one's own role, the last owner stays); the pages show its refusals in
// place. A new token's secret is shown on the answer to the form that
// issued it, once, and never again.

func (s *Server) mountPeoplePages(r chi.Router) {
	r.Get("/orgs/{org}/members", s.membersPage)
	r.Post("/orgs/{org}/members", s.grantForm)
	r.Post("/orgs/{org}/members/revoke", s.revokeGrantForm)
	r.Get("/orgs/{org}/tokens", s.tokensPage)
	r.Post("/orgs/{org}/tokens", s.issueTokenForm)
	r.Post("/orgs/{org}/tokens/{token}/revoke", s.revokeTokenForm)
}

// peopleRoles are the roles, least first.
var peopleRoles = []domain.Role{domain.RoleViewer, domain.RoleDeveloper, domain.RoleAdmin, domain.RoleOwner}

// rolesUpTo lists the roles at most top.
func rolesUpTo(top domain.Role) []string {
	var out []string
	for _, r := range peopleRoles {
		if top.AtLeast(r) {
			out = append(out, string(r))
		}
	}
	return out
}

// managedProjects lists the projects where a scope's role has perm
// (every project of the organization for a wide role that has it), and
// the highest such role.
func (s *Server) managedProjects(r *http.Request, org string, sc app.Scope, perm domain.Permission) ([]string, domain.Role, error) {
	var out []string
	top := domain.RoleNone
	if sc.Wide() && sc.Role.Can(perm) {
		ps, err := s.cfg.Reader.Projects(r.Context(), org)
		if err != nil {
			return nil, top, err
		}
		for _, p := range ps {
			out = append(out, p.ID)
		}
		top = sc.Role
	}
	for p := range sc.Projects {
		if role := sc.RoleIn(p); role.Can(perm) {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
			if !top.AtLeast(role) {
				top = role
			}
		}
	}
	slices.Sort(out)
	return out, top, nil
}

// membersPage is the members page.
type membersPage struct {
	Rows []memberRow
	// Grant: the caller may grant roles, organization-wide (OrgWide)
	// or in Projects, up to the Roles listed.
	Grant    bool
	OrgWide  bool
	Projects []string
	Roles    []string
	Form     grantFormData
	Problem  string
}

type memberRow struct {
	M         projections.Member
	CanRevoke bool
}

type grantFormData struct{ User, Role, Project string }

func (s *Server) membersPage(w http.ResponseWriter, r *http.Request) {
	if !s.awaitPosition(w, r, "access_control") {
		return
	}
	s.drawMembers(w, r, http.StatusOK, "", grantFormData{Role: string(domain.RoleViewer)})
}

// drawMembers draws the members page, with a problem of the last form
// if any.
func (s *Server) drawMembers(w http.ResponseWriter, r *http.Request, status int, problemText string, form grantFormData) {
	org := chi.URLParam(r, "org")
	sc, ok := s.orgScope(w, r, org)
	if !ok {
		return
	}
	if sc.Wide() && !sc.Role.Can(domain.PermReadMembers) {
		id, _ := identity(r)
		s.fail(w, r, &domain.ForbiddenError{Actor: id.Actor, Permission: domain.PermReadMembers, Reason: "role " + string(sc.Role)})
		return
	}
	ms, err := s.cfg.Reader.Members(r.Context(), org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p := membersPage{Form: form, Problem: problemText}
	var top domain.Role
	if p.Projects, top, err = s.managedProjects(r, org, sc, domain.PermManageMembers); err != nil {
		s.fail(w, r, err)
		return
	}
	p.OrgWide = sc.Wide() && sc.Role.Can(domain.PermManageMembers)
	p.Grant = p.OrgWide || len(p.Projects) > 0
	p.Roles = rolesUpTo(top)
	for _, m := range ms {
		// As the API lists them: every grant for an organization-wide
		// role, those of the caller's projects otherwise.
		if !sc.Wide() && (m.Project == "" || !sc.RoleIn(m.Project).Can(domain.PermReadMembers)) {
			continue
		}
		role := sc.Role
		if m.Project != "" {
			role = sc.RoleIn(m.Project)
		}
		p.Rows = append(p.Rows, memberRow{M: m, CanRevoke: role.Can(domain.PermManageMembers)})
	}
	s.render(w, r, status, "members", pageData{Title: "Members", Section: "members", Content: p})
}

// peopleFormProblem shows what the application refused on the page of
// the form (bad input, a role one may not give, the last owner); other
// problems (another tenant's organization: 404) are error pages.
func (s *Server) peopleFormProblem(w http.ResponseWriter, r *http.Request, err error, redraw func(status int, detail string)) {
	p := s.problemOf(w, r, err)
	switch p.Status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusConflict, http.StatusGone:
		redraw(p.Status, p.Detail)
	default:
		writeProblemDoc(w, r, p)
	}
}

// formUser is a person's id as typed in a form: an e-mail address is
// taken in lowercase, as the API's {user} is.
func formUser(v string) string {
	v = strings.TrimSpace(v)
	if strings.Contains(v, "@") {
		v = strings.ToLower(v)
	}
	return v
}

// afterWrite is a page's path with the position a write reached, so
// that the page waits for the read models to show it.
func afterWrite(path string, res app.Result) string {
	if res.Position == 0 {
		return path
	}
	return path + "?min_position=" + strconv.FormatUint(res.Position, 10)
}

// grantForm grants a role, organization-wide or in one project.
func (s *Server) grantForm(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	if err := r.ParseForm(); err != nil {
		problem(w, r, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return
	}
	form := grantFormData{User: formUser(r.PostForm.Get("user")), Role: r.PostForm.Get("role"), Project: r.PostForm.Get("project")}
	redraw := func(status int, detail string) { s.drawMembers(w, r, status, detail, form) }
	if form.User == "" {
		redraw(http.StatusBadRequest, "user: type the e-mail address of the person")
		return
	}
	role, err := domain.ParseRole(form.Role)
	if err != nil {
		s.peopleFormProblem(w, r, err, redraw)
		return
	}
	id, _ := identity(r)
	if form.Project != "" {
		// As the API: the right to manage the project's members first,
		// then whether it exists.
		if _, err := s.cfg.App.Authorize(r.Context(), id.Actor, org, form.Project, "", domain.PermManageMembers); err != nil {
			s.peopleFormProblem(w, r, err, redraw)
			return
		}
		if _, err := s.cfg.App.ProjectEnvironments(r.Context(), org, form.Project); err != nil {
			if errors.Is(err, domain.ErrNotFound) {
				redraw(http.StatusBadRequest, "project: no project "+form.Project)
				return
			}
			s.fail(w, r, err)
			return
		}
	}
	res, err := s.cfg.App.GrantRole(r.Context(), s.request(r), org, form.User, role, form.Project)
	if err != nil {
		s.peopleFormProblem(w, r, err, redraw)
		return
	}
	back(w, r, afterWrite("/orgs/"+url.PathEscape(org)+"/members", res), "granted")
}

// revokeGrantForm revokes one grant.
func (s *Server) revokeGrantForm(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	if err := r.ParseForm(); err != nil {
		problem(w, r, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return
	}
	user, project := formUser(r.PostForm.Get("user")), r.PostForm.Get("project")
	redraw := func(status int, detail string) {
		s.drawMembers(w, r, status, detail, grantFormData{Role: string(domain.RoleViewer)})
	}
	res, err := s.cfg.App.RevokeRole(r.Context(), s.request(r), org, user, project)
	if err != nil {
		s.peopleFormProblem(w, r, err, redraw)
		return
	}
	back(w, r, afterWrite("/orgs/"+url.PathEscape(org)+"/members", res), "revoked")
}

// tokensPage is the tokens page.
type tokensPage struct {
	Rows []tokenRow
	// Issue: the caller may issue tokens, organization-wide (OrgWide) or
	// in Projects, with the Roles listed.
	Issue     bool
	OrgWide   bool
	Projects  []string
	Roles     []string
	Lifetimes []tokenLifetime
	Form      tokenFormData
	Problem   string
	// Issued is the token just issued, with its secret: set only on the
	// answer to the form that issued it.
	Issued *IssuedServiceToken
}

type tokenRow struct {
	T         ServiceToken
	CanRevoke bool
}

type tokenLifetime struct {
	Days  int
	Label string
}

type tokenFormData struct {
	Name, Role, Project, Environments string
	Days                              int
}

var tokenLifetimes = []tokenLifetime{{1, "1 day"}, {7, "7 days"}, {30, "30 days"}, {90, "90 days"}, {366, "366 days (the longest)"}}

func (s *Server) tokensPage(w http.ResponseWriter, r *http.Request) {
	if !s.awaitPosition(w, r, "access_control") {
		return
	}
	s.drawTokens(w, r, http.StatusOK, "", tokenFormData{Role: string(domain.RoleDeveloper), Days: 30}, nil)
}

// drawTokens draws the tokens page: with a problem of the last form, or
// the token it just issued.
func (s *Server) drawTokens(w http.ResponseWriter, r *http.Request, status int, problemText string, form tokenFormData, issued *IssuedServiceToken) {
	org := chi.URLParam(r, "org")
	sc, ok := s.orgScope(w, r, org)
	if !ok {
		return
	}
	if sc.Wide() && !sc.Role.Can(domain.PermReadMembers) {
		id, _ := identity(r)
		s.fail(w, r, &domain.ForbiddenError{Actor: id.Actor, Permission: domain.PermReadMembers, Reason: "role " + string(sc.Role)})
		return
	}
	ts, err := s.cfg.Reader.Tokens(r.Context(), org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p := tokensPage{Form: form, Problem: problemText, Issued: issued, Lifetimes: tokenLifetimes}
	var top domain.Role
	if p.Projects, top, err = s.managedProjects(r, org, sc, domain.PermManageTokens); err != nil {
		s.fail(w, r, err)
		return
	}
	p.OrgWide = sc.Wide() && sc.Role.Can(domain.PermManageTokens)
	p.Issue = p.OrgWide || len(p.Projects) > 0
	p.Roles = rolesUpTo(top)
	// Newest first.
	for i := len(ts) - 1; i >= 0; i-- {
		t := ts[i]
		if !tokenVisible(sc, t) {
			continue
		}
		v := s.serviceToken(t)
		role := sc.Role
		if t.Project != "" {
			role = sc.RoleIn(t.Project)
		}
		p.Rows = append(p.Rows, tokenRow{T: v, CanRevoke: v.Status == "active" && role.Can(domain.PermManageTokens)})
	}
	d := pageData{Title: "Service tokens", Section: "tokens", Content: p}
	if issued != nil {
		d.Flash = flashes["token-issued"]
	}
	s.render(w, r, status, "tokens", d)
}

// formList splits a list typed in a form (commas or spaces).
func formList(v string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// issueTokenForm issues a token and answers with a page that shows its
// secret this once (never in a redirect, a flash or a log).
func (s *Server) issueTokenForm(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	if err := r.ParseForm(); err != nil {
		problem(w, r, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return
	}
	form := tokenFormData{Name: strings.TrimSpace(r.PostForm.Get("name")), Role: r.PostForm.Get("role"), Project: r.PostForm.Get("project"),
		Environments: strings.TrimSpace(r.PostForm.Get("environments"))}
	redraw := func(status int, detail string) { s.drawTokens(w, r, status, detail, form, nil) }
	maxDays := int(domain.MaxTokenLifetime / (24 * time.Hour))
	days, err := strconv.Atoi(strings.TrimSpace(r.PostForm.Get("days")))
	if err != nil || days < 1 || days > maxDays {
		redraw(http.StatusBadRequest, fmt.Sprintf("lifetime: want a number of days from 1 to %d", maxDays))
		return
	}
	form.Days = days
	envs := formList(form.Environments)
	if len(envs) > 0 && form.Project == "" {
		redraw(http.StatusBadRequest, "environments: a token limited to environments must be limited to their project too")
		return
	}
	spec := app.TokenSpec{Name: form.Name, Role: domain.Role(form.Role), Project: form.Project, Environments: envs,
		TTL: time.Duration(days) * 24 * time.Hour}
	id, _ := identity(r)
	if form.Project != "" {
		// As the API: the right to issue tokens in the project first,
		// then whether it and its environments exist.
		if _, err := s.cfg.App.Authorize(r.Context(), id.Actor, org, form.Project, "", domain.PermManageTokens); err != nil {
			s.peopleFormProblem(w, r, err, redraw)
			return
		}
		all, err := s.cfg.App.ProjectEnvironments(r.Context(), org, form.Project)
		if errors.Is(err, domain.ErrNotFound) {
			redraw(http.StatusBadRequest, "project: no project "+form.Project)
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, e := range envs {
			if !slices.Contains(all, e) {
				redraw(http.StatusBadRequest, "environments: no environment "+e+" in project "+form.Project)
				return
			}
		}
	}
	tok, res, err := s.cfg.App.IssueToken(r.Context(), s.request(r), org, spec)
	if err != nil {
		s.peopleFormProblem(w, r, err, redraw)
		return
	}
	// The list below the secret shows the new token: wait for the read
	// model to hold it.
	if s.cfg.Pool != nil {
		if err := projections.WaitFor(r.Context(), s.cfg.Pool, res.Position, s.cfg.ReadWait, "access_control"); err != nil {
			s.log.Warn("tokens page: the read model lags", "err", err)
		}
	}
	if envs == nil {
		envs = []string{}
	}
	issued := &IssuedServiceToken{Written: written(res), ID: tok.ID, Name: form.Name, Role: form.Role, Project: form.Project,
		Environments: envs, ExpiresAt: tok.ExpiresAt.UTC(), Secret: tok.Secret}
	w.Header().Set("Cache-Control", "no-store")
	s.drawTokens(w, r, http.StatusOK, "", tokenFormData{Role: string(domain.RoleDeveloper), Days: 30}, issued)
}

// revokeTokenForm revokes a token.
func (s *Server) revokeTokenForm(w http.ResponseWriter, r *http.Request) {
	org, tokenID := chi.URLParam(r, "org"), chi.URLParam(r, "token")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	if err := r.ParseForm(); err != nil {
		problem(w, r, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return
	}
	redraw := func(status int, detail string) {
		s.drawTokens(w, r, status, detail, tokenFormData{Role: string(domain.RoleDeveloper), Days: 30}, nil)
	}
	res, err := s.cfg.App.RevokeToken(r.Context(), s.request(r), org, tokenID, strings.TrimSpace(r.PostForm.Get("reason")))
	if err != nil {
		s.peopleFormProblem(w, r, err, redraw)
		return
	}
	back(w, r, afterWrite("/orgs/"+url.PathEscape(org)+"/tokens", res), "revoked")
}
