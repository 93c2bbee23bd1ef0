package api

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// Org is an organization, with the roles the caller holds in it.
type Org struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
	// Roles are the caller's roles: organization-wide (no project) and
	// per project.
	Roles []OrgRole `json:"roles"`
}

// OrgRole is one role the caller holds in an organization.
type OrgRole struct {
	Project string `json:"project,omitempty"`
	Role    string `json:"role"`
}

// Member is one grant: a user's role in the whole organization (no
// project) or in one project.
type Member struct {
	User      string    `json:"user"`
	Project   string    `json:"project,omitempty"`
	Role      string    `json:"role"`
	GrantedBy string    `json:"granted_by"`
	GrantedAt time.Time `json:"granted_at"`
}

// ResourceCreated is the answer to a creation: what the write appended and the
// new resource's id.
type ResourceCreated struct {
	Written
	ID string `json:"id"`
}

func (s *Server) mountOrgs(r chi.Router) {
	r.Get("/orgs", s.listOrgs)
	r.Post("/orgs", s.createOrg)
	r.Get("/orgs/{org}", s.getOrg)
	r.Patch("/orgs/{org}", s.updateOrg)
	r.Get("/orgs/{org}/members", s.listMembers)
	r.Put("/orgs/{org}/members/{user}", s.grantOrgRole)
	r.Delete("/orgs/{org}/members/{user}", s.revokeOrgRole)
	r.Put("/orgs/{org}/projects/{project}/members/{user}", s.grantProjectRole)
	r.Delete("/orgs/{org}/projects/{project}/members/{user}", s.revokeProjectRole)
}

// orgScope works out what the caller may see of org (app.ScopeOf, from
// the ledger's state). On refusal it answers (404 to a caller with no
// access to org at all, exactly as for a missing organization) and
// returns false.
func (s *Server) orgScope(w http.ResponseWriter, r *http.Request, org string) (app.Scope, bool) {
	id, ok := identity(r)
	if !ok {
		s.fail(w, r, app.ErrUnauthenticated)
		return app.Scope{}, false
	}
	sc, err := s.cfg.App.ScopeOf(r.Context(), id.Actor, org)
	if err != nil {
		s.fail(w, r, err)
		return sc, false
	}
	return sc, true
}

// dirNotFound answers 404 exactly as for a resource outside the caller's
// scope.
func dirNotFound(w http.ResponseWriter, r *http.Request) {
	problem(w, r, http.StatusNotFound, "not_found", "no such resource")
}

// failDir answers err like fail, naming in a validation error the
// request field (fields maps the domain's field names to the request's)
// rather than the domain's name for it.
func (s *Server) failDir(w http.ResponseWriter, r *http.Request, err error, fields map[string]string) {
	var ve *domain.ValidationError
	if errors.As(err, &ve) {
		if f, ok := fields[ve.Field]; ok {
			c := *ve
			c.Field = f
			err = &c
		}
	}
	s.fail(w, r, err)
}

// dirInvalid answers 400 invalid_request for a request field.
func dirInvalid(w http.ResponseWriter, r *http.Request, field, detail string) {
	writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Detail: detail})
}

// dirParam returns a path parameter, percent-decoded.
func dirParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

// userParam returns the {user} of the path. People are known by their
// e-mail address, whose case does not matter: an address is taken in
// lowercase. Other user ids (identifiers) are kept as sent.
func userParam(r *http.Request) string {
	u := dirParam(r, "user")
	if strings.Contains(u, "@") {
		u = strings.ToLower(u)
	}
	return u
}

// scopeRoles lists the roles of a scope: the organization-wide one first,
// then the projects' in order.
func scopeRoles(sc app.Scope) []OrgRole {
	out := []OrgRole{}
	if sc.Role.Valid() {
		out = append(out, OrgRole{Role: string(sc.Role)})
	}
	projects := make([]string, 0, len(sc.Projects))
	for p := range sc.Projects {
		projects = append(projects, p)
	}
	slices.Sort(projects)
	for _, p := range projects {
		out = append(out, OrgRole{Project: p, Role: string(sc.Projects[p])})
	}
	return out
}

func orgOf(o projections.Organization, roles []OrgRole) Org {
	if roles == nil {
		roles = []OrgRole{}
	}
	return Org{ID: o.ID, Name: o.Name, CreatedAt: o.CreatedAt.UTC(), CreatedBy: o.CreatedBy,
		UpdatedAt: o.UpdatedAt.UTC(), UpdatedBy: o.UpdatedBy, Roles: roles}
}

// listOrgs lists the organizations the caller belongs to: for a person,
// every organization where they hold a role (organization-wide or in a
// project); for a service token, its own organization.
func (s *Server) listOrgs(w http.ResponseWriter, r *http.Request) {
	id, _ := identity(r)
	if !s.awaitPosition(w, r, "access_control", "directory") {
		return
	}
	var orgs []string
	roles := map[string][]OrgRole{}
	switch id.Actor.Kind {
	case domain.ActorUser:
		ms, err := s.cfg.Reader.MembershipsOf(r.Context(), id.Actor.ID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, m := range ms {
			if _, seen := roles[m.Org]; !seen {
				orgs = append(orgs, m.Org)
			}
			roles[m.Org] = append(roles[m.Org], OrgRole{Project: m.Project, Role: m.Role})
		}
	case domain.ActorToken:
		sc, err := s.cfg.App.ScopeOf(r.Context(), id.Actor, id.Org)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		orgs, roles[id.Org] = []string{id.Org}, scopeRoles(sc)
	}
	items := []Org{}
	for _, org := range orgs {
		o, err := s.cfg.Reader.Organization(r.Context(), org)
		if errors.Is(err, projections.ErrNotFound) {
			continue // not in the read models yet
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		items = append(items, orgOf(o, roles[org]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

var orgFields = map[string]string{"organization id": "id", "name": "name"}

func (s *Server) createOrg(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	res, err := s.cfg.App.CreateOrganization(r.Context(), s.request(r), in.ID, in.Name)
	if err != nil {
		s.failDir(w, r, err, orgFields)
		return
	}
	w.Header().Set("Location", "/v1/orgs/"+in.ID)
	wrote(w, http.StatusCreated, res, ResourceCreated{Written: written(res), ID: in.ID})
}

func (s *Server) getOrg(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	sc, ok := s.orgScope(w, r, org)
	if !ok || !s.awaitPosition(w, r, "directory") {
		return
	}
	o, err := s.cfg.Reader.Organization(r.Context(), org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, orgOf(o, scopeRoles(sc)))
}

func (s *Server) updateOrg(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	var in struct {
		Name *string `json:"name"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	if in.Name == nil {
		dirInvalid(w, r, "name", "name is required")
		return
	}
	res, err := s.cfg.App.RenameOrganization(r.Context(), s.request(r), org, *in.Name)
	if err != nil {
		s.failDir(w, r, err, orgFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}

// listMembers lists the grants of an organization. A caller with an
// organization-wide role sees every grant; a caller whose access is
// limited to some projects sees the grants of those projects only.
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	sc, ok := s.orgScope(w, r, org)
	if !ok || !s.awaitPosition(w, r, "access_control") {
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
	items := []Member{}
	for _, m := range ms {
		if sc.Wide() || (m.Project != "" && sc.RoleIn(m.Project).Can(domain.PermReadMembers)) {
			items = append(items, Member{User: m.UserID, Project: m.Project, Role: m.Role, GrantedBy: m.GrantedBy, GrantedAt: m.GrantedAt.UTC()})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

var memberFields = map[string]string{"user id": "user", "role": "role"}

type grantBody struct {
	Role string `json:"role"`
}

func (s *Server) grantOrgRole(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	var in grantBody
	if !decodeJSON(w, r, &in) {
		return
	}
	res, err := s.cfg.App.GrantRole(r.Context(), s.request(r), org, userParam(r), domain.Role(in.Role), "")
	if err != nil {
		s.failDir(w, r, err, memberFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}

func (s *Server) revokeOrgRole(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	res, err := s.cfg.App.RevokeRole(r.Context(), s.request(r), org, userParam(r), "")
	if err != nil {
		s.failDir(w, r, err, memberFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}

// grantProjectRole grants a role in one project, which must exist.
func (s *Server) grantProjectRole(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	// The caller's right to manage the project's members comes first, so
	// that whether the project exists is told only to those who may know.
	if _, ok := s.authorize(w, r, org, project, "", domain.PermManageMembers); !ok {
		return
	}
	if _, err := s.cfg.App.ProjectEnvironments(r.Context(), org, project); err != nil {
		s.fail(w, r, err)
		return
	}
	var in grantBody
	if !decodeJSON(w, r, &in) {
		return
	}
	res, err := s.cfg.App.GrantRole(r.Context(), s.request(r), org, userParam(r), domain.Role(in.Role), project)
	if err != nil {
		s.failDir(w, r, err, memberFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}

func (s *Server) revokeProjectRole(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	res, err := s.cfg.App.RevokeRole(r.Context(), s.request(r), org, userParam(r), project)
	if err != nil {
		s.failDir(w, r, err, memberFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}
