package app

import (
	"context"
	"errors"

	"stele.dev/stele/domain"
)

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
