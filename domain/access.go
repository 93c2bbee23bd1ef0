package domain

import (
	"fmt"
	"strings"
)

// ActorKind is who or what acts: a person, a machine token, or Stele
// itself (background jobs such as rotation and resealing).
type ActorKind string

const (
	ActorUser      ActorKind = "user"
	ActorToken     ActorKind = "token"
	ActorSystem    ActorKind = "system"
	ActorAnonymous ActorKind = "anonymous" // an unauthenticated client, e.g. opening a sign-in request
)

// Actor identifies a principal; its text form ("user:<id>",
// "token:<id>", "system:<job>") is what event metadata records.
type Actor struct {
	Kind ActorKind
	ID   string
}

func (a Actor) String() string { return string(a.Kind) + ":" + a.ID }

// IsZero reports whether a is the zero Actor.
func (a Actor) IsZero() bool { return a == Actor{} }

// ParseActor parses the text form written by Actor.String.
func ParseActor(s string) (Actor, error) {
	kind, id, ok := strings.Cut(s, ":")
	a := Actor{Kind: ActorKind(kind), ID: id}
	switch {
	case !ok || id == "":
		return Actor{}, invalid("actor", "%q: want kind:id", s)
	case a.Kind != ActorUser && a.Kind != ActorToken && a.Kind != ActorSystem && a.Kind != ActorAnonymous:
		return Actor{}, invalid("actor", "%q: unknown kind %q", s, kind)
	}
	return a, nil
}

// Role is a level of access. Roles are ordered: each includes the ones
// below it.
type Role string

const (
	RoleNone      Role = ""
	RoleViewer    Role = "viewer"
	RoleDeveloper Role = "developer"
	RoleAdmin     Role = "admin"
	RoleOwner     Role = "owner"
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleDeveloper:
		return 2
	case RoleAdmin:
		return 3
	case RoleOwner:
		return 4
	}
	return 0
}

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// AtLeast reports whether r includes o.
func (r Role) AtLeast(o Role) bool { return r.rank() >= o.rank() }

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return RoleNone, invalid("role", "%q: want viewer, developer, admin or owner", s)
	}
	return r, nil
}

func maxRole(a, b Role) Role {
	if a.rank() >= b.rank() {
		return a
	}
	return b
}

// Permission is an action that authorization decides on.
type Permission string

const (
	PermReadMetadata   Permission = "read secret metadata"
	PermRevealValue    Permission = "reveal secret values"
	PermWriteSecret    Permission = "change secrets"
	PermDestroyVersion Permission = "destroy secret versions"
	PermRequest        Permission = "request secrets"
	PermApprove        Permission = "approve requests"
	PermManageProject  Permission = "manage projects, environments and bundles"
	PermManageMembers  Permission = "manage members and roles"
	PermManageTokens   Permission = "issue and revoke tokens"
	PermRotateKeys     Permission = "rotate, disable and rewrap keys"
	PermDestroyKey     Permission = "destroy keys"
	PermCreateOrg      Permission = "create organizations"
	// PermReadAudit: the audit feed, access statistics and point-in-time
	// history (who could read, who read, state as of a moment).
	PermReadAudit Permission = "read the audit trail and history"
	// PermReadMembers: who holds which role, and the tokens (never their
	// secrets).
	PermReadMembers Permission = "read members and tokens"
)

// minimumRole maps each permission to the least role that has it.
var minimumRole = map[Permission]Role{
	PermReadMetadata:   RoleViewer,
	PermRevealValue:    RoleDeveloper,
	PermWriteSecret:    RoleDeveloper,
	PermRequest:        RoleViewer,
	PermApprove:        RoleDeveloper,
	PermDestroyVersion: RoleAdmin,
	PermManageProject:  RoleAdmin,
	PermManageMembers:  RoleAdmin,
	PermManageTokens:   RoleAdmin,
	PermRotateKeys:     RoleAdmin,
	PermDestroyKey:     RoleOwner,
	PermReadAudit:      RoleAdmin,
	PermReadMembers:    RoleViewer,
}

// Can reports whether a role has a permission.
func (r Role) Can(p Permission) bool {
	min, ok := minimumRole[p]
	return ok && r.AtLeast(min)
}

// Principal is an actor with the role it holds where a command applies
// (worked out from the organization's grants by Organization.Access).
type Principal struct {
	Actor Actor
	Role  Role
}

// System is the principal of Stele's own background jobs.
func System(job string) Principal {
	return Principal{Actor: Actor{Kind: ActorSystem, ID: job}, Role: RoleOwner}
}

// Require fails with a *ForbiddenError unless p may do perm.
func (p Principal) Require(perm Permission) error { return p.require(perm) }

// require fails with a *ForbiddenError unless p may do perm.
func (p Principal) require(perm Permission) error {
	if p.Actor.IsZero() {
		return &ForbiddenError{Actor: Actor{Kind: ActorAnonymous, ID: "?"}, Permission: perm, Reason: "not signed in"}
	}
	if !p.Role.Can(perm) {
		reason := "no role here"
		if p.Role.Valid() {
			reason = fmt.Sprintf("role %s", p.Role)
		}
		return &ForbiddenError{Actor: p.Actor, Permission: perm, Reason: reason}
	}
	return nil
}
