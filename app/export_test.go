package app

import (
	"context"

	"stele.dev/stele/domain"
)

// UnwrapForTest unwraps env's current keyset, from the cache unless cold.
func (s *Service) UnwrapForTest(ctx context.Context, env Env, cold bool) error {
	var info keysetInfo
	if err := s.view(ctx, env.keysetStream(), newKeysetAgg, func(a aggregate) error { info = infoOf(a.(*domain.Keyset)); return nil }); err != nil {
		return err
	}
	if cold {
		s.keys.cache.drop(env.materialID())
	}
	_, err := s.keys.unwrap(ctx, env, info)
	return err
}
