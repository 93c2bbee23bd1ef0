package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"time"

	"stele.dev/stele/domain"
)

func newOrgAgg() aggregate     { return domain.NewOrganization() }
func newProjectAgg() aggregate { return domain.NewProject() }

// access works out what actor may do in a project environment of org.
func (s *Service) access(ctx context.Context, actor domain.Actor, org, project, env string) (domain.Principal, error) {
	var p domain.Principal
	err := s.view(ctx, domain.OrgStream(org), newOrgAgg, func(a aggregate) error {
		var err error
		p, err = a.(*domain.Organization).Access(actor, project, env, s.now())
		return err
	})
	return p, err
}

// orgCommand runs an organization command.
func (s *Service) orgCommand(ctx context.Context, req Request, org, name string, cmd any) (Result, error) {
	res, _, err := s.execute(ctx, req, command{
		stream: domain.OrgStream(org), tenant: org, name: name, target: org, mk: newOrgAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			return a.(*domain.Organization).Handle(req.Actor, s.now(), cmd)
		},
	})
	return res, err
}

// CreateOrganization creates an organization owned by the requester. Its
// id is its slug, unique and permanent.
func (s *Service) CreateOrganization(ctx context.Context, req Request, id, name string) (Result, error) {
	return s.orgCommand(ctx, req, id, "create organization", domain.CreateOrganization{ID: id, Name: name})
}

// RenameOrganization changes an organization's display name.
func (s *Service) RenameOrganization(ctx context.Context, req Request, org, name string) (Result, error) {
	return s.orgCommand(ctx, req, org, "rename organization", domain.RenameOrganization{Name: name})
}

// GrantRole gives a user a role in the organization (project "") or one project.
func (s *Service) GrantRole(ctx context.Context, req Request, org, user string, role domain.Role, project string) (Result, error) {
	return s.orgCommand(ctx, req, org, "grant role "+user+" "+project+" "+string(role), domain.GrantRole{UserID: user, Role: role, Project: project})
}

// RevokeRole removes a user's role in the organization or one project.
func (s *Service) RevokeRole(ctx context.Context, req Request, org, user, project string) (Result, error) {
	return s.orgCommand(ctx, req, org, "revoke role "+user+" "+project, domain.RevokeRole{UserID: user, Project: project})
}

// TokenSpec describes a service token to issue.
type TokenSpec struct {
	Name         string
	Role         domain.Role
	Project      string
	Environments []string
	TTL          time.Duration
	// ExpiresAt, when set, is the expiry (truncated to the second) and
	// TTL is ignored.
	ExpiresAt time.Time
}

// IssuedToken is a new token. Secret is shown once and never stored: the
// ledger keeps only its SHA-256.
type IssuedToken struct {
	ID        string
	Secret    string
	ExpiresAt time.Time
}

// TokenSecretHash returns the hash the ledger keeps of a token secret.
func TokenSecretHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// IssueToken issues a service token.
func (s *Service) IssueToken(ctx context.Context, req Request, org string, spec TokenSpec) (IssuedToken, Result, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return IssuedToken{}, Result{}, err
	}
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return IssuedToken{}, Result{}, err
	}
	t := IssuedToken{ID: hex.EncodeToString(idb[:]), ExpiresAt: s.now().Add(spec.TTL).UTC().Truncate(time.Second)}
	if !spec.ExpiresAt.IsZero() {
		t.ExpiresAt = spec.ExpiresAt.UTC().Truncate(time.Second)
	}
	t.Secret = tokenPrefix + org + "." + t.ID + "." + base64.RawURLEncoding.EncodeToString(raw[:])
	res, err := s.orgCommand(ctx, req, org, "issue token "+spec.Name, domain.IssueToken{TokenID: t.ID, Name: spec.Name, Role: spec.Role,
		Project: spec.Project, Environments: spec.Environments, ExpiresAt: t.ExpiresAt, SecretHash: TokenSecretHash(t.Secret)})
	if err != nil {
		return IssuedToken{}, res, err
	}
	if res.Replayed {
		return IssuedToken{}, res, ErrShownOnce
	}
	return t, res, nil
}

// RevokeToken revokes a service token.
func (s *Service) RevokeToken(ctx context.Context, req Request, org, tokenID, reason string) (Result, error) {
	return s.orgCommand(ctx, req, org, "revoke token "+tokenID, domain.RevokeToken{TokenID: tokenID, Reason: reason})
}

// projectCommand runs a project command with the requester's role in it.
func (s *Service) projectCommand(ctx context.Context, req Request, org, project, name string, cmd any) (Result, error) {
	who, err := s.access(ctx, req.Actor, org, project, "")
	if err != nil {
		return Result{}, err
	}
	res, _, err := s.execute(ctx, req, command{
		stream: domain.ProjectStream(org, project), tenant: org, name: name, target: org + "/" + project, mk: newProjectAgg,
		decide: func(a aggregate) ([]domain.Event, error) { return a.(*domain.Project).Handle(who, cmd) },
	})
	return res, err
}

// CreateProject creates a project; its id is its slug within the organization.
func (s *Service) CreateProject(ctx context.Context, req Request, org, project, name string) (Result, error) {
	return s.projectCommand(ctx, req, org, project, "create project", domain.CreateProject{OrgID: org, ProjectID: project, Name: name})
}

// EnvSpec describes an environment.
type EnvSpec struct {
	Name       string
	Production bool
	// Rotation is the data key rotation interval (0: daily).
	Rotation time.Duration
	// Approval says which actions on values need an approved request.
	Approval domain.ApprovalPolicy
}

// EnvUpdate changes an environment's settings; nil fields stay.
type EnvUpdate struct {
	Name       *string
	Production *bool
	Rotation   *time.Duration
	Approval   *domain.ApprovalPolicy
}

// CreateEnvironment creates an environment and its keyset.
func (s *Service) CreateEnvironment(ctx context.Context, req Request, env Env, spec EnvSpec) (Result, error) {
	res, err := s.projectCommand(ctx, req, env.Org, env.Project, "create environment "+env.Env,
		domain.CreateEnvironment{EnvID: env.Env, Name: spec.Name, Production: spec.Production, Rotation: spec.Rotation, Approval: spec.Approval})
	if err != nil {
		return res, err
	}
	// The keyset is made now so the first write does not wait for it; if
	// this fails, the first write makes it.
	who, err := s.access(ctx, req.Actor, env.Org, env.Project, env.Env)
	if err == nil {
		_, _, err = s.keyset(ctx, req, who, env, true)
	}
	if err != nil {
		s.log.Warn("keyset not created with its environment; the first write will create it", "env", env.String(), "err", err)
	}
	return res, nil
}

// UpdateEnvironment changes an environment's settings.
func (s *Service) UpdateEnvironment(ctx context.Context, req Request, env Env, u EnvUpdate) (Result, error) {
	return s.projectCommand(ctx, req, env.Org, env.Project, "update environment "+env.Env,
		domain.UpdateEnvironment{EnvID: env.Env, Name: u.Name, Production: u.Production, Rotation: u.Rotation, Approval: u.Approval})
}

// CreateBundle names a reusable set of keys in a project.
func (s *Service) CreateBundle(ctx context.Context, req Request, org, project, bundle string, keys []domain.BundleKey) (Result, error) {
	return s.projectCommand(ctx, req, org, project, "create bundle "+bundle, domain.CreateBundle{BundleID: bundle, Keys: keys})
}

// UpdateBundle replaces a bundle's keys.
func (s *Service) UpdateBundle(ctx context.Context, req Request, org, project, bundle string, keys []domain.BundleKey) (Result, error) {
	return s.projectCommand(ctx, req, org, project, "update bundle "+bundle, domain.UpdateBundle{BundleID: bundle, Keys: keys})
}

// DeleteBundle deletes a bundle.
func (s *Service) DeleteBundle(ctx context.Context, req Request, org, project, bundle string) (Result, error) {
	return s.projectCommand(ctx, req, org, project, "delete bundle "+bundle, domain.DeleteBundle{BundleID: bundle})
}

// environment returns an environment's settings, or ErrNotFound.
func (s *Service) environment(ctx context.Context, env Env) (domain.Environment, error) {
	var out domain.Environment
	err := s.view(ctx, domain.ProjectStream(env.Org, env.Project), newProjectAgg, func(a aggregate) error {
		p := a.(*domain.Project)
		e, ok := p.Environment(env.Env)
		if !ok {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no environment " + env.String()}
		}
		out = e
		return nil
	})
	return out, err
}

// RenameProject changes a project's display name.
func (s *Service) RenameProject(ctx context.Context, req Request, org, project, name string) (Result, error) {
	return s.projectCommand(ctx, req, org, project, "rename project", domain.RenameProject{Name: name})
}

// ProjectEnvironments returns the ids of a project's environments, in the
// order they were created, as the ledger knows them, or an error matching
// domain.ErrNotFound when org has no such project. It authorizes nothing:
// callers check the requester's access to the project first, so that the
// answer tells nobody else whether the project exists.
func (s *Service) ProjectEnvironments(ctx context.Context, org, project string) ([]string, error) {
	if !domain.ValidSlug(org) || !domain.ValidSlug(project) {
		return nil, &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no such project"}
	}
	var out []string
	err := s.view(ctx, domain.ProjectStream(org, project), newProjectAgg, func(a aggregate) error {
		p := a.(*domain.Project)
		if !p.Exists() {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no project " + project}
		}
		for _, e := range p.Environments() {
			out = append(out, e.ID)
		}
		return nil
	})
	return out, err
}

// Scope is what an actor may see of one organization.
type Scope struct {
	// Role is the actor's organization-wide role; RoleNone when its access
	// is limited to some projects (a person with project roles only, or a
	// token limited to one project).
	Role domain.Role
	// Projects are the projects where a person holds a project role (with
	// that role), or the one project a token is limited to (with the
	// token's role). RoleIn gives the role that applies in a project.
	Projects map[string]domain.Role
	// Environments names the environments a token is limited to (in its
	// one project); empty when it is not limited to environments.
	Environments []string
}

// Wide reports whether the scope covers the whole organization.
func (sc Scope) Wide() bool { return sc.Role.Valid() }

// RoleIn returns the role the actor holds in project, or RoleNone when
// the project is outside its scope.
func (sc Scope) RoleIn(project string) domain.Role {
	r := sc.Projects[project]
	if sc.Role.AtLeast(r) {
		return sc.Role
	}
	return r
}

// ScopeOf works out, from the ledger's state, what actor may see of org:
// its organization-wide role, and the projects (and, for a token, the
// environments) its access is limited to. An actor with no access to org
// at all, or an org that does not exist, gets a *domain.ForbiddenError
// marked Outsider.
func (s *Service) ScopeOf(ctx context.Context, actor domain.Actor, org string) (Scope, error) {
	if !domain.ValidSlug(org) {
		return Scope{}, &domain.ForbiddenError{Actor: actor, Permission: domain.Permission("act in organization " + org), Reason: "no such organization", Outsider: true}
	}
	sc := Scope{Projects: map[string]domain.Role{}}
	err := s.view(ctx, domain.OrgStream(org), newOrgAgg, func(a aggregate) error {
		o := a.(*domain.Organization)
		now := s.now()
		switch actor.Kind {
		case domain.ActorUser:
			if !o.Exists() {
				break
			}
			sc.Role = o.RoleOf(actor.ID, "")
			for _, p := range o.ProjectsOf(actor.ID) {
				sc.Projects[p] = o.RoleOf(actor.ID, p)
			}
			if sc.Role.Valid() || len(sc.Projects) > 0 {
				return nil
			}
		case domain.ActorToken:
			t, ok := o.Token(actor.ID)
			if !ok {
				break
			}
			env := ""
			if len(t.Environments) > 0 {
				env = t.Environments[0]
			}
			p, err := o.Access(actor, t.Project, env, now)
			if err != nil {
				return err
			}
			if t.Project == "" {
				sc.Role = p.Role
			} else {
				sc.Projects[t.Project] = p.Role
				sc.Environments = append([]string(nil), t.Environments...)
			}
			return nil
		}
		p, err := o.Access(actor, "", "", now)
		sc.Role = p.Role
		return err
	})
	if err != nil {
		return Scope{}, err
	}
	return sc, nil
}
