package projections

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// History answers point-in-time questions by replaying the log up to a
// position: the state of an environment's secrets, of an organization's
// members and tokens, who could read a secret then, and who read it
// between two times. Times map to positions through the log's recorded
// times, which never decrease.
type History struct {
	Pool  *pgxpool.Pool
	Store eventstore.Store
	// Wait bounds how long SecretsAt waits for the secrets projection to
	// reach the position asked for (default 5 s).
	Wait time.Duration
}

// PositionAt returns the last position recorded at or before t (0 if the
// log began after t).
func (h History) PositionAt(ctx context.Context, t time.Time) (uint64, error) {
	head, err := h.Store.Head(ctx)
	if err != nil {
		return 0, err
	}
	at := func(p uint64) (time.Time, error) {
		recs, err := h.Store.ReadAll(ctx, p, 1)
		if err != nil {
			return time.Time{}, err
		}
		if len(recs) == 0 || recs[0].Position != p {
			return time.Time{}, fmt.Errorf("projections: position %d is missing from the log", p)
		}
		return recs[0].RecordedAt, nil
	}
	// The first position recorded after t, by binary search.
	var searchErr error
	first := sort.Search(int(head.Position), func(i int) bool {
		if searchErr != nil {
			return true
		}
		ts, err := at(uint64(i) + 1)
		if err != nil {
			searchErr = err
			return true
		}
		return ts.After(t)
	})
	return uint64(first), searchErr
}

// replay folds a stream's events up to position into agg, and returns
// the last record applied.
func (h History) replay(ctx context.Context, stream string, position uint64, agg interface{ Apply(domain.Event) }) (eventstore.Record, error) {
	var last eventstore.Record
	err := h.replayRecords(ctx, stream, position, func(r eventstore.Record, ev domain.Event) {
		agg.Apply(ev)
		last = r
	})
	return last, err
}

// SecretAt is a secret's state at a position. It holds no value: to read
// the value of Version as it was, reveal that version (an audited read).
// Its last change (ChangedAt, ChangedBy, Position) is its last event but
// reads of the value and reseals under a new key, as the secrets read
// model counts changes.
type SecretAt struct {
	Name      string                `json:"name"`
	Version   uint64                `json:"version"`
	KeyID     uint32                `json:"key_id"`
	Deleted   bool                  `json:"deleted"`
	Destroyed bool                  `json:"destroyed"`
	Metadata  domain.SecretMetadata `json:"metadata"`
	CreatedAt time.Time             `json:"created_at"`
	CreatedBy string                `json:"created_by"`
	ChangedAt time.Time             `json:"changed_at"`
	ChangedBy string                `json:"changed_by"`
	Position  uint64                `json:"position"`
	// ValueSetAt is when the current version was set.
	ValueSetAt time.Time `json:"value_set_at"`
}

// SecretsAt returns the secrets of an environment as they were at
// position: those created by then, at the version and with the metadata
// they had. The secrets projection must have reached position (it names
// the secrets to replay); otherwise ErrNotYet, or a *HaltedError when it
// is halted.
func (h History) SecretsAt(ctx context.Context, org, project, env string, position uint64) ([]SecretAt, error) {
	wait := h.Wait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	if err := WaitFor(ctx, h.Pool, position, wait, Secrets{}.Name()); err != nil {
		return nil, err
	}
	rows, err := h.Pool.Query(ctx, `SELECT name FROM proj_secrets WHERE org = $1 AND project = $2 AND env = $3 ORDER BY name`, org, project, env)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var out []SecretAt
	for _, name := range names {
		f := newSecretFold()
		if err := h.replayRecords(ctx, domain.SecretStream(org, project, env, name), position, f.apply); err != nil {
			return nil, err
		}
		if !f.s.Exists() {
			continue
		}
		cur, _ := f.s.Version(0)
		out = append(out, SecretAt{Name: name, Version: cur.Version, KeyID: f.keyID(), Deleted: f.s.Deleted(), Destroyed: cur.Destroyed,
			Metadata: f.s.Metadata(), CreatedAt: f.created.RecordedAt, CreatedBy: f.created.Metadata.Actor,
			ChangedAt: f.changed.RecordedAt, ChangedBy: f.changed.Metadata.Actor, Position: f.changed.Position, ValueSetAt: f.valueAt.RecordedAt})
	}
	return out, nil
}

// Grant is a role held at a position.
type Grant struct {
	UserID  string      `json:"user_id"`
	Project string      `json:"project,omitempty"` // empty: the whole organization
	Role    domain.Role `json:"role"`
}

// TokenAt is a token as it stood at a position.
type TokenAt struct {
	ID           string      `json:"id"`
	Name         string      `json:"name"`
	Role         domain.Role `json:"role"`
	Project      string      `json:"project,omitempty"`
	Environments []string    `json:"environments,omitempty"`
	ExpiresAt    time.Time   `json:"expires_at"`
	Revoked      bool        `json:"revoked"`
}

// AccessAt is an organization's grants and tokens at a position.
type AccessAt struct {
	Position uint64    `json:"position"`
	Time     time.Time `json:"time"`
	Grants   []Grant   `json:"grants"`
	Tokens   []TokenAt `json:"tokens"`
	org      *domain.Organization
}

// AccessAt returns who held which role, and which tokens existed, in org
// at position: grants by user, then project (the organization-wide one
// first), tokens by id. It replays the organization's stream.
func (h History) AccessAt(ctx context.Context, org string, position uint64) (AccessAt, error) {
	o := domain.NewOrganization()
	last, err := h.replay(ctx, domain.OrgStream(org), position, o)
	if err != nil {
		return AccessAt{}, err
	}
	a := AccessAt{Position: position, org: o}
	if recs, err := h.Store.ReadAll(ctx, position, 1); err == nil && len(recs) == 1 {
		a.Time = recs[0].RecordedAt
	} else {
		a.Time = last.RecordedAt
	}
	for _, u := range o.Members() {
		for _, sc := range append([]string{""}, o.ProjectsOf(u)...) {
			if r := o.RoleOf(u, sc); r.Valid() {
				a.Grants = append(a.Grants, Grant{UserID: u, Project: sc, Role: r})
			}
		}
	}
	for _, id := range o.TokenIDs() {
		t, _ := o.Token(id)
		a.Tokens = append(a.Tokens, TokenAt{ID: t.ID, Name: t.Name, Role: t.Role, Project: t.Project, Environments: t.Environments,
			ExpiresAt: t.ExpiresAt, Revoked: t.Revoked})
	}
	return a, nil
}

// CouldRead is someone who could read a secret's value at some time.
type CouldRead struct {
	Actor string      `json:"actor"` // user:<id> or token:<id>
	Role  domain.Role `json:"role"`
	Via   string      `json:"via"` // "organization", "project" or "token"
}

// WhoCouldRead lists who had the right to reveal a secret at position:
// members whose organization or project role lets them read values, and
// unexpired, unrevoked tokens whose scope covered the secret. It says
// nothing of approvals, which grant single reads.
func (h History) WhoCouldRead(ctx context.Context, ref domain.SecretRef, position uint64) ([]CouldRead, error) {
	return h.WhoCouldReadAt(ctx, ref, position, time.Time{})
}

// WhoCouldReadAt is WhoCouldRead with tokens' expiry judged at now (a
// time at or after position was recorded, before the next event); zero
// judges it at position's recorded time.
func (h History) WhoCouldReadAt(ctx context.Context, ref domain.SecretRef, position uint64, now time.Time) ([]CouldRead, error) {
	a, err := h.AccessAt(ctx, ref.Org, position)
	if err != nil {
		return nil, err
	}
	if !now.IsZero() {
		a.Time = now
	}
	var out []CouldRead
	for _, u := range a.org.Members() {
		actor := domain.Actor{Kind: domain.ActorUser, ID: u}
		p, err := a.org.Access(actor, ref.Project, ref.Env, a.Time)
		if err != nil || !p.Role.Can(domain.PermRevealValue) {
			continue
		}
		via := "organization"
		if a.org.RoleOf(u, ref.Project) == p.Role && a.org.RoleOf(u, "") != p.Role {
			via = "project"
		}
		out = append(out, CouldRead{Actor: actor.String(), Role: p.Role, Via: via})
	}
	for _, id := range a.org.TokenIDs() {
		actor := domain.Actor{Kind: domain.ActorToken, ID: id}
		p, err := a.org.Access(actor, ref.Project, ref.Env, a.Time)
		if err != nil || !p.Role.Can(domain.PermRevealValue) {
			continue
		}
		out = append(out, CouldRead{Actor: actor.String(), Role: p.Role, Via: "token"})
	}
	slices.SortFunc(out, func(x, y CouldRead) int { return strings.Compare(x.Actor, y.Actor) })
	return out, nil
}

// Read is one read of a secret's value.
type Read struct {
	Actor    string    `json:"actor"`
	Version  uint64    `json:"version"`
	Channel  string    `json:"channel"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
	Position uint64    `json:"position"`
}

// WhoRead lists the reads of a secret's value recorded in [from, to),
// from the access read model (a *HaltedError when it is halted).
func (h History) WhoRead(ctx context.Context, ref domain.SecretRef, from, to time.Time) ([]Read, error) {
	if err := CheckHalted(ctx, h.Pool, Access{}.Name()); err != nil {
		return nil, err
	}
	rows, err := h.Pool.Query(ctx, `SELECT actor, version, channel, reason, recorded_at, position FROM proj_secret_reads
		WHERE org = $1 AND project = $2 AND env = $3 AND name = $4 AND recorded_at >= $5 AND recorded_at < $6 ORDER BY position`,
		ref.Org, ref.Project, ref.Env, ref.Name, ceilMicro(from), ceilMicro(to))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Read, error) {
		var x Read
		var v, p int64
		err := r.Scan(&x.Actor, &v, &x.Channel, &x.Reason, &x.At, &p)
		x.Version, x.Position, x.At = uint64(v), uint64(p), x.At.UTC()
		return x, err
	})
}
