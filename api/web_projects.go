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

// The pages of projects, environments, secrets (with reveal, history and
// rollback), bundles and the key library, and keysets (with rotation).
// They read the same read models and call the same application commands
// as the API (projects.go, secrets.go, keys.go), with the same
// authorization. No page shows a value, except the answer to the reveal
// the person asked for (recorded as secret.viewed before it is
// decrypted).
//
// A form's write redirects to its page with the write's log position as
// min_position, so that the page waits for the read models to show it.

func (s *Server) mountProjectPages(r chi.Router) {
	const proj = "/orgs/{org}/projects/{project}"
	const env = proj + "/envs/{env}"
	const sec = env + "/secrets/{name}"
	r.Get("/orgs/{org}/projects", s.projectsPage)
	r.Post("/orgs/{org}/projects", s.createProjectForm)
	r.Get(proj, s.projectPage)
	r.Post(proj+"/envs", s.createEnvForm)
	r.Get(proj+"/bundles", s.bundlesPage)
	r.Post(proj+"/bundles", s.createBundleForm)
	r.Post(proj+"/bundles/{bundle}/delete", s.deleteBundleForm)
	r.Get(env, s.envPage)
	r.Post(env+"/secrets", s.setSecretForm)
	r.Post(env+"/rotate", s.rotateForm)
	r.Get(sec, s.secretPage)
	r.Post(sec, s.setSecretForm)
	r.Post(sec+"/reveal", s.revealForm)
	r.Post(sec+"/rollback", s.rollbackForm)
}

func init() {
	// projInterval says a number of seconds as people say an interval.
	webFuncs["projInterval"] = projInterval
	// projPct is part of whole in whole percent (100 when whole is 0).
	webFuncs["projPct"] = func(part, whole int64) int64 {
		if whole <= 0 {
			return 100
		}
		return part * 100 / whole
	}
}

func projInterval(seconds int64) string {
	d := time.Duration(seconds) * time.Second
	switch {
	case seconds <= 0:
		return "none"
	case d%(24*time.Hour) == 0:
		n := int64(d / (24 * time.Hour))
		if n == 1 {
			return "1 day"
		}
		return fmt.Sprintf("%d days", n)
	case d%time.Hour == 0:
		return fmt.Sprintf("%d h", int64(d/time.Hour))
	case d%time.Minute == 0:
		return fmt.Sprintf("%d min", int64(d/time.Minute))
	}
	return fmt.Sprintf("%d s", seconds)
}

// projURL is the page of a project; projEnvURL of an environment; projSecURL of
// a secret.
func projURL(org, project string) string {
	return "/orgs/" + url.PathEscape(org) + "/projects/" + url.PathEscape(project)
}

func projEnvURL(org, project, env string) string {
	return projURL(org, project) + "/envs/" + url.PathEscape(env)
}

func projSecURL(ref domain.SecretRef) string {
	return projEnvURL(ref.Org, ref.Project, ref.Env) + "/secrets/" + url.PathEscape(ref.Name)
}

// projAt adds min_position to a page's path.
func projAt(path string, pos uint64) string {
	if pos == 0 {
		return path
	}
	return path + "?min_position=" + strconv.FormatUint(pos, 10)
}

// projProblem is a problem of the last form, shown on its page.
type projProblem struct {
	Code   string
	Detail string
}

// projFormProblem shows on the page itself (through redraw) what the
// application refused about a form's content: bad input, a conflict with
// the current state, an approval policy. Anything else (a missing role,
// something not found, a failure) is an error page.
func (s *Server) projFormProblem(w http.ResponseWriter, r *http.Request, err error, redraw func(status int, p projProblem)) {
	p := s.problemOf(w, r, err)
	switch {
	case p.Code == "approval_required",
		p.Status == http.StatusBadRequest, p.Status == http.StatusConflict, p.Status == http.StatusGone,
		p.Status == http.StatusPreconditionFailed, p.Status == http.StatusRequestEntityTooLarge:
		redraw(p.Status, projProblem{Code: p.Code, Detail: p.Detail})
	default:
		writeProblemDoc(w, r, p)
	}
}

// projParseForm parses a form; on failure it answers 400.
func projParseForm(w http.ResponseWriter, r *http.Request) bool {
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem(w, r, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("the form is over %d bytes", tooBig.Limit))
			return false
		}
		problem(w, r, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return false
	}
	return true
}

// ----- projects -----

type projRow struct {
	projections.Project
	Role domain.Role
	Envs int
}

type projListView struct {
	Projects  []projRow
	CanCreate bool
	Problem   *projProblem
	ID, Name  string
}

func (s *Server) projectsPage(w http.ResponseWriter, r *http.Request) {
	s.drawProjects(w, r, http.StatusOK, projListView{})
}

func (s *Server) drawProjects(w http.ResponseWriter, r *http.Request, status int, v projListView) {
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
	envs, err := s.cfg.Reader.Environments(r.Context(), org, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	count := map[string]int{}
	for _, e := range envs {
		if len(sc.Environments) == 0 || slices.Contains(sc.Environments, e.ID) {
			count[e.Project]++
		}
	}
	for _, p := range ps {
		if projectVisible(sc, p.ID) {
			v.Projects = append(v.Projects, projRow{Project: p, Role: sc.RoleIn(p.ID), Envs: count[p.ID]})
		}
	}
	v.CanCreate = sc.Wide() && sc.Role.Can(domain.PermManageProject)
	s.render(w, r, status, "projects", pageData{Title: "Projects", Section: "projects", Org: org, Content: v})
}

func (s *Server) createProjectForm(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	sc, ok := s.orgScope(w, r, org)
	if !ok || !projParseForm(w, r) {
		return
	}
	v := projListView{ID: strings.TrimSpace(r.PostForm.Get("id")), Name: strings.TrimSpace(r.PostForm.Get("name"))}
	if !sc.Wide() {
		problem(w, r, http.StatusForbidden, "forbidden", "creating a project needs a role in the whole organization")
		return
	}
	res, err := s.cfg.App.CreateProject(r.Context(), s.request(r), org, v.ID, v.Name)
	if err != nil {
		s.projFormProblem(w, r, err, func(status int, p projProblem) {
			v.Problem = &p
			s.drawProjects(w, r, status, v)
		})
		return
	}
	back(w, r, projAt(projURL(org, v.ID), res.Position), "created")
}

// ----- a project and its environments -----

type projEnvRow struct {
	projections.Environment
	Secrets int
}

type projEnvForm struct {
	ID, Name, RotationHours, Approvers string
	Production, Reveal, Change         bool
}

type projPageView struct {
	Project   projections.Project
	Role      domain.Role
	Envs      []projEnvRow
	CanManage bool
	Problem   *projProblem
	Form      projEnvForm
}

func (s *Server) projectPage(w http.ResponseWriter, r *http.Request) {
	s.drawProject(w, r, http.StatusOK, projPageView{})
}

func (s *Server) drawProject(w http.ResponseWriter, r *http.Request, status int, v projPageView) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	sc, ok := s.projectScope(w, r, org, project)
	if !ok || !s.awaitPosition(w, r, "directory", "secrets") {
		return
	}
	p, err := s.findProject(r.Context(), org, project)
	if err != nil {
		s.failProject(w, r, err, project)
		return
	}
	envs, err := s.cfg.Reader.Environments(r.Context(), org, project)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	secrets, err := s.cfg.Reader.Secrets(r.Context(), org, project, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	count := map[string]int{}
	for _, x := range secrets {
		if !x.Deleted {
			count[x.Env]++
		}
	}
	for _, e := range envs {
		if len(sc.Environments) == 0 || slices.Contains(sc.Environments, e.ID) {
			v.Envs = append(v.Envs, projEnvRow{Environment: e, Secrets: count[e.ID]})
		}
	}
	v.Project, v.Role = p, sc.RoleIn(project)
	v.CanManage = v.Role.Can(domain.PermManageProject) && len(sc.Environments) == 0
	s.render(w, r, status, "project", pageData{Title: "Project " + p.Name, Section: "projects", Org: org, Content: v})
}

func (s *Server) createEnvForm(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	if _, ok := s.orgScope(w, r, org); !ok || !projParseForm(w, r) {
		return
	}
	f := r.PostForm
	v := projPageView{Form: projEnvForm{ID: strings.TrimSpace(f.Get("id")), Name: strings.TrimSpace(f.Get("name")),
		RotationHours: strings.TrimSpace(f.Get("rotation_hours")), Approvers: strings.TrimSpace(f.Get("approvers")),
		Production: f.Get("production") != "", Reveal: f.Get("approve_reveal") != "", Change: f.Get("approve_change") != ""}}
	redraw := func(status int, p projProblem) {
		v.Problem = &p
		s.drawProject(w, r, status, v)
	}
	spec := app.EnvSpec{Name: v.Form.Name, Production: v.Form.Production,
		Approval: domain.ApprovalPolicy{Reveal: v.Form.Reveal, Change: v.Form.Change}}
	if h := v.Form.RotationHours; h != "" {
		n, err := strconv.ParseInt(h, 10, 64)
		if err != nil || n < 1 || n > maxRotationSeconds/3600 {
			redraw(http.StatusBadRequest, projProblem{Code: "invalid_request", Detail: "rotation interval: want a whole number of hours, at least 1"})
			return
		}
		spec.Rotation = time.Duration(n) * time.Hour
	}
	if a := v.Form.Approvers; a != "" {
		n, err := strconv.Atoi(a)
		if err != nil {
			redraw(http.StatusBadRequest, projProblem{Code: "invalid_request", Detail: fmt.Sprintf("approvers: want a number from 1 to %d", domain.MaxApprovers)})
			return
		}
		spec.Approval.Approvers = n
	}
	e := app.Env{Org: org, Project: project, Env: v.Form.ID}
	res, err := s.cfg.App.CreateEnvironment(r.Context(), s.request(r), e, spec)
	if err != nil {
		s.projFormProblem(w, r, err, redraw)
		return
	}
	back(w, r, projAt(projEnvURL(org, project, v.Form.ID), res.Position), "created")
}

// ----- an environment: its secrets and its keyset -----

type projEnvView struct {
	Project projections.Project
	Env     projections.Environment
	Role    domain.Role
	Secrets []SecretMeta
	// Keyset is nil until the environment has one.
	Keyset                         *Keyset
	CanReveal, CanWrite, CanRotate bool
	Problem                        *projProblem
	// Form is the set form's last input (never its value).
	Form struct{ Name, Description, Tags string }
	// Ask explains how to ask for an approved request; AskInline shows it
	// above the secrets (the policy asks for approvals, and no refusal
	// shows it already).
	Ask       projAsk
	AskInline bool
	// Sealed of Values current values are sealed by the primary key.
	Sealed, Values int64
}

// projAsk is how to ask for what an environment's approval policy keeps
// from being done directly.
type projAsk struct {
	Org, Project, Env string
	Approvers         int
	// What says what the policy asks approvals for.
	What string
}

func projAskOf(e projections.Environment) projAsk {
	a := projAsk{Org: e.Org, Project: e.Project, Env: e.ID, Approvers: max(e.Approvers, 1)}
	switch {
	case e.ApproveReveal && e.ApproveChange:
		a.What = "values are revealed and changed"
	case e.ApproveReveal:
		a.What = "values are revealed"
	case e.ApproveChange:
		a.What = "values are changed"
	}
	return a
}

func (s *Server) envPage(w http.ResponseWriter, r *http.Request) {
	s.drawEnv(w, r, http.StatusOK, projEnvView{})
}

// projPageEnv authorizes a read of an environment and returns it and its
// project from the read models (404 when either is missing).
func (s *Server) projPageEnv(w http.ResponseWriter, r *http.Request, models ...string) (domain.Principal, projections.Project, projections.Environment, bool) {
	e := secEnv(r)
	var p projections.Project
	var env projections.Environment
	who, ok := s.authorize(w, r, e.Org, e.Project, e.Env, domain.PermReadMetadata)
	if !ok || !s.awaitPosition(w, r, models...) {
		return who, p, env, false
	}
	p, err := s.findProject(r.Context(), e.Org, e.Project)
	if err != nil {
		s.failProject(w, r, err, e.Project)
		return who, p, env, false
	}
	envs, err := s.cfg.Reader.Environments(r.Context(), e.Org, e.Project)
	if err != nil {
		s.fail(w, r, err)
		return who, p, env, false
	}
	for _, x := range envs {
		if x.ID == e.Env {
			return who, p, x, true
		}
	}
	problem(w, r, http.StatusNotFound, "not_found", "no environment "+e.Env+" in project "+e.Project)
	return who, p, env, false
}

func (s *Server) drawEnv(w http.ResponseWriter, r *http.Request, status int, v projEnvView) {
	who, p, env, ok := s.projPageEnv(w, r, "directory", "secrets", "keys")
	if !ok {
		return
	}
	list, err := s.cfg.Reader.Secrets(r.Context(), env.Org, env.Project, env.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.now()
	for _, x := range list {
		v.Secrets = append(v.Secrets, secMeta(x, now))
	}
	sets, err := s.cfg.Reader.Keysets(r.Context(), env.Org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, k := range sets {
		if k.Project == env.Project && k.Env == env.ID {
			ks := keysetView(k, &env, now)
			slices.Reverse(ks.Keys) // newest first
			v.Keyset, v.Sealed, v.Values = &ks, k.Sealed, k.Values
		}
	}
	v.Project, v.Env, v.Role, v.Ask = p, env, who.Role, projAskOf(env)
	v.AskInline = (env.ApproveReveal || env.ApproveChange) && (v.Problem == nil || v.Problem.Code != "approval_required")
	v.CanReveal = who.Role.Can(domain.PermRevealValue)
	v.CanWrite = who.Role.Can(domain.PermWriteSecret)
	v.CanRotate = who.Role.Can(domain.PermRotateKeys)
	s.render(w, r, status, "env", pageData{Title: p.Name + " · " + env.Name, Section: "projects", Org: env.Org, Content: v})
}

// setSecretForm sets a secret's value: from the environment's page (the
// name in the form, with optional metadata) or from the secret's page.
// The value is never drawn again, not even when the form is refused.
func (s *Server) setSecretForm(w http.ResponseWriter, r *http.Request) {
	if !projParseForm(w, r) {
		return
	}
	e := secEnv(r)
	f := r.PostForm
	name, fromSecret := chi.URLParam(r, "name"), true
	if name == "" {
		name, fromSecret = strings.TrimSpace(f.Get("name")), false
	}
	ref := domain.SecretRef{Org: e.Org, Project: e.Project, Env: e.Env, Name: name}
	// Browsers send a textarea's line breaks as CRLF: they are kept as LF.
	value := []byte(strings.ReplaceAll(f.Get("value"), "\r\n", "\n"))
	defer clear(value)
	desc := strings.TrimSpace(f.Get("description"))
	var tags []string
	for t := range strings.SplitSeq(f.Get("tags"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	redraw := func(status int, p projProblem) {
		if fromSecret {
			s.drawSecret(w, r, status, projSecretView{Problem: &p})
			return
		}
		v := projEnvView{Problem: &p}
		v.Form.Name, v.Form.Description, v.Form.Tags = name, desc, strings.Join(tags, ", ")
		s.drawEnv(w, r, status, v)
	}
	bad := func(detail string) {
		redraw(http.StatusBadRequest, projProblem{Code: "invalid_request", Detail: detail})
	}
	switch {
	case !domain.ValidSecretName(name):
		bad(fmt.Sprintf("name: want an environment variable name (a letter or _, then letters, digits or _), at most %d bytes", domain.MaxSecretNameLen))
		return
	case len(value) == 0:
		bad("value: enter the value to set")
		return
	case len(desc) > domain.MaxDescription:
		bad(fmt.Sprintf("description: at most %d bytes", domain.MaxDescription))
		return
	case len(tags) > domain.MaxTags:
		bad(fmt.Sprintf("tags: at most %d tags", domain.MaxTags))
		return
	}
	for _, t := range tags {
		if len(t) > domain.MaxTagLen {
			bad(fmt.Sprintf("tags: each tag is at most %d bytes", domain.MaxTagLen))
			return
		}
	}
	req := s.request(r)
	res, err := s.cfg.App.SetSecret(r.Context(), req, ref, app.SetSecret{Value: value, Metadata: domain.SecretMetadata{Description: desc, Tags: tags}})
	if err == nil && res.Version > 1 && (desc != "" || len(tags) > 0) {
		// An existing secret: its metadata changes as a second event, as
		// through the API.
		var info app.SecretInfo
		if info, err = s.cfg.App.Secret(r.Context(), req.Actor, ref); err == nil {
			m := info.Metadata
			if desc != "" {
				m.Description = desc
			}
			if len(tags) > 0 {
				m.Tags = tags
			}
			var mres app.Result
			if mres, err = s.cfg.App.UpdateSecretMetadata(r.Context(), req, ref, m); err == nil {
				res.Position = max(res.Position, mres.Position)
			}
		}
	}
	if err != nil {
		s.projFormProblem(w, r, err, redraw)
		return
	}
	to := projEnvURL(e.Org, e.Project, e.Env)
	if fromSecret {
		to = projSecURL(ref)
	}
	back(w, r, projAt(to, res.Position), "updated")
}

// projValueView is the answer to a reveal: the one value asked for.
type projValueView struct {
	Ref      domain.SecretRef
	Version  uint64
	Value    string
	Base64   bool
	Reason   string
	Position uint64
	EnvURL   string
	SecURL   string
}

// revealForm reveals one value (the current one, or the version the form
// names) and answers with a page that shows it. The application records
// the read (channel ui) before it decrypts the value.
func (s *Server) revealForm(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok || !projParseForm(w, r) {
		return
	}
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	var version uint64
	if v := r.PostForm.Get("version"); v != "" {
		if version, ok = secVersionParam(w, r, "version", v); !ok {
			return
		}
	}
	rv, err := s.cfg.App.RevealSecret(r.Context(), s.secRevealRequest(r), ref, version, reason, secChannel(r))
	if err != nil {
		s.projFormProblem(w, r, err, func(status int, p projProblem) {
			if r.PostForm.Get("from") == "secret" {
				s.drawSecret(w, r, status, projSecretView{Problem: &p})
				return
			}
			s.drawEnv(w, r, status, projEnvView{Problem: &p})
		})
		return
	}
	sv := secValue(ref.Name, rv.Version, rv.Value)
	clear(rv.Value)
	v := projValueView{Ref: ref, Version: rv.Version, Reason: reason, Position: rv.Position,
		EnvURL: projEnvURL(ref.Org, ref.Project, ref.Env), SecURL: projSecURL(ref)}
	if sv.Value != nil {
		v.Value = *sv.Value
	} else {
		v.Value, v.Base64 = *sv.ValueBase64, true
	}
	s.render(w, r, http.StatusOK, "proj_value", pageData{Title: "Value of " + ref.Name, Section: "projects", Org: ref.Org, Content: v})
}

func (s *Server) rotateForm(w http.ResponseWriter, r *http.Request) {
	e := secEnv(r)
	if !projParseForm(w, r) {
		return
	}
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	if reason == "" {
		reason = "manual"
	}
	if _, err := s.cfg.App.RotateKeyset(r.Context(), s.request(r), e, reason); err != nil {
		s.projFormProblem(w, r, err, func(status int, p projProblem) { s.drawEnv(w, r, status, projEnvView{Problem: &p}) })
		return
	}
	pos, err := s.cfg.App.KeysetPosition(r.Context(), e)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	back(w, r, projAt(projEnvURL(e.Org, e.Project, e.Env), pos), "rotated")
}

// ----- a secret: its history -----

type projSecretView struct {
	Project  projections.Project
	Env      projections.Environment
	Meta     SecretMeta
	Versions []SecretVersionInfo
	// CanReveal: the role may reveal values and the environment's policy
	// lets it directly (and likewise CanWrite for changes).
	CanReveal, CanWrite bool
	Role                domain.Role
	Problem             *projProblem
	Ask                 projAsk
	AskInline           bool
}

func (s *Server) secretPage(w http.ResponseWriter, r *http.Request) {
	s.drawSecret(w, r, http.StatusOK, projSecretView{})
}

func (s *Server) drawSecret(w http.ResponseWriter, r *http.Request, status int, v projSecretView) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	who, p, env, ok := s.projPageEnv(w, r, "directory", "secrets")
	if !ok {
		return
	}
	x, err := s.cfg.Reader.Secret(r.Context(), ref.Org, ref.Project, ref.Env, ref.Name)
	if errors.Is(err, projections.ErrNotFound) {
		problem(w, r, http.StatusNotFound, "not_found", "no secret "+ref.Name+" in "+ref.Project+"/"+ref.Env)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	vs, err := s.cfg.Reader.SecretVersions(r.Context(), ref.Org, ref.Project, ref.Env, ref.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for i := len(vs) - 1; i >= 0; i-- { // newest first
		ver := vs[i]
		v.Versions = append(v.Versions, SecretVersionInfo{Version: ver.Version, KeyID: ver.KeyID, Current: ver.Version == x.Version,
			Destroyed: ver.Destroyed, RolledBackFrom: ver.From, CreatedAt: ver.CreatedAt.UTC(), CreatedBy: ver.CreatedBy})
	}
	v.Project, v.Env, v.Meta, v.Role, v.Ask = p, env, secMeta(x, s.now()), who.Role, projAskOf(env)
	v.AskInline = (env.ApproveReveal || env.ApproveChange) && (v.Problem == nil || v.Problem.Code != "approval_required")
	v.CanReveal = who.Role.Can(domain.PermRevealValue)
	v.CanWrite = who.Role.Can(domain.PermWriteSecret)
	s.render(w, r, status, "secret", pageData{Title: "Secret " + ref.Name, Section: "projects", Org: ref.Org, Content: v})
}

func (s *Server) rollbackForm(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok || !projParseForm(w, r) {
		return
	}
	to, ok := secVersionParam(w, r, "version", r.PostForm.Get("version"))
	if !ok {
		return
	}
	res, err := s.cfg.App.RollbackSecret(r.Context(), s.request(r), ref, to)
	if err != nil {
		s.projFormProblem(w, r, err, func(status int, p projProblem) { s.drawSecret(w, r, status, projSecretView{Problem: &p}) })
		return
	}
	back(w, r, projAt(projSecURL(ref), res.Position), "rolled-back")
}

// ----- bundles and the key library -----

// projLibKey is one key name of a project: the environments that hold it
// (In, by the environments' order) and the bundles that name it.
type projLibKey struct {
	Name    string
	In      []projLibCell
	Bundles []string
	// Missing counts the environments that do not hold it.
	Missing int
}

type projLibCell struct {
	Name    string
	Env     string
	Has     bool
	Version int64
}

type projBundlesView struct {
	Project   projections.Project
	Bundles   []projections.Bundle
	Envs      []projections.Environment
	Library   []projLibKey
	CanManage bool
	Problem   *projProblem
	ID, Keys  string
}

func (s *Server) bundlesPage(w http.ResponseWriter, r *http.Request) {
	s.drawBundles(w, r, http.StatusOK, projBundlesView{})
}

func (s *Server) drawBundles(w http.ResponseWriter, r *http.Request, status int, v projBundlesView) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	sc, ok := s.projectScope(w, r, org, project)
	if !ok || !s.awaitPosition(w, r, "directory", "secrets") {
		return
	}
	p, err := s.findProject(r.Context(), org, project)
	if err != nil {
		s.failProject(w, r, err, project)
		return
	}
	bundles, err := s.cfg.Reader.Bundles(r.Context(), org, project)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	envs, err := s.cfg.Reader.Environments(r.Context(), org, project)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	secrets, err := s.cfg.Reader.Secrets(r.Context(), org, project, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, e := range envs {
		if len(sc.Environments) == 0 || slices.Contains(sc.Environments, e.ID) {
			v.Envs = append(v.Envs, e)
		}
	}
	held := map[[2]string]int64{} // (env, name) → current version
	names := map[string]bool{}
	for _, x := range secrets {
		if !x.Deleted && slices.ContainsFunc(v.Envs, func(e projections.Environment) bool { return e.ID == x.Env }) {
			held[[2]string{x.Env, x.Name}] = x.Version
			names[x.Name] = true
		}
	}
	inBundles := map[string][]string{}
	for _, b := range bundles {
		for _, k := range b.Keys {
			names[k.Name] = true
			inBundles[k.Name] = append(inBundles[k.Name], b.ID)
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for _, n := range sorted {
		k := projLibKey{Name: n, Bundles: inBundles[n]}
		for _, e := range v.Envs {
			ver, has := held[[2]string{e.ID, n}]
			k.In = append(k.In, projLibCell{Name: n, Env: e.ID, Has: has, Version: ver})
			if !has {
				k.Missing++
			}
		}
		v.Library = append(v.Library, k)
	}
	v.Project, v.Bundles = p, bundles
	v.CanManage = sc.RoleIn(project).Can(domain.PermManageProject) && len(sc.Environments) == 0
	s.render(w, r, status, "bundles", pageData{Title: "Bundles and keys of " + p.Name, Section: "projects", Org: org, Content: v})
}

// projBundleKeys reads a bundle's keys, one per line in order, each
// optionally followed by the word "required".
func projBundleKeys(text string) ([]domain.BundleKey, error) {
	var out []domain.BundleKey
	for i, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
			continue
		case len(fields) > 2 || (len(fields) == 2 && !strings.EqualFold(fields[1], "required")):
			return nil, fmt.Errorf("keys, line %d: want a key name, optionally followed by the word required", i+1)
		}
		out = append(out, domain.BundleKey{Name: fields[0], Required: len(fields) == 2})
	}
	if len(out) == 0 {
		return nil, errors.New("keys: name at least one key")
	}
	return out, nil
}

func (s *Server) createBundleForm(w http.ResponseWriter, r *http.Request) {
	org, project := chi.URLParam(r, "org"), chi.URLParam(r, "project")
	if _, ok := s.orgScope(w, r, org); !ok || !projParseForm(w, r) {
		return
	}
	v := projBundlesView{ID: strings.TrimSpace(r.PostForm.Get("id")), Keys: r.PostForm.Get("keys")}
	redraw := func(status int, p projProblem) {
		v.Problem = &p
		s.drawBundles(w, r, status, v)
	}
	keys, err := projBundleKeys(v.Keys)
	if err != nil {
		redraw(http.StatusBadRequest, projProblem{Code: "invalid_request", Detail: err.Error()})
		return
	}
	res, err := s.cfg.App.CreateBundle(r.Context(), s.request(r), org, project, v.ID, keys)
	if err != nil {
		s.projFormProblem(w, r, err, redraw)
		return
	}
	back(w, r, projAt(projURL(org, project)+"/bundles", res.Position), "created")
}

func (s *Server) deleteBundleForm(w http.ResponseWriter, r *http.Request) {
	org, project, bundle := chi.URLParam(r, "org"), chi.URLParam(r, "project"), chi.URLParam(r, "bundle")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	res, err := s.cfg.App.DeleteBundle(r.Context(), s.request(r), org, project, bundle)
	if err != nil {
		s.projFormProblem(w, r, err, func(status int, p projProblem) {
			s.drawBundles(w, r, status, projBundlesView{Problem: &p})
		})
		return
	}
	back(w, r, projAt(projURL(org, project)+"/bundles", res.Position), "deleted")
}
