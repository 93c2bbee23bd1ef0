package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/domain"
)

// Keys is the read model of environments' data keys: one row per keyset
// (proj_keysets: KEK, primary key and since when, material version,
// rotations, and resealed_key, the primary key whose reseal completed: a
// keyset's reseal is complete when it equals primary_key; a new keyset's
// first key counts as resealed, as in the domain) and one per key
// (proj_keys: state, primary or not). How far a reseal has come is
// derived by joining proj_secrets (Reader.Keysets).
type Keys struct{}

var _ Projection = Keys{}

func (Keys) Name() string     { return "keys" }
func (Keys) Version() int     { return 1 }
func (Keys) Tables() []string { return []string{"proj_keysets", "proj_keys"} }

func (Keys) Create(n Names) []string {
	return []string{
		`CREATE TABLE ` + n("proj_keysets") + ` (
			org text NOT NULL, project text NOT NULL, env text NOT NULL, kek text NOT NULL,
			primary_key bigint NOT NULL, primary_since timestamptz NOT NULL,
			material_version bigint NOT NULL, material_hash text NOT NULL,
			last_rotation timestamptz, rotations integer NOT NULL, resealed_key bigint NOT NULL,
			created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, position bigint NOT NULL,
			PRIMARY KEY (org, project, env))`,
		`CREATE TABLE ` + n("proj_keys") + ` (
			org text NOT NULL, project text NOT NULL, env text NOT NULL, key_id bigint NOT NULL,
			state text NOT NULL, is_primary boolean NOT NULL,
			added_at timestamptz NOT NULL, state_changed_at timestamptz NOT NULL, position bigint NOT NULL,
			PRIMARY KEY (org, project, env, key_id))`,
	}
}

type keysetRow struct {
	key                  envKey
	kek, materialHash    string
	primary, materialVer int64
	primarySince         time.Time
	lastRotation         *time.Time
	rotations            int32
	resealed             int64
	createdAt, updatedAt time.Time
	position             int64
	dirty                bool
}

type keyRow struct {
	id                      int64
	state                   string
	primary                 bool
	addedAt, stateChangedAt time.Time
	position                int64
	dirty                   bool
}

func keysetOf(stream string) (envKey, bool) {
	p := streamParts(stream)
	if len(p) != 4 || p[0] != "keyset" {
		return envKey{}, false
	}
	return envKey{p[1], p[2], p[3]}, true
}

func (Keys) Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error {
	touched := map[envKey]bool{}
	for i := range batch {
		if k, ok := keysetOf(batch[i].StreamID); ok {
			touched[k] = true
		}
	}
	if len(touched) == 0 {
		return nil
	}
	sets, keys, err := loadKeysets(ctx, tx, n, touched)
	if err != nil {
		return err
	}
	for i := range batch {
		e := &batch[i]
		k, ok := keysetOf(e.StreamID)
		if !ok {
			continue
		}
		at, pos := e.RecordedAt, int64(e.Position)
		if c, ok := e.Event.(domain.KeysetCreated); ok {
			sets[k] = &keysetRow{key: k, kek: c.KEK, materialHash: c.Hash, materialVer: int64(c.Version), primary: int64(c.KeyID),
				primarySince: c.At, resealed: int64(c.KeyID), createdAt: at}
			keys[k] = map[int64]*keyRow{int64(c.KeyID): {id: int64(c.KeyID), state: string(domain.KeyStateEnabled), primary: true,
				addedAt: c.At, stateChangedAt: at, position: pos, dirty: true}}
		}
		s := sets[k]
		if s == nil {
			return fmt.Errorf("keyset %s/%s/%s changed before it was created", k.org, k.project, k.env)
		}
		s.updatedAt, s.position, s.dirty = at, pos, true
		material := func(m domain.Material) { s.materialVer, s.materialHash = int64(m.Version), m.Hash }
		state := func(id uint32, st domain.KeyState) {
			if r := keys[k][int64(id)]; r != nil {
				r.state, r.stateChangedAt, r.position, r.dirty = string(st), at, pos, true
			}
		}
		switch ev := e.Event.(type) {
		case domain.KeysetRotated:
			material(ev.Material)
			for _, r := range keys[k] {
				if r.primary {
					r.primary, r.position, r.dirty = false, pos, true
				}
			}
			if keys[k] == nil {
				keys[k] = map[int64]*keyRow{}
			}
			keys[k][int64(ev.KeyID)] = &keyRow{id: int64(ev.KeyID), state: string(domain.KeyStateEnabled), primary: true,
				addedAt: ev.At, stateChangedAt: at, position: pos, dirty: true}
			since := ev.At
			s.primary, s.primarySince, s.lastRotation, s.rotations = int64(ev.KeyID), ev.At, &since, s.rotations+1
		case domain.KeyDisabled:
			material(ev.Material)
			state(ev.KeyID, domain.KeyStateDisabled)
		case domain.KeyEnabled:
			material(ev.Material)
			state(ev.KeyID, domain.KeyStateEnabled)
		case domain.KeyDestroyed:
			material(ev.Material)
			state(ev.KeyID, domain.KeyStateDestroyed)
		case domain.KeysetRewrapped:
			material(ev.Material)
			s.kek = ev.To
		case domain.KeysetResealed:
			s.resealed = int64(ev.KeyID)
		}
	}
	return writeKeysets(ctx, tx, n, sets, keys)
}

func loadKeysets(ctx context.Context, tx pgx.Tx, n Names, touched map[envKey]bool) (map[envKey]*keysetRow, map[envKey]map[int64]*keyRow, error) {
	var orgs, projects, envs []string
	for k := range touched {
		orgs, projects, envs = append(orgs, k.org), append(projects, k.project), append(envs, k.env)
	}
	join := ` t JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(org, project, env) USING (org, project, env)`
	sets := map[envKey]*keysetRow{}
	rows, _ := tx.Query(ctx, `SELECT org, project, env, kek, primary_key, primary_since, material_version, material_hash,
		last_rotation, rotations, resealed_key, created_at, updated_at, position FROM `+n("proj_keysets")+join, orgs, projects, envs)
	s := &keysetRow{}
	if _, err := pgx.ForEachRow(rows, []any{&s.key.org, &s.key.project, &s.key.env, &s.kek, &s.primary, &s.primarySince, &s.materialVer,
		&s.materialHash, &s.lastRotation, &s.rotations, &s.resealed, &s.createdAt, &s.updatedAt, &s.position}, func() error {
		c := *s
		sets[c.key] = &c
		return nil
	}); err != nil {
		return nil, nil, err
	}
	keys := map[envKey]map[int64]*keyRow{}
	var k envKey
	r := &keyRow{}
	rows, _ = tx.Query(ctx, `SELECT org, project, env, key_id, state, is_primary, added_at, state_changed_at, position
		FROM `+n("proj_keys")+join, orgs, projects, envs)
	_, err := pgx.ForEachRow(rows, []any{&k.org, &k.project, &k.env, &r.id, &r.state, &r.primary, &r.addedAt, &r.stateChangedAt, &r.position}, func() error {
		if keys[k] == nil {
			keys[k] = map[int64]*keyRow{}
		}
		c := *r
		keys[k][c.id] = &c
		return nil
	})
	return sets, keys, err
}

func writeKeysets(ctx context.Context, tx pgx.Tx, n Names, sets map[envKey]*keysetRow, keys map[envKey]map[int64]*keyRow) error {
	var s struct {
		org, project, env, kek, hash        []string
		primary, materialVer, resealed, pos []int64
		since, createdAt, updatedAt         []time.Time
		lastRotation                        []*time.Time
		rotations                           []int32
	}
	for _, r := range sets {
		if !r.dirty {
			continue
		}
		s.org, s.project, s.env, s.kek, s.hash = append(s.org, r.key.org), append(s.project, r.key.project), append(s.env, r.key.env), append(s.kek, r.kek), append(s.hash, r.materialHash)
		s.primary, s.materialVer, s.resealed, s.pos = append(s.primary, r.primary), append(s.materialVer, r.materialVer), append(s.resealed, r.resealed), append(s.pos, r.position)
		s.since, s.createdAt, s.updatedAt = append(s.since, r.primarySince), append(s.createdAt, r.createdAt), append(s.updatedAt, r.updatedAt)
		s.lastRotation, s.rotations = append(s.lastRotation, r.lastRotation), append(s.rotations, r.rotations)
	}
	if len(s.org) > 0 {
		_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_keysets")+` (org, project, env, kek, primary_key, primary_since, material_version,
				material_hash, last_rotation, rotations, resealed_key, created_at, updated_at, position)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[], $7::bigint[],
				$8::text[], $9::timestamptz[], $10::int[], $11::bigint[], $12::timestamptz[], $13::timestamptz[], $14::bigint[])
			ON CONFLICT (org, project, env) DO UPDATE SET kek = excluded.kek, primary_key = excluded.primary_key,
				primary_since = excluded.primary_since, material_version = excluded.material_version, material_hash = excluded.material_hash,
				last_rotation = excluded.last_rotation, rotations = excluded.rotations, resealed_key = excluded.resealed_key,
				updated_at = excluded.updated_at, position = excluded.position`,
			s.org, s.project, s.env, s.kek, s.primary, s.since, s.materialVer, s.hash, s.lastRotation, s.rotations, s.resealed,
			s.createdAt, s.updatedAt, s.pos)
		if err != nil {
			return err
		}
	}
	var k struct {
		org, project, env, state []string
		id, pos                  []int64
		primary                  []bool
		addedAt, changedAt       []time.Time
	}
	for ek, m := range keys {
		for _, r := range m {
			if !r.dirty {
				continue
			}
			k.org, k.project, k.env, k.state = append(k.org, ek.org), append(k.project, ek.project), append(k.env, ek.env), append(k.state, r.state)
			k.id, k.pos, k.primary = append(k.id, r.id), append(k.pos, r.position), append(k.primary, r.primary)
			k.addedAt, k.changedAt = append(k.addedAt, r.addedAt), append(k.changedAt, r.stateChangedAt)
		}
	}
	if len(k.org) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_keys")+` (org, project, env, key_id, state, is_primary, added_at, state_changed_at, position)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bool[], $7::timestamptz[], $8::timestamptz[], $9::bigint[])
		ON CONFLICT (org, project, env, key_id) DO UPDATE SET state = excluded.state, is_primary = excluded.is_primary,
			added_at = excluded.added_at, state_changed_at = excluded.state_changed_at, position = excluded.position`,
		k.org, k.project, k.env, k.id, k.state, k.primary, k.addedAt, k.changedAt, k.pos)
	return err
}
