package projections

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/domain"
)

// Audit is the audit feed: one row per event with who (actor and kind),
// what (the event type), on what (stream, project, environment, target),
// when, and from where. Filterable by organization, actor, action, secret,
// environment and time; pageable by position.
type Audit struct{}

var _ Projection = Audit{}

func (Audit) Name() string     { return "audit" }
func (Audit) Version() int     { return 1 }
func (Audit) Tables() []string { return []string{"proj_audit"} }

func (Audit) Create(n Names) []string {
	t := n("proj_audit")
	return []string{
		`CREATE TABLE ` + t + ` (
			position bigint PRIMARY KEY, recorded_at timestamptz NOT NULL,
			org text NOT NULL, actor text NOT NULL, actor_kind text NOT NULL, action text NOT NULL,
			stream text NOT NULL, project text NOT NULL, env text NOT NULL, target text NOT NULL,
			request_id text NOT NULL, client_addr text NOT NULL)`,
		// Filters narrow a tenant's feed, newest first; time ranges map to
		// positions (recorded times never decrease along the log).
		`CREATE INDEX ON ` + t + ` (org, position)`,
		`CREATE INDEX ON ` + t + ` (org, actor, position)`,
		`CREATE INDEX ON ` + t + ` (org, action, position)`,
	}
}

var auditColumns = []string{"position", "recorded_at", "org", "actor", "actor_kind", "action", "stream", "project", "env", "target", "request_id", "client_addr"}

func (Audit) Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error {
	rows := make([][]any, len(batch))
	for i, e := range batch {
		project, env, target := auditTarget(e)
		kind, _, _ := strings.Cut(e.Metadata.Actor, ":")
		rows[i] = []any{int64(e.Position), e.RecordedAt, e.Metadata.Tenant, e.Metadata.Actor, kind, e.Type, e.StreamID,
			project, env, target, e.Metadata.RequestID, e.Metadata.ClientAddr}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{strings.Trim(n("proj_audit"), `"`)}, auditColumns, pgx.CopyFromRows(rows))
	return err
}

// auditTarget says which project, environment and object an event is about.
func auditTarget(e Event) (project, env, target string) {
	p := streamParts(e.StreamID)
	switch p[0] {
	case "secret":
		if len(p) == 5 {
			return p[2], p[3], p[4]
		}
	case "keyset":
		if len(p) == 4 {
			project, env = p[2], p[3]
		}
		switch ev := e.Event.(type) {
		case domain.KeysetRotated:
			return project, env, "key:" + u32(ev.KeyID)
		case domain.KeyDisabled:
			return project, env, "key:" + u32(ev.KeyID)
		case domain.KeyEnabled:
			return project, env, "key:" + u32(ev.KeyID)
		case domain.KeyDestroyed:
			return project, env, "key:" + u32(ev.KeyID)
		}
		return project, env, "keyset"
	case "project":
		if len(p) == 3 {
			project = p[2]
		}
		switch ev := e.Event.(type) {
		case domain.EnvironmentCreated:
			return project, ev.EnvID, "environment:" + ev.EnvID
		case domain.EnvironmentUpdated:
			return project, ev.EnvID, "environment:" + ev.EnvID
		case domain.BundleCreated:
			return project, "", "bundle:" + ev.BundleID
		case domain.BundleUpdated:
			return project, "", "bundle:" + ev.BundleID
		case domain.BundleDeleted:
			return project, "", "bundle:" + ev.BundleID
		}
		return project, "", "project:" + project
	case "org":
		switch ev := e.Event.(type) {
		case domain.RoleGranted:
			return ev.Project, "", "user:" + ev.UserID
		case domain.RoleRevoked:
			return ev.Project, "", "user:" + ev.UserID
		case domain.TokenIssued:
			return ev.Project, "", "token:" + ev.TokenID
		case domain.TokenRevoked:
			return "", "", "token:" + ev.TokenID
		}
		if len(p) == 2 {
			return "", "", "organization:" + p[1]
		}
	case "approval":
		if ev, ok := e.Event.(domain.ApprovalRequested); ok {
			return ev.Project, ev.Env, "approval:" + ev.ApprovalID
		}
		if len(p) == 2 {
			return "", "", "approval:" + p[1]
		}
	}
	return "", "", e.StreamID
}

func u32(v uint32) string {
	const digits = "0123456789"
	if v == 0 {
		return "0"
	}
	var b [10]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = digits[v%10]
		v /= 10
	}
	return string(b[i:])
}
