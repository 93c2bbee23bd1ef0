package api

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/domain"
)

// Me is who the caller is.
type Me struct {
	Actor string `json:"actor"`
	Kind  string `json:"kind"` // user or token
	// User is the person's id (an e-mail address), for people.
	User string `json:"user,omitempty"`
	// Org is the organization a service token belongs to.
	Org string `json:"org,omitempty"`
	// Method is how the person signed in (oidc, cli, dev).
	Method    string       `json:"method,omitempty"`
	ExpiresAt time.Time    `json:"expires_at"`
	Roles     []MeRole     `json:"roles"`
	DevSignIn bool         `json:"dev_sign_in,omitempty"`
	Token     *MeTokenInfo `json:"token,omitempty"`
}

// MeRole is a role the caller holds.
type MeRole struct {
	Org     string `json:"org"`
	Project string `json:"project,omitempty"`
	Role    string `json:"role"`
}

// MeTokenInfo is a service token's scope.
type MeTokenInfo struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Project      string   `json:"project,omitempty"`
	Environments []string `json:"environments"`
}

func (s *Server) mountMe(r chi.Router) {
	r.Get("/me", s.me)
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	id, _ := identity(r)
	if !s.awaitPosition(w, r, "access_control") {
		return
	}
	out := Me{Actor: id.Actor.String(), Kind: string(id.Actor.Kind), ExpiresAt: id.ExpiresAt, Roles: []MeRole{}, DevSignIn: s.cfg.DevSignIn}
	switch id.Actor.Kind {
	case domain.ActorUser:
		out.User, out.Method = id.Actor.ID, string(id.Method)
		ms, err := s.cfg.Reader.MembershipsOf(r.Context(), id.Actor.ID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, m := range ms {
			out.Roles = append(out.Roles, MeRole{Org: m.Org, Project: m.Project, Role: m.Role})
		}
	case domain.ActorToken:
		out.Org = id.Org
		toks, err := s.cfg.Reader.Tokens(r.Context(), id.Org)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, t := range toks {
			if t.ID == id.Actor.ID {
				envs := t.Environments
				if envs == nil {
					envs = []string{}
				}
				out.Token = &MeTokenInfo{ID: t.ID, Name: t.Name, Project: t.Project, Environments: envs}
				out.Roles = append(out.Roles, MeRole{Org: id.Org, Project: t.Project, Role: t.Role})
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}
