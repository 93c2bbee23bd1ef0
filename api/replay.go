package api

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// The replay of an organization: its whole state as of a time or a log
// position, folded from the log (projections.History.OrgAt) and shown in
// the shapes the API's own reads use, so that an auditor can set it
// beside what the API answered then.

// OrgThen is an organization as it stood at a moment.
type OrgThen struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Owner     string    `json:"owner,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// ReplaySecret is a secret of an organization as it stood at a moment:
// metadata, never a value.
type ReplaySecret struct {
	Project string `json:"project"`
	Env     string `json:"env"`
	SecretMeta
}

// OrgReplay is an organization's state at a moment: its projects and
// environments, its secrets' metadata, its keysets, its members and its
// tokens. Organization is absent before the organization was created
// (and every list is then empty).
type OrgReplay struct {
	Moment
	Organization *OrgThen       `json:"organization,omitempty"`
	Projects     []Project      `json:"projects"`
	Environments []Environment  `json:"environments"`
	Secrets      []ReplaySecret `json:"secrets"`
	Keysets      []Keyset       `json:"keysets"`
	Members      []Member       `json:"members"`
	Tokens       []ServiceToken `json:"tokens"`
}

// orgReplay answers an organization's state at a moment.
func (s *Server) orgReplay(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.authorize(w, r, org, "", "", domain.PermReadAudit); !ok {
		return
	}
	m, ok := s.momentOf(w, r, "directory", "secrets", "keys")
	if !ok {
		return
	}
	st, err := s.cfg.History.OrgAt(r.Context(), org, m.Position)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, replayView(m, st))
}

// replayView presents a replayed state; what depends on the time
// (rotation due, a token's status, a key's age) is judged at the moment.
func replayView(m moment, st projections.OrgState) OrgReplay {
	out := OrgReplay{Moment: m.out(), Projects: []Project{}, Environments: []Environment{}, Secrets: []ReplaySecret{},
		Keysets: []Keyset{}, Members: []Member{}, Tokens: []ServiceToken{}}
	now := m.At
	if o := st.Organization; o != nil {
		out.Organization = &OrgThen{ID: o.ID, Name: o.Name, Owner: o.Owner, CreatedAt: o.CreatedAt.UTC(), CreatedBy: o.CreatedBy,
			UpdatedAt: o.UpdatedAt.UTC(), UpdatedBy: o.UpdatedBy}
	}
	for _, p := range st.Projects {
		out.Projects = append(out.Projects, projectView(p))
	}
	envs := map[[2]string]*projections.Environment{}
	for i, e := range st.Environments {
		out.Environments = append(out.Environments, environmentView(e))
		envs[[2]string{e.Project, e.ID}] = &st.Environments[i]
	}
	for _, x := range st.Secrets {
		out.Secrets = append(out.Secrets, ReplaySecret{Project: x.Project, Env: x.Env, SecretMeta: secMeta(x, now)})
	}
	for _, k := range st.Keysets {
		out.Keysets = append(out.Keysets, keysetView(k, envs[[2]string{k.Project, k.Env}], now))
	}
	for _, x := range st.Members {
		out.Members = append(out.Members, Member{User: x.UserID, Project: x.Project, Role: x.Role, GrantedBy: x.GrantedBy, GrantedAt: x.GrantedAt.UTC()})
	}
	for _, t := range st.Tokens {
		out.Tokens = append(out.Tokens, tokenAt(t, now))
	}
	return out
}

// tokenAt presents a token with its status at now.
func tokenAt(t projections.Token, now time.Time) ServiceToken {
	out := ServiceToken{ID: t.ID, Name: t.Name, Role: t.Role, Project: t.Project, Environments: t.Environments,
		ExpiresAt: t.ExpiresAt.UTC(), IssuedBy: t.IssuedBy, IssuedAt: t.IssuedAt.UTC(), RevokedBy: t.RevokedBy, RevokeReason: t.RevokeReason,
		Status: "active"}
	if out.Environments == nil {
		out.Environments = []string{}
	}
	switch {
	case t.RevokedAt != nil:
		at := t.RevokedAt.UTC()
		out.RevokedAt, out.Status = &at, "revoked"
	case !now.Before(t.ExpiresAt):
		out.Status = "expired"
	}
	return out
}
