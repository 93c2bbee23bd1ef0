package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/domain"
)

// Directory is the read model of what exists: organizations
// (proj_orgs), their projects (proj_projects), the projects' environments
// with their settings (proj_environments) and bundles (proj_bundles: the
// ordered keys with their required flags; a deleted bundle keeps its row,
// marked deleted, until a bundle of the same id is created again).
type Directory struct{}

var _ Projection = Directory{}

func (Directory) Name() string { return "directory" }
func (Directory) Version() int { return 2 }
func (Directory) Tables() []string {
	return []string{"proj_orgs", "proj_projects", "proj_environments", "proj_bundles"}
}

func (Directory) Create(n Names) []string {
	return []string{
		`CREATE TABLE ` + n("proj_orgs") + ` (
			org_id text PRIMARY KEY, name text NOT NULL, owner text NOT NULL,
			created_at timestamptz NOT NULL, created_by text NOT NULL,
			updated_at timestamptz NOT NULL, updated_by text NOT NULL,
			position bigint NOT NULL)`,
		`CREATE TABLE ` + n("proj_projects") + ` (
			org text NOT NULL, project text NOT NULL, name text NOT NULL,
			created_at timestamptz NOT NULL, created_by text NOT NULL,
			updated_at timestamptz NOT NULL, updated_by text NOT NULL,
			position bigint NOT NULL,
			PRIMARY KEY (org, project))`,
		`CREATE TABLE ` + n("proj_environments") + ` (
			org text NOT NULL, project text NOT NULL, env text NOT NULL, name text NOT NULL,
			production boolean NOT NULL, rotation_seconds bigint NOT NULL,
			approve_reveal boolean NOT NULL, approve_change boolean NOT NULL, approvers int NOT NULL,
			created_at timestamptz NOT NULL, created_by text NOT NULL,
			updated_at timestamptz NOT NULL, updated_by text NOT NULL,
			position bigint NOT NULL,
			PRIMARY KEY (org, project, env))`,
		`CREATE TABLE ` + n("proj_bundles") + ` (
			org text NOT NULL, project text NOT NULL, bundle text NOT NULL,
			keys jsonb NOT NULL, deleted boolean NOT NULL DEFAULT false,
			created_at timestamptz NOT NULL, created_by text NOT NULL,
			updated_at timestamptz NOT NULL, updated_by text NOT NULL,
			position bigint NOT NULL,
			PRIMARY KEY (org, project, bundle))`,
	}
}

// changed is what every row of the directory records of its last change.
type changed struct {
	createdAt, updatedAt time.Time
	createdBy, updatedBy string
	position             int64
	dirty                bool
}

// touch records a change by event e.
func (c *changed) touch(e *Event) {
	c.updatedAt, c.updatedBy, c.position, c.dirty = e.RecordedAt, e.Metadata.Actor, int64(e.Position), true
}

// create records a creation by event e.
func (c *changed) create(e *Event) {
	c.touch(e)
	c.createdAt, c.createdBy = e.RecordedAt, e.Metadata.Actor
}

type orgRow struct {
	id, name, owner string
	changed
}

type projectKey struct{ org, project string }

type projectRow struct {
	key  projectKey
	name string
	changed
}

type envKey struct{ org, project, env string }

type envRow struct {
	key        envKey
	name       string
	production bool
	rotation   int64
	approval   domain.ApprovalPolicy
	changed
}

type bundleKey struct{ org, project, bundle string }

type bundleRow struct {
	key     bundleKey
	keys    string // JSON
	deleted bool
	changed
}

// bundleKeyJSON is a bundle key as proj_bundles stores it: the required
// flag is always present.
type bundleKeyJSON struct {
	Name     string `json:"name"`
	Required bool   `json:"required"`
}

func bundleKeysJSON(keys []domain.BundleKey) string {
	out := make([]bundleKeyJSON, len(keys))
	for i, k := range keys {
		out[i] = bundleKeyJSON(k)
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// orgOf returns the organization of an org/<org> stream.
func orgOf(stream string) (string, bool) {
	p := streamParts(stream)
	if len(p) != 2 || p[0] != "org" {
		return "", false
	}
	return p[1], true
}

// projectOf returns the project of a project/<org>/<project> stream.
func projectOf(stream string) (projectKey, bool) {
	p := streamParts(stream)
	if len(p) != 3 || p[0] != "project" {
		return projectKey{}, false
	}
	return projectKey{p[1], p[2]}, true
}

func (Directory) Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error {
	orgSet, projectSet := map[string]bool{}, map[projectKey]bool{}
	for i := range batch {
		switch batch[i].Event.(type) {
		case domain.OrganizationCreated, domain.OrganizationRenamed:
			if o, ok := orgOf(batch[i].StreamID); ok {
				orgSet[o] = true
			}
		case domain.ProjectCreated, domain.ProjectRenamed, domain.EnvironmentCreated, domain.EnvironmentUpdated,
			domain.BundleCreated, domain.BundleUpdated, domain.BundleDeleted:
			if p, ok := projectOf(batch[i].StreamID); ok {
				projectSet[p] = true
			}
		}
	}
	if len(orgSet) == 0 && len(projectSet) == 0 {
		return nil
	}
	d, err := loadDirectory(ctx, tx, n, orgSet, projectSet)
	if err != nil {
		return err
	}
	for i := range batch {
		e := &batch[i]
		switch ev := e.Event.(type) {
		case domain.OrganizationCreated:
			o, ok := orgOf(e.StreamID)
			if !ok {
				continue
			}
			r := &orgRow{id: o, name: ev.Name, owner: ev.Owner}
			r.create(e)
			d.orgs[o] = r
		case domain.OrganizationRenamed:
			o, ok := orgOf(e.StreamID)
			if !ok {
				continue
			}
			r := d.orgs[o]
			if r == nil {
				return fmt.Errorf("organization %s renamed before it was created", o)
			}
			r.name = ev.Name
			r.touch(e)
		}
		pk, ok := projectOf(e.StreamID)
		if !ok {
			continue
		}
		switch ev := e.Event.(type) {
		case domain.ProjectCreated:
			r := &projectRow{key: pk, name: ev.Name}
			r.create(e)
			d.projects[pk] = r
		case domain.ProjectRenamed:
			r := d.projects[pk]
			if r == nil {
				return fmt.Errorf("project %s/%s renamed before it was created", pk.org, pk.project)
			}
			r.name = ev.Name
			r.touch(e)
		case domain.EnvironmentCreated:
			k := envKey{pk.org, pk.project, ev.EnvID}
			r := &envRow{key: k, name: ev.Name, production: ev.Production, rotation: ev.RotationSeconds, approval: ev.Approval}
			r.create(e)
			d.envs[k] = r
		case domain.EnvironmentUpdated:
			k := envKey{pk.org, pk.project, ev.EnvID}
			r := d.envs[k]
			if r == nil {
				return fmt.Errorf("environment %s/%s/%s updated before it was created", k.org, k.project, k.env)
			}
			r.name, r.production, r.rotation, r.approval = ev.After.Name, ev.After.Production, ev.After.RotationSeconds, ev.After.Approval
			r.touch(e)
		case domain.BundleCreated:
			k := bundleKey{pk.org, pk.project, ev.BundleID}
			r := &bundleRow{key: k, keys: bundleKeysJSON(ev.Keys)}
			r.create(e)
			d.bundles[k] = r
		case domain.BundleUpdated, domain.BundleDeleted:
			var id string
			var keys []domain.BundleKey
			if u, ok := ev.(domain.BundleUpdated); ok {
				id, keys = u.BundleID, u.After
			} else {
				del := ev.(domain.BundleDeleted)
				id, keys = del.BundleID, del.Keys
			}
			k := bundleKey{pk.org, pk.project, id}
			r := d.bundles[k]
			if r == nil {
				return fmt.Errorf("bundle %s/%s/%s changed before it was created", k.org, k.project, k.bundle)
			}
			r.keys = bundleKeysJSON(keys)
			_, r.deleted = ev.(domain.BundleDeleted)
			r.touch(e)
		}
	}
	return d.write(ctx, tx, n)
}

type directory struct {
	orgs     map[string]*orgRow
	projects map[projectKey]*projectRow
	envs     map[envKey]*envRow
	bundles  map[bundleKey]*bundleRow
}

// loadDirectory reads the rows of the touched organizations, and the
// rows of the touched projects with their environments and bundles.
func loadDirectory(ctx context.Context, tx pgx.Tx, n Names, orgSet map[string]bool, projectSet map[projectKey]bool) (*directory, error) {
	d := &directory{orgs: map[string]*orgRow{}, projects: map[projectKey]*projectRow{}, envs: map[envKey]*envRow{}, bundles: map[bundleKey]*bundleRow{}}
	if len(orgSet) > 0 {
		ids := make([]string, 0, len(orgSet))
		for o := range orgSet {
			ids = append(ids, o)
		}
		rows, _ := tx.Query(ctx, `SELECT org_id, name, owner, created_at, created_by, updated_at, updated_by, position
			FROM `+n("proj_orgs")+` WHERE org_id = ANY($1::text[])`, ids)
		r := &orgRow{}
		_, err := pgx.ForEachRow(rows, []any{&r.id, &r.name, &r.owner, &r.createdAt, &r.createdBy, &r.updatedAt, &r.updatedBy, &r.position}, func() error {
			c := *r
			d.orgs[c.id] = &c
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(projectSet) == 0 {
		return d, nil
	}
	var orgs, projects []string
	for k := range projectSet {
		orgs, projects = append(orgs, k.org), append(projects, k.project)
	}
	join := ` t JOIN unnest($1::text[], $2::text[]) AS u(org, project) USING (org, project)`
	rows, _ := tx.Query(ctx, `SELECT org, project, name, created_at, created_by, updated_at, updated_by, position
		FROM `+n("proj_projects")+join, orgs, projects)
	p := &projectRow{}
	if _, err := pgx.ForEachRow(rows, []any{&p.key.org, &p.key.project, &p.name, &p.createdAt, &p.createdBy, &p.updatedAt, &p.updatedBy, &p.position}, func() error {
		c := *p
		d.projects[c.key] = &c
		return nil
	}); err != nil {
		return nil, err
	}
	rows, _ = tx.Query(ctx, `SELECT org, project, env, name, production, rotation_seconds, approve_reveal, approve_change, approvers,
		created_at, created_by, updated_at, updated_by, position
		FROM `+n("proj_environments")+join, orgs, projects)
	v := &envRow{}
	if _, err := pgx.ForEachRow(rows, []any{&v.key.org, &v.key.project, &v.key.env, &v.name, &v.production, &v.rotation, &v.approval.Reveal, &v.approval.Change, &v.approval.Approvers,
		&v.createdAt, &v.createdBy, &v.updatedAt, &v.updatedBy, &v.position}, func() error {
		c := *v
		d.envs[c.key] = &c
		return nil
	}); err != nil {
		return nil, err
	}
	rows, _ = tx.Query(ctx, `SELECT org, project, bundle, keys::text, deleted, created_at, created_by, updated_at, updated_by, position
		FROM `+n("proj_bundles")+join, orgs, projects)
	b := &bundleRow{}
	if _, err := pgx.ForEachRow(rows, []any{&b.key.org, &b.key.project, &b.key.bundle, &b.keys, &b.deleted,
		&b.createdAt, &b.createdBy, &b.updatedAt, &b.updatedBy, &b.position}, func() error {
		c := *b
		d.bundles[c.key] = &c
		return nil
	}); err != nil {
		return nil, err
	}
	return d, nil
}

// changedCols gathers the bookkeeping columns of a batch upsert.
type changedCols struct {
	createdAt, updatedAt []time.Time
	createdBy, updatedBy []string
	position             []int64
}

func (c *changedCols) add(r *changed) {
	c.createdAt, c.createdBy = append(c.createdAt, r.createdAt), append(c.createdBy, r.createdBy)
	c.updatedAt, c.updatedBy, c.position = append(c.updatedAt, r.updatedAt), append(c.updatedBy, r.updatedBy), append(c.position, r.position)
}

// args returns the columns in the order created_at, created_by,
// updated_at, updated_by, position.
func (c *changedCols) args() []any {
	return []any{c.createdAt, c.createdBy, c.updatedAt, c.updatedBy, c.position}
}

// changedTypes and changedSet are the SQL of those columns.
const (
	changedTypes = `$%d::timestamptz[], $%d::text[], $%d::timestamptz[], $%d::text[], $%d::bigint[]`
	changedSet   = `created_at = excluded.created_at, created_by = excluded.created_by, updated_at = excluded.updated_at,
		updated_by = excluded.updated_by, position = excluded.position`
)

func changedParams(first int) string {
	return fmt.Sprintf(changedTypes, first, first+1, first+2, first+3, first+4)
}

func (d *directory) write(ctx context.Context, tx pgx.Tx, n Names) error {
	{
		var id, name, owner []string
		var c changedCols
		for _, r := range d.orgs {
			if r.dirty {
				id, name, owner = append(id, r.id), append(name, r.name), append(owner, r.owner)
				c.add(&r.changed)
			}
		}
		if len(id) > 0 {
			_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_orgs")+` (org_id, name, owner, created_at, created_by, updated_at, updated_by, position)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], `+changedParams(4)+`)
				ON CONFLICT (org_id) DO UPDATE SET name = excluded.name, owner = excluded.owner, `+changedSet,
				append([]any{id, name, owner}, c.args()...)...)
			if err != nil {
				return err
			}
		}
	}
	{
		var org, project, name []string
		var c changedCols
		for _, r := range d.projects {
			if r.dirty {
				org, project, name = append(org, r.key.org), append(project, r.key.project), append(name, r.name)
				c.add(&r.changed)
			}
		}
		if len(org) > 0 {
			_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_projects")+` (org, project, name, created_at, created_by, updated_at, updated_by, position)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], `+changedParams(4)+`)
				ON CONFLICT (org, project) DO UPDATE SET name = excluded.name, `+changedSet,
				append([]any{org, project, name}, c.args()...)...)
			if err != nil {
				return err
			}
		}
	}
	{
		var org, project, env, name []string
		var production, reveal, change []bool
		var rotation []int64
		var approvers []int32
		var c changedCols
		for _, r := range d.envs {
			if r.dirty {
				org, project, env, name = append(org, r.key.org), append(project, r.key.project), append(env, r.key.env), append(name, r.name)
				production, rotation = append(production, r.production), append(rotation, r.rotation)
				reveal, change, approvers = append(reveal, r.approval.Reveal), append(change, r.approval.Change), append(approvers, int32(r.approval.Approvers))
				c.add(&r.changed)
			}
		}
		if len(org) > 0 {
			_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_environments")+` (org, project, env, name, production, rotation_seconds,
					approve_reveal, approve_change, approvers, created_at, created_by, updated_at, updated_by, position)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bigint[], $7::bool[], $8::bool[], $9::int[], `+changedParams(10)+`)
				ON CONFLICT (org, project, env) DO UPDATE SET name = excluded.name, production = excluded.production,
					rotation_seconds = excluded.rotation_seconds, approve_reveal = excluded.approve_reveal,
					approve_change = excluded.approve_change, approvers = excluded.approvers, `+changedSet,
				append([]any{org, project, env, name, production, rotation, reveal, change, approvers}, c.args()...)...)
			if err != nil {
				return err
			}
		}
	}
	var org, project, bundle, keys []string
	var deleted []bool
	var c changedCols
	for _, r := range d.bundles {
		if r.dirty {
			org, project, bundle, keys = append(org, r.key.org), append(project, r.key.project), append(bundle, r.key.bundle), append(keys, r.keys)
			deleted = append(deleted, r.deleted)
			c.add(&r.changed)
		}
	}
	if len(org) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_bundles")+` (org, project, bundle, keys, deleted, created_at, created_by, updated_at, updated_by, position)
		SELECT org, project, bundle, keys::jsonb, deleted, ca, cb, ua, ub, pos
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], `+changedParams(6)+`)
			AS t(org, project, bundle, keys, deleted, ca, cb, ua, ub, pos)
		ON CONFLICT (org, project, bundle) DO UPDATE SET keys = excluded.keys, deleted = excluded.deleted, `+changedSet,
		append([]any{org, project, bundle, keys, deleted}, c.args()...)...)
	return err
}
