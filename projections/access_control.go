package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/domain"
)

// AccessControl is the read model of who may do what: the roles users
// hold in each organization and project (proj_members; a revoked role's
// row is removed) and the service tokens (proj_tokens: scope, expiry, the
// SHA-256 of the token's secret, revocation). Authorization reads it.
type AccessControl struct{}

var _ Projection = AccessControl{}

func (AccessControl) Name() string     { return "access_control" }
func (AccessControl) Version() int     { return 2 }
func (AccessControl) Tables() []string { return []string{"proj_members", "proj_tokens"} }

func (AccessControl) Create(n Names) []string {
	m, t := n("proj_members"), n("proj_tokens")
	return []string{
		// project '' is the organization-wide role.
		`CREATE TABLE ` + m + ` (
			org text NOT NULL, project text NOT NULL, user_id text NOT NULL, role text NOT NULL,
			granted_by text NOT NULL, granted_at timestamptz NOT NULL, position bigint NOT NULL,
			PRIMARY KEY (org, project, user_id))`,
		`CREATE INDEX ON ` + m + ` (org, user_id)`,
		`CREATE INDEX ON ` + m + ` (user_id)`, // a person's organizations
		`CREATE TABLE ` + t + ` (
			org text NOT NULL, token_id text NOT NULL, name text NOT NULL, role text NOT NULL,
			project text NOT NULL, environments text[] NOT NULL, expires_at timestamptz NOT NULL,
			secret_hash text NOT NULL, issued_by text NOT NULL, issued_at timestamptz NOT NULL,
			revoked_at timestamptz, revoked_by text NOT NULL DEFAULT '', revoke_reason text NOT NULL DEFAULT '',
			position bigint NOT NULL,
			PRIMARY KEY (org, token_id))`,
		`CREATE INDEX ON ` + t + ` (secret_hash)`,
	}
}

type memberKey struct{ org, project, user string }

// memberRow is a grant; nil in the batch's map once revoked.
type memberRow struct {
	role, grantedBy string
	grantedAt       time.Time
	position        int64
}

type tokenKey struct{ org, id string }

type tokenRow struct {
	key                                 tokenKey
	name, role, project, hash, issuedBy string
	environments                        []string
	expiresAt, issuedAt                 time.Time
	revokedAt                           *time.Time
	revokedBy, reason                   string
	position                            int64
	dirty                               bool
}

func (AccessControl) Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error {
	// A grant or a revocation sets the whole row, so members need not be
	// read; tokens must, for revocations.
	members := map[memberKey]*memberRow{}
	touched := map[tokenKey]bool{}
	for i := range batch {
		e := &batch[i]
		org, ok := orgOf(e.StreamID)
		if !ok {
			continue
		}
		switch ev := e.Event.(type) {
		case domain.RoleGranted:
			members[memberKey{org, ev.Project, ev.UserID}] = &memberRow{role: string(ev.Role), grantedBy: e.Metadata.Actor,
				grantedAt: e.RecordedAt, position: int64(e.Position)}
		case domain.RoleRevoked:
			members[memberKey{org, ev.Project, ev.UserID}] = nil
		case domain.TokenIssued:
			touched[tokenKey{org, ev.TokenID}] = true
		case domain.TokenRevoked:
			touched[tokenKey{org, ev.TokenID}] = true
		}
	}
	if err := writeMembers(ctx, tx, n, members); err != nil {
		return err
	}
	if len(touched) == 0 {
		return nil
	}
	tokens, err := loadTokens(ctx, tx, n, touched)
	if err != nil {
		return err
	}
	for i := range batch {
		e := &batch[i]
		org, ok := orgOf(e.StreamID)
		if !ok {
			continue
		}
		switch ev := e.Event.(type) {
		case domain.TokenIssued:
			k := tokenKey{org, ev.TokenID}
			tokens[k] = &tokenRow{key: k, name: ev.Name, role: string(ev.Role), project: ev.Project, hash: ev.SecretHash,
				environments: ev.Environments, expiresAt: ev.ExpiresAt, issuedBy: e.Metadata.Actor, issuedAt: e.RecordedAt,
				position: int64(e.Position), dirty: true}
		case domain.TokenRevoked:
			k := tokenKey{org, ev.TokenID}
			t := tokens[k]
			if t == nil {
				return fmt.Errorf("token %s of %s revoked before it was issued", ev.TokenID, org)
			}
			at := e.RecordedAt
			t.revokedAt, t.revokedBy, t.reason, t.position, t.dirty = &at, e.Metadata.Actor, ev.Reason, int64(e.Position), true
		}
	}
	return writeTokens(ctx, tx, n, tokens)
}

func writeMembers(ctx context.Context, tx pgx.Tx, n Names, members map[memberKey]*memberRow) error {
	var dOrg, dProject, dUser []string
	var org, project, user, role, by []string
	var at []time.Time
	var pos []int64
	for k, r := range members {
		if r == nil {
			dOrg, dProject, dUser = append(dOrg, k.org), append(dProject, k.project), append(dUser, k.user)
			continue
		}
		org, project, user, role, by = append(org, k.org), append(project, k.project), append(user, k.user), append(role, r.role), append(by, r.grantedBy)
		at, pos = append(at, r.grantedAt), append(pos, r.position)
	}
	if len(dOrg) > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM `+n("proj_members")+` m USING unnest($1::text[], $2::text[], $3::text[]) AS d(org, project, user_id)
			WHERE m.org = d.org AND m.project = d.project AND m.user_id = d.user_id`, dOrg, dProject, dUser); err != nil {
			return err
		}
	}
	if len(org) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_members")+` (org, project, user_id, role, granted_by, granted_at, position)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::bigint[])
		ON CONFLICT (org, project, user_id) DO UPDATE SET role = excluded.role, granted_by = excluded.granted_by,
			granted_at = excluded.granted_at, position = excluded.position`,
		org, project, user, role, by, at, pos)
	return err
}

func loadTokens(ctx context.Context, tx pgx.Tx, n Names, touched map[tokenKey]bool) (map[tokenKey]*tokenRow, error) {
	var orgs, ids []string
	for k := range touched {
		orgs, ids = append(orgs, k.org), append(ids, k.id)
	}
	out := map[tokenKey]*tokenRow{}
	rows, _ := tx.Query(ctx, `SELECT org, token_id, name, role, project, environments, expires_at, secret_hash, issued_by, issued_at,
		revoked_at, revoked_by, revoke_reason, position
		FROM `+n("proj_tokens")+` t JOIN unnest($1::text[], $2::text[]) AS u(org, token_id) USING (org, token_id)`, orgs, ids)
	t := &tokenRow{}
	_, err := pgx.ForEachRow(rows, []any{&t.key.org, &t.key.id, &t.name, &t.role, &t.project, &t.environments, &t.expiresAt, &t.hash,
		&t.issuedBy, &t.issuedAt, &t.revokedAt, &t.revokedBy, &t.reason, &t.position}, func() error {
		c := *t
		out[c.key] = &c
		return nil
	})
	return out, err
}

func writeTokens(ctx context.Context, tx pgx.Tx, n Names, tokens map[tokenKey]*tokenRow) error {
	var org, id, name, role, project, envs, hash, issuedBy, revokedBy, reason []string
	var expiresAt, issuedAt []time.Time
	var revokedAt []*time.Time
	var pos []int64
	for _, t := range tokens {
		if !t.dirty {
			continue
		}
		org, id, name, role, project = append(org, t.key.org), append(id, t.key.id), append(name, t.name), append(role, t.role), append(project, t.project)
		envs, hash, issuedBy = append(envs, tagsJSON(t.environments)), append(hash, t.hash), append(issuedBy, t.issuedBy)
		expiresAt, issuedAt = append(expiresAt, t.expiresAt), append(issuedAt, t.issuedAt)
		revokedAt, revokedBy, reason, pos = append(revokedAt, t.revokedAt), append(revokedBy, t.revokedBy), append(reason, t.reason), append(pos, t.position)
	}
	if len(org) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_tokens")+` (org, token_id, name, role, project, environments, expires_at, secret_hash,
			issued_by, issued_at, revoked_at, revoked_by, revoke_reason, position)
		SELECT org, id, name, role, project, ARRAY(SELECT jsonb_array_elements_text(envs::jsonb)), exp, hash, ib, ia, ra, rb, reason, pos
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[],
			$9::text[], $10::timestamptz[], $11::timestamptz[], $12::text[], $13::text[], $14::bigint[])
			AS t(org, id, name, role, project, envs, exp, hash, ib, ia, ra, rb, reason, pos)
		ON CONFLICT (org, token_id) DO UPDATE SET name = excluded.name, role = excluded.role, project = excluded.project,
			environments = excluded.environments, expires_at = excluded.expires_at, secret_hash = excluded.secret_hash,
			issued_by = excluded.issued_by, issued_at = excluded.issued_at, revoked_at = excluded.revoked_at,
			revoked_by = excluded.revoked_by, revoke_reason = excluded.revoke_reason, position = excluded.position`,
		org, id, name, role, project, envs, expiresAt, hash, issuedBy, issuedAt, revokedAt, revokedBy, reason, pos)
	return err
}
