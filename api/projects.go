package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// Project is a project of an organization.
type Project struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// Environment is a project environment with its settings.
type Environment struct {
	ID         string `json:"id"`
	Project    string `json:"project"`
	Name       string `json:"name"`
	Production bool   `json:"production"`
	// RotationSeconds is the data key rotation interval.
	RotationSeconds int64       `json:"rotation_seconds"`
	Approval        EnvApproval `json:"approval"`
	CreatedAt       time.Time   `json:"created_at"`
	CreatedBy       string      `json:"created_by"`
	UpdatedAt       time.Time   `json:"updated_at"`
	UpdatedBy       string      `json:"updated_by"`
}

// EnvApproval says which actions on an environment's values need an
// approved request, and how many people other than the requester must
// approve (0 means 1).
type EnvApproval struct {
	Reveal    bool `json:"reveal"`
	Change    bool `json:"change"`
	Approvers int  `json:"approvers"`
}

// Bundle is a named, ordered set of keys of a project.
type Bundle struct {
	ID        string      `json:"id"`
	Project   string      `json:"project"`
	Keys      []BundleKey `json:"keys"`
	CreatedAt time.Time   `json:"created_at"`
	CreatedBy string      `json:"created_by"`
	UpdatedAt time.Time   `json:"updated_at"`
	UpdatedBy string      `json:"updated_by"`
}

// BundleKey is one key of a bundle.
type BundleKey struct {
	Name     string `json:"name"`
	Required bool   `json:"required"`
}

func (s *Server) mountProjects(r chi.Router) {
	r.Get("/orgs/{org}/projects", s.listProjects)
	r.Post("/orgs/{org}/projects", s.createProject)
	r.Get("/orgs/{org}/projects/{project}", s.getProject)
	r.Patch("/orgs/{org}/projects/{project}", s.updateProject)
	r.Get("/orgs/{org}/projects/{project}/envs", s.listEnvironments)
	r.Post("/orgs/{org}/projects/{project}/envs", s.createEnvironment)
	r.Get("/orgs/{org}/projects/{project}/envs/{env}", s.getEnvironment)
	r.Patch("/orgs/{org}/projects/{project}/envs/{env}", s.updateEnvironment)
	r.Get("/orgs/{org}/projects/{project}/bundles", s.listBundles)
	r.Post("/orgs/{org}/projects/{project}/bundles", s.createBundle)
	r.Get("/orgs/{org}/projects/{project}/bundles/{bundle}", s.getBundle)
	r.Put("/orgs/{org}/projects/{project}/bundles/{bundle}", s.replaceBundle)
	r.Delete("/orgs/{org}/projects/{project}/bundles/{bundle}", s.deleteBundle)
}

// projectVisible reports whether a scope lets its actor read project's
// metadata: an organization-wide role, or a role in (or a token limited
// to) that project.
func projectVisible(sc app.Scope, project string) bool {
	return sc.RoleIn(project).Can(domain.PermReadMetadata)
}

// projectScope authorizes a read of project: the caller must see it (a
// token limited to some of its environments does). On refusal it answers
// 404, as for a project that does not exist, and returns false.
func (s *Server) projectScope(w http.ResponseWriter, r *http.Request, org, project string) (app.Scope, bool) {
	sc, ok := s.orgScope(w, r, org)
	if !ok {
		return sc, false
	}
	if !projectVisible(sc, project) {
		dirNotFound(w, r)
		return sc, false
	}
	return sc, true
}

// findProject returns a project from the read models, or ErrNotFound.
func (s *Server) findProject(ctx context.Context, org, project string) (projections.Project, error) {
	ps, err := s.cfg.Reader.Projects(ctx, org)
	if err != nil {
		return projections.Project{}, err
	}
	for _, p := range ps {
		if p.ID == project {
			return p, nil
		}
	}
	return projections.Project{}, projections.ErrNotFound
}

func projectView(p projections.Project) Project {
	return Project{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt.UTC(), CreatedBy: p.CreatedBy, UpdatedAt: p.UpdatedAt.UTC(), UpdatedBy: p.UpdatedBy}
}

// listProjects lists the projects the caller can see: every project for
// an organization-wide role, otherwise only the projects where the caller
// holds a role (or the one its token is limited to).
func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	sc, ok := s.orgScope(w, r, org)
	if !ok || !s.awaitPosition(w, r, "directory") {
		return
	}
	ps, err := s.cfg.Reader.Projects(r.Context(), org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	items := []Project{}
	for _, p := range ps {
		if projectVisible(sc, p.ID) {
			items = append(items, projectView(p))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

var projectFields = map[string]string{"project id": "id", "organization id": "org", "name": "name"}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	sc, ok := s.orgScope(w, r, org)
	if !ok {
		return
	}
	var in struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	if !sc.Wide() {
		// The domain would answer as if the organization were not there:
		// the caller sees it, so it is told why.
		problem(w, r, http.StatusForbidden, "forbidden", "creating a project needs a role in the whole organization")
		return
	}
	res, err := s.cfg.App.CreateProject(r.Context(), s.request(r), org, in.ID, in.Name)
	if err != nil {
		s.failDir(w, r, err, projectFields)
		return
	}
	w.Header().Set("Location", "/v1/orgs/"+org+"/projects/"+in.ID)
	wrote(w, http.StatusCreated, res, ResourceCreated{Written: written(res), ID: in.ID})
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	if _, ok := s.projectScope(w, r, org, project); !ok || !s.awaitPosition(w, r, "directory") {
		return
	}
	p, err := s.findProject(r.Context(), org, project)
	if err != nil {
		s.failProject(w, r, err, project)
		return
	}
	writeJSON(w, http.StatusOK, projectView(p))
}

// failProject answers a read error, naming the missing project.
func (s *Server) failProject(w http.ResponseWriter, r *http.Request, err error, project string) {
	if errors.Is(err, projections.ErrNotFound) {
		problem(w, r, http.StatusNotFound, "not_found", "no project "+project)
		return
	}
	s.fail(w, r, err)
}

func (s *Server) updateProject(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
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
	res, err := s.cfg.App.RenameProject(r.Context(), s.request(r), org, project, *in.Name)
	if err != nil {
		s.failDir(w, r, err, projectFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}

func environmentView(e projections.Environment) Environment {
	return Environment{ID: e.ID, Project: e.Project, Name: e.Name, Production: e.Production, RotationSeconds: e.RotationSeconds,
		Approval:  EnvApproval{Reveal: e.ApproveReveal, Change: e.ApproveChange, Approvers: e.Approvers},
		CreatedAt: e.CreatedAt.UTC(), CreatedBy: e.CreatedBy, UpdatedAt: e.UpdatedAt.UTC(), UpdatedBy: e.UpdatedBy}
}

// listEnvironments lists a project's environments in the order they were
// created; a token limited to some environments sees those only.
func (s *Server) listEnvironments(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	sc, ok := s.projectScope(w, r, org, project)
	if !ok || !s.awaitPosition(w, r, "directory") {
		return
	}
	if _, err := s.findProject(r.Context(), org, project); err != nil {
		s.failProject(w, r, err, project)
		return
	}
	es, err := s.cfg.Reader.Environments(r.Context(), org, project)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	items := []Environment{}
	for _, e := range es {
		if len(sc.Environments) == 0 || slices.Contains(sc.Environments, e.ID) {
			items = append(items, environmentView(e))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

var envFields = map[string]string{"environment id": "id", "name": "name", "rotation interval": "rotation_seconds", "approvers": "approval.approvers"}

// maxRotationSeconds is the longest rotation interval a duration holds.
const maxRotationSeconds = math.MaxInt64 / int64(time.Second)

// envApprovalBody is the approval policy of a request.
type envApprovalBody struct {
	Reveal    bool `json:"reveal"`
	Change    bool `json:"change"`
	Approvers int  `json:"approvers"`
}

func (b *envApprovalBody) policy() *domain.ApprovalPolicy {
	if b == nil {
		return nil
	}
	return &domain.ApprovalPolicy{Reveal: b.Reveal, Change: b.Change, Approvers: b.Approvers}
}

// envRotation checks a rotation_seconds of a request; on a bad value it
// answers and returns false.
func envRotation(w http.ResponseWriter, r *http.Request, v *int64) (*time.Duration, bool) {
	if v == nil {
		return nil, true
	}
	if *v <= 0 || *v > maxRotationSeconds {
		dirInvalid(w, r, "rotation_seconds", "rotation_seconds: want a whole number of seconds, at least 3600")
		return nil, false
	}
	d := time.Duration(*v) * time.Second
	return &d, true
}

func (s *Server) createEnvironment(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	var in struct {
		ID              string           `json:"id"`
		Name            string           `json:"name"`
		Production      bool             `json:"production"`
		RotationSeconds *int64           `json:"rotation_seconds"`
		Approval        *envApprovalBody `json:"approval"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	rot, ok := envRotation(w, r, in.RotationSeconds)
	if !ok {
		return
	}
	spec := app.EnvSpec{Name: in.Name, Production: in.Production}
	if rot != nil {
		spec.Rotation = *rot
	}
	if p := in.Approval.policy(); p != nil {
		spec.Approval = *p
	}
	res, err := s.cfg.App.CreateEnvironment(r.Context(), s.request(r), app.Env{Org: org, Project: project, Env: in.ID}, spec)
	if err != nil {
		s.failDir(w, r, err, envFields)
		return
	}
	w.Header().Set("Location", "/v1/orgs/"+org+"/projects/"+project+"/envs/"+in.ID)
	wrote(w, http.StatusCreated, res, ResourceCreated{Written: written(res), ID: in.ID})
}

func (s *Server) getEnvironment(w http.ResponseWriter, r *http.Request) {
	org, project, env := chi.URLParam(r, "org"), chi.URLParam(r, "project"), chi.URLParam(r, "env")
	if _, ok := s.authorize(w, r, org, project, env, domain.PermReadMetadata); !ok || !s.awaitPosition(w, r, "directory") {
		return
	}
	es, err := s.cfg.Reader.Environments(r.Context(), org, project)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, e := range es {
		if e.ID == env {
			writeJSON(w, http.StatusOK, environmentView(e))
			return
		}
	}
	problem(w, r, http.StatusNotFound, "not_found", "no environment "+env+" in project "+project)
}

func (s *Server) updateEnvironment(w http.ResponseWriter, r *http.Request) {
	org, project, env := chi.URLParam(r, "org"), chi.URLParam(r, "project"), chi.URLParam(r, "env")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	var in struct {
		Name            *string          `json:"name"`
		Production      *bool            `json:"production"`
		RotationSeconds *int64           `json:"rotation_seconds"`
		Approval        *envApprovalBody `json:"approval"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	rot, ok := envRotation(w, r, in.RotationSeconds)
	if !ok {
		return
	}
	u := app.EnvUpdate{Name: in.Name, Production: in.Production, Rotation: rot, Approval: in.Approval.policy()}
	res, err := s.cfg.App.UpdateEnvironment(r.Context(), s.request(r), app.Env{Org: org, Project: project, Env: env}, u)
	if err != nil {
		s.failDir(w, r, err, envFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}

func bundleView(b projections.Bundle) Bundle {
	keys := make([]BundleKey, len(b.Keys))
	for i, k := range b.Keys {
		keys[i] = BundleKey(k)
	}
	return Bundle{ID: b.ID, Project: b.Project, Keys: keys, CreatedAt: b.CreatedAt.UTC(), CreatedBy: b.CreatedBy,
		UpdatedAt: b.UpdatedAt.UTC(), UpdatedBy: b.UpdatedBy}
}

func (s *Server) listBundles(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	if _, ok := s.projectScope(w, r, org, project); !ok || !s.awaitPosition(w, r, "directory") {
		return
	}
	if _, err := s.findProject(r.Context(), org, project); err != nil {
		s.failProject(w, r, err, project)
		return
	}
	bs, err := s.cfg.Reader.Bundles(r.Context(), org, project)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	items := make([]Bundle, 0, len(bs))
	for _, b := range bs {
		items = append(items, bundleView(b))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

var bundleFields = map[string]string{"bundle id": "id", "keys": "keys", "key": "keys"}

func domainBundleKeys(in []BundleKey) []domain.BundleKey {
	out := make([]domain.BundleKey, len(in))
	for i, k := range in {
		out[i] = domain.BundleKey(k)
	}
	return out
}

func (s *Server) createBundle(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	var in struct {
		ID   string      `json:"id"`
		Keys []BundleKey `json:"keys"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	res, err := s.cfg.App.CreateBundle(r.Context(), s.request(r), org, project, in.ID, domainBundleKeys(in.Keys))
	if err != nil {
		s.failDir(w, r, err, bundleFields)
		return
	}
	w.Header().Set("Location", "/v1/orgs/"+org+"/projects/"+project+"/bundles/"+in.ID)
	wrote(w, http.StatusCreated, res, ResourceCreated{Written: written(res), ID: in.ID})
}

func (s *Server) getBundle(w http.ResponseWriter, r *http.Request) {
	org, project, bundle := chi.URLParam(r, "org"), chi.URLParam(r, "project"), chi.URLParam(r, "bundle")
	if _, ok := s.projectScope(w, r, org, project); !ok || !s.awaitPosition(w, r, "directory") {
		return
	}
	bs, err := s.cfg.Reader.Bundles(r.Context(), org, project)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, b := range bs {
		if b.ID == bundle {
			writeJSON(w, http.StatusOK, bundleView(b))
			return
		}
	}
	problem(w, r, http.StatusNotFound, "not_found", "no bundle "+bundle+" in project "+project)
}

func (s *Server) replaceBundle(w http.ResponseWriter, r *http.Request) {
	org, project, bundle := chi.URLParam(r, "org"), chi.URLParam(r, "project"), chi.URLParam(r, "bundle")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	var in struct {
		Keys []BundleKey `json:"keys"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	res, err := s.cfg.App.UpdateBundle(r.Context(), s.request(r), org, project, bundle, domainBundleKeys(in.Keys))
	if err != nil {
		s.failDir(w, r, err, bundleFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}

func (s *Server) deleteBundle(w http.ResponseWriter, r *http.Request) {
	org, project, bundle := chi.URLParam(r, "org"), chi.URLParam(r, "project"), chi.URLParam(r, "bundle")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	res, err := s.cfg.App.DeleteBundle(r.Context(), s.request(r), org, project, bundle)
	if err != nil {
		s.failDir(w, r, err, bundleFields)
		return
	}
	wrote(w, http.StatusOK, res, nil)
}
