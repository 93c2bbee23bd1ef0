package app

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
)

// An environment's approval policy (domain.ApprovalPolicy) is enforced
// here, for every channel (API, CLI, pages): with Reveal set, a value
// leaves the server only through an approved request for secrets; with
// Change set, a value changes (set, roll back, delete, restore, destroy a
// version) only through an approved change request. Stele's own jobs
// (resealing, rotation) are not bound by it.

// approvalKey marks a context in which an approved request acts: its
// reveals and changes are what the policy asked approvers for. Only this
// package can set it.
type approvalKey struct{}

func withApproval(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, approvalKey{}, id)
}

func approvedBy(ctx context.Context) string {
	id, _ := ctx.Value(approvalKey{}).(string)
	return id
}

// policy returns an environment's approval policy.
func (s *Service) policy(ctx context.Context, env Env) (domain.ApprovalPolicy, error) {
	e, err := s.environment(ctx, env)
	if err != nil {
		return domain.ApprovalPolicy{}, err
	}
	return e.Approval, nil
}

// checkReveal fails with an error matching domain.ErrApprovalRequired
// when the environment's policy keeps who from revealing a value of ref
// directly. A caller lacking the role is left to the domain, which says
// so.
func (s *Service) checkReveal(ctx context.Context, who domain.Principal, ref domain.SecretRef) error {
	if approvedBy(ctx) != "" || who.Actor.Kind == domain.ActorSystem || !who.Role.Can(domain.PermRevealValue) {
		return nil
	}
	p, err := s.policy(ctx, envOf(ref))
	if errors.Is(err, domain.ErrNotFound) {
		return nil // the command says what is missing
	}
	if err != nil {
		return err
	}
	return p.CheckReveal(who)
}

// checkChange is checkReveal for changes of values; perm is the
// permission the change needs.
func (s *Service) checkChange(ctx context.Context, who domain.Principal, ref domain.SecretRef, perm domain.Permission) error {
	if approvedBy(ctx) != "" || who.Actor.Kind == domain.ActorSystem || !who.Role.Can(perm) {
		return nil
	}
	p, err := s.policy(ctx, envOf(ref))
	if errors.Is(err, domain.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return p.CheckChange(who)
}

// checkChangeCommand applies checkChange to a secret command; metadata
// changes are not changes of values.
func (s *Service) checkChangeCommand(ctx context.Context, who domain.Principal, ref domain.SecretRef, cmd any) error {
	switch cmd.(type) {
	case domain.DeleteSecret, domain.RestoreSecret:
		return s.checkChange(ctx, who, ref, domain.PermWriteSecret)
	case domain.DestroySecretVersion:
		return s.checkChange(ctx, who, ref, domain.PermDestroyVersion)
	}
	return nil
}

// changeADTag opens the associated data of a change request's values.
const changeADTag = "stele/change-request/v1"

// changeAD binds a value carried by a change request to that request and
// secret, so that it opens for nothing else (not as a secret's version,
// whose associated data has another tag, nor for another request):
//
//	"stele/change-request/v1" | org | project | env | approval id | name
//
// each field a 4-byte big-endian length and its bytes, as crypto.ValueAD.
func changeAD(env Env, approvalID, name string) []byte {
	b := make([]byte, 0, 24+len(changeADTag)+len(env.Org)+len(env.Project)+len(env.Env)+len(approvalID)+len(name))
	for _, f := range []string{changeADTag, env.Org, env.Project, env.Env, approvalID, name} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// ChangeSpec is one change a change request asks for. Value is the new
// value of a set, in plaintext: RequestApproval seals it under the
// environment's keyset before anything is recorded.
type ChangeSpec struct {
	Name        string
	Op          domain.ChangeOp
	BaseVersion uint64
	Version     uint64
	Value       []byte
}

// sealChanges seals the values of a change request, bound to it.
func (s *Service) sealChanges(ctx context.Context, req Request, who domain.Principal, env Env, id string, specs []ChangeSpec) ([]domain.SecretChange, error) {
	var ks *crypto.Keyset
	out := make([]domain.SecretChange, 0, len(specs))
	for _, c := range specs {
		ch := domain.SecretChange{Name: c.Name, Op: c.Op, BaseVersion: c.BaseVersion, Version: c.Version}
		if c.Op == domain.ChangeSet {
			if len(c.Value) > crypto.MaxValueSize {
				return nil, fmt.Errorf("%w: %s has %d bytes; the limit is %d", ErrValueTooLarge, c.Name, len(c.Value), crypto.MaxValueSize)
			}
			if ks == nil {
				var err error
				if _, ks, err = s.keyset(ctx, req, who, env, true); err != nil {
					return nil, err
				}
			}
			ct, kid, err := ks.Encrypt(c.Value, changeAD(env, id, c.Name))
			if err != nil {
				return nil, err
			}
			ch.Value = domain.Sealed{KeyID: uint32(kid), Ciphertext: ct}
		} else if len(c.Value) > 0 {
			return nil, &domain.ValidationError{Field: "changes", Reason: c.Name + ": only a set carries a value"}
		}
		out = append(out, ch)
	}
	return out, nil
}

// checkBases fails with a *domain.VersionMismatchError unless every
// secret a change request touches is still at the version the request
// was based on.
func (s *Service) checkBases(ctx context.Context, r domain.ApprovalRequested) error {
	for _, c := range r.Changes {
		ref := domain.SecretRef{Org: r.Org, Project: r.Project, Env: r.Env, Name: c.Name}
		var cur uint64
		if err := s.view(ctx, ref.Stream(), newSecretAgg, func(a aggregate) error {
			cur = a.(*domain.Secret).Current()
			return nil
		}); err != nil {
			return err
		}
		if cur != c.BaseVersion {
			return &domain.VersionMismatchError{Expected: c.BaseVersion, Actual: cur}
		}
	}
	return nil
}

// plannedVersions are the versions of the secrets after a change request.
func plannedVersions(r domain.ApprovalRequested) []domain.DeliveredKey {
	out := make([]domain.DeliveredKey, 0, len(r.Changes))
	for _, c := range r.Changes {
		v := c.BaseVersion
		if c.Op == domain.ChangeSet || c.Op == domain.ChangeRollback {
			v++
		}
		out = append(out, domain.DeliveredKey{Name: c.Name, Version: v})
	}
	return out
}

// applyChange makes an approved change request's changes. It claims the
// request's single delivery first (approval.delivered, naming each
// secret's version after the change), so that the changes are made once,
// then makes each change as the requester, with the requester's role now
// and the approval as the events' causation, each only if the secret is
// still at the version the request was based on.
func (s *Service) applyChange(ctx context.Context, req Request, id string) ([]domain.DeliveredKey, Result, error) {
	var r domain.ApprovalRequested
	if err := s.view(ctx, domain.ApprovalStream(id), newApprovalAgg, func(a aggregate) error {
		x := a.(*domain.Approval)
		if !x.Exists() {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no request " + id}
		}
		r = x.Request()
		return nil
	}); err != nil {
		return nil, Result{}, err
	}
	requester, err := domain.ParseActor(r.Requester)
	if err != nil {
		return nil, Result{}, err
	}
	env := Env{r.Org, r.Project, r.Env}
	as := Request{Actor: requester, RequestID: req.RequestID, ClientAddr: r.ClientAddr, CorrelationID: req.CorrelationID, CausationID: "approval:" + id}
	who, err := s.access(ctx, requester, r.Org, r.Project, r.Env)
	if err != nil {
		return nil, Result{}, err
	}
	pol, err := s.policy(ctx, env)
	if err != nil {
		return nil, Result{}, err
	}
	required := 0
	if pol.Change {
		required = pol.ApproversNeeded()
	}
	if err := s.checkBases(ctx, r); err != nil {
		return nil, Result{}, err
	}
	planned := plannedVersions(r)
	res, _, err := s.execute(ctx, as, command{stream: domain.ApprovalStream(id), tenant: r.Org, mk: newApprovalAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			return a.(*domain.Approval).Handle(who, domain.Deliver{Keys: planned, Required: required, Now: s.now()})
		}})
	if err != nil {
		return nil, res, err
	}
	actx := withApproval(ctx, id)
	for _, c := range r.Changes {
		ref := domain.SecretRef{Org: r.Org, Project: r.Project, Env: r.Env, Name: c.Name}
		cres, err := s.applyOne(actx, as, who, ref, id, c)
		if err != nil {
			return nil, res, fmt.Errorf("app: applying the change of %s approved in %s: %w", c.Name, id, err)
		}
		res.Position = cres.Position
	}
	return planned, res, nil
}

// applyOne makes one change of an approved change request.
func (s *Service) applyOne(ctx context.Context, req Request, who domain.Principal, ref domain.SecretRef, id string, c domain.SecretChange) (Result, error) {
	env := envOf(ref)
	var plain []byte
	defer func() { clear(plain) }()
	res, evs, err := s.execute(ctx, req, command{stream: ref.Stream(), tenant: ref.Org, mk: newSecretAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			sec := a.(*domain.Secret)
			if sec.Current() != c.BaseVersion {
				return nil, &domain.VersionMismatchError{Expected: c.BaseVersion, Actual: sec.Current()}
			}
			switch c.Op {
			case domain.ChangeSet, domain.ChangeRollback:
				var value []byte
				var err error
				if c.Op == domain.ChangeSet {
					value, err = s.openChange(ctx, req, who, env, id, c)
				} else {
					if err = sec.CheckRollback(who, c.Version); err != nil {
						return nil, err
					}
					old, _ := sec.Version(c.Version)
					value, err = s.open(ctx, req, who, ref, old)
				}
				if err != nil {
					return nil, err
				}
				clear(plain)
				plain = value
				_, ks, err := s.keyset(ctx, req, who, env, false)
				if err != nil {
					return nil, err
				}
				v, err := seal(ks, ref, sec.Current()+1, value)
				if err != nil {
					return nil, err
				}
				switch {
				case c.Op == domain.ChangeRollback:
					return sec.Handle(who, domain.RollbackSecret{To: c.Version, Value: v})
				case sec.Exists():
					return sec.Handle(who, domain.UpdateSecret{Value: v, IfVersion: c.BaseVersion})
				default:
					return sec.Handle(who, domain.CreateSecret{Ref: ref, Value: v})
				}
			case domain.ChangeDelete:
				return sec.Handle(who, domain.DeleteSecret{})
			case domain.ChangeRestore:
				return sec.Handle(who, domain.RestoreSecret{})
			case domain.ChangeDestroy:
				return sec.Handle(who, domain.DestroySecretVersion{Version: c.Version})
			}
			return nil, &domain.ValidationError{Field: "changes", Reason: strconv.Quote(string(c.Op)) + " is not a change"}
		}})
	if err == nil && plain != nil {
		s.heal(ctx, req, who, ref, evs, plain)
	}
	return res, err
}

// openChange decrypts the value a change request carries for one secret.
func (s *Service) openChange(ctx context.Context, req Request, who domain.Principal, env Env, id string, c domain.SecretChange) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		_, ks, err := s.keyset(ctx, req, who, env, false)
		if err != nil {
			return nil, err
		}
		value, err := ks.Decrypt(c.Value.Ciphertext, changeAD(env, id, c.Name))
		switch {
		case err == nil:
			return value, nil
		case errors.Is(err, crypto.ErrKeyNotFound) && attempt == 0:
			s.keys.cache.drop(env.materialID())
			continue
		case errors.Is(err, crypto.ErrKeyNotFound), errors.Is(err, crypto.ErrKeyDisabled):
			return nil, &domain.StateError{Sentinel: domain.ErrState, Reason: fmt.Sprintf("the new value of %s was sealed by key %d, which is no longer usable; make a new request", c.Name, c.Value.KeyID)}
		default:
			return nil, fmt.Errorf("app: the new value of %s: %w", c.Name, err)
		}
	}
}
