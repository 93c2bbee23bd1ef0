package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// Point in time, for auditors: the state of an environment's secrets, of
// an organization's access, of a whole organization (replay.go), and of
// who could read a secret, as of a moment named by a time or a log
// position; and who read a secret in a window. Each answer says which
// position it stands for. The compliance reports (reports.go) are
// mounted here too.

func (s *Server) mountHistory(r chi.Router) {
	r.Get("/orgs/{org}/access", s.accessAt)
	r.Get("/orgs/{org}/replay", s.orgReplay)
	r.Get("/orgs/{org}/reports/{report}", s.report)
	r.Get("/orgs/{org}/projects/{project}/envs/{env}/history", s.envHistory)
	r.Get("/orgs/{org}/projects/{project}/envs/{env}/secrets/{name}/could-read", s.couldRead)
	r.Get("/orgs/{org}/projects/{project}/envs/{env}/secrets/{name}/reads", s.secretReads)
}

// moment is the point in time a history request asks about.
type moment struct {
	// Position is the last event included (0: before the log began).
	Position uint64
	// At is the time asked for, or the recorded time of Position when a
	// position was asked for (zero for position 0).
	At time.Time
}

// momentOf reads the moment of a history request (exactly one of at and
// position), and waits until the named read models include it. A time
// after now, or a position the read models have not reached within the
// read wait, answers 503 not_yet. On failure it answers and returns false.
func (s *Server) momentOf(w http.ResponseWriter, r *http.Request, names ...string) (moment, bool) {
	if s.cfg.History == nil || s.cfg.Pool == nil {
		s.fail(w, r, errNoReadModels)
		return moment{}, false
	}
	if !validQuery(w, r) {
		return moment{}, false
	}
	q := r.URL.Query()
	atText, posText := q.Get("at"), q.Get("position")
	if (atText == "") == (posText == "") {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "at",
			Detail: "name the moment with exactly one of at (an RFC 3339 time) and position (a log position)"})
		return moment{}, false
	}
	ctx := r.Context()
	var m moment
	if posText != "" {
		p, err := strconv.ParseUint(posText, 10, 63)
		if err != nil {
			writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "position", Detail: "position: want a log position"})
			return m, false
		}
		m.Position = p
	} else {
		at, ok := queryTime(w, r, "at")
		if !ok {
			return m, false
		}
		if at.After(s.now()) {
			s.fail(w, r, fmt.Errorf("%w: %s is in the future", projections.ErrNotYet, at.Format(time.RFC3339)))
			return m, false
		}
		p, err := s.cfg.History.PositionAt(ctx, at)
		if err != nil {
			s.fail(w, r, err)
			return m, false
		}
		m.Position, m.At = p, at
	}
	if err := projections.WaitFor(ctx, s.cfg.Pool, m.Position, s.cfg.ReadWait, names...); err != nil {
		s.fail(w, r, err)
		return m, false
	}
	if m.At.IsZero() && m.Position > 0 {
		t, err := s.recordedAt(ctx, m.Position)
		if err != nil {
			s.fail(w, r, err)
			return m, false
		}
		m.At = t
	}
	return m, true
}

// recordedAt returns when the event at position was recorded.
func (s *Server) recordedAt(ctx context.Context, position uint64) (time.Time, error) {
	recs, err := s.cfg.Ledger.ReadAll(ctx, position, 1)
	if err != nil {
		return time.Time{}, err
	}
	if len(recs) == 0 || recs[0].Position != position {
		return time.Time{}, fmt.Errorf("api: position %d is missing from the log", position)
	}
	return recs[0].RecordedAt.UTC(), nil
}

// Moment is the point in time an answer stands for.
type Moment struct {
	// Position is the last event the answer includes.
	Position uint64 `json:"position"`
	// At is the time asked for, or when the event at Position was
	// recorded; absent for position 0.
	At *time.Time `json:"at,omitempty"`
}

func (m moment) out() Moment {
	o := Moment{Position: m.Position}
	if !m.At.IsZero() {
		at := m.At
		o.At = &at
	}
	return o
}

// SecretThen is a secret as it stood at a moment: its version and
// metadata, never its value.
type SecretThen struct {
	Name      string    `json:"name"`
	Version   uint64    `json:"version"`
	KeyID     uint32    `json:"key_id"`
	Deleted   bool      `json:"deleted"`
	Destroyed bool      `json:"destroyed"`
	Metadata  Metadata  `json:"metadata"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	// ChangedAt, ChangedBy and Position are the secret's last change at
	// the moment (reads of the value and reseals are not changes).
	ChangedAt time.Time `json:"changed_at"`
	ChangedBy string    `json:"changed_by"`
	Position  uint64    `json:"position"`
	// ValueSetAt is when the current version was set.
	ValueSetAt time.Time `json:"value_set_at"`
}

// Metadata is a secret's descriptive metadata.
type Metadata struct {
	Description     string   `json:"description"`
	Tags            []string `json:"tags"`
	Owner           string   `json:"owner"`
	RotationSeconds int64    `json:"rotation_seconds"`
}

// EnvHistory is an environment's secrets at a moment.
type EnvHistory struct {
	Moment
	Items []SecretThen `json:"items"`
}

func (s *Server) envHistory(w http.ResponseWriter, r *http.Request) {
	org, project, env := chi.URLParam(r, "org"), chi.URLParam(r, "project"), chi.URLParam(r, "env")
	if _, ok := s.authorize(w, r, org, project, env, domain.PermReadAudit); !ok {
		return
	}
	m, ok := s.momentOf(w, r, "secrets", "directory")
	if !ok || !s.environmentExists(w, r, org, project, env) {
		return
	}
	secrets, err := s.cfg.History.SecretsAt(r.Context(), org, project, env, m.Position)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := EnvHistory{Moment: m.out(), Items: make([]SecretThen, len(secrets))}
	for i, x := range secrets {
		tags := x.Metadata.Tags
		if tags == nil {
			tags = []string{}
		}
		out.Items[i] = SecretThen{Name: x.Name, Version: x.Version, KeyID: x.KeyID, Deleted: x.Deleted, Destroyed: x.Destroyed,
			Metadata:  Metadata{Description: x.Metadata.Description, Tags: tags, Owner: x.Metadata.Owner, RotationSeconds: x.Metadata.RotationSeconds},
			CreatedAt: x.CreatedAt.UTC(), CreatedBy: x.CreatedBy, ChangedAt: x.ChangedAt.UTC(), ChangedBy: x.ChangedBy, Position: x.Position,
			ValueSetAt: x.ValueSetAt.UTC()}
	}
	writeJSON(w, http.StatusOK, out)
}

// environmentExists answers 404 unless the directory knows the
// environment now.
func (s *Server) environmentExists(w http.ResponseWriter, r *http.Request, org, project, env string) bool {
	envs, err := s.cfg.Reader.Environments(r.Context(), org, project)
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	if !slices.ContainsFunc(envs, func(e projections.Environment) bool { return e.ID == env }) {
		problem(w, r, http.StatusNotFound, "not_found", "no environment "+env+" in project "+project)
		return false
	}
	return true
}

// secretExists answers 404 unless the secrets read model knows the
// secret (in any state) now.
func (s *Server) secretExists(w http.ResponseWriter, r *http.Request, ref domain.SecretRef) bool {
	if !domain.ValidSecretName(ref.Name) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "name", Detail: "name: want a secret name"})
		return false
	}
	vs, err := s.cfg.Reader.SecretVersions(r.Context(), ref.Org, ref.Project, ref.Env, ref.Name)
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	if len(vs) == 0 {
		problem(w, r, http.StatusNotFound, "not_found", "no secret "+ref.Name+" in "+ref.Project+"/"+ref.Env)
		return false
	}
	return true
}

// GrantThen is a role held at a moment.
type GrantThen struct {
	User    string `json:"user"`
	Project string `json:"project,omitempty"`
	Role    string `json:"role"`
}

// TokenThen is a service token as it stood at a moment.
type TokenThen struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	Project      string    `json:"project,omitempty"`
	Environments []string  `json:"environments"`
	ExpiresAt    time.Time `json:"expires_at"`
	Revoked      bool      `json:"revoked"`
	// Expired: the token had expired at the moment.
	Expired bool `json:"expired"`
}

// AccessThen is an organization's grants and tokens at a moment.
type AccessThen struct {
	Moment
	Grants []GrantThen `json:"grants"`
	Tokens []TokenThen `json:"tokens"`
}

func (s *Server) accessAt(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.authorize(w, r, org, "", "", domain.PermReadAudit); !ok {
		return
	}
	m, ok := s.momentOf(w, r, "access_control")
	if !ok {
		return
	}
	out := AccessThen{Moment: m.out(), Grants: []GrantThen{}, Tokens: []TokenThen{}}
	if m.Position > 0 {
		a, err := s.cfg.History.AccessAt(r.Context(), org, m.Position)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, g := range a.Grants {
			out.Grants = append(out.Grants, GrantThen{User: g.UserID, Project: g.Project, Role: string(g.Role)})
		}
		for _, t := range a.Tokens {
			envs := t.Environments
			if envs == nil {
				envs = []string{}
			}
			out.Tokens = append(out.Tokens, TokenThen{ID: t.ID, Name: t.Name, Role: string(t.Role), Project: t.Project, Environments: envs,
				ExpiresAt: t.ExpiresAt.UTC(), Revoked: t.Revoked, Expired: !m.At.Before(t.ExpiresAt)})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// CouldReadThen is someone who could read a secret's value at a moment.
type CouldReadThen struct {
	Actor string `json:"actor"`
	Role  string `json:"role"`
	// Via says where the role came from: organization, project or token.
	Via string `json:"via"`
}

// CouldReadAnswer lists who could read a secret's value at a moment.
type CouldReadAnswer struct {
	Moment
	Items []CouldReadThen `json:"items"`
}

func (s *Server) couldRead(w http.ResponseWriter, r *http.Request) {
	ref := domain.SecretRef{Org: chi.URLParam(r, "org"), Project: chi.URLParam(r, "project"), Env: chi.URLParam(r, "env"), Name: chi.URLParam(r, "name")}
	if _, ok := s.authorize(w, r, ref.Org, ref.Project, ref.Env, domain.PermReadAudit); !ok {
		return
	}
	m, ok := s.momentOf(w, r, "access_control", "secrets")
	if !ok || !s.secretExists(w, r, ref) {
		return
	}
	out := CouldReadAnswer{Moment: m.out(), Items: []CouldReadThen{}}
	if m.Position > 0 {
		could, err := s.cfg.History.WhoCouldReadAt(r.Context(), ref, m.Position, m.At)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, c := range could {
			out.Items = append(out.Items, CouldReadThen{Actor: c.Actor, Role: string(c.Role), Via: c.Via})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// SecretReadThen is one read of a secret's value.
type SecretReadThen struct {
	Actor      string    `json:"actor"`
	ActorKind  string    `json:"actor_kind"`
	Version    uint64    `json:"version"`
	Channel    string    `json:"channel"`
	Reason     string    `json:"reason,omitempty"`
	RecordedAt time.Time `json:"recorded_at"`
	Position   uint64    `json:"position"`
}

// SecretReads lists the reads of a secret's value in a window.
type SecretReads struct {
	From  *time.Time       `json:"from,omitempty"`
	To    time.Time        `json:"to"`
	Items []SecretReadThen `json:"items"`
}

func (s *Server) secretReads(w http.ResponseWriter, r *http.Request) {
	ref := domain.SecretRef{Org: chi.URLParam(r, "org"), Project: chi.URLParam(r, "project"), Env: chi.URLParam(r, "env"), Name: chi.URLParam(r, "name")}
	if _, ok := s.authorize(w, r, ref.Org, ref.Project, ref.Env, domain.PermReadAudit); !ok {
		return
	}
	if !validQuery(w, r) {
		return
	}
	from, ok := queryTime(w, r, "from")
	if !ok {
		return
	}
	to, ok := queryTime(w, r, "to")
	if !ok {
		return
	}
	now := s.now().UTC()
	if to.IsZero() {
		to = now
	}
	if !from.IsZero() && !from.Before(to) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "to", Detail: "to: the window is empty: want from before to"})
		return
	}
	if to.After(now) {
		s.fail(w, r, fmt.Errorf("%w: the window ends in the future (%s)", projections.ErrNotYet, to.Format(time.RFC3339)))
		return
	}
	if s.cfg.History == nil || s.cfg.Pool == nil {
		s.fail(w, r, errNoReadModels)
		return
	}
	// Every read recorded before to is in the access read model once it
	// has reached the last position recorded before to.
	last, err := s.cfg.History.PositionAt(r.Context(), to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := projections.WaitFor(r.Context(), s.cfg.Pool, last, s.cfg.ReadWait, "access", "secrets"); err != nil {
		s.fail(w, r, err)
		return
	}
	if !s.awaitPosition(w, r, "access", "secrets") || !s.secretExists(w, r, ref) {
		return
	}
	reads, err := s.cfg.History.WhoRead(r.Context(), ref, from, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := SecretReads{To: to, Items: make([]SecretReadThen, len(reads))}
	if !from.IsZero() {
		out.From = &from
	}
	for i, x := range reads {
		kind, _, _ := strings.Cut(x.Actor, ":")
		out.Items[i] = SecretReadThen{Actor: x.Actor, ActorKind: kind, Version: x.Version, Channel: x.Channel, Reason: x.Reason,
			RecordedAt: x.At.UTC(), Position: x.Position}
	}
	writeJSON(w, http.StatusOK, out)
}
