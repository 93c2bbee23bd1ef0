package projections

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// OrgState is an organization as the read models held it when they were
// at Position: its directory (the organization, projects, environments),
// its secrets' metadata (never a value), its keysets, and its members and
// tokens, in the read models' own types and orders. History.OrgAt builds
// it by replaying the log, not from the read models, so that it can be
// compared with what they served.
type OrgState struct {
	Position uint64 `json:"position"`
	// Organization is nil before the organization was created.
	Organization *Organization `json:"organization,omitempty"`
	Projects     []Project     `json:"projects"`
	Environments []Environment `json:"environments"`
	Secrets      []SecretInfo  `json:"secrets"`
	Keysets      []KeysetInfo  `json:"keysets"`
	Members      []Member      `json:"members"`
	Tokens       []Token       `json:"tokens"`
}

// replayRecords calls fn with each record of stream up to position (and
// its decoded event), in order. A stream that does not exist calls fn
// never.
func (h History) replayRecords(ctx context.Context, stream string, position uint64, fn func(eventstore.Record, domain.Event)) error {
	const page = 1000
	for from := uint64(1); ; {
		recs, err := h.Store.ReadStream(ctx, stream, from, page)
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.Position > position {
				return nil
			}
			ev, err := domain.Decode(r.Type, r.Data)
			if err != nil {
				return err
			}
			fn(r, ev)
		}
		if len(recs) < page {
			return nil
		}
		from = recs[len(recs)-1].StreamVersion + 1
	}
}

// micro is a time as PostgreSQL keeps it (whole microseconds), in UTC:
// times carried in events have nanoseconds, which the read models drop.
func micro(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

// secretFold is a secret folded from its records: the aggregate, and
// what the secrets read model records of its changes. Reads of the value
// (secret.viewed) and reseals under a new key are not changes.
type secretFold struct {
	s                         *domain.Secret
	created, changed, valueAt eventstore.Record
	// sealedBy is the key that sealed each version last (kept when the
	// version is destroyed).
	sealedBy map[uint64]uint32
}

func newSecretFold() *secretFold {
	return &secretFold{s: domain.NewSecret(), sealedBy: map[uint64]uint32{}}
}

func (f *secretFold) apply(r eventstore.Record, ev domain.Event) {
	f.s.Apply(ev)
	switch ev := ev.(type) {
	case domain.SecretViewed:
		return
	case domain.SecretResealed:
		f.sealedBy[ev.Version] = ev.Value.KeyID
		return
	case domain.SecretCreated:
		f.created, f.valueAt = r, r
		f.sealedBy[ev.Version] = ev.Value.KeyID
	case domain.SecretUpdated:
		f.valueAt = r
		f.sealedBy[ev.Version] = ev.Value.KeyID
	case domain.SecretRolledBack:
		f.valueAt = r
		f.sealedBy[ev.Version] = ev.Value.KeyID
	}
	f.changed = r
}

// keyID is the key that sealed the current version (the key that had
// sealed it, once destroyed).
func (f *secretFold) keyID() uint32 { return f.sealedBy[f.s.Current()] }

// info is the folded secret in the read model's shape.
func (f *secretFold) info(org, project, env, name string) SecretInfo {
	cur, _ := f.s.Version(0)
	m := f.s.Metadata()
	tags := slices.Clone(m.Tags)
	if tags == nil {
		tags = []string{}
	}
	return SecretInfo{Org: org, Project: project, Env: env, Name: name, Version: int64(cur.Version), KeyID: int64(f.keyID()),
		Deleted: f.s.Deleted(), Destroyed: cur.Destroyed, Description: m.Description, Tags: tags, Owner: m.Owner, RotationSeconds: m.RotationSeconds,
		CreatedAt: micro(f.created.RecordedAt), CreatedBy: f.created.Metadata.Actor, UpdatedAt: micro(f.changed.RecordedAt), UpdatedBy: f.changed.Metadata.Actor,
		ValueUpdatedAt: micro(f.valueAt.RecordedAt)}
}

// OrgAt replays the log up to position for one organization: what its
// read models held when they were at that position. The directory,
// secrets and keys read models must have reached position (they name
// the streams to replay; streams are never removed, so every stream that
// existed then is named now); otherwise ErrNotYet, or a *HaltedError.
func (h History) OrgAt(ctx context.Context, org string, position uint64) (OrgState, error) {
	out := OrgState{Position: position, Projects: []Project{}, Environments: []Environment{}, Secrets: []SecretInfo{},
		Keysets: []KeysetInfo{}, Members: []Member{}, Tokens: []Token{}}
	if org == "" {
		return out, errNoOrg
	}
	wait := h.Wait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	if err := WaitFor(ctx, h.Pool, position, wait, Directory{}.Name(), Secrets{}.Name(), Keys{}.Name()); err != nil {
		return out, err
	}
	if position == 0 {
		return out, nil
	}
	if err := h.orgStreamAt(ctx, org, position, &out); err != nil {
		return out, err
	}
	if out.Organization == nil {
		return out, nil
	}
	if err := h.directoryAt(ctx, org, position, &out); err != nil {
		return out, err
	}
	if err := h.secretsOfOrgAt(ctx, org, position, &out); err != nil {
		return out, err
	}
	if err := h.keysetsAt(ctx, org, position, &out); err != nil {
		return out, err
	}
	return out, nil
}

// orgStreamAt folds the organization's stream: the organization, its
// members and its tokens.
func (h History) orgStreamAt(ctx context.Context, org string, position uint64, out *OrgState) error {
	type memberKey struct{ project, user string }
	members := map[memberKey]*Member{}
	tokens := map[string]*Token{}
	err := h.replayRecords(ctx, domain.OrgStream(org), position, func(r eventstore.Record, ev domain.Event) {
		at, by := micro(r.RecordedAt), r.Metadata.Actor
		switch ev := ev.(type) {
		case domain.OrganizationCreated:
			out.Organization = &Organization{ID: org, Name: ev.Name, Owner: ev.Owner, CreatedAt: at, CreatedBy: by, UpdatedAt: at, UpdatedBy: by}
		case domain.OrganizationRenamed:
			if o := out.Organization; o != nil {
				o.Name, o.UpdatedAt, o.UpdatedBy = ev.Name, at, by
			}
		case domain.RoleGranted:
			members[memberKey{ev.Project, ev.UserID}] = &Member{Org: org, UserID: ev.UserID, Project: ev.Project, Role: string(ev.Role), GrantedBy: by, GrantedAt: at}
		case domain.RoleRevoked:
			delete(members, memberKey{ev.Project, ev.UserID})
		case domain.TokenIssued:
			envs := slices.Clone(ev.Environments)
			if envs == nil {
				envs = []string{}
			}
			tokens[ev.TokenID] = &Token{Org: org, ID: ev.TokenID, Name: ev.Name, Role: string(ev.Role), Project: ev.Project, Environments: envs,
				ExpiresAt: micro(ev.ExpiresAt), IssuedBy: by, IssuedAt: at}
		case domain.TokenRevoked:
			if t := tokens[ev.TokenID]; t != nil {
				t.RevokedAt, t.RevokedBy, t.RevokeReason = &at, by, ev.Reason
			}
		}
	})
	if err != nil {
		return err
	}
	for _, m := range members {
		out.Members = append(out.Members, *m)
	}
	slices.SortFunc(out.Members, func(a, b Member) int {
		return cmp.Or(strings.Compare(a.UserID, b.UserID), strings.Compare(a.Project, b.Project))
	})
	for _, t := range tokens {
		out.Tokens = append(out.Tokens, *t)
	}
	slices.SortFunc(out.Tokens, func(a, b Token) int { return cmp.Or(a.IssuedAt.Compare(b.IssuedAt), strings.Compare(a.ID, b.ID)) })
	return nil
}

// directoryAt folds the organization's projects' streams: the projects
// and their environments.
func (h History) directoryAt(ctx context.Context, org string, position uint64, out *OrgState) error {
	rows, err := h.Pool.Query(ctx, `SELECT project FROM `+liveNames("proj_projects")+` WHERE org = $1 ORDER BY project`, org)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, id := range ids {
		var p *Project
		envs := map[string]*Environment{}
		err := h.replayRecords(ctx, domain.ProjectStream(org, id), position, func(r eventstore.Record, ev domain.Event) {
			at, by := micro(r.RecordedAt), r.Metadata.Actor
			switch ev := ev.(type) {
			case domain.ProjectCreated:
				p = &Project{Org: org, ID: id, Name: ev.Name, CreatedAt: at, CreatedBy: by, UpdatedAt: at, UpdatedBy: by}
			case domain.ProjectRenamed:
				if p != nil {
					p.Name, p.UpdatedAt, p.UpdatedBy = ev.Name, at, by
				}
			case domain.EnvironmentCreated:
				e := &Environment{Org: org, Project: id, ID: ev.EnvID, CreatedAt: at, CreatedBy: by}
				e.set(ev.EnvSettings, at, by)
				envs[ev.EnvID] = e
			case domain.EnvironmentUpdated:
				if e := envs[ev.EnvID]; e != nil {
					e.set(ev.After, at, by)
				}
			}
		})
		if err != nil {
			return err
		}
		if p == nil {
			continue
		}
		out.Projects = append(out.Projects, *p)
		for _, e := range envs {
			out.Environments = append(out.Environments, *e)
		}
	}
	slices.SortFunc(out.Environments, func(a, b Environment) int {
		return cmp.Or(strings.Compare(a.Project, b.Project), a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return nil
}

// set applies an environment's settings, changed at by by.
func (e *Environment) set(s domain.EnvSettings, at time.Time, by string) {
	e.Name, e.Production, e.RotationSeconds = s.Name, s.Production, s.RotationSeconds
	e.ApproveReveal, e.ApproveChange, e.Approvers = s.Approval.Reveal, s.Approval.Change, s.Approval.Approvers
	e.UpdatedAt, e.UpdatedBy = at, by
}

// secretsOfOrgAt folds the streams of every secret of the organization.
func (h History) secretsOfOrgAt(ctx context.Context, org string, position uint64, out *OrgState) error {
	rows, err := h.Pool.Query(ctx, `SELECT project, env, name FROM `+liveNames("proj_secrets")+` WHERE org = $1 ORDER BY project, env, name`, org)
	if err != nil {
		return err
	}
	type ref struct{ Project, Env, Name string }
	refs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ref])
	if err != nil {
		return err
	}
	for _, x := range refs {
		f := newSecretFold()
		if err := h.replayRecords(ctx, domain.SecretStream(org, x.Project, x.Env, x.Name), position, f.apply); err != nil {
			return err
		}
		if f.s.Exists() {
			out.Secrets = append(out.Secrets, f.info(org, x.Project, x.Env, x.Name))
		}
	}
	return nil
}

// keysetsAt folds the streams of the organization's keysets, and counts
// each environment's current values (out.Secrets) sealed by its primary
// key.
func (h History) keysetsAt(ctx context.Context, org string, position uint64, out *OrgState) error {
	rows, err := h.Pool.Query(ctx, `SELECT project, env FROM `+liveNames("proj_keysets")+` WHERE org = $1 ORDER BY project, env`, org)
	if err != nil {
		return err
	}
	type ref struct{ Project, Env string }
	refs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ref])
	if err != nil {
		return err
	}
	for _, x := range refs {
		k, ok, err := h.keysetAt(ctx, org, x.Project, x.Env, position)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		for _, s := range out.Secrets {
			if s.Project == x.Project && s.Env == x.Env && !s.Destroyed {
				k.Values++
				if s.KeyID == k.PrimaryKey {
					k.Sealed++
				}
			}
		}
		out.Keysets = append(out.Keysets, k)
	}
	return nil
}

// keysetAt folds one keyset's stream; ok is false when the keyset did
// not exist at position. Sealed and Values are left to the caller.
func (h History) keysetAt(ctx context.Context, org, project, env string, position uint64) (KeysetInfo, bool, error) {
	k := domain.NewKeyset()
	var created, last eventstore.Record
	var lastRotation *time.Time
	var rotations int32
	var resealed uint32
	changed := map[uint32]time.Time{} // key → when its state last changed
	err := h.replayRecords(ctx, domain.KeysetStream(org, project, env), position, func(r eventstore.Record, ev domain.Event) {
		k.Apply(ev)
		last = r
		at := micro(r.RecordedAt)
		switch ev := ev.(type) {
		case domain.KeysetCreated:
			created, resealed = r, ev.KeyID
			clear(changed)
			changed[ev.KeyID] = at
		case domain.KeysetRotated:
			t := micro(ev.At)
			lastRotation, rotations = &t, rotations+1
			changed[ev.KeyID] = at
		case domain.KeyDisabled:
			changed[ev.KeyID] = at
		case domain.KeyEnabled:
			changed[ev.KeyID] = at
		case domain.KeyDestroyed:
			changed[ev.KeyID] = at
		case domain.KeysetResealed:
			resealed = ev.KeyID
		}
	})
	if err != nil || !k.Exists() {
		return KeysetInfo{}, false, err
	}
	out := KeysetInfo{Org: org, Project: project, Env: env, KEK: k.KEK(), PrimaryKey: int64(k.Primary()), PrimarySince: micro(k.PrimarySince()),
		MaterialVersion: int64(k.Material().Version), LastRotation: lastRotation, Rotations: rotations, ResealedKey: int64(resealed),
		ResealComplete: resealed == k.Primary(), CreatedAt: micro(created.RecordedAt), UpdatedAt: micro(last.RecordedAt), Keys: []KeyInfo{}}
	for _, key := range k.Keys() {
		out.Keys = append(out.Keys, KeyInfo{ID: int64(key.ID), State: string(key.State), Primary: key.Primary, AddedAt: micro(key.AddedAt),
			StateChangedAt: changed[key.ID]})
	}
	slices.SortStableFunc(out.Keys, func(a, b KeyInfo) int { return cmp.Or(a.AddedAt.Compare(b.AddedAt), cmp.Compare(a.ID, b.ID)) })
	return out, true, nil
}
