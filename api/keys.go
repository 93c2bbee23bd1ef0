package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// Keyset is an environment's data keys and how far the reseal of its
// values under the primary key has come.
type Keyset struct {
	Project      string    `json:"project"`
	Env          string    `json:"env"`
	PrimaryKey   int64     `json:"primary_key"`
	PrimarySince time.Time `json:"primary_since"`
	// LastRotation is when a key was last added (absent before the first
	// rotation); Rotations counts them.
	LastRotation *time.Time `json:"last_rotation,omitempty"`
	Rotations    *int32     `json:"rotations,omitempty"`
	// RotationSeconds is the environment's rotation interval, and
	// RotationDue says the primary key is older than it.
	RotationSeconds *int64       `json:"rotation_seconds,omitempty"`
	RotationDue     bool         `json:"rotation_due"`
	Reseal          KeysetReseal `json:"reseal"`
	Keys            []KeysetKey  `json:"keys"`
}

// KeysetReseal is the progress of resealing an environment's current
// values under its primary key.
type KeysetReseal struct {
	// Complete: every current value is sealed by the primary key.
	Complete bool `json:"complete"`
	// Pending counts the current values not yet sealed by it.
	Pending int64 `json:"pending"`
	// Sealed of Values current values are sealed by the primary key
	// (reads only).
	Sealed *int64 `json:"sealed,omitempty"`
	Values *int64 `json:"values,omitempty"`
}

// KeysetKey is one data key.
type KeysetKey struct {
	ID             int64      `json:"id"`
	State          string     `json:"state"`
	Primary        bool       `json:"primary"`
	AddedAt        time.Time  `json:"added_at"`
	AgeSeconds     int64      `json:"age_seconds"`
	StateChangedAt *time.Time `json:"state_changed_at,omitempty"`
}

// KeysetChanged answers a change of a keyset: its state right after.
type KeysetChanged struct {
	Keyset
	Written
}

func (s *Server) mountKeys(r chi.Router) {
	const ks = "/orgs/{org}/projects/{project}/envs/{env}/keyset"
	r.Get("/orgs/{org}/keysets", s.listKeysets)
	r.Get(ks, s.getKeyset)
	r.Post(ks+"/rotate", s.rotateKeyset)
	r.Post(ks+"/keys/{key_id}/disable", s.keyChange(s.cfg.App.DisableKey))
	r.Post(ks+"/keys/{key_id}/enable", s.keyChange(s.cfg.App.EnableKey))
	r.Delete(ks+"/keys/{key_id}", s.keyChange(s.cfg.App.DestroyKey))
}

// keysetView presents a keyset of the read models.
func keysetView(k projections.KeysetInfo, env *projections.Environment, now time.Time) Keyset {
	sealed, values := k.Sealed, k.Values
	rotations := k.Rotations
	out := Keyset{Project: k.Project, Env: k.Env, PrimaryKey: k.PrimaryKey, PrimarySince: k.PrimarySince.UTC(), Rotations: &rotations,
		Reseal: KeysetReseal{Complete: k.ResealComplete, Pending: max(values-sealed, 0), Sealed: &sealed, Values: &values}, Keys: []KeysetKey{}}
	if k.LastRotation != nil {
		t := k.LastRotation.UTC()
		out.LastRotation = &t
	}
	if env != nil {
		rs := env.RotationSeconds
		out.RotationSeconds = &rs
		out.RotationDue = rs > 0 && now.Sub(k.PrimarySince) >= time.Duration(rs)*time.Second
	}
	for _, key := range k.Keys {
		changed := key.StateChangedAt.UTC()
		out.Keys = append(out.Keys, KeysetKey{ID: key.ID, State: key.State, Primary: key.Primary, AddedAt: key.AddedAt.UTC(),
			AgeSeconds: int64(max(now.Sub(key.AddedAt), 0) / time.Second), StateChangedAt: &changed})
	}
	return out
}

// keysetStatusView presents the application's status of a keyset.
func keysetStatusView(st app.KeysetStatus, now time.Time) Keyset {
	out := Keyset{Project: st.Env.Project, Env: st.Env.Env, PrimaryKey: int64(st.Primary), PrimarySince: st.PrimarySince.UTC(),
		RotationDue: st.RotationDue, Reseal: KeysetReseal{Complete: st.ResealComplete, Pending: int64(max(st.Pending, 0))}, Keys: []KeysetKey{}}
	for _, key := range st.Keys {
		out.Keys = append(out.Keys, KeysetKey{ID: int64(key.ID), State: string(key.State), Primary: key.Primary, AddedAt: key.AddedAt.UTC(),
			AgeSeconds: int64(max(now.Sub(key.AddedAt), 0) / time.Second)})
	}
	return out
}

// keysetRead reads the keysets and environments of an organization.
func (s *Server) keysetRead(r *http.Request, org string) ([]projections.KeysetInfo, map[[2]string]*projections.Environment, error) {
	sets, err := s.cfg.Reader.Keysets(r.Context(), org)
	if err != nil {
		return nil, nil, err
	}
	envs, err := s.cfg.Reader.Environments(r.Context(), org, "")
	if err != nil {
		return nil, nil, err
	}
	byEnv := make(map[[2]string]*projections.Environment, len(envs))
	for i := range envs {
		byEnv[[2]string{envs[i].Project, envs[i].ID}] = &envs[i]
	}
	return sets, byEnv, nil
}

func (s *Server) getKeyset(w http.ResponseWriter, r *http.Request) {
	e := secEnv(r)
	if _, ok := s.authorize(w, r, e.Org, e.Project, e.Env, domain.PermReadMetadata); !ok {
		return
	}
	if !s.awaitPosition(w, r, "keys", "secrets", "directory") {
		return
	}
	sets, envs, err := s.keysetRead(r, e.Org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, k := range sets {
		if k.Project == e.Project && k.Env == e.Env {
			writeJSON(w, http.StatusOK, keysetView(k, envs[[2]string{k.Project, k.Env}], s.now()))
			return
		}
	}
	problem(w, r, http.StatusNotFound, "not_found", "environment "+e.String()+" has no keyset (or does not exist)")
}

// listKeysets lists the keysets of an organization that the caller may
// see: all of them for an organization-wide role, those of its projects
// (or environments) for a narrower one.
func (s *Server) listKeysets(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	id, _ := identity(r)
	_, orgErr := s.cfg.App.Authorize(r.Context(), id.Actor, org, "", "", domain.PermReadMetadata)
	var fe *domain.ForbiddenError
	if orgErr != nil && !(errors.As(orgErr, &fe) && fe.Outsider) {
		s.fail(w, r, orgErr) // a member without the permission, or a failure
		return
	}
	if !s.awaitPosition(w, r, "keys", "secrets", "directory") {
		return
	}
	sets, envs, err := s.keysetRead(r, org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.now()
	items := make([]Keyset, 0, len(sets))
	for _, k := range sets {
		if orgErr != nil {
			// No organization-wide access: only what a project (or
			// environment) role covers.
			if _, err := s.cfg.App.Authorize(r.Context(), id.Actor, org, k.Project, k.Env, domain.PermReadMetadata); err != nil {
				continue
			}
		}
		items = append(items, keysetView(k, envs[[2]string{k.Project, k.Env}], now))
	}
	if orgErr != nil && len(items) == 0 {
		s.fail(w, r, orgErr) // an outsider: as if there were no such organization
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

// keysetChanged answers a keyset change with the keyset's state and the
// position of its latest event (at least the change's).
func (s *Server) keysetChanged(w http.ResponseWriter, r *http.Request, e app.Env, st app.KeysetStatus) {
	pos, err := s.cfg.App.KeysetPosition(r.Context(), e)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res := app.Result{Position: pos}
	wrote(w, http.StatusOK, res, KeysetChanged{Keyset: keysetStatusView(st, s.now()), Written: written(res)})
}

func (s *Server) rotateKeyset(w http.ResponseWriter, r *http.Request) {
	e := secEnv(r)
	var body struct {
		Reason string `json:"reason"`
	}
	if !secOptionalJSON(w, r, &body) {
		return
	}
	if body.Reason == "" {
		body.Reason = "manual"
	}
	st, err := s.cfg.App.RotateKeyset(r.Context(), s.request(r), e, body.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.keysetChanged(w, r, e, st)
}

// keyChange handles a change of one key's state.
func (s *Server) keyChange(change func(ctx context.Context, req app.Request, env app.Env, id uint32) (app.KeysetStatus, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		e := secEnv(r)
		id, err := strconv.ParseUint(chi.URLParam(r, "key_id"), 10, 32)
		if err != nil {
			writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "key_id", Detail: "key_id: want a key id"})
			return
		}
		st, err := change(r.Context(), s.request(r), e, uint32(id))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.keysetChanged(w, r, e, st)
	}
}
