package app

import (
	"context"
	"errors"
	"fmt"

	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
)

// CreateSecret creates a secret with its first value, and only creates:
// when the secret exists (deleted or not) it fails with an error matching
// domain.ErrAlreadyExists and appends nothing. It is SetSecret's
// create-only form (HTTP's If-None-Match: *); in.IfVersion must be 0.
func (s *Service) CreateSecret(ctx context.Context, req Request, ref domain.SecretRef, in SetSecret) (Result, error) {
	if in.IfVersion != 0 {
		return Result{}, &domain.ValidationError{Field: "if version", Reason: "a creation has no version to check"}
	}
	if len(in.Value) > crypto.MaxValueSize {
		return Result{}, fmt.Errorf("%w: %d bytes; the limit is %d", ErrValueTooLarge, len(in.Value), crypto.MaxValueSize)
	}
	env := envOf(ref)
	who, err := s.access(ctx, req.Actor, ref.Org, ref.Project, ref.Env)
	if err != nil {
		return Result{}, err
	}
	if _, err := s.environment(ctx, env); err != nil {
		return Result{}, err
	}
	if !who.Role.Can(domain.PermWriteSecret) { // refuse before touching keys
		return Result{}, &domain.ForbiddenError{Actor: req.Actor, Permission: domain.PermWriteSecret, Reason: "role " + string(who.Role)}
	}
	if err := s.checkChange(ctx, who, ref, domain.PermWriteSecret); err != nil { // the environment's approval policy
		return Result{}, err
	}
	res, evs, err := s.execute(ctx, req, command{
		stream: ref.Stream(), tenant: ref.Org, name: "create secret", target: ref.Stream(), mk: newSecretAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			sec := a.(*domain.Secret)
			if sec.Exists() {
				// The domain refuses, and says whether the secret is deleted.
				return sec.Handle(who, domain.CreateSecret{Ref: ref, Metadata: in.Metadata})
			}
			_, ks, err := s.keyset(ctx, req, who, env, true)
			if err != nil {
				return nil, err
			}
			v, err := seal(ks, ref, 1, in.Value)
			if err != nil {
				return nil, err
			}
			return sec.Handle(who, domain.CreateSecret{Ref: ref, Value: v, Metadata: in.Metadata})
		},
	})
	res.Version = versionOf(evs)
	if err == nil && !res.Replayed {
		s.heal(ctx, req, who, ref, evs, in.Value)
	}
	return res, err
}

// KeysetPosition returns the log position of the latest event of env's
// keyset (0 when it has none). A key change (RotateKeyset, DisableKey,
// EnableKey, DestroyKey) reports no position of its own; the position
// read right after it is at least the change's, which is what a reader
// needs to ask the read models for (read-your-writes).
func (s *Service) KeysetPosition(ctx context.Context, env Env) (uint64, error) {
	stream := env.keysetStream()
	e := s.aggs.get(stream, newKeysetAgg)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := s.refresh(ctx, e, stream); err != nil {
		return 0, err
	}
	return e.last, nil
}

// CheckEnvironment fails unless actor has access to env and env exists:
// with an error matching domain.ErrForbidden (an outsider's, when the
// actor has no access at all) or domain.ErrNotFound.
func (s *Service) CheckEnvironment(ctx context.Context, actor domain.Actor, env Env) error {
	if _, err := s.access(ctx, actor, env.Org, env.Project, env.Env); err != nil {
		return err
	}
	_, err := s.environment(ctx, env)
	return err
}

// BundleKeys returns the keys of a bundle of env's project as the ledger
// has them now, for an actor who may read env's metadata.
func (s *Service) BundleKeys(ctx context.Context, actor domain.Actor, env Env, bundle string) ([]domain.BundleKey, error) {
	who, err := s.access(ctx, actor, env.Org, env.Project, env.Env)
	if err != nil {
		return nil, err
	}
	if err := who.Require(domain.PermReadMetadata); err != nil {
		return nil, err
	}
	var keys []domain.BundleKey
	err = s.view(ctx, domain.ProjectStream(env.Org, env.Project), newProjectAgg, func(a aggregate) error {
		k, ok := a.(*domain.Project).Bundle(bundle)
		if !ok {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no bundle " + bundle + " in project " + env.Project}
		}
		keys = k
		return nil
	})
	return keys, err
}

// SecretNames returns, by name, the secrets of env that hold a readable
// current value (neither deleted nor destroyed), as of the log's head
// when it is called, for an actor who may read env's metadata. It needs
// the catalog.
func (s *Service) SecretNames(ctx context.Context, actor domain.Actor, env Env) ([]string, error) {
	who, err := s.access(ctx, actor, env.Org, env.Project, env.Env)
	if err != nil {
		return nil, err
	}
	if err := who.Require(domain.PermReadMetadata); err != nil {
		return nil, err
	}
	if _, err := s.environment(ctx, env); err != nil {
		return nil, err
	}
	if s.catalog == nil {
		return nil, errors.New("app: listing secrets needs the catalog")
	}
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	var names []string
	for _, sec := range s.catalog.Secrets(env) {
		if sec.Current > 0 && !sec.Deleted && !sec.Destroyed {
			names = append(names, sec.Name)
		}
	}
	return names, nil
}
