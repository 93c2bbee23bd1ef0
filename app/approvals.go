package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
)

func newApprovalAgg() aggregate { return domain.NewApproval() }

// ApprovalSpec describes a request for secrets, a CLI sign-in or a
// change of values.
type ApprovalSpec struct {
	Kind              domain.ApprovalKind
	Org, Project, Env string
	// Bundle names a bundle whose keys are asked for; or Keys lists them.
	Bundle string
	Keys   []string
	// Changes are what a change request does.
	Changes []ChangeSpec
	// PublicKey is the requester's one-time X25519 public key (none for
	// a change request: it delivers nothing to the client).
	PublicKey    []byte
	Approvals    int
	SelfApproval bool
	TTL          time.Duration // 0: five minutes
}

// ApprovalTicket is what a requester shows and waits on.
type ApprovalTicket struct {
	ID        string
	UserCode  string
	ExpiresAt time.Time
	// PollToken is the one-time secret the requester's client presents
	// to collect the delivery (see CollectWithToken). The ledger keeps
	// only its SHA-256; it is shown once.
	PollToken string
	// Requester is who the request is recorded as: the signed-in caller,
	// or for a client that is not signed in (and for every sign-in
	// request) the anonymous actor of the poll token.
	Requester domain.Actor
	// Approvals is how many distinct people must approve, as known when
	// the request was made (an environment's policy may raise it when
	// an approver acts on an anonymous request).
	Approvals int
}

// pollTokenPrefix lets secret scanners recognise a leaked poll token.
const pollTokenPrefix = "stele_poll_"

// PollTokenHash returns the hex SHA-256 of a poll token, as recorded.
func PollTokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// PollTokenActor returns the anonymous actor a poll token stands for: a
// client that is not signed in is known by (the first 128 bits of) the
// hash of the token it alone holds.
func PollTokenActor(token string) domain.Actor {
	return domain.Actor{Kind: domain.ActorAnonymous, ID: PollTokenHash(token)[:32]}
}

// userCodeAlphabet has no look-alike characters (no 0/O, 1/I/L).
const userCodeAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"

func userCode() (string, error) {
	b := make([]byte, 0, 9)
	for i := range 8 {
		if i == 4 {
			b = append(b, '-')
		}
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(userCodeAlphabet))))
		if err != nil {
			return "", err
		}
		b = append(b, userCodeAlphabet[n.Int64()])
	}
	return string(b), nil
}

func signedIn(a domain.Actor) bool { return !a.IsZero() && a.Kind != domain.ActorAnonymous }

// RequestApproval opens a request.
//
// A signed-in requester of secrets must be a member of the project; the
// environment and any bundle must exist, and the bundle is resolved to
// its keys now. A client that is not signed in may ask for secrets too:
// then nothing about the organization, project, environment or bundle is
// looked up (the answer does not depend on whether they exist); they are
// checked, and the bundle resolved, when a signed-in approver acts. A
// sign-in request is always anonymous. A change request needs a
// signed-in requester who may make the change; its new values are
// sealed under the environment's keyset, bound to the request, before
// anything is recorded.
//
// Where the environment's policy requires approvals for what is asked,
// the request needs that many approvers and none of them may be the
// requester. A retry with the idempotency key of an earlier attempt
// fails with ErrShownOnce: the poll token was shown then.
func (s *Service) RequestApproval(ctx context.Context, req Request, spec ApprovalSpec) (ApprovalTicket, Result, error) {
	var idb [12]byte
	var tok [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return ApprovalTicket{}, Result{}, err
	}
	if _, err := rand.Read(tok[:]); err != nil {
		return ApprovalTicket{}, Result{}, err
	}
	code, err := userCode()
	if err != nil {
		return ApprovalTicket{}, Result{}, err
	}
	t := ApprovalTicket{ID: hex.EncodeToString(idb[:]), UserCode: code, PollToken: pollTokenPrefix + base64.RawURLEncoding.EncodeToString(tok[:]), Requester: req.Actor}
	if spec.Kind == domain.ApprovalLogin || !signedIn(req.Actor) {
		t.Requester = PollTokenActor(t.PollToken)
		req.Actor = t.Requester
	}
	who := domain.Principal{Actor: t.Requester}
	approvals, self := spec.Approvals, spec.SelfApproval
	var keys []domain.BundleKey
	var changes []domain.SecretChange
	env := Env{spec.Org, spec.Project, spec.Env}
	switch {
	case spec.Kind == domain.ApprovalSecrets && signedIn(t.Requester):
		if who, err = s.access(ctx, req.Actor, spec.Org, spec.Project, spec.Env); err != nil {
			return ApprovalTicket{}, Result{}, err
		}
		e, err := s.environment(ctx, env)
		if err != nil {
			return ApprovalTicket{}, Result{}, err
		}
		if e.Approval.Reveal {
			approvals, self = max(approvals, e.Approval.ApproversNeeded()), false
		}
		if spec.Bundle != "" {
			err := s.view(ctx, domain.ProjectStream(spec.Org, spec.Project), newProjectAgg, func(a aggregate) error {
				k, ok := a.(*domain.Project).Bundle(spec.Bundle)
				if !ok {
					return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no bundle " + spec.Bundle}
				}
				keys = k
				return nil
			})
			if err != nil {
				return ApprovalTicket{}, Result{}, err
			}
		} else {
			for _, k := range spec.Keys {
				keys = append(keys, domain.BundleKey{Name: k})
			}
		}
	case spec.Kind == domain.ApprovalSecrets:
		// Anonymous: recorded as asked; nothing is looked up.
		for _, k := range spec.Keys {
			keys = append(keys, domain.BundleKey{Name: k})
		}
	case spec.Kind == domain.ApprovalChange && signedIn(t.Requester):
		if who, err = s.access(ctx, req.Actor, spec.Org, spec.Project, spec.Env); err != nil {
			return ApprovalTicket{}, Result{}, err
		}
		e, err := s.environment(ctx, env)
		if err != nil {
			return ApprovalTicket{}, Result{}, err
		}
		if e.Approval.Change {
			approvals, self = max(approvals, e.Approval.ApproversNeeded()), false
		}
		if !who.Role.Can(domain.PermWriteSecret) { // refuse before touching keys
			return ApprovalTicket{}, Result{}, &domain.ForbiddenError{Actor: req.Actor, Permission: domain.PermWriteSecret, Reason: "role " + string(who.Role)}
		}
		if len(spec.Changes) > domain.MaxChanges {
			return ApprovalTicket{}, Result{}, &domain.ValidationError{Field: "changes", Reason: fmt.Sprintf("at most %d", domain.MaxChanges)}
		}
		if changes, err = s.sealChanges(ctx, req, who, env, t.ID, spec.Changes); err != nil {
			return ApprovalTicket{}, Result{}, err
		}
	}
	ttl := spec.TTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	now := s.now()
	t.ExpiresAt = now.Add(ttl).UTC()
	cmd := domain.RequestApproval{ApprovalID: t.ID, Kind: spec.Kind, Org: spec.Org, Project: spec.Project, Env: spec.Env, Bundle: spec.Bundle,
		Keys: keys, Changes: changes, PublicKey: spec.PublicKey, PollTokenHash: PollTokenHash(t.PollToken), UserCode: code,
		ClientAddr: req.ClientAddr, ExpiresAt: t.ExpiresAt, Approvals: approvals, SelfApproval: self, Now: now}
	res, evs, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(t.ID), tenant: spec.Org, mk: newApprovalAgg,
		name: "request approval " + string(spec.Kind), target: spec.Org + "/" + spec.Project + "/" + spec.Env,
		decide: func(a aggregate) ([]domain.Event, error) { return a.(*domain.Approval).Handle(who, cmd) }})
	if err != nil {
		return ApprovalTicket{}, res, err
	}
	if res.Replayed {
		return ApprovalTicket{}, res, ErrShownOnce
	}
	if len(evs) == 1 {
		if r, ok := evs[0].(domain.ApprovalRequested); ok {
			t.Approvals = r.Approvals
		}
	}
	return t, res, nil
}

// ApprovalDecision is what an approval did.
type ApprovalDecision struct {
	Result
	// Status is where the request stands after the approval.
	Status domain.ApprovalStatus
	// Applied are the secrets an approved change request changed, with
	// their versions after the change.
	Applied []domain.DeliveredKey
}

// Approve lets the chosen keys through (every required key among them).
func (s *Service) Approve(ctx context.Context, req Request, id string, keys []string) (Result, error) {
	d, err := s.ApproveRequest(ctx, req, id, keys)
	return d.Result, err
}

// ApproveRequest approves a request as the caller: keys are the keys let
// through (none for a sign-in or a change request). The approver needs
// the approver's role in the request's environment (a person, for a
// sign-in); the environment, and the bundle of an anonymous request, must
// exist. The environment's policy applies as it stands now: it may raise
// the approvals needed and forbid the requester's own. The approval that
// completes a change request also makes its changes (see applyChange);
// it is refused, and nothing is recorded, when a secret has moved on
// from the version the request was based on.
func (s *Service) ApproveRequest(ctx context.Context, req Request, id string, keys []string) (ApprovalDecision, error) {
	snap, err := s.approvalSnapshot(ctx, id)
	if err != nil {
		return ApprovalDecision{}, err
	}
	r := snap.req
	cmd := domain.Approve{Keys: keys}
	who := domain.Principal{Actor: req.Actor}
	if r.Kind != domain.ApprovalLogin {
		if who, err = s.access(ctx, req.Actor, r.Org, r.Project, r.Env); err != nil {
			return ApprovalDecision{}, err
		}
		e, err := s.environment(ctx, Env{r.Org, r.Project, r.Env})
		if err != nil {
			return ApprovalDecision{}, err
		}
		if (r.Kind == domain.ApprovalSecrets && e.Approval.Reveal) || (r.Kind == domain.ApprovalChange && e.Approval.Change) {
			cmd.Required, cmd.NoSelfApproval = e.Approval.ApproversNeeded(), true
		}
		if r.Kind == domain.ApprovalSecrets && len(r.Keys) == 0 && r.Bundle != "" {
			if cmd.BundleKeys, err = s.bundleKeys(ctx, r.Org, r.Project, r.Bundle); err != nil {
				return ApprovalDecision{}, err
			}
		}
		if r.Kind == domain.ApprovalChange && who.Role.Can(domain.PermApprove) && snap.wouldComplete(cmd.Required) {
			if err := s.checkBases(ctx, r); err != nil {
				return ApprovalDecision{}, err
			}
		}
	}
	var status domain.ApprovalStatus
	res, _, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(id), tenant: r.Org, mk: newApprovalAgg,
		name: "approve", target: id,
		decide: func(a aggregate) ([]domain.Event, error) {
			c := cmd
			c.Now = s.now()
			x := a.(*domain.Approval)
			evs, err := x.Handle(who, c)
			status = x.Status()
			if err == nil && x.WouldComplete(c.Required) {
				status = domain.StatusApproved
			}
			return evs, err
		}})
	d := ApprovalDecision{Result: res, Status: status}
	if err == nil && res.Replayed { // the first attempt decided; report where the request stands now
		now, err := s.approvalSnapshot(ctx, id)
		d.Status = now.status
		return d, err
	}
	if err != nil || r.Kind != domain.ApprovalChange || status != domain.StatusApproved {
		return d, err
	}
	applied, ares, err := s.applyChange(ctx, req, id)
	if err != nil {
		return d, err
	}
	d.Applied, d.Status, d.Position = applied, domain.StatusDelivered, max(d.Position, ares.Position)
	return d, nil
}

// bundleKeys returns a bundle's keys.
func (s *Service) bundleKeys(ctx context.Context, org, project, bundle string) ([]domain.BundleKey, error) {
	var keys []domain.BundleKey
	err := s.view(ctx, domain.ProjectStream(org, project), newProjectAgg, func(a aggregate) error {
		k, ok := a.(*domain.Project).Bundle(bundle)
		if !ok {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no bundle " + bundle + " in " + org + "/" + project}
		}
		keys = k
		return nil
	})
	return keys, err
}

// Deny refuses a request. The requester may withdraw their own; anyone
// else needs the approver's role in the request's environment (any
// signed-in person, for a sign-in request).
func (s *Service) Deny(ctx context.Context, req Request, id, reason string) (Result, error) {
	snap, err := s.approvalSnapshot(ctx, id)
	if err != nil {
		return Result{}, err
	}
	who := domain.Principal{Actor: req.Actor}
	if snap.req.Kind != domain.ApprovalLogin && req.Actor.String() != snap.req.Requester {
		if who, err = s.access(ctx, req.Actor, snap.req.Org, snap.req.Project, snap.req.Env); err != nil {
			return Result{}, err
		}
	}
	res, _, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(id), tenant: snap.req.Org, mk: newApprovalAgg,
		name: "deny", target: id,
		decide: func(a aggregate) ([]domain.Event, error) {
			return a.(*domain.Approval).Handle(who, domain.Deny{Reason: reason, Now: s.now()})
		}})
	return res, err
}

// Withdraw denies a request on behalf of its requester's client, which
// proves itself with the request's poll token.
func (s *Service) Withdraw(ctx context.Context, req Request, id, pollToken, reason string) (Result, error) {
	snap, err := s.approvalSnapshot(ctx, id)
	if err != nil {
		return Result{}, err
	}
	if err := snap.checkCollector(req.Actor, PollTokenHash(pollToken), pollToken != ""); err != nil {
		return Result{}, err
	}
	req.Actor, _ = domain.ParseActor(snap.req.Requester)
	return s.Deny(ctx, req, id, reason)
}

// approvalSnap is a copy of a request's state.
type approvalSnap struct {
	req       domain.ApprovalRequested
	status    domain.ApprovalStatus // as seen at the snapshot's time
	required  int
	approvers []string
	granted   []string
	denial    domain.ApprovalDenied
	delivered []domain.DeliveredKey
	anonymous bool
	pollHash  string
}

func (a approvalSnap) wouldComplete(required int) bool {
	return len(a.approvers)+1 >= max(a.required, required)
}

// checkCollector fails unless the caller is the request's requester: by
// its poll token (when sent), or signed in as the requester. Anyone else
// is told the request does not exist.
func (a approvalSnap) checkCollector(actor domain.Actor, tokenHash string, byToken bool) error {
	if byToken && a.pollHash != "" && subtle.ConstantTimeCompare([]byte(tokenHash), []byte(a.pollHash)) == 1 {
		return nil
	}
	if !byToken && !a.anonymous && signedIn(actor) && actor.String() == a.req.Requester {
		return nil
	}
	return &domain.ForbiddenError{Actor: actor, Permission: domain.PermRequest, Reason: "only the requester collects a delivery", Outsider: true}
}

func (s *Service) approvalSnapshot(ctx context.Context, id string) (approvalSnap, error) {
	var out approvalSnap
	if !domain.ValidID(id) {
		return out, &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no such request"}
	}
	err := s.view(ctx, domain.ApprovalStream(id), newApprovalAgg, func(a aggregate) error {
		x := a.(*domain.Approval)
		if !x.Exists() {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no request " + id}
		}
		r := x.Request()
		out = approvalSnap{req: r, status: x.StatusAt(s.now()), required: x.Required(), approvers: x.Approvers(), granted: x.Granted(),
			denial: x.Denial(), delivered: x.Delivered(), anonymous: x.AnonymousRequester(), pollHash: r.PollTokenHash}
		return nil
	})
	return out, err
}

// ApprovalView is what an approver sees of a request (never a value).
type ApprovalView struct {
	ID      string
	Kind    domain.ApprovalKind
	Org     string
	Project string
	Env     string
	Bundle  string
	// Keys are the keys asked for, with the bundle's required flags. For
	// an anonymous request that named a bundle and has no approval yet,
	// they are the bundle's keys as they stand now (KeysFromBundle), and
	// none when the bundle does not exist.
	Keys           []domain.BundleKey
	KeysFromBundle bool
	// Changes are a change request's changes, without their values.
	Changes    []domain.SecretChange
	Requester  domain.Actor
	ClientAddr string
	UserCode   string
	ExpiresAt  time.Time
	Status     domain.ApprovalStatus
	// Required is how many distinct people must approve, the
	// environment's policy as it stands now included.
	Required   int
	ApprovedBy []string
	Granted    []string
	DeniedBy   string
	DenyReason string
	Delivered  []domain.DeliveredKey
}

// Approval returns a request as an approver sees it. Only someone who
// may approve it (the approver's role in the request's environment; any
// signed-in person for a sign-in request) sees it: anyone else is told it
// does not exist.
func (s *Service) Approval(ctx context.Context, actor domain.Actor, id string) (ApprovalView, error) {
	snap, err := s.approvalSnapshot(ctx, id)
	if err != nil {
		return ApprovalView{}, err
	}
	r := snap.req
	notFound := &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no request " + id}
	required := snap.required
	switch r.Kind {
	case domain.ApprovalLogin:
		if actor.Kind != domain.ActorUser {
			return ApprovalView{}, notFound
		}
	default:
		// Approvers see a request, and so does its requester. A member
		// without the approver's role is told so; anyone else learns
		// nothing of it.
		if actor.String() != r.Requester {
			_, err := s.Authorize(ctx, actor, r.Org, r.Project, r.Env, domain.PermApprove)
			var fe *domain.ForbiddenError
			if errors.As(err, &fe) && fe.Outsider {
				return ApprovalView{}, notFound
			}
			if err != nil {
				return ApprovalView{}, err
			}
		}
		if e, err := s.environment(ctx, Env{r.Org, r.Project, r.Env}); err == nil {
			if (r.Kind == domain.ApprovalSecrets && e.Approval.Reveal) || (r.Kind == domain.ApprovalChange && e.Approval.Change) {
				required = max(required, e.Approval.ApproversNeeded())
			}
		} else if !errors.Is(err, domain.ErrNotFound) {
			return ApprovalView{}, err
		}
	}
	requester, _ := domain.ParseActor(r.Requester)
	v := ApprovalView{ID: r.ApprovalID, Kind: r.Kind, Org: r.Org, Project: r.Project, Env: r.Env, Bundle: r.Bundle, Keys: r.Keys,
		Requester: requester, ClientAddr: r.ClientAddr, UserCode: r.UserCode, ExpiresAt: r.ExpiresAt, Status: snap.status,
		Required: required, ApprovedBy: snap.approvers, Granted: snap.granted, DeniedBy: snap.denial.By, DenyReason: snap.denial.Reason,
		Delivered: snap.delivered}
	for _, c := range r.Changes {
		c.Value = domain.Sealed{KeyID: c.Value.KeyID}
		v.Changes = append(v.Changes, c)
	}
	if r.Kind == domain.ApprovalSecrets && len(r.Keys) == 0 && r.Bundle != "" {
		v.KeysFromBundle = true
		keys, err := s.bundleKeys(ctx, r.Org, r.Project, r.Bundle)
		if err != nil && !errors.Is(err, domain.ErrNotFound) {
			return ApprovalView{}, err
		}
		v.Keys = keys
	}
	return v, nil
}

// WaitApproval waits, at most wait, until the request is decided (or
// expires) and returns its status then. Only its requester may wait on
// it (see CollectWithToken for the poll token; an empty one means the
// caller must be the signed-in requester). It does not poll: it sleeps
// until the log moves (through the catalog when the service has one,
// otherwise the store's Wait) and looks again.
func (s *Service) WaitApproval(ctx context.Context, req Request, id, pollToken string, wait time.Duration) (domain.ApprovalStatus, time.Time, error) {
	snap, err := s.approvalSnapshot(ctx, id)
	if err != nil {
		return "", time.Time{}, err
	}
	if err := snap.checkCollector(req.Actor, PollTokenHash(pollToken), pollToken != ""); err != nil {
		return "", time.Time{}, err
	}
	until := s.now().Add(wait)
	for {
		// Note how far the log is before looking, so that an event landing
		// between the look and the wait still wakes the wait.
		var pos uint64
		if s.catalog != nil {
			pos = s.catalog.Position()
		} else {
			h, err := s.store.Head(ctx)
			if err != nil {
				return "", time.Time{}, unavailable(err)
			}
			pos = h.Position
		}
		snap, err := s.approvalSnapshot(ctx, id)
		if err != nil {
			return "", time.Time{}, err
		}
		now := s.now()
		if snap.status != domain.StatusPending || !now.Before(until) {
			return snap.status, snap.req.ExpiresAt, nil
		}
		deadline := until
		if snap.req.ExpiresAt.Before(deadline) {
			deadline = snap.req.ExpiresAt
		}
		wctx, cancel := context.WithTimeout(ctx, deadline.Sub(now))
		if s.catalog != nil {
			err = s.catalog.WaitFor(wctx, pos+1)
		} else {
			_, err = s.store.Wait(wctx, pos+1)
		}
		cancel()
		if ctx.Err() != nil {
			return "", time.Time{}, ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return "", time.Time{}, unavailable(err)
		}
	}
}

// Delivery is what an approved request hands over. For secrets, Sealed
// holds the values as JSON ({"NAME": "value", …}); for a sign-in, the
// session as JSON ({"credential": "stele_ses_…", "user": …,
// "expires_at": …}); either sealed to the requester's one-time public
// key, which only the requester's private key opens. A change request
// delivers nothing sealed: Keys are the secrets it changed.
type Delivery struct {
	Kind   domain.ApprovalKind
	Sealed []byte
	Keys   []domain.DeliveredKey
	// User and ExpiresAt describe the session a sign-in started.
	User      string
	ExpiresAt time.Time
	// Position is the log position of the delivery's last event.
	Position uint64
}

// CLISessionTTL is how long a CLI signed in through an approved sign-in
// request stays signed in.
const CLISessionTTL = 30 * 24 * time.Hour

// Collect delivers an approved request to its signed-in requester, once.
func (s *Service) Collect(ctx context.Context, req Request, id string) (Delivery, error) {
	return s.collect(ctx, req, id, "", false)
}

// CollectWithToken delivers an approved request to the client holding
// its poll token, once.
func (s *Service) CollectWithToken(ctx context.Context, req Request, id, pollToken string) (Delivery, error) {
	return s.collect(ctx, req, id, PollTokenHash(pollToken), true)
}

// collect delivers a request. For secrets the delivery and a
// SecretViewed for each value are in the log before the sealed box is
// made; for a sign-in, the session's start and then the delivery. A
// second collection fails with an error matching
// domain.ErrAlreadyDelivered, a denied request with
// domain.ErrApprovalDenied, an expired one with domain.ErrExpired. A
// change request has nothing to collect: its changes were made when it
// was approved, and collecting it reports them.
func (s *Service) collect(ctx context.Context, req Request, id, tokenHash string, byToken bool) (Delivery, error) {
	snap, err := s.approvalSnapshot(ctx, id)
	if err != nil {
		return Delivery{}, err
	}
	if err := snap.checkCollector(req.Actor, tokenHash, byToken); err != nil {
		return Delivery{}, err
	}
	r := snap.req
	requester, err := domain.ParseActor(r.Requester)
	if err != nil {
		return Delivery{}, err
	}
	req.Actor = requester // the events name the requester, however it proved itself
	req.IdempotencyKey = ""
	switch r.Kind {
	case domain.ApprovalLogin:
		return s.collectLogin(ctx, req, id, r)
	case domain.ApprovalChange:
		if snap.status == domain.StatusDelivered {
			return Delivery{Kind: r.Kind, Keys: snap.delivered}, nil
		}
		if snap.status == domain.StatusApproved { // approved, but its changes were not made: make them now
			keys, res, err := s.applyChange(ctx, req, id)
			if err != nil {
				return Delivery{}, err
			}
			return Delivery{Kind: r.Kind, Keys: keys, Position: res.Position}, nil
		}
		return Delivery{}, s.undeliverable(ctx, id)
	case domain.ApprovalSecrets:
	default:
		return Delivery{}, fmt.Errorf("app: request %s is of unknown kind %q", id, r.Kind)
	}
	if snap.status != domain.StatusApproved {
		return Delivery{}, s.undeliverable(ctx, id)
	}
	required := 0
	if pol, err := s.policy(ctx, Env{r.Org, r.Project, r.Env}); err != nil {
		return Delivery{}, err
	} else if pol.Reveal {
		required = pol.ApproversNeeded()
	}
	// The versions to hand over: the current ones of the secrets that
	// have a readable current value.
	var keys []domain.DeliveredKey
	for _, name := range snap.granted {
		ref := domain.SecretRef{Org: r.Org, Project: r.Project, Env: r.Env, Name: name}
		var v uint64
		err := s.view(ctx, ref.Stream(), newSecretAgg, func(a aggregate) error {
			sec := a.(*domain.Secret)
			if cur, ok := sec.Version(0); ok && !sec.Deleted() && !cur.Destroyed {
				v = cur.Version
			}
			return nil
		})
		if err != nil {
			return Delivery{}, err
		}
		if v > 0 {
			keys = append(keys, domain.DeliveredKey{Name: name, Version: v})
		}
	}
	// Claim the single delivery first: a second collector fails here.
	res, _, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(id), tenant: r.Org, mk: newApprovalAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			return a.(*domain.Approval).Handle(domain.Principal{Actor: req.Actor}, domain.Deliver{Keys: keys, Required: required, Now: s.now()})
		}})
	if err != nil {
		return Delivery{}, err
	}
	// The approval lets the requester read what was approved, this once.
	who := domain.Principal{Actor: requester, Role: domain.RoleDeveloper}
	actx := withApproval(ctx, id)
	values := make(map[string]string, len(keys))
	for _, k := range keys {
		ref := domain.SecretRef{Org: r.Org, Project: r.Project, Env: r.Env, Name: k.Name}
		rv, err := s.reveal(actx, req, who, ref, k.Version, "approval "+id, domain.ChannelApproval)
		if err != nil {
			return Delivery{}, fmt.Errorf("app: delivering %s: %w", k.Name, err)
		}
		values[k.Name] = string(rv.Value)
		clear(rv.Value)
		res.Position = rv.Position
	}
	plain, err := json.Marshal(values)
	clear(values)
	if err != nil {
		return Delivery{}, err
	}
	boxed, err := sealToRequester(r.PublicKey, plain)
	clear(plain)
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{Kind: r.Kind, Sealed: boxed, Keys: keys, Position: res.Position}, nil
}

// undeliverable returns why a request that is not approved cannot be
// delivered (pending, denied, expired or delivered).
func (s *Service) undeliverable(ctx context.Context, id string) error {
	return s.view(ctx, domain.ApprovalStream(id), newApprovalAgg, func(a aggregate) error {
		return a.(*domain.Approval).CheckDeliver(0, s.now())
	})
}

// collectLogin delivers an approved sign-in: a session for the person who
// approved it (method cli, naming the request), sealed to the client's
// key. The session's start and the delivery are both in the log, in that
// order, before the sealed box is made; if another collection claimed the
// delivery meanwhile, the session just started is ended at once.
func (s *Service) collectLogin(ctx context.Context, req Request, id string, r domain.ApprovalRequested) (Delivery, error) {
	var approver string
	if err := s.view(ctx, domain.ApprovalStream(id), newApprovalAgg, func(a aggregate) error {
		x := a.(*domain.Approval)
		if err := x.CheckDeliver(0, s.now()); err != nil {
			return err
		}
		if by := x.Approvers(); len(by) > 0 {
			approver = by[len(by)-1]
		}
		return nil
	}); err != nil {
		return Delivery{}, err
	}
	person, err := domain.ParseActor(approver)
	if err != nil || person.Kind != domain.ActorUser {
		return Delivery{}, fmt.Errorf("app: sign-in %s was approved by %q, not a person", id, approver)
	}
	// The server starts the session for the person, whose approval
	// vouched for the client.
	as := Request{Actor: person, RequestID: req.RequestID, ClientAddr: req.ClientAddr, CorrelationID: req.CorrelationID, CausationID: "approval:" + id}
	sess, _, err := s.StartSession(ctx, as, SessionSpec{User: person.ID, Method: domain.SessionCLI, ApprovalID: id, TTL: CLISessionTTL})
	if err != nil {
		return Delivery{}, err
	}
	res, _, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(id), mk: newApprovalAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			return a.(*domain.Approval).Handle(domain.Principal{Actor: req.Actor}, domain.Deliver{Now: s.now()})
		}})
	if err != nil {
		if _, endErr := s.EndSession(ctx, systemRequest("approvals"), sess.ID, "the sign-in was not delivered"); endErr != nil {
			s.log.Error("a CLI session started for an undelivered sign-in could not be ended", "session", sess.ID, "approval", id, "err", endErr)
		}
		return Delivery{}, err
	}
	plain, err := json.Marshal(struct {
		Credential string    `json:"credential"`
		User       string    `json:"user"`
		ExpiresAt  time.Time `json:"expires_at"`
	}{sess.Credential, person.ID, sess.ExpiresAt})
	if err != nil {
		return Delivery{}, err
	}
	boxed, err := sealToRequester(r.PublicKey, plain)
	clear(plain)
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{Kind: r.Kind, Sealed: boxed, User: person.ID, ExpiresAt: sess.ExpiresAt, Position: res.Position}, nil
}

func sealToRequester(key []byte, plain []byte) ([]byte, error) {
	if len(key) != 32 {
		return nil, errors.New("app: the request holds no 32-byte public key")
	}
	var pub [32]byte
	copy(pub[:], key)
	return crypto.SealTo(&pub, plain)
}

// ExpireApprovals records the expiry of every open request past its
// deadline and returns how many it expired. The server runs it with key
// maintenance.
func (s *Service) ExpireApprovals(ctx context.Context) (int, error) {
	if s.catalog == nil {
		return 0, nil
	}
	if err := s.catchUp(ctx); err != nil {
		return 0, err
	}
	n := 0
	now := s.now()
	req := systemRequest("approvals")
	for id, org := range s.catalog.Expired(now) {
		_, evs, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(id), tenant: org, mk: newApprovalAgg,
			decide: func(a aggregate) ([]domain.Event, error) {
				evs, err := a.(*domain.Approval).Handle(domain.System("approvals"), domain.ExpireApproval{Now: now})
				if errors.Is(err, domain.ErrState) { // decided meanwhile
					return nil, nil
				}
				return evs, err
			}})
		if err != nil {
			return n, err
		}
		n += len(evs)
	}
	return n, nil
}
