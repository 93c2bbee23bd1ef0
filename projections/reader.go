package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/domain"
)

// ErrNotFound means the read models hold no such object (or not yet:
// projections follow the log within milliseconds).
var ErrNotFound = errors.New("projections: not found")

// errNoOrg refuses a query without an organization: rows of no tenant
// (sign-in requests) are not listed by organization.
var errNoOrg = errors.New("projections: an organization is required")

// Reader answers queries from the read models, in plain structs. Every
// method but Approval (by id, for the approval page: the caller checks
// the approver's access to the request's organization) takes an
// organization and never returns another organization's rows. No value,
// sealed or not, ever leaves through a Reader.
//
// A read that depends on a halted projection (one the projector stopped
// on an integrity failure of the log) fails with a *HaltedError rather
// than serve tables that no longer follow the log.
type Reader struct {
	pool  *pgxpool.Pool
	halts *haltCache
}

// NewReader returns a Reader over the live tables.
func NewReader(pool *pgxpool.Pool) *Reader {
	return &Reader{pool: pool, halts: &haltCache{pool: pool}}
}

// CheckHalted returns a *HaltedError when one of the named projections
// (any when none is named) is halted. It looks at the projections' state
// at most every 200 ms and answers from memory in between.
func (r *Reader) CheckHalted(ctx context.Context, names ...string) error {
	return r.halts.check(ctx, names...)
}

// Limits of the listing queries.
const (
	// MaxAuditPage caps the rows of one AuditFeed page.
	MaxAuditPage = 1000
	// DefaultAuditPage is the page size when none is asked for.
	DefaultAuditPage = 100
	// MaxListed caps Reads and Approvals (newest first).
	MaxListed = 5000
)

func collect[T any](ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) ([]T, error) {
	rows, _ := pool.Query(ctx, sql, args...)
	return pgx.CollectRows(rows, pgx.RowToStructByName[T])
}

func collectOne[T any](ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) (T, error) {
	rows, _ := pool.Query(ctx, sql, args...)
	v, err := pgx.CollectOneRow(rows, pgx.RowToStructByName[T])
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	return v, err
}

// where builds a conjunction of conditions with numbered parameters.
type where struct {
	conds []string
	args  []any
}

// add appends cond, whose %d is the parameter holding v.
func (w *where) add(cond string, v any) {
	w.args = append(w.args, v)
	w.conds = append(w.conds, fmt.Sprintf(cond, len(w.args)))
}

// opt adds cond unless v is empty.
func (w *where) opt(cond, v string) {
	if v != "" {
		w.add(cond, v)
	}
}

func (w *where) String() string { return strings.Join(w.conds, " AND ") }

// ceilMicro rounds t up to a whole microsecond. Recorded times are whole
// microseconds (PostgreSQL's precision) and PostgreSQL would truncate a
// bound's nanoseconds: rounded up, a half-open window [from, to) selects
// exactly the rows whose times lie in it.
func ceilMicro(t time.Time) time.Time {
	r := t.Truncate(time.Microsecond)
	if r.Before(t) {
		r = r.Add(time.Microsecond)
	}
	return r
}

func orgWhere(org string) (*where, error) {
	if org == "" {
		return nil, errNoOrg
	}
	w := &where{}
	w.add("org = $%d", org)
	return w, nil
}

// Organization is an organization as the directory knows it.
type Organization struct {
	ID        string    `json:"id" db:"org_id"`
	Name      string    `json:"name" db:"name"`
	Owner     string    `json:"owner" db:"owner"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	CreatedBy string    `json:"created_by" db:"created_by"`
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
	UpdatedBy string    `json:"updated_by" db:"updated_by"`
}

// Organization returns an organization, or ErrNotFound.
func (r *Reader) Organization(ctx context.Context, org string) (Organization, error) {
	if err := r.CheckHalted(ctx, Directory{}.Name()); err != nil {
		return Organization{}, err
	}
	if org == "" {
		return Organization{}, errNoOrg
	}
	return collectOne[Organization](ctx, r.pool, `SELECT org_id, name, owner, created_at, created_by, updated_at, updated_by
		FROM `+liveNames("proj_orgs")+` WHERE org_id = $1`, org)
}

// Project is a project of an organization.
type Project struct {
	Org       string    `json:"org" db:"org"`
	ID        string    `json:"id" db:"project"`
	Name      string    `json:"name" db:"name"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	CreatedBy string    `json:"created_by" db:"created_by"`
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
	UpdatedBy string    `json:"updated_by" db:"updated_by"`
}

// Projects returns an organization's projects, by id.
func (r *Reader) Projects(ctx context.Context, org string) ([]Project, error) {
	if err := r.CheckHalted(ctx, Directory{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	return collect[Project](ctx, r.pool, `SELECT org, project, name, created_at, created_by, updated_at, updated_by
		FROM `+liveNames("proj_projects")+` WHERE `+w.String()+` ORDER BY project`, w.args...)
}

// Environment is an environment of a project, with its settings.
type Environment struct {
	Org        string `json:"org" db:"org"`
	Project    string `json:"project" db:"project"`
	ID         string `json:"id" db:"env"`
	Name       string `json:"name" db:"name"`
	Production bool   `json:"production" db:"production"`
	// RotationSeconds is the data key rotation interval.
	RotationSeconds int64 `json:"rotation_seconds" db:"rotation_seconds"`
	// ApproveReveal and ApproveChange: revealing or changing a value needs
	// an approved request, by Approvers people (0 means 1).
	ApproveReveal bool      `json:"approve_reveal" db:"approve_reveal"`
	ApproveChange bool      `json:"approve_change" db:"approve_change"`
	Approvers     int       `json:"approvers" db:"approvers"`
	CreatedAt     time.Time `json:"created_at" db:"created_at"`
	CreatedBy     string    `json:"created_by" db:"created_by"`
	UpdatedAt     time.Time `json:"updated_at" db:"updated_at"`
	UpdatedBy     string    `json:"updated_by" db:"updated_by"`
}

// Environments returns a project's environments in the order they were
// created (project "": every project's, by project).
func (r *Reader) Environments(ctx context.Context, org, project string) ([]Environment, error) {
	if err := r.CheckHalted(ctx, Directory{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	w.opt("project = $%d", project)
	return collect[Environment](ctx, r.pool, `SELECT org, project, env, name, production, rotation_seconds, approve_reveal, approve_change, approvers,
		created_at, created_by, updated_at, updated_by
		FROM `+liveNames("proj_environments")+` WHERE `+w.String()+` ORDER BY project, created_at, env`, w.args...)
}

// Bundle is a named set of keys of a project.
type Bundle struct {
	Org     string `json:"org" db:"org"`
	Project string `json:"project" db:"project"`
	ID      string `json:"id" db:"bundle"`
	// Keys are in the bundle's order, with their required flags.
	Keys      []domain.BundleKey `json:"keys" db:"keys"`
	CreatedAt time.Time          `json:"created_at" db:"created_at"`
	CreatedBy string             `json:"created_by" db:"created_by"`
	UpdatedAt time.Time          `json:"updated_at" db:"updated_at"`
	UpdatedBy string             `json:"updated_by" db:"updated_by"`
}

// Bundles returns a project's bundles, by id; deleted ones are left out
// (project "": every project's).
func (r *Reader) Bundles(ctx context.Context, org, project string) ([]Bundle, error) {
	if err := r.CheckHalted(ctx, Directory{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	w.opt("project = $%d", project)
	return collect[Bundle](ctx, r.pool, `SELECT org, project, bundle, keys, created_at, created_by, updated_at, updated_by
		FROM `+liveNames("proj_bundles")+` WHERE `+w.String()+` AND NOT deleted ORDER BY project, bundle`, w.args...)
}

// SecretInfo is a secret's metadata and current version; never its value.
type SecretInfo struct {
	Org     string `json:"org" db:"org"`
	Project string `json:"project" db:"project"`
	Env     string `json:"env" db:"env"`
	Name    string `json:"name" db:"name"`
	// Version is the current version, sealed by key KeyID.
	Version int64 `json:"version" db:"current_version"`
	KeyID   int64 `json:"key_id" db:"key_id"`
	Deleted bool  `json:"deleted" db:"deleted"`
	// Destroyed: the current version was destroyed.
	Destroyed       bool      `json:"destroyed" db:"destroyed"`
	Description     string    `json:"description" db:"description"`
	Tags            []string  `json:"tags" db:"tags"`
	Owner           string    `json:"owner" db:"owner"`
	RotationSeconds int64     `json:"rotation_seconds" db:"rotation_seconds"`
	CreatedAt       time.Time `json:"created_at" db:"created_at"`
	CreatedBy       string    `json:"created_by" db:"created_by"`
	UpdatedAt       time.Time `json:"updated_at" db:"updated_at"`
	UpdatedBy       string    `json:"updated_by" db:"updated_by"`
	// ValueUpdatedAt is when the current value was set.
	ValueUpdatedAt time.Time `json:"value_updated_at" db:"value_updated_at"`
}

const secretInfoColumns = `org, project, env, name, current_version, key_id, deleted, ciphertext IS NULL AS destroyed,
	description, tags, owner, rotation_seconds, created_at, created_by, updated_at, updated_by, value_updated_at`

// Secrets returns the secrets of an environment, deleted ones included,
// by name (project or env "": every project's or environment's).
func (r *Reader) Secrets(ctx context.Context, org, project, env string) ([]SecretInfo, error) {
	if err := r.CheckHalted(ctx, Secrets{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	w.opt("project = $%d", project)
	w.opt("env = $%d", env)
	return collect[SecretInfo](ctx, r.pool, `SELECT `+secretInfoColumns+` FROM `+liveNames("proj_secrets")+` WHERE `+w.String()+
		` ORDER BY project, env, name`, w.args...)
}

// Secret returns one secret's metadata and current version, deleted or
// not, or ErrNotFound.
func (r *Reader) Secret(ctx context.Context, org, project, env, name string) (SecretInfo, error) {
	if err := r.CheckHalted(ctx, Secrets{}.Name()); err != nil {
		return SecretInfo{}, err
	}
	if org == "" {
		return SecretInfo{}, errNoOrg
	}
	return collectOne[SecretInfo](ctx, r.pool, `SELECT `+secretInfoColumns+` FROM `+liveNames("proj_secrets")+`
		WHERE org = $1 AND project = $2 AND env = $3 AND name = $4`, org, project, env, name)
}

// SecretVersion is one version of a secret; never its value.
type SecretVersion struct {
	Version   int64 `json:"version" db:"version"`
	KeyID     int64 `json:"key_id" db:"key_id"`
	Destroyed bool  `json:"destroyed" db:"destroyed"`
	// From is the version a rollback copied, or 0.
	From      int64     `json:"from,omitempty" db:"from_version"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	CreatedBy string    `json:"created_by" db:"created_by"`
}

// SecretVersions returns a secret's versions, oldest first (none when
// there is no such secret).
func (r *Reader) SecretVersions(ctx context.Context, org, project, env, name string) ([]SecretVersion, error) {
	if err := r.CheckHalted(ctx, Secrets{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	w.add("project = $%d", project)
	w.add("env = $%d", env)
	w.add("name = $%d", name)
	return collect[SecretVersion](ctx, r.pool, `SELECT version, key_id, destroyed, from_version, created_at, created_by
		FROM `+liveNames("proj_secret_versions")+` WHERE `+w.String()+` ORDER BY version`, w.args...)
}

// SecretsNotRotated returns the secrets of an organization (deleted ones
// left out) whose value was last set longer ago at now than their
// rotation policy (rotation_seconds), or than olderThan for those without
// a policy when olderThan > 0; by project, environment and name.
func (r *Reader) SecretsNotRotated(ctx context.Context, org string, olderThan time.Duration, now time.Time) ([]SecretInfo, error) {
	if err := r.CheckHalted(ctx, Secrets{}.Name()); err != nil {
		return nil, err
	}
	if org == "" {
		return nil, errNoOrg
	}
	return collect[SecretInfo](ctx, r.pool, `SELECT `+secretInfoColumns+` FROM `+liveNames("proj_secrets")+`
		WHERE org = $1 AND NOT deleted AND CASE
			WHEN rotation_seconds > 0 THEN value_updated_at < $3::timestamptz - rotation_seconds * interval '1 second'
			WHEN $2::bigint > 0 THEN value_updated_at < $3::timestamptz - $2::bigint * interval '1 microsecond'
			ELSE false END
		ORDER BY project, env, name`, org, olderThan.Microseconds(), now)
}

// Member is a role a user holds in an organization (Project "") or in
// one of its projects.
type Member struct {
	Org       string    `json:"org" db:"org"`
	UserID    string    `json:"user_id" db:"user_id"`
	Project   string    `json:"project,omitempty" db:"project"`
	Role      string    `json:"role" db:"role"`
	GrantedBy string    `json:"granted_by" db:"granted_by"`
	GrantedAt time.Time `json:"granted_at" db:"granted_at"`
}

// Members returns an organization's grants, by user then project (the
// organization-wide one first).
func (r *Reader) Members(ctx context.Context, org string) ([]Member, error) {
	if err := r.CheckHalted(ctx, AccessControl{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	return collect[Member](ctx, r.pool, `SELECT org, user_id, project, role, granted_by, granted_at
		FROM `+liveNames("proj_members")+` WHERE `+w.String()+` ORDER BY user_id, project`, w.args...)
}

// MembershipsOf returns every role a person holds, in every organization,
// by organization then project. It is the one read not scoped to one
// organization: it answers "which organizations am I in" for that person
// alone.
func (r *Reader) MembershipsOf(ctx context.Context, user string) ([]Member, error) {
	if err := r.CheckHalted(ctx, AccessControl{}.Name()); err != nil {
		return nil, err
	}
	if user == "" {
		return nil, errors.New("projections: no user")
	}
	return collect[Member](ctx, r.pool, `SELECT org, user_id, project, role, granted_by, granted_at
		FROM `+liveNames("proj_members")+` WHERE user_id = $1 ORDER BY org, project`, user)
}

// Token is a service token, without its secret's hash.
type Token struct {
	Org          string     `json:"org" db:"org"`
	ID           string     `json:"id" db:"token_id"`
	Name         string     `json:"name" db:"name"`
	Role         string     `json:"role" db:"role"`
	Project      string     `json:"project,omitempty" db:"project"`
	Environments []string   `json:"environments" db:"environments"`
	ExpiresAt    time.Time  `json:"expires_at" db:"expires_at"`
	IssuedBy     string     `json:"issued_by" db:"issued_by"`
	IssuedAt     time.Time  `json:"issued_at" db:"issued_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty" db:"revoked_at"`
	RevokedBy    string     `json:"revoked_by,omitempty" db:"revoked_by"`
	RevokeReason string     `json:"revoke_reason,omitempty" db:"revoke_reason"`
}

// Tokens returns an organization's tokens, revoked and expired ones
// included, in the order they were issued.
func (r *Reader) Tokens(ctx context.Context, org string) ([]Token, error) {
	if err := r.CheckHalted(ctx, AccessControl{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	return collect[Token](ctx, r.pool, `SELECT org, token_id, name, role, project, environments, expires_at, issued_by, issued_at,
		revoked_at, revoked_by, revoke_reason
		FROM `+liveNames("proj_tokens")+` WHERE `+w.String()+` ORDER BY issued_at, token_id`, w.args...)
}

// KeysetInfo is an environment's keyset, its keys and how far the reseal
// under its primary key has come.
type KeysetInfo struct {
	Org             string     `json:"org" db:"org"`
	Project         string     `json:"project" db:"project"`
	Env             string     `json:"env" db:"env"`
	KEK             string     `json:"kek" db:"kek"`
	PrimaryKey      int64      `json:"primary_key" db:"primary_key"`
	PrimarySince    time.Time  `json:"primary_since" db:"primary_since"`
	MaterialVersion int64      `json:"material_version" db:"material_version"`
	LastRotation    *time.Time `json:"last_rotation,omitempty" db:"last_rotation"`
	Rotations       int32      `json:"rotations" db:"rotations"`
	// ResealedKey is the primary key whose reseal the resealer recorded
	// as complete; ResealComplete says it is the current primary.
	ResealedKey    int64 `json:"resealed_key" db:"resealed_key"`
	ResealComplete bool  `json:"reseal_complete" db:"reseal_complete"`
	// Sealed counts the environment's current values (neither destroyed
	// nor erased) sealed by the primary key, out of Values.
	Sealed    int64     `json:"sealed" db:"sealed"`
	Values    int64     `json:"values" db:"values"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
	Keys      []KeyInfo `json:"keys" db:"-"`
}

// KeyInfo is one data key of a keyset.
type KeyInfo struct {
	ID             int64     `json:"id" db:"key_id"`
	State          string    `json:"state" db:"state"`
	Primary        bool      `json:"primary" db:"is_primary"`
	AddedAt        time.Time `json:"added_at" db:"added_at"`
	StateChangedAt time.Time `json:"state_changed_at" db:"state_changed_at"`
}

// resealProgress is the SQL that counts, for the keyset aliased k, its
// environment's current values (proj_secrets rows whose current version
// still has a ciphertext) and those sealed by its primary key.
var resealProgress = `LEFT JOIN LATERAL (
		SELECT count(*) FILTER (WHERE s.key_id = k.primary_key) AS sealed, count(*) AS "values"
		FROM ` + liveNames("proj_secrets") + ` s
		WHERE s.org = k.org AND s.project = k.project AND s.env = k.env AND s.ciphertext IS NOT NULL) p ON true`

// Keysets returns an organization's keysets with their keys (oldest
// first) and reseal progress, by project and environment.
func (r *Reader) Keysets(ctx context.Context, org string) ([]KeysetInfo, error) {
	if err := r.CheckHalted(ctx, Keys{}.Name(), Secrets{}.Name()); err != nil {
		return nil, err
	}
	if org == "" {
		return nil, errNoOrg
	}
	sets, err := collect[KeysetInfo](ctx, r.pool, `SELECT k.org, k.project, k.env, k.kek, k.primary_key, k.primary_since, k.material_version,
			k.last_rotation, k.rotations, k.resealed_key, k.resealed_key = k.primary_key AS reseal_complete,
			p.sealed, p."values", k.created_at, k.updated_at
		FROM `+liveNames("proj_keysets")+` k `+resealProgress+`
		WHERE k.org = $1 ORDER BY k.project, k.env`, org)
	if err != nil || len(sets) == 0 {
		return sets, err
	}
	type keyOf struct {
		Project string `db:"project"`
		Env     string `db:"env"`
		KeyInfo
	}
	keys, err := collect[keyOf](ctx, r.pool, `SELECT project, env, key_id, state, is_primary, added_at, state_changed_at
		FROM `+liveNames("proj_keys")+` WHERE org = $1 ORDER BY project, env, added_at, key_id`, org)
	if err != nil {
		return nil, err
	}
	idx := map[[2]string]int{}
	for i := range sets {
		sets[i].Keys = []KeyInfo{}
		idx[[2]string{sets[i].Project, sets[i].Env}] = i
	}
	for _, k := range keys {
		if i, ok := idx[[2]string{k.Project, k.Env}]; ok {
			sets[i].Keys = append(sets[i].Keys, k.KeyInfo)
		}
	}
	return sets, nil
}

// ResealProgress returns how many of an environment's current values are
// sealed by its primary key, out of how many; ErrNotFound when the
// environment has no keyset.
func (r *Reader) ResealProgress(ctx context.Context, org, project, env string) (sealed, values int64, err error) {
	if err := r.CheckHalted(ctx, Keys{}.Name(), Secrets{}.Name()); err != nil {
		return 0, 0, err
	}
	if org == "" {
		return 0, 0, errNoOrg
	}
	err = r.pool.QueryRow(ctx, `SELECT p.sealed, p."values" FROM `+liveNames("proj_keysets")+` k `+resealProgress+`
		WHERE k.org = $1 AND k.project = $2 AND k.env = $3`, org, project, env).Scan(&sealed, &values)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	return sealed, values, err
}

// ApprovalInfo is an approval request and where it stands.
type ApprovalInfo struct {
	ID      string `json:"id" db:"approval_id"`
	Org     string `json:"org,omitempty" db:"org"`
	Project string `json:"project,omitempty" db:"project"`
	Env     string `json:"env,omitempty" db:"env"`
	Kind    string `json:"kind" db:"kind"`
	Bundle  string `json:"bundle,omitempty" db:"bundle"`
	// Keys are the keys asked for.
	Keys       []domain.BundleKey `json:"keys" db:"keys"`
	Requester  string             `json:"requester" db:"requester"`
	ClientAddr string             `json:"client_addr,omitempty" db:"client_addr"`
	UserCode   string             `json:"user_code" db:"user_code"`
	// Status is pending, approved, denied, expired or delivered; a pending
	// or approved request past its deadline reads expired.
	Status            string   `json:"status" db:"status"`
	ApprovalsRequired int32    `json:"approvals_required" db:"approvals_required"`
	SelfApproval      bool     `json:"self_approval" db:"self_approval"`
	ApprovedBy        []string `json:"approved_by" db:"approved_by"`
	// GrantedKeys are the keys every approver let through.
	GrantedKeys   []string              `json:"granted_keys" db:"granted_keys"`
	DeliveredKeys []domain.DeliveredKey `json:"delivered_keys" db:"delivered_keys"`
	ExpiresAt     time.Time             `json:"expires_at" db:"expires_at"`
	RequestedAt   time.Time             `json:"requested_at" db:"requested_at"`
	// DecidedAt is when the request was approved (by the last approval
	// needed) or denied, by DecidedBy.
	DecidedAt   *time.Time `json:"decided_at,omitempty" db:"decided_at"`
	DecidedBy   string     `json:"decided_by,omitempty" db:"decided_by"`
	DenyReason  string     `json:"deny_reason,omitempty" db:"deny_reason"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty" db:"delivered_at"`
	UpdatedAt   time.Time  `json:"updated_at" db:"updated_at"`
}

// approvalSelect reads proj_approvals with the status as seen at $1.
var approvalSelect = `SELECT approval_id, org, project, env, kind, bundle, keys, requester, client_addr, user_code,
		CASE WHEN status IN ('pending', 'approved') AND expires_at <= $1 THEN 'expired' ELSE status END AS status,
		approvals_required, self_approval, approved_by, granted_keys, delivered_keys, expires_at, requested_at,
		decided_at, decided_by, deny_reason, delivered_at, updated_at
	FROM ` + liveNames("proj_approvals")

// Approvals returns an organization's approval requests with the status
// seen at now (status "": every status), newest first, at most MaxListed.
func (r *Reader) Approvals(ctx context.Context, org, status string, now time.Time) ([]ApprovalInfo, error) {
	if err := r.CheckHalted(ctx, Approvals{}.Name()); err != nil {
		return nil, err
	}
	if org == "" {
		return nil, errNoOrg
	}
	return collect[ApprovalInfo](ctx, r.pool, `SELECT * FROM (`+approvalSelect+` WHERE org = $2) a
		WHERE $3 = '' OR status = $3 ORDER BY requested_at DESC, approval_id LIMIT `+fmt.Sprint(MaxListed), now, org, status)
}

// Approval returns one request by id, with its status seen at now, or
// ErrNotFound. It is not scoped to an organization (sign-in requests
// have none): the caller checks that the reader may see it.
func (r *Reader) Approval(ctx context.Context, id string, now time.Time) (ApprovalInfo, error) {
	if err := r.CheckHalted(ctx, Approvals{}.Name()); err != nil {
		return ApprovalInfo{}, err
	}
	return collectOne[ApprovalInfo](ctx, r.pool, approvalSelect+` WHERE approval_id = $2`, now, id)
}

// AuditFilter narrows the audit feed; empty fields match everything.
type AuditFilter struct {
	// Actor is an actor's text form ("user:ada", "token:<id>").
	Actor string `json:"actor,omitempty"`
	// ActorKind is user, token or system.
	ActorKind string `json:"actor_kind,omitempty"`
	// Action is an event type ("secret.viewed") or a prefix: a category
	// ("secret"), or text ending in "." or "*" ("secret.", "secret.*").
	Action string `json:"action,omitempty"`
	// Secret is a secret's name: events on secrets of that name.
	Secret  string `json:"secret,omitempty"`
	Project string `json:"project,omitempty"`
	Env     string `json:"env,omitempty"`
	// From and To bound the recorded time: [From, To); zero is unbounded.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
}

// AuditRow is one event of the audit feed.
type AuditRow struct {
	Position   uint64    `json:"position" db:"position"`
	RecordedAt time.Time `json:"recorded_at" db:"recorded_at"`
	Actor      string    `json:"actor" db:"actor"`
	ActorKind  string    `json:"actor_kind" db:"actor_kind"`
	Action     string    `json:"action" db:"action"`
	Stream     string    `json:"stream" db:"stream"`
	Project    string    `json:"project,omitempty" db:"project"`
	Env        string    `json:"env,omitempty" db:"env"`
	Target     string    `json:"target" db:"target"`
	RequestID  string    `json:"request_id,omitempty" db:"request_id"`
	ClientAddr string    `json:"client_addr,omitempty" db:"client_addr"`
}

// AuditFeed returns an organization's events matching f, newest first,
// from just below position cursor (0: from the newest), at most limit
// (default DefaultAuditPage, at most MaxAuditPage). next is the cursor of
// the following page, 0 after the last: paging from 0 until next is 0
// returns every matching event exactly once.
func (r *Reader) AuditFeed(ctx context.Context, org string, f AuditFilter, cursor uint64, limit int) ([]AuditRow, uint64, error) {
	if err := r.CheckHalted(ctx, Audit{}.Name()); err != nil {
		return nil, 0, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, 0, err
	}
	switch {
	case limit <= 0:
		limit = DefaultAuditPage
	case limit > MaxAuditPage:
		limit = MaxAuditPage
	}
	if cursor > 0 {
		w.add("position < $%d", int64(min(cursor, 1<<63-1)))
	}
	w.opt("actor = $%d", f.Actor)
	w.opt("actor_kind = $%d", f.ActorKind)
	switch a := f.Action; {
	case a == "":
	case strings.HasSuffix(a, "*"):
		w.add("starts_with(action, $%d)", strings.TrimSuffix(a, "*"))
	case strings.HasSuffix(a, "."):
		w.add("starts_with(action, $%d)", a)
	case !strings.Contains(a, "."):
		w.add("starts_with(action, $%d)", a+".")
	default:
		w.add("action = $%d", a)
	}
	w.opt("starts_with(stream, 'secret/') AND target = $%d", f.Secret)
	w.opt("project = $%d", f.Project)
	w.opt("env = $%d", f.Env)
	if !f.From.IsZero() {
		w.add("recorded_at >= $%d", ceilMicro(f.From))
	}
	if !f.To.IsZero() {
		w.add("recorded_at < $%d", ceilMicro(f.To))
	}
	rows, err := collect[AuditRow](ctx, r.pool, `SELECT position, recorded_at, actor, actor_kind, action, stream, project, env, target,
		request_id, client_addr FROM `+liveNames("proj_audit")+` WHERE `+w.String()+` ORDER BY position DESC LIMIT `+fmt.Sprint(limit+1), w.args...)
	if err != nil {
		return nil, 0, err
	}
	var next uint64
	if len(rows) > limit {
		rows = rows[:limit]
		next = rows[limit-1].Position
	}
	return rows, next, nil
}

// AccessStat counts the reads of one secret on one day (UTC) by one kind
// of actor.
type AccessStat struct {
	Day       time.Time `json:"day" db:"day"`
	Project   string    `json:"project" db:"project"`
	Env       string    `json:"env" db:"env"`
	Name      string    `json:"name" db:"name"`
	ActorKind string    `json:"actor_kind" db:"actor_kind"`
	Reads     int64     `json:"reads" db:"reads"`
}

// AccessStats returns an organization's reads per secret, day and kind of
// actor for the days (UTC) that overlap [from, to) (zero: unbounded), by
// day, project, environment, name and kind.
func (r *Reader) AccessStats(ctx context.Context, org string, from, to time.Time) ([]AccessStat, error) {
	if err := r.CheckHalted(ctx, Access{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	const day = "2006-01-02"
	if !from.IsZero() {
		w.add("day >= $%d::date", from.UTC().Format(day))
	}
	if !to.IsZero() {
		w.add("day <= $%d::date", to.Add(-time.Nanosecond).UTC().Format(day))
	}
	return collect[AccessStat](ctx, r.pool, `SELECT day, project, env, name, actor_kind, reads
		FROM `+liveNames("proj_access_daily")+` WHERE `+w.String()+` ORDER BY day, project, env, name, actor_kind`, w.args...)
}

// SecretRead is one read of a secret's value: who, which version, when,
// through what and why.
type SecretRead struct {
	Position   uint64    `json:"position" db:"position"`
	RecordedAt time.Time `json:"recorded_at" db:"recorded_at"`
	Project    string    `json:"project" db:"project"`
	Env        string    `json:"env" db:"env"`
	Name       string    `json:"name" db:"name"`
	Version    int64     `json:"version" db:"version"`
	Actor      string    `json:"actor" db:"actor"`
	ActorKind  string    `json:"actor_kind" db:"actor_kind"`
	Channel    string    `json:"channel" db:"channel"`
	Reason     string    `json:"reason,omitempty" db:"reason"`
}

// Reads returns the reads of an organization's secrets recorded in
// [from, to) (zero: unbounded), newest first, at most MaxListed; project,
// env and name narrow them when not empty.
func (r *Reader) Reads(ctx context.Context, org, project, env, name string, from, to time.Time) ([]SecretRead, error) {
	if err := r.CheckHalted(ctx, Access{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	w.opt("project = $%d", project)
	w.opt("env = $%d", env)
	w.opt("name = $%d", name)
	if !from.IsZero() {
		w.add("recorded_at >= $%d", ceilMicro(from))
	}
	if !to.IsZero() {
		w.add("recorded_at < $%d", ceilMicro(to))
	}
	return collect[SecretRead](ctx, r.pool, `SELECT position, recorded_at, project, env, name, version, actor, actor_kind, channel, reason
		FROM `+liveNames("proj_secret_reads")+` WHERE `+w.String()+` ORDER BY position DESC LIMIT `+fmt.Sprint(MaxListed), w.args...)
}

// ReadsAt returns the reads of an organization's secrets recorded at the
// given positions (the audit feed's secret.viewed rows), by position.
// Positions of other organizations, or of other events, match nothing.
func (r *Reader) ReadsAt(ctx context.Context, org string, positions []uint64) ([]SecretRead, error) {
	if err := r.CheckHalted(ctx, Access{}.Name()); err != nil {
		return nil, err
	}
	if org == "" {
		return nil, errNoOrg
	}
	if len(positions) == 0 {
		return nil, nil
	}
	ps := make([]int64, len(positions))
	for i, p := range positions {
		ps[i] = int64(min(p, 1<<63-1))
	}
	return collect[SecretRead](ctx, r.pool, `SELECT position, recorded_at, project, env, name, version, actor, actor_kind, channel, reason
		FROM `+liveNames("proj_secret_reads")+` WHERE org = $1 AND position = ANY($2) ORDER BY position`, org, ps)
}

// ActivityCount counts an organization's events of one type recorded on
// one day (UTC), for dashboards.
type ActivityCount struct {
	Day    time.Time `json:"day" db:"day"`
	Action string    `json:"action" db:"action"`
	Events int64     `json:"events" db:"events"`
}

// AuditActivity counts an organization's events per day (UTC) and event
// type, recorded in [from, to) (zero: unbounded), by day then type.
func (r *Reader) AuditActivity(ctx context.Context, org string, from, to time.Time) ([]ActivityCount, error) {
	if err := r.CheckHalted(ctx, Audit{}.Name()); err != nil {
		return nil, err
	}
	w, err := orgWhere(org)
	if err != nil {
		return nil, err
	}
	if !from.IsZero() {
		w.add("recorded_at >= $%d", ceilMicro(from))
	}
	if !to.IsZero() {
		w.add("recorded_at < $%d", ceilMicro(to))
	}
	return collect[ActivityCount](ctx, r.pool, `SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, action, count(*) AS events
		FROM `+liveNames("proj_audit")+` WHERE `+w.String()+` GROUP BY 1, 2 ORDER BY 1, 2`, w.args...)
}

// ActorReads counts the reads of values by one actor: how many, of how
// many secrets, and when the last was.
type ActorReads struct {
	Actor     string    `json:"actor" db:"actor"`
	ActorKind string    `json:"actor_kind" db:"actor_kind"`
	Reads     int64     `json:"reads" db:"reads"`
	Secrets   int64     `json:"secrets" db:"secrets"`
	LastRead  time.Time `json:"last_read" db:"last_read"`
}

// ProductionReadsByActor counts, per actor, the reads of an
// organization's values recorded in [from, to) (zero: unbounded) in the
// environments flagged production (as they are flagged now), most reads
// first, at most MaxListed actors.
func (r *Reader) ProductionReadsByActor(ctx context.Context, org string, from, to time.Time) ([]ActorReads, error) {
	if err := r.CheckHalted(ctx, Access{}.Name(), Directory{}.Name()); err != nil {
		return nil, err
	}
	if org == "" {
		return nil, errNoOrg
	}
	w := &where{}
	w.add("r.org = $%d", org)
	if !from.IsZero() {
		w.add("r.recorded_at >= $%d", ceilMicro(from))
	}
	if !to.IsZero() {
		w.add("r.recorded_at < $%d", ceilMicro(to))
	}
	return collect[ActorReads](ctx, r.pool, `SELECT r.actor, min(r.actor_kind) AS actor_kind, count(*) AS reads,
			count(DISTINCT (r.project, r.env, r.name)) AS secrets, max(r.recorded_at) AS last_read
		FROM `+productionReads+`
		WHERE `+w.String()+` GROUP BY r.actor ORDER BY reads DESC, r.actor LIMIT `+fmt.Sprint(MaxListed), w.args...)
}

// productionReads joins the reads of values (r) with the environments
// flagged production now (e).
var productionReads = liveNames("proj_secret_reads") + ` r JOIN ` + liveNames("proj_environments") + ` e
			ON e.org = r.org AND e.project = r.project AND e.env = r.env AND e.production`
