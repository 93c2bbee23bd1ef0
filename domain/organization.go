package domain

import (
	"encoding/hex"
	"slices"
	"time"
)

// OrgStream is the stream of organization org.
func OrgStream(org string) string { return "org/" + org }

// MaxTokenLifetime is the longest a service token may live.
const MaxTokenLifetime = 366 * 24 * time.Hour

// Organization events.
type (
	// OrganizationCreated opens a tenant; Owner is the user who created it
	// (and is granted the owner role by the RoleGranted that follows), or
	// the person Stele made its owner, or empty when Stele created it with
	// no person owning it yet (its first owner is then a service token).
	OrganizationCreated struct {
		OrgID string `json:"org_id"`
		Name  string `json:"name"`
		Owner string `json:"owner"`
	}
	OrganizationRenamed struct {
		Name     string `json:"name"`
		Previous string `json:"previous"`
	}
	// RoleGranted gives a user a role in the organization (Project empty)
	// or in one project; Previous is the role it replaces there, if any.
	RoleGranted struct {
		UserID   string `json:"user_id"`
		Role     Role   `json:"role"`
		Project  string `json:"project,omitempty"`
		Previous Role   `json:"previous,omitempty"`
	}
	RoleRevoked struct {
		UserID   string `json:"user_id"`
		Project  string `json:"project,omitempty"`
		Previous Role   `json:"previous"`
	}
	// TokenIssued creates a service token for machines. Only the SHA-256
	// of the token's secret is recorded.
	TokenIssued struct {
		TokenID      string    `json:"token_id"`
		Name         string    `json:"name"`
		Role         Role      `json:"role"`
		Project      string    `json:"project,omitempty"`
		Environments []string  `json:"environments,omitempty"`
		ExpiresAt    time.Time `json:"expires_at"`
		SecretHash   string    `json:"secret_hash"`
	}
	TokenRevoked struct {
		TokenID string `json:"token_id"`
		Reason  string `json:"reason,omitempty"`
	}
)

func (OrganizationCreated) EventType() string { return "organization.created" }
func (OrganizationRenamed) EventType() string { return "organization.renamed" }
func (RoleGranted) EventType() string         { return "organization.role_granted" }
func (RoleRevoked) EventType() string         { return "organization.role_revoked" }
func (TokenIssued) EventType() string         { return "organization.token_issued" }
func (TokenRevoked) EventType() string        { return "organization.token_revoked" }

func init() {
	register[OrganizationCreated]()
	register[OrganizationRenamed]()
	register[RoleGranted]()
	register[RoleRevoked]()
	register[TokenIssued]()
	register[TokenRevoked]()
}

// Organization commands.
type (
	// CreateOrganization: ID is also the organization's slug, unique and
	// permanent; its stream must not exist yet. A person who creates an
	// organization owns it. Stele itself (a system actor, when a server
	// starts on an empty ledger) may create one owned by Owner, or by no
	// person yet when Owner is empty.
	CreateOrganization struct {
		ID    string
		Name  string
		Owner string
	}
	RenameOrganization struct{ Name string }
	GrantRole          struct {
		UserID  string
		Role    Role
		Project string // empty: the whole organization
	}
	RevokeRole struct {
		UserID  string
		Project string
	}
	IssueToken struct {
		TokenID      string
		Name         string
		Role         Role
		Project      string   // empty: every project
		Environments []string // empty: every environment
		ExpiresAt    time.Time
		SecretHash   string // hex SHA-256 of the token's secret
	}
	RevokeToken struct {
		TokenID string
		Reason  string
	}
)

// Token is a service token as the organization knows it.
type Token struct {
	ID           string
	Name         string
	Role         Role
	Project      string
	Environments []string
	ExpiresAt    time.Time
	SecretHash   string
	IssuedBy     string
	Revoked      bool
}

// Organization is the tenant aggregate: who may do what, and its tokens.
type Organization struct {
	id, name string
	version  uint64
	grants   map[string]map[string]Role // scope ("" or a project) → user → role
	tokens   map[string]*Token
}

// NewOrganization returns the state of an organization with no history.
func NewOrganization() *Organization {
	return &Organization{grants: map[string]map[string]Role{}, tokens: map[string]*Token{}}
}

// ReplayOrganization rebuilds an organization from its events.
func ReplayOrganization(events []Event) *Organization {
	o := NewOrganization()
	for _, e := range events {
		o.Apply(e)
	}
	return o
}

// Exists reports whether the organization was created.
func (o *Organization) Exists() bool { return o.id != "" }

// ID returns the organization's id (slug).
func (o *Organization) ID() string { return o.id }

// Name returns its display name.
func (o *Organization) Name() string { return o.name }

// Version is the number of events applied.
func (o *Organization) Version() uint64 { return o.version }

// Token returns a token by id.
func (o *Organization) Token(id string) (Token, bool) {
	t, ok := o.tokens[id]
	if !ok {
		return Token{}, false
	}
	return *t, true
}

// RoleOf returns a user's role in a scope ("" for the organization),
// without inheritance.
func (o *Organization) RoleOf(user, scope string) Role { return o.grants[scope][user] }

// TokenIDs returns the ids of every token ever issued, in order.
func (o *Organization) TokenIDs() []string {
	out := make([]string, 0, len(o.tokens))
	for id := range o.tokens {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// ProjectsOf returns the projects where a user holds a project role, in order.
func (o *Organization) ProjectsOf(user string) []string {
	var out []string
	for scope, m := range o.grants {
		if _, ok := m[user]; ok && scope != "" {
			out = append(out, scope)
		}
	}
	slices.Sort(out)
	return out
}

// Members returns every user with a grant, in order.
func (o *Organization) Members() []string {
	seen := map[string]bool{}
	for _, m := range o.grants {
		for u := range m {
			seen[u] = true
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// Apply folds one event into the state.
func (o *Organization) Apply(e Event) {
	o.version++
	switch e := e.(type) {
	case OrganizationCreated:
		o.id, o.name = e.OrgID, e.Name
	case OrganizationRenamed:
		o.name = e.Name
	case RoleGranted:
		if o.grants[e.Project] == nil {
			o.grants[e.Project] = map[string]Role{}
		}
		o.grants[e.Project][e.UserID] = e.Role
	case RoleRevoked:
		delete(o.grants[e.Project], e.UserID)
	case TokenIssued:
		o.tokens[e.TokenID] = &Token{ID: e.TokenID, Name: e.Name, Role: e.Role, Project: e.Project,
			Environments: e.Environments, ExpiresAt: e.ExpiresAt, SecretHash: e.SecretHash}
	case TokenRevoked:
		if t := o.tokens[e.TokenID]; t != nil {
			t.Revoked = true
		}
	}
}

// Access works out what an actor may do in a project and environment of
// this organization at time now (project "" for organization-wide
// actions, env "" for project-wide ones). Users hold the higher of their
// organization and project roles; tokens hold their role within their
// scope until they expire or are revoked; Stele's own jobs are owners. It
// returns a *ForbiddenError when the actor has no access there.
func (o *Organization) Access(actor Actor, project, env string, now time.Time) (Principal, error) {
	// Every denial here means the actor has no access to the scope at
	// all: callers answer as if it did not exist (Outsider).
	deny := func(reason string) (Principal, error) {
		return Principal{}, &ForbiddenError{Actor: actor, Permission: Permission("act in " + o.scopeName(project, env)), Reason: reason, Outsider: true}
	}
	if !o.Exists() {
		return deny("no such organization")
	}
	switch actor.Kind {
	case ActorSystem:
		return Principal{Actor: actor, Role: RoleOwner}, nil
	case ActorUser:
		r := o.grants[""][actor.ID]
		if project != "" {
			r = maxRole(r, o.grants[project][actor.ID])
		}
		if !r.Valid() {
			return deny("not a member")
		}
		return Principal{Actor: actor, Role: r}, nil
	case ActorToken:
		t := o.tokens[actor.ID]
		switch {
		case t == nil:
			return deny("unknown token")
		case t.Revoked:
			return deny("token revoked")
		case !now.Before(t.ExpiresAt):
			return deny("token expired")
		case t.Project != "" && project != t.Project:
			return deny("token is limited to project " + t.Project)
		case len(t.Environments) > 0 && (env == "" || !slices.Contains(t.Environments, env)):
			return deny("token is limited to environments " + joinComma(t.Environments))
		}
		return Principal{Actor: actor, Role: t.Role}, nil
	}
	return deny("not signed in")
}

func (o *Organization) scopeName(project, env string) string {
	s := "organization " + o.id
	if project != "" {
		s += ", project " + project
	}
	if env != "" {
		s += ", environment " + env
	}
	return s
}

func joinComma(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ", "
		}
		out += v
	}
	return out
}

// Handle decides an organization command by actor at time now. Access is
// worked out from the organization itself.
func (o *Organization) Handle(actor Actor, now time.Time, cmd any) ([]Event, error) {
	if c, ok := cmd.(CreateOrganization); ok {
		return o.create(actor, c)
	}
	if !o.Exists() {
		return nil, stateErr(ErrNotFound, "no such organization")
	}
	switch c := cmd.(type) {
	case RenameOrganization:
		p, err := o.Access(actor, "", "", now)
		if err != nil {
			return nil, err
		}
		if err := p.require(PermManageMembers); err != nil {
			return nil, err
		}
		if err := checkName("name", c.Name); err != nil {
			return nil, err
		}
		if c.Name == o.name {
			return nil, nil
		}
		return []Event{OrganizationRenamed{Name: c.Name, Previous: o.name}}, nil
	case GrantRole:
		return o.grant(actor, now, c)
	case RevokeRole:
		return o.revoke(actor, now, c)
	case IssueToken:
		return o.issue(actor, now, c)
	case RevokeToken:
		return o.revokeToken(actor, now, c)
	}
	return nil, invalid("command", "%T is not an organization command", cmd)
}

func (o *Organization) create(actor Actor, c CreateOrganization) ([]Event, error) {
	if o.Exists() {
		return nil, stateErr(ErrAlreadyExists, "organization %s already exists", o.id)
	}
	owner := actor.ID
	switch actor.Kind {
	case ActorUser:
		if c.Owner != "" && c.Owner != actor.ID {
			return nil, invalid("owner", "a person creating an organization owns it")
		}
	case ActorSystem:
		owner = c.Owner
		if owner != "" {
			if err := checkUserID("owner", owner); err != nil {
				return nil, err
			}
		}
	default:
		return nil, &ForbiddenError{Actor: actor, Permission: PermCreateOrg, Reason: "only people create organizations"}
	}
	if err := checkSlug("organization id", c.ID); err != nil {
		return nil, err
	}
	if err := checkName("name", c.Name); err != nil {
		return nil, err
	}
	evs := []Event{OrganizationCreated{OrgID: c.ID, Name: c.Name, Owner: owner}}
	if owner != "" {
		evs = append(evs, RoleGranted{UserID: owner, Role: RoleOwner})
	}
	return evs, nil
}

func (o *Organization) grant(actor Actor, now time.Time, c GrantRole) ([]Event, error) {
	p, err := o.Access(actor, c.Project, "", now)
	if err != nil {
		return nil, err
	}
	if err := p.require(PermManageMembers); err != nil {
		return nil, err
	}
	if err := checkUserID("user id", c.UserID); err != nil {
		return nil, err
	}
	if c.Project != "" {
		if err := checkSlug("project", c.Project); err != nil {
			return nil, err
		}
	}
	if !c.Role.Valid() {
		return nil, invalid("role", "%q: want viewer, developer, admin or owner", c.Role)
	}
	if !p.Role.AtLeast(c.Role) {
		return nil, &ForbiddenError{Actor: actor, Permission: PermManageMembers, Reason: "cannot grant " + string(c.Role) + " above own role " + string(p.Role)}
	}
	prev := o.grants[c.Project][c.UserID]
	if prev == c.Role {
		return nil, nil
	}
	if !p.Role.AtLeast(prev) {
		return nil, &ForbiddenError{Actor: actor, Permission: PermManageMembers, Reason: "cannot change the role of a " + string(prev)}
	}
	if prev == RoleOwner && c.Project == "" && o.owners() == 1 {
		return nil, stateErr(ErrState, "%s is the organization's last owner", c.UserID)
	}
	return []Event{RoleGranted{UserID: c.UserID, Role: c.Role, Project: c.Project, Previous: prev}}, nil
}

func (o *Organization) owners() int {
	n := 0
	for _, r := range o.grants[""] {
		if r == RoleOwner {
			n++
		}
	}
	return n
}

func (o *Organization) revoke(actor Actor, now time.Time, c RevokeRole) ([]Event, error) {
	p, err := o.Access(actor, c.Project, "", now)
	if err != nil {
		return nil, err
	}
	if err := p.require(PermManageMembers); err != nil {
		return nil, err
	}
	prev, ok := o.grants[c.Project][c.UserID]
	if !ok {
		return nil, stateErr(ErrNotFound, "%s has no role in %s", c.UserID, o.scopeName(c.Project, ""))
	}
	if !p.Role.AtLeast(prev) {
		return nil, &ForbiddenError{Actor: actor, Permission: PermManageMembers, Reason: "cannot revoke a " + string(prev)}
	}
	if prev == RoleOwner && c.Project == "" && o.owners() == 1 {
		return nil, stateErr(ErrState, "%s is the organization's last owner", c.UserID)
	}
	return []Event{RoleRevoked{UserID: c.UserID, Project: c.Project, Previous: prev}}, nil
}

func (o *Organization) issue(actor Actor, now time.Time, c IssueToken) ([]Event, error) {
	p, err := o.Access(actor, c.Project, "", now)
	if err != nil {
		return nil, err
	}
	if err := p.require(PermManageTokens); err != nil {
		return nil, err
	}
	if err := checkID("token id", c.TokenID); err != nil {
		return nil, err
	}
	if _, dup := o.tokens[c.TokenID]; dup {
		return nil, stateErr(ErrAlreadyExists, "token %s already exists", c.TokenID)
	}
	if err := checkName("name", c.Name); err != nil {
		return nil, err
	}
	if !c.Role.Valid() {
		return nil, invalid("role", "%q: want viewer, developer, admin or owner", c.Role)
	}
	if !p.Role.AtLeast(c.Role) {
		return nil, &ForbiddenError{Actor: actor, Permission: PermManageTokens, Reason: "cannot issue a token above own role " + string(p.Role)}
	}
	if c.Project != "" {
		if err := checkSlug("project", c.Project); err != nil {
			return nil, err
		}
	}
	for _, e := range c.Environments {
		if err := checkSlug("environment", e); err != nil {
			return nil, err
		}
	}
	if len(c.Environments) > 0 && c.Project == "" {
		return nil, invalid("environments", "a token limited to environments must name its project")
	}
	if !c.ExpiresAt.After(now) || c.ExpiresAt.Sub(now) > MaxTokenLifetime {
		return nil, invalid("expires at", "must be in the future and within %d days", int(MaxTokenLifetime.Hours()/24))
	}
	if b, err := hex.DecodeString(c.SecretHash); err != nil || len(b) != 32 {
		return nil, invalid("secret hash", "want 64 hex digits (SHA-256)")
	}
	return []Event{TokenIssued{TokenID: c.TokenID, Name: c.Name, Role: c.Role, Project: c.Project,
		Environments: slices.Clone(c.Environments), ExpiresAt: c.ExpiresAt.UTC(), SecretHash: c.SecretHash}}, nil
}

func (o *Organization) revokeToken(actor Actor, now time.Time, c RevokeToken) ([]Event, error) {
	t := o.tokens[c.TokenID]
	if t == nil {
		return nil, stateErr(ErrNotFound, "no token %s", c.TokenID)
	}
	// A token may revoke itself; otherwise revoking needs the right to
	// manage tokens where the token applies.
	if !(actor.Kind == ActorToken && actor.ID == t.ID) {
		p, err := o.Access(actor, t.Project, "", now)
		if err != nil {
			return nil, err
		}
		if err := p.require(PermManageTokens); err != nil {
			return nil, err
		}
	}
	if t.Revoked {
		return nil, stateErr(ErrState, "token %s is already revoked", c.TokenID)
	}
	if err := checkText("reason", c.Reason, MaxReasonLen); err != nil {
		return nil, err
	}
	return []Event{TokenRevoked{TokenID: c.TokenID, Reason: c.Reason}}, nil
}
