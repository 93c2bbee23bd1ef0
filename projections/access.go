package projections

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/domain"
)

// Access records reads of secret values: one row per read
// (proj_secret_reads: who, which version, through what, why) and reads per
// secret per day per kind of actor (proj_access_daily) for dashboards.
type Access struct{}

var _ Projection = Access{}

func (Access) Name() string     { return "access" }
func (Access) Version() int     { return 1 }
func (Access) Tables() []string { return []string{"proj_secret_reads", "proj_access_daily"} }

func (Access) Create(n Names) []string {
	r, d := n("proj_secret_reads"), n("proj_access_daily")
	return []string{
		`CREATE TABLE ` + r + ` (
			position bigint PRIMARY KEY, recorded_at timestamptz NOT NULL,
			org text NOT NULL, project text NOT NULL, env text NOT NULL, name text NOT NULL, version bigint NOT NULL,
			actor text NOT NULL, actor_kind text NOT NULL, channel text NOT NULL, reason text NOT NULL)`,
		`CREATE INDEX ON ` + r + ` (org, project, env, name, recorded_at)`,
		`CREATE INDEX ON ` + r + ` (org, actor, recorded_at)`,
		`CREATE TABLE ` + d + ` (
			day date NOT NULL, org text NOT NULL, project text NOT NULL, env text NOT NULL, name text NOT NULL,
			actor_kind text NOT NULL, reads bigint NOT NULL,
			PRIMARY KEY (day, org, project, env, name, actor_kind))`,
	}
}

var readColumns = []string{"position", "recorded_at", "org", "project", "env", "name", "version", "actor", "actor_kind", "channel", "reason"}

type dailyKey struct {
	day                           time.Time
	org, project, env, name, kind string
}

func (Access) Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error {
	var rows [][]any
	daily := map[dailyKey]int64{}
	for _, e := range batch {
		v, ok := e.Event.(domain.SecretViewed)
		if !ok {
			continue
		}
		k, ok := secretKeyOf(e.StreamID)
		if !ok {
			continue
		}
		kind, _, _ := strings.Cut(e.Metadata.Actor, ":")
		rows = append(rows, []any{int64(e.Position), e.RecordedAt, k.org, k.project, k.env, k.name, int64(v.Version),
			e.Metadata.Actor, kind, string(v.Channel), v.Reason})
		day := e.RecordedAt.UTC().Truncate(24 * time.Hour)
		daily[dailyKey{day, k.org, k.project, k.env, k.name, kind}]++
	}
	if len(rows) == 0 {
		return nil
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{strings.Trim(n("proj_secret_reads"), `"`)}, readColumns, pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	var days []time.Time
	var orgs, projects, envs, names, kinds []string
	var counts []int64
	for k, c := range daily {
		days, orgs, projects, envs, names, kinds, counts = append(days, k.day), append(orgs, k.org), append(projects, k.project),
			append(envs, k.env), append(names, k.name), append(kinds, k.kind), append(counts, c)
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_access_daily")+` AS d (day, org, project, env, name, actor_kind, reads)
		SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
		ON CONFLICT (day, org, project, env, name, actor_kind) DO UPDATE SET reads = d.reads + excluded.reads`,
		days, orgs, projects, envs, names, kinds, counts)
	return err
}
