package api

import (
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// ServiceToken is a service token's metadata; never its secret nor the
// secret's hash.
type ServiceToken struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Role    string `json:"role"`
	Project string `json:"project,omitempty"`
	// Environments limit the token to some environments of its project
	// (empty: every environment).
	Environments []string   `json:"environments"`
	ExpiresAt    time.Time  `json:"expires_at"`
	IssuedBy     string     `json:"issued_by"`
	IssuedAt     time.Time  `json:"issued_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokedBy    string     `json:"revoked_by,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
	// Status is active, expired or revoked, as of the answer.
	Status string `json:"status"`
}

// IssuedServiceToken is a new token with its secret, which is shown
// this once.
type IssuedServiceToken struct {
	Written
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	Project      string    `json:"project,omitempty"`
	Environments []string  `json:"environments"`
	ExpiresAt    time.Time `json:"expires_at"`
	Secret       string    `json:"secret"`
}

func (s *Server) mountTokens(r chi.Router) {
	r.Get("/orgs/{org}/tokens", s.listTokens)
	r.Post("/orgs/{org}/tokens", s.issueToken)
	r.Get("/orgs/{org}/tokens/{token}", s.getToken)
	r.Delete("/orgs/{org}/tokens/{token}", s.revokeToken)
}

// tokenVisible reports whether a scope lets its actor see a token: an
// organization-wide role sees every token, a role limited to projects
// the tokens limited to those projects.
func tokenVisible(sc app.Scope, t projections.Token) bool {
	if sc.Wide() {
		return sc.Role.Can(domain.PermReadMembers)
	}
	return t.Project != "" && sc.RoleIn(t.Project).Can(domain.PermReadMembers)
}

func (s *Server) serviceToken(t projections.Token) ServiceToken { return tokenAt(t, s.now()) }

// listTokens lists the tokens the caller can see, revoked and expired
// ones included, in the order they were issued.
func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	sc, ok := s.orgScope(w, r, org)
	if !ok || !s.awaitPosition(w, r, "access_control") {
		return
	}
	ts, err := s.cfg.Reader.Tokens(r.Context(), org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	items := []ServiceToken{}
	for _, t := range ts {
		if tokenVisible(sc, t) {
			items = append(items, s.serviceToken(t))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request) {
	org, id := chi.URLParam(r, "org"), chi.URLParam(r, "token")
	sc, ok := s.orgScope(w, r, org)
	if !ok || !s.awaitPosition(w, r, "access_control") {
		return
	}
	ts, err := s.cfg.Reader.Tokens(r.Context(), org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, t := range ts {
		if t.ID == id && tokenVisible(sc, t) {
			writeJSON(w, http.StatusOK, s.serviceToken(t))
			return
		}
	}
	dirNotFound(w, r)
}

var tokenFields = map[string]string{"name": "name", "role": "role", "project": "project", "environment": "environments",
	"environments": "environments", "expires at": "expires_at"}

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	var in struct {
		Name         string     `json:"name"`
		Role         string     `json:"role"`
		Project      string     `json:"project"`
		Environments []string   `json:"environments"`
		TTLSeconds   *int64     `json:"ttl_seconds"`
		ExpiresAt    *time.Time `json:"expires_at"`
	}
	if !decodeJSON(w, r, &in) {
		return
	}
	spec := app.TokenSpec{Name: in.Name, Role: domain.Role(in.Role), Project: in.Project, Environments: in.Environments}
	fields := tokenFields
	switch {
	case (in.TTLSeconds == nil) == (in.ExpiresAt == nil):
		dirInvalid(w, r, "ttl_seconds", "send either ttl_seconds or expires_at")
		return
	case in.TTLSeconds != nil:
		if *in.TTLSeconds <= 0 || *in.TTLSeconds > int64(domain.MaxTokenLifetime/time.Second) {
			dirInvalid(w, r, "ttl_seconds", "ttl_seconds: want 1 to "+strconv.FormatInt(int64(domain.MaxTokenLifetime/time.Second), 10))
			return
		}
		spec.TTL = time.Duration(*in.TTLSeconds) * time.Second
		fields = maps.Clone(tokenFields)
		fields["expires at"] = "ttl_seconds"
	default:
		spec.ExpiresAt = *in.ExpiresAt
	}
	if in.Project != "" {
		// The caller must be able to issue tokens in the project before
		// it learns whether the project and its environments exist.
		if _, ok := s.authorize(w, r, org, in.Project, "", domain.PermManageTokens); !ok {
			return
		}
		envs, err := s.cfg.App.ProjectEnvironments(r.Context(), org, in.Project)
		if errors.Is(err, domain.ErrNotFound) {
			dirInvalid(w, r, "project", "no project "+in.Project)
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, e := range in.Environments {
			if !slices.Contains(envs, e) {
				dirInvalid(w, r, "environments", "no environment "+e+" in project "+in.Project)
				return
			}
		}
	}
	tok, res, err := s.cfg.App.IssueToken(r.Context(), s.request(r), org, spec)
	if err != nil {
		s.failDir(w, r, err, fields)
		return
	}
	envs := in.Environments
	if envs == nil {
		envs = []string{}
	}
	w.Header().Set("Location", "/v1/orgs/"+org+"/tokens/"+tok.ID)
	wrote(w, http.StatusCreated, res, IssuedServiceToken{Written: written(res), ID: tok.ID, Name: in.Name, Role: in.Role,
		Project: in.Project, Environments: envs, ExpiresAt: tok.ExpiresAt, Secret: tok.Secret})
}

// revokeToken revokes a token; a token may revoke itself.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	org, id := chi.URLParam(r, "org"), chi.URLParam(r, "token")
	if _, ok := s.orgScope(w, r, org); !ok {
		return
	}
	res, err := s.cfg.App.RevokeToken(r.Context(), s.request(r), org, id, r.URL.Query().Get("reason"))
	if err != nil {
		s.failDir(w, r, err, map[string]string{"reason": "reason"})
		return
	}
	wrote(w, http.StatusOK, res, nil)
}
