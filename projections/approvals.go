package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/domain"
)

// Approvals is the read model of approval requests (proj_approvals): what
// was asked, by whom, and where each request stands. The status is the
// recorded one: a request past its deadline still reads pending (or
// approved) until the server appends approval.expired; Reader.Approvals
// reports it as expired from its deadline on.
type Approvals struct{}

var _ Projection = Approvals{}

func (Approvals) Name() string     { return "approvals" }
func (Approvals) Version() int     { return 1 }
func (Approvals) Tables() []string { return []string{"proj_approvals"} }

func (Approvals) Create(n Names) []string {
	t := n("proj_approvals")
	return []string{
		// org is '' for sign-in requests, which belong to no organization.
		`CREATE TABLE ` + t + ` (
			approval_id text PRIMARY KEY, org text NOT NULL, project text NOT NULL, env text NOT NULL,
			kind text NOT NULL, bundle text NOT NULL, keys jsonb NOT NULL,
			requester text NOT NULL, client_addr text NOT NULL, user_code text NOT NULL,
			status text NOT NULL, approvals_required integer NOT NULL, self_approval boolean NOT NULL,
			approved_by text[] NOT NULL, granted_keys text[] NOT NULL, delivered_keys jsonb NOT NULL,
			expires_at timestamptz NOT NULL, requested_at timestamptz NOT NULL,
			decided_at timestamptz, decided_by text NOT NULL, deny_reason text NOT NULL,
			delivered_at timestamptz, updated_at timestamptz NOT NULL, position bigint NOT NULL)`,
		`CREATE INDEX ON ` + t + ` (org, requested_at)`,
		`CREATE INDEX ON ` + t + ` (org, status)`,
		`CREATE INDEX ON ` + t + ` (user_code)`,
	}
}

type approvalRow struct {
	id, org, project, env, kind, bundle, keys string // keys: JSON
	requester, clientAddr, userCode, status   string
	required                                  int32
	selfApproval                              bool
	approvedBy, granted                       []string
	delivered                                 string // JSON
	expiresAt, requestedAt, updatedAt         time.Time
	decidedAt, deliveredAt                    *time.Time
	decidedBy, denyReason                     string
	position                                  int64
	dirty                                     bool
}

func approvalOf(stream string) (string, bool) {
	p := streamParts(stream)
	if len(p) != 2 || p[0] != "approval" {
		return "", false
	}
	return p[1], true
}

func (Approvals) Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error {
	var ids []string
	seen := map[string]bool{}
	for i := range batch {
		if id, ok := approvalOf(batch[i].StreamID); ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := loadApprovals(ctx, tx, n, ids)
	if err != nil {
		return err
	}
	for i := range batch {
		e := &batch[i]
		id, ok := approvalOf(e.StreamID)
		if !ok {
			continue
		}
		at := e.RecordedAt
		if req, ok := e.Event.(domain.ApprovalRequested); ok {
			keys := bundleKeysJSON(req.Keys)
			rows[id] = &approvalRow{id: id, org: req.Org, project: req.Project, env: req.Env, kind: string(req.Kind), bundle: req.Bundle,
				keys: keys, requester: req.Requester, clientAddr: req.ClientAddr, userCode: req.UserCode, status: string(domain.StatusPending),
				required: int32(req.Approvals), selfApproval: req.SelfApproval, delivered: "[]", expiresAt: req.ExpiresAt, requestedAt: at}
		}
		r := rows[id]
		if r == nil {
			return fmt.Errorf("approval %s changed before it was requested", id)
		}
		r.updatedAt, r.position, r.dirty = at, int64(e.Position), true
		switch ev := e.Event.(type) {
		case domain.ApprovalGranted:
			// An anonymous request's bundle is resolved by its first
			// approval; the environment's policy may raise the count.
			if len(ev.BundleKeys) > 0 && r.keys == bundleKeysJSON(nil) {
				r.keys = bundleKeysJSON(ev.BundleKeys)
			}
			r.required = max(r.required, int32(ev.Required))
			// As the domain: the keys every approver let through.
			if len(r.approvedBy) == 0 {
				r.granted = slices.Clone(ev.Keys)
			} else {
				r.granted = slices.DeleteFunc(r.granted, func(k string) bool { return !slices.Contains(ev.Keys, k) })
			}
			r.approvedBy = append(r.approvedBy, ev.By)
			if len(r.approvedBy) >= int(r.required) && r.status == string(domain.StatusPending) {
				r.status, r.decidedAt, r.decidedBy = string(domain.StatusApproved), &at, ev.By
			}
		case domain.ApprovalDenied:
			r.status, r.decidedAt, r.decidedBy, r.denyReason = string(domain.StatusDenied), &at, ev.By, ev.Reason
		case domain.ApprovalExpired:
			r.status = string(domain.StatusExpired)
		case domain.ApprovalDelivered:
			keys := ev.Keys
			if keys == nil {
				keys = []domain.DeliveredKey{}
			}
			b, _ := json.Marshal(keys)
			r.status, r.deliveredAt, r.delivered = string(domain.StatusDelivered), &at, string(b)
		}
	}
	return writeApprovals(ctx, tx, n, rows)
}

const approvalColumns = `approval_id, org, project, env, kind, bundle, keys, requester, client_addr, user_code, status,
	approvals_required, self_approval, approved_by, granted_keys, delivered_keys, expires_at, requested_at,
	decided_at, decided_by, deny_reason, delivered_at, updated_at, position`

func loadApprovals(ctx context.Context, tx pgx.Tx, n Names, ids []string) (map[string]*approvalRow, error) {
	out := map[string]*approvalRow{}
	rows, _ := tx.Query(ctx, `SELECT approval_id, org, project, env, kind, bundle, keys::text, requester, client_addr, user_code, status,
		approvals_required, self_approval, approved_by, granted_keys, delivered_keys::text, expires_at, requested_at,
		decided_at, decided_by, deny_reason, delivered_at, updated_at, position
		FROM `+n("proj_approvals")+` WHERE approval_id = ANY($1::text[])`, ids)
	r := &approvalRow{}
	_, err := pgx.ForEachRow(rows, []any{&r.id, &r.org, &r.project, &r.env, &r.kind, &r.bundle, &r.keys, &r.requester, &r.clientAddr,
		&r.userCode, &r.status, &r.required, &r.selfApproval, &r.approvedBy, &r.granted, &r.delivered, &r.expiresAt, &r.requestedAt,
		&r.decidedAt, &r.decidedBy, &r.denyReason, &r.deliveredAt, &r.updatedAt, &r.position}, func() error {
		c := *r
		out[c.id] = &c
		return nil
	})
	return out, err
}

func writeApprovals(ctx context.Context, tx pgx.Tx, n Names, rows map[string]*approvalRow) error {
	var a struct {
		id, org, project, env, kind, bundle, keys, requester, clientAddr, userCode, status []string
		required                                                                           []int32
		self                                                                               []bool
		approvedBy, granted, delivered                                                     []string // JSON
		expiresAt, requestedAt, updatedAt                                                  []time.Time
		decidedAt, deliveredAt                                                             []*time.Time
		decidedBy, denyReason                                                              []string
		pos                                                                                []int64
	}
	for _, r := range rows {
		if !r.dirty {
			continue
		}
		a.id, a.org, a.project, a.env, a.kind, a.bundle = append(a.id, r.id), append(a.org, r.org), append(a.project, r.project), append(a.env, r.env), append(a.kind, r.kind), append(a.bundle, r.bundle)
		a.keys, a.requester, a.clientAddr, a.userCode, a.status = append(a.keys, r.keys), append(a.requester, r.requester), append(a.clientAddr, r.clientAddr), append(a.userCode, r.userCode), append(a.status, r.status)
		a.required, a.self = append(a.required, r.required), append(a.self, r.selfApproval)
		a.approvedBy, a.granted, a.delivered = append(a.approvedBy, tagsJSON(r.approvedBy)), append(a.granted, tagsJSON(r.granted)), append(a.delivered, r.delivered)
		a.expiresAt, a.requestedAt, a.updatedAt = append(a.expiresAt, r.expiresAt), append(a.requestedAt, r.requestedAt), append(a.updatedAt, r.updatedAt)
		a.decidedAt, a.deliveredAt = append(a.decidedAt, r.decidedAt), append(a.deliveredAt, r.deliveredAt)
		a.decidedBy, a.denyReason, a.pos = append(a.decidedBy, r.decidedBy), append(a.denyReason, r.denyReason), append(a.pos, r.position)
	}
	if len(a.id) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+n("proj_approvals")+` (`+approvalColumns+`)
		SELECT id, org, project, env, kind, bundle, keys::jsonb, requester, ca, uc, status, req, self,
			ARRAY(SELECT jsonb_array_elements_text(ab::jsonb)), ARRAY(SELECT jsonb_array_elements_text(gk::jsonb)), dk::jsonb,
			exp, reqat, decat, decby, dr, delat, upd, pos
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
			$11::text[], $12::int[], $13::bool[], $14::text[], $15::text[], $16::text[], $17::timestamptz[], $18::timestamptz[],
			$19::timestamptz[], $20::text[], $21::text[], $22::timestamptz[], $23::timestamptz[], $24::bigint[])
			AS t(id, org, project, env, kind, bundle, keys, requester, ca, uc, status, req, self, ab, gk, dk, exp, reqat, decat, decby, dr, delat, upd, pos)
		ON CONFLICT (approval_id) DO UPDATE SET org = excluded.org, project = excluded.project, env = excluded.env, kind = excluded.kind,
			bundle = excluded.bundle, keys = excluded.keys, requester = excluded.requester, client_addr = excluded.client_addr,
			user_code = excluded.user_code, status = excluded.status, approvals_required = excluded.approvals_required,
			self_approval = excluded.self_approval, approved_by = excluded.approved_by, granted_keys = excluded.granted_keys,
			delivered_keys = excluded.delivered_keys, expires_at = excluded.expires_at, requested_at = excluded.requested_at,
			decided_at = excluded.decided_at, decided_by = excluded.decided_by, deny_reason = excluded.deny_reason,
			delivered_at = excluded.delivered_at, updated_at = excluded.updated_at, position = excluded.position`,
		a.id, a.org, a.project, a.env, a.kind, a.bundle, a.keys, a.requester, a.clientAddr, a.userCode,
		a.status, a.required, a.self, a.approvedBy, a.granted, a.delivered, a.expiresAt, a.requestedAt,
		a.decidedAt, a.decidedBy, a.denyReason, a.deliveredAt, a.updatedAt, a.pos)
	return err
}
