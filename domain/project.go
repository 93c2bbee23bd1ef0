package domain

import (
	"slices"
	"time"
)

// ProjectStream is the stream of a project.
func ProjectStream(org, project string) string { return "project/" + org + "/" + project }

// DefaultRotationInterval is how often an environment's data key is
// rotated unless the environment says otherwise.
const DefaultRotationInterval = 24 * time.Hour

// MinRotationInterval is the shortest rotation interval accepted.
const MinRotationInterval = time.Hour

// EnvSettings are an environment's changeable settings.
type EnvSettings struct {
	Name       string `json:"name"`
	Production bool   `json:"production"`
	// RotationSeconds is the data key rotation interval, in seconds.
	RotationSeconds int64 `json:"rotation_seconds"`
	// Approval says which actions on the environment's values need an
	// approved request.
	Approval ApprovalPolicy `json:"approval,omitzero"`
}

// ApprovalPolicy says which actions on an environment's values need an
// approved request rather than being done directly: revealing a value,
// changing one (set, roll back, delete, destroy a version), and how many
// people other than the requester must approve.
type ApprovalPolicy struct {
	Reveal    bool `json:"reveal,omitempty"`
	Change    bool `json:"change,omitempty"`
	Approvers int  `json:"approvers,omitempty"` // 0 means 1
}

// Required reports whether the policy asks for approvals at all.
func (p ApprovalPolicy) Required() bool { return p.Reveal || p.Change }

func checkApprovalPolicy(p ApprovalPolicy) error {
	if p.Approvers < 0 || p.Approvers > MaxApprovers {
		return invalid("approvers", "want 0 to %d", MaxApprovers)
	}
	return nil
}

// RotationInterval returns the rotation interval as a duration.
func (s EnvSettings) RotationInterval() time.Duration {
	return time.Duration(s.RotationSeconds) * time.Second
}

// BundleKey is one key name in a bundle.
type BundleKey struct {
	Name     string `json:"name"`
	Required bool   `json:"required,omitempty"`
}

// Project events.
type (
	ProjectCreated struct {
		OrgID     string `json:"org_id"`
		ProjectID string `json:"project_id"`
		Name      string `json:"name"`
	}
	ProjectRenamed struct {
		Name     string `json:"name"`
		Previous string `json:"previous"`
	}
	EnvironmentCreated struct {
		EnvID string `json:"env_id"`
		EnvSettings
	}
	EnvironmentUpdated struct {
		EnvID  string      `json:"env_id"`
		Before EnvSettings `json:"before"`
		After  EnvSettings `json:"after"`
	}
	BundleCreated struct {
		BundleID string      `json:"bundle_id"`
		Keys     []BundleKey `json:"keys"`
	}
	BundleUpdated struct {
		BundleID string      `json:"bundle_id"`
		Before   []BundleKey `json:"before"`
		After    []BundleKey `json:"after"`
	}
	BundleDeleted struct {
		BundleID string      `json:"bundle_id"`
		Keys     []BundleKey `json:"keys"`
	}
)

func (ProjectCreated) EventType() string     { return "project.created" }
func (ProjectRenamed) EventType() string     { return "project.renamed" }
func (EnvironmentCreated) EventType() string { return "environment.created" }
func (EnvironmentUpdated) EventType() string { return "environment.updated" }
func (BundleCreated) EventType() string      { return "bundle.created" }
func (BundleUpdated) EventType() string      { return "bundle.updated" }
func (BundleDeleted) EventType() string      { return "bundle.deleted" }

func init() {
	register[ProjectCreated]()
	register[ProjectRenamed]()
	register[EnvironmentCreated]()
	register[EnvironmentUpdated]()
	register[BundleCreated]()
	register[BundleUpdated]()
	register[BundleDeleted]()
}

// Project commands. Identifiers are slugs, unique where they live
// (projects in their organization, environments and bundles in their
// project) and permanent.
type (
	CreateProject struct {
		OrgID, ProjectID, Name string
	}
	RenameProject     struct{ Name string }
	CreateEnvironment struct {
		EnvID      string
		Name       string
		Production bool
		// Rotation is the data key rotation interval; 0 means the default.
		Rotation time.Duration
		Approval ApprovalPolicy
	}
	UpdateEnvironment struct {
		EnvID      string
		Name       *string
		Production *bool
		Rotation   *time.Duration
		Approval   *ApprovalPolicy
	}
	CreateBundle struct {
		BundleID string
		Keys     []BundleKey
	}
	UpdateBundle struct {
		BundleID string
		Keys     []BundleKey
	}
	DeleteBundle struct{ BundleID string }
)

// Environment is a project environment as its project knows it.
type Environment struct {
	ID string
	EnvSettings
}

// Project is the aggregate of a project: its environments and bundles.
type Project struct {
	org, id, name string
	version       uint64
	envs          map[string]*Environment
	envOrder      []string
	bundles       map[string][]BundleKey
}

// NewProject returns the state of a project with no history.
func NewProject() *Project {
	return &Project{envs: map[string]*Environment{}, bundles: map[string][]BundleKey{}}
}

// ReplayProject rebuilds a project from its events.
func ReplayProject(events []Event) *Project {
	p := NewProject()
	for _, e := range events {
		p.Apply(e)
	}
	return p
}

func (p *Project) Exists() bool    { return p.id != "" }
func (p *Project) ID() string      { return p.id }
func (p *Project) Org() string     { return p.org }
func (p *Project) Name() string    { return p.name }
func (p *Project) Version() uint64 { return p.version }

// Environment returns an environment by id.
func (p *Project) Environment(id string) (Environment, bool) {
	e, ok := p.envs[id]
	if !ok {
		return Environment{}, false
	}
	return *e, true
}

// Environments returns the environments in the order they were created.
func (p *Project) Environments() []Environment {
	out := make([]Environment, 0, len(p.envOrder))
	for _, id := range p.envOrder {
		out = append(out, *p.envs[id])
	}
	return out
}

// Bundle returns a bundle's keys.
func (p *Project) Bundle(id string) ([]BundleKey, bool) {
	k, ok := p.bundles[id]
	return slices.Clone(k), ok
}

// Apply folds one event into the state.
func (p *Project) Apply(e Event) {
	p.version++
	switch e := e.(type) {
	case ProjectCreated:
		p.org, p.id, p.name = e.OrgID, e.ProjectID, e.Name
	case ProjectRenamed:
		p.name = e.Name
	case EnvironmentCreated:
		p.envs[e.EnvID] = &Environment{ID: e.EnvID, EnvSettings: e.EnvSettings}
		p.envOrder = append(p.envOrder, e.EnvID)
	case EnvironmentUpdated:
		if env := p.envs[e.EnvID]; env != nil {
			env.EnvSettings = e.After
		}
	case BundleCreated:
		p.bundles[e.BundleID] = slices.Clone(e.Keys)
	case BundleUpdated:
		p.bundles[e.BundleID] = slices.Clone(e.After)
	case BundleDeleted:
		delete(p.bundles, e.BundleID)
	}
}

// Handle decides a project command. who holds the principal's role in
// this project (Organization.Access).
func (p *Project) Handle(who Principal, cmd any) ([]Event, error) {
	if c, ok := cmd.(CreateProject); ok {
		if p.Exists() {
			return nil, stateErr(ErrAlreadyExists, "project %s already exists", p.id)
		}
		if err := who.require(PermManageProject); err != nil {
			return nil, err
		}
		if err := checkSlug("organization id", c.OrgID); err != nil {
			return nil, err
		}
		if err := checkSlug("project id", c.ProjectID); err != nil {
			return nil, err
		}
		if err := checkName("name", c.Name); err != nil {
			return nil, err
		}
		return []Event{ProjectCreated{OrgID: c.OrgID, ProjectID: c.ProjectID, Name: c.Name}}, nil
	}
	if !p.Exists() {
		return nil, stateErr(ErrNotFound, "no such project")
	}
	if err := who.require(PermManageProject); err != nil {
		return nil, err
	}
	switch c := cmd.(type) {
	case RenameProject:
		if err := checkName("name", c.Name); err != nil {
			return nil, err
		}
		if c.Name == p.name {
			return nil, nil
		}
		return []Event{ProjectRenamed{Name: c.Name, Previous: p.name}}, nil
	case CreateEnvironment:
		if err := checkSlug("environment id", c.EnvID); err != nil {
			return nil, err
		}
		if _, dup := p.envs[c.EnvID]; dup {
			return nil, stateErr(ErrAlreadyExists, "environment %s already exists", c.EnvID)
		}
		name := c.Name
		if name == "" {
			name = c.EnvID
		}
		if err := checkName("name", name); err != nil {
			return nil, err
		}
		rot := c.Rotation
		if rot == 0 {
			rot = DefaultRotationInterval
		}
		if err := checkRotation(rot); err != nil {
			return nil, err
		}
		if err := checkApprovalPolicy(c.Approval); err != nil {
			return nil, err
		}
		return []Event{EnvironmentCreated{EnvID: c.EnvID, EnvSettings: EnvSettings{
			Name: name, Production: c.Production, RotationSeconds: int64(rot / time.Second), Approval: c.Approval}}}, nil
	case UpdateEnvironment:
		env := p.envs[c.EnvID]
		if env == nil {
			return nil, stateErr(ErrNotFound, "no environment %s", c.EnvID)
		}
		after := env.EnvSettings
		if c.Name != nil {
			if err := checkName("name", *c.Name); err != nil {
				return nil, err
			}
			after.Name = *c.Name
		}
		if c.Production != nil {
			after.Production = *c.Production
		}
		if c.Rotation != nil {
			if err := checkRotation(*c.Rotation); err != nil {
				return nil, err
			}
			after.RotationSeconds = int64(*c.Rotation / time.Second)
		}
		if c.Approval != nil {
			if err := checkApprovalPolicy(*c.Approval); err != nil {
				return nil, err
			}
			after.Approval = *c.Approval
		}
		if after == env.EnvSettings {
			return nil, nil
		}
		return []Event{EnvironmentUpdated{EnvID: c.EnvID, Before: env.EnvSettings, After: after}}, nil
	case CreateBundle:
		if err := checkSlug("bundle id", c.BundleID); err != nil {
			return nil, err
		}
		if _, dup := p.bundles[c.BundleID]; dup {
			return nil, stateErr(ErrAlreadyExists, "bundle %s already exists", c.BundleID)
		}
		if err := checkBundleKeys(c.Keys); err != nil {
			return nil, err
		}
		return []Event{BundleCreated{BundleID: c.BundleID, Keys: slices.Clone(c.Keys)}}, nil
	case UpdateBundle:
		before, ok := p.bundles[c.BundleID]
		if !ok {
			return nil, stateErr(ErrNotFound, "no bundle %s", c.BundleID)
		}
		if err := checkBundleKeys(c.Keys); err != nil {
			return nil, err
		}
		if slices.Equal(before, c.Keys) {
			return nil, nil
		}
		return []Event{BundleUpdated{BundleID: c.BundleID, Before: slices.Clone(before), After: slices.Clone(c.Keys)}}, nil
	case DeleteBundle:
		before, ok := p.bundles[c.BundleID]
		if !ok {
			return nil, stateErr(ErrNotFound, "no bundle %s", c.BundleID)
		}
		return []Event{BundleDeleted{BundleID: c.BundleID, Keys: slices.Clone(before)}}, nil
	}
	return nil, invalid("command", "%T is not a project command", cmd)
}

func checkRotation(d time.Duration) error {
	if d < MinRotationInterval || d%time.Second != 0 {
		return invalid("rotation interval", "want whole seconds, at least %s", MinRotationInterval)
	}
	return nil
}

func checkBundleKeys(keys []BundleKey) error {
	if len(keys) == 0 || len(keys) > MaxBundleKeys {
		return invalid("keys", "a bundle holds 1 to %d keys", MaxBundleKeys)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if err := checkSecretName("key", k.Name); err != nil {
			return err
		}
		if seen[k.Name] {
			return invalid("keys", "%s appears twice", k.Name)
		}
		seen[k.Name] = true
	}
	return nil
}
