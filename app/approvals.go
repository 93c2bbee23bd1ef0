package app

import (
	"context"
	"crypto/rand"
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

// ApprovalSpec describes a request for secrets (or a CLI sign-in).
type ApprovalSpec struct {
	Kind              domain.ApprovalKind
	Org, Project, Env string
	// Bundle names a bundle whose keys are asked for; or Keys lists them.
	Bundle string
	Keys   []string
	// PublicKey is the requester's one-time X25519 public key.
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

// RequestApproval opens a request. For secrets the requester must be a
// member of the project; a sign-in request comes from an anonymous client.
func (s *Service) RequestApproval(ctx context.Context, req Request, spec ApprovalSpec) (ApprovalTicket, Result, error) {
	var who domain.Principal
	var keys []domain.BundleKey
	switch spec.Kind {
	case domain.ApprovalSecrets:
		p, err := s.access(ctx, req.Actor, spec.Org, spec.Project, spec.Env)
		if err != nil {
			return ApprovalTicket{}, Result{}, err
		}
		who = p
		if _, err := s.environment(ctx, Env{spec.Org, spec.Project, spec.Env}); err != nil {
			return ApprovalTicket{}, Result{}, err
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
	default:
		who = domain.Principal{Actor: req.Actor}
	}
	var idb [12]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return ApprovalTicket{}, Result{}, err
	}
	code, err := userCode()
	if err != nil {
		return ApprovalTicket{}, Result{}, err
	}
	ttl := spec.TTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	now := s.now()
	t := ApprovalTicket{ID: hex.EncodeToString(idb[:]), UserCode: code, ExpiresAt: now.Add(ttl).UTC()}
	cmd := domain.RequestApproval{ApprovalID: t.ID, Kind: spec.Kind, Org: spec.Org, Project: spec.Project, Env: spec.Env, Bundle: spec.Bundle,
		Keys: keys, PublicKey: spec.PublicKey, UserCode: code, ClientAddr: req.ClientAddr, ExpiresAt: t.ExpiresAt,
		Approvals: spec.Approvals, SelfApproval: spec.SelfApproval, Now: now}
	res, _, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(t.ID), tenant: spec.Org, mk: newApprovalAgg,
		decide: func(a aggregate) ([]domain.Event, error) { return a.(*domain.Approval).Handle(who, cmd) }})
	if err != nil {
		return ApprovalTicket{}, res, err
	}
	return t, res, nil
}

// approvalCommand runs a decision on a request with the decider's role in
// the request's environment.
func (s *Service) approvalCommand(ctx context.Context, req Request, id string, cmd func(domain.ApprovalRequested) any) (Result, error) {
	var r domain.ApprovalRequested
	if err := s.view(ctx, domain.ApprovalStream(id), newApprovalAgg, func(a aggregate) error {
		ap := a.(*domain.Approval)
		if !ap.Exists() {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no request " + id}
		}
		r = ap.Request()
		return nil
	}); err != nil {
		return Result{}, err
	}
	who := domain.Principal{Actor: req.Actor}
	if r.Kind == domain.ApprovalSecrets {
		p, err := s.access(ctx, req.Actor, r.Org, r.Project, r.Env)
		if err != nil {
			return Result{}, err
		}
		who = p
	}
	c := cmd(r)
	res, _, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(id), tenant: r.Org, mk: newApprovalAgg,
		decide: func(a aggregate) ([]domain.Event, error) { return a.(*domain.Approval).Handle(who, c) }})
	return res, err
}

// Approve lets the chosen keys through (every required key among them).
func (s *Service) Approve(ctx context.Context, req Request, id string, keys []string) (Result, error) {
	return s.approvalCommand(ctx, req, id, func(domain.ApprovalRequested) any { return domain.Approve{Keys: keys, Now: s.now()} })
}

// Deny refuses a request (the requester may withdraw their own).
func (s *Service) Deny(ctx context.Context, req Request, id, reason string) (Result, error) {
	return s.approvalCommand(ctx, req, id, func(domain.ApprovalRequested) any { return domain.Deny{Reason: reason, Now: s.now()} })
}

// Delivery is what an approved request hands over: the values, as JSON
// ({"NAME": "value", …}), sealed to the requester's one-time public key,
// which only the requester's private key opens.
type Delivery struct {
	Sealed []byte
	Keys   []domain.DeliveredKey
}

// Collect delivers an approved request for secrets, once. The delivery
// and a SecretViewed for each value are in the log before the sealed box
// is returned.
func (s *Service) Collect(ctx context.Context, req Request, id string) (Delivery, error) {
	var r domain.ApprovalRequested
	var granted []string
	if err := s.view(ctx, domain.ApprovalStream(id), newApprovalAgg, func(a aggregate) error {
		x := a.(*domain.Approval)
		if !x.Exists() {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no request " + id}
		}
		r, granted = x.Request(), x.Granted()
		return nil
	}); err != nil {
		return Delivery{}, err
	}
	if r.Kind != domain.ApprovalSecrets {
		return Delivery{}, &domain.StateError{Sentinel: domain.ErrState, Reason: "sign-in requests are delivered by the API"}
	}
	requester, err := domain.ParseActor(r.Requester)
	if err != nil {
		return Delivery{}, err
	}
	if req.Actor != requester {
		return Delivery{}, &domain.ForbiddenError{Actor: req.Actor, Permission: domain.PermRequest, Reason: "only the requester collects a delivery"}
	}
	// The versions to hand over: the current ones.
	var keys []domain.DeliveredKey
	for _, name := range granted {
		ref := domain.SecretRef{Org: r.Org, Project: r.Project, Env: r.Env, Name: name}
		var v uint64
		err := s.view(ctx, ref.Stream(), newSecretAgg, func(a aggregate) error {
			v = a.(*domain.Secret).Current()
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
	if _, _, err := s.execute(ctx, req, command{stream: domain.ApprovalStream(id), tenant: r.Org, mk: newApprovalAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			return a.(*domain.Approval).Handle(domain.Principal{Actor: req.Actor}, domain.Deliver{Keys: keys, Now: s.now()})
		}}); err != nil {
		return Delivery{}, err
	}
	// The approval lets the requester read what was approved, this once.
	who := domain.Principal{Actor: requester, Role: domain.RoleDeveloper}
	values := make(map[string]string, len(keys))
	for _, k := range keys {
		ref := domain.SecretRef{Org: r.Org, Project: r.Project, Env: r.Env, Name: k.Name}
		rv, err := s.reveal(ctx, req, who, ref, k.Version, "approval "+id, domain.ChannelApproval)
		if err != nil {
			return Delivery{}, fmt.Errorf("app: delivering %s: %w", k.Name, err)
		}
		values[k.Name] = string(rv.Value)
		clear(rv.Value)
	}
	plain, err := json.Marshal(values)
	clear(values)
	if err != nil {
		return Delivery{}, err
	}
	var pub [32]byte
	copy(pub[:], r.PublicKey)
	boxed, err := crypto.SealTo(&pub, plain)
	clear(plain)
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{Sealed: boxed, Keys: keys}, nil
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
