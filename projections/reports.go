package projections

import (
	"context"
	"fmt"
	"time"
)

// Queries of the compliance reports that the dashboard's queries do not
// answer already. Each takes a window [from, to) (zero: unbounded) and a
// limit, and returns at most limit rows, oldest first: a caller that
// gets limit rows asks for limit+1 to learn that there were more.

// ProductionReads returns the reads of an organization's values in the
// environments flagged production (as they are flagged now), recorded in
// [from, to), by actors of kind actorKind ("": every kind), oldest first.
func (r *Reader) ProductionReads(ctx context.Context, org, actorKind string, from, to time.Time, limit int) ([]SecretRead, error) {
	if err := r.CheckHalted(ctx, Access{}.Name(), Directory{}.Name()); err != nil {
		return nil, err
	}
	if org == "" {
		return nil, errNoOrg
	}
	w := &where{}
	w.add("r.org = $%d", org)
	w.opt("r.actor_kind = $%d", actorKind)
	if !from.IsZero() {
		w.add("r.recorded_at >= $%d", ceilMicro(from))
	}
	if !to.IsZero() {
		w.add("r.recorded_at < $%d", ceilMicro(to))
	}
	return collect[SecretRead](ctx, r.pool, `SELECT r.position, r.recorded_at, r.project, r.env, r.name, r.version, r.actor, r.actor_kind,
			r.channel, r.reason
		FROM `+productionReads+` WHERE `+w.String()+` ORDER BY r.position LIMIT `+fmt.Sprint(max(limit, 0)), w.args...)
}

// ApprovalsGranted returns an organization's approval requests that at
// least one person approved, requested in [from, to), with the status
// seen at now, oldest first.
func (r *Reader) ApprovalsGranted(ctx context.Context, org string, from, to, now time.Time, limit int) ([]ApprovalInfo, error) {
	if err := r.CheckHalted(ctx, Approvals{}.Name()); err != nil {
		return nil, err
	}
	if org == "" {
		return nil, errNoOrg
	}
	w := &where{args: []any{now}}
	w.add("org = $%d", org)
	w.conds = append(w.conds, "cardinality(approved_by) > 0")
	if !from.IsZero() {
		w.add("requested_at >= $%d", ceilMicro(from))
	}
	if !to.IsZero() {
		w.add("requested_at < $%d", ceilMicro(to))
	}
	return collect[ApprovalInfo](ctx, r.pool, approvalSelect+` WHERE `+w.String()+` ORDER BY requested_at, approval_id LIMIT `+fmt.Sprint(max(limit, 0)), w.args...)
}
