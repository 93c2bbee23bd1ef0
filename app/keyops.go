package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
)

// systemRequest is the request of one of Stele's background jobs.
func systemRequest(job string) Request {
	var b [8]byte
	rand.Read(b[:])
	return Request{Actor: domain.System(job).Actor, RequestID: job + "-" + hex.EncodeToString(b[:])}
}

// principal works out who a request is in an environment.
func (s *Service) principal(ctx context.Context, req Request, env Env) (domain.Principal, error) {
	if req.Actor.Kind == domain.ActorSystem {
		return domain.Principal{Actor: req.Actor, Role: domain.RoleOwner}, nil
	}
	return s.access(ctx, req.Actor, env.Org, env.Project, env.Env)
}

// KeysetStatus describes an environment's data keys.
type KeysetStatus struct {
	Env             Env
	KEK             string
	Primary         uint32
	PrimarySince    time.Time
	Keys            []domain.KeysetKey
	MaterialVersion uint64
	// ResealComplete: every current value is sealed by the primary key.
	ResealComplete bool
	// Pending counts current values not yet sealed by the primary key
	// (from the catalog; -1 when the service has none).
	Pending int
	// RotationDue: the primary key is older than the environment's interval.
	RotationDue bool
}

// KeysetStatus returns the state of an environment's keyset.
func (s *Service) KeysetStatus(ctx context.Context, req Request, env Env) (KeysetStatus, error) {
	who, err := s.principal(ctx, req, env)
	if err != nil {
		return KeysetStatus{}, err
	}
	if !who.Role.Can(domain.PermReadMetadata) {
		return KeysetStatus{}, &domain.ForbiddenError{Actor: req.Actor, Permission: domain.PermReadMetadata}
	}
	settings, err := s.environment(ctx, env)
	if err != nil {
		return KeysetStatus{}, err
	}
	var info keysetInfo
	if err := s.view(ctx, env.keysetStream(), newKeysetAgg, func(a aggregate) error { info = infoOf(a.(*domain.Keyset)); return nil }); err != nil {
		return KeysetStatus{}, err
	}
	if !info.exists {
		return KeysetStatus{}, &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "environment " + env.String() + " has no keyset yet"}
	}
	st := KeysetStatus{Env: env, KEK: info.kek, Primary: info.primary, PrimarySince: info.primarySince, Keys: info.keys,
		MaterialVersion: info.material.Version, ResealComplete: info.resealed, Pending: -1,
		RotationDue: s.now().Sub(info.primarySince) >= settings.RotationInterval()}
	if s.catalog != nil {
		if err := s.catchUp(ctx); err != nil {
			return st, err
		}
		st.Pending = s.catalog.NotUnder(env, info.primary)
	}
	return st, nil
}

// RotateKeyset adds a new data key to the environment's keyset and makes
// it the primary; the resealer then reseals current values under it.
func (s *Service) RotateKeyset(ctx context.Context, req Request, env Env, reason string) (KeysetStatus, error) {
	return s.rotate(ctx, req, env, reason, nil)
}

// rotate rotates, unless due says the rotation is no longer due (another
// process rotated meanwhile).
func (s *Service) rotate(ctx context.Context, req Request, env Env, reason string, due func(keysetInfo) bool) (KeysetStatus, error) {
	who, err := s.principal(ctx, req, env)
	if err != nil {
		return KeysetStatus{}, err
	}
	var newID crypto.KeyID
	_, err = s.changeKeyset(ctx, req, env, "rotate", func(cur keysetInfo) (*crypto.Keyset, error) {
		if !cur.exists {
			return nil, &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "environment " + env.String() + " has no keyset yet"}
		}
		if due != nil && !due(cur) {
			return nil, nil
		}
		if !who.Role.Can(domain.PermRotateKeys) {
			return nil, &domain.ForbiddenError{Actor: req.Actor, Permission: domain.PermRotateKeys, Reason: "role " + string(who.Role)}
		}
		ks, err := s.keys.unwrap(ctx, env, cur)
		if err != nil {
			return nil, err
		}
		next, id, err := ks.Rotate()
		newID = id
		return next, err
	}, func(cur keysetInfo, m domain.Material, _ *crypto.Keyset) (domain.Principal, any) {
		return who, domain.RotateKeyset{KeyID: uint32(newID), Reason: reason, Material: m, Now: s.now()}
	})
	if err != nil {
		return KeysetStatus{}, err
	}
	return s.KeysetStatus(ctx, systemRequest("status"), env)
}

// DisableKey disables a data key that seals no current value.
func (s *Service) DisableKey(ctx context.Context, req Request, env Env, id uint32) (KeysetStatus, error) {
	inUse := -1
	if s.catalog != nil {
		if err := s.catchUp(ctx); err != nil {
			return KeysetStatus{}, err
		}
		inUse = s.catalog.InUse(env, id)
	}
	if inUse < 0 {
		return KeysetStatus{}, errors.New("app: cannot tell whether the key is in use without the catalog")
	}
	var info keysetInfo
	if err := s.view(ctx, env.keysetStream(), newKeysetAgg, func(a aggregate) error { info = infoOf(a.(*domain.Keyset)); return nil }); err != nil {
		return KeysetStatus{}, err
	}
	if info.exists && !info.resealed {
		return KeysetStatus{}, &domain.StateError{Sentinel: domain.ErrState,
			Reason: fmt.Sprintf("values of %s are still being resealed under key %d; disable older keys once that completes (stele keys status)", env, info.primary)}
	}
	return s.keyChange(ctx, req, env, "disable key", func(ks *crypto.Keyset) (*crypto.Keyset, error) { return ks.Disable(crypto.KeyID(id)) },
		func(m domain.Material) any { return domain.DisableKey{KeyID: id, InUse: inUse, Material: m} })
}

// EnableKey re-enables a disabled data key.
func (s *Service) EnableKey(ctx context.Context, req Request, env Env, id uint32) (KeysetStatus, error) {
	return s.keyChange(ctx, req, env, "enable key", func(ks *crypto.Keyset) (*crypto.Keyset, error) { return ks.Enable(crypto.KeyID(id)) },
		func(m domain.Material) any { return domain.EnableKey{KeyID: id, Material: m} })
}

// DestroyKey erases a disabled data key: every value only it sealed is
// unreadable from then on (crypto-shredding); the log still verifies.
func (s *Service) DestroyKey(ctx context.Context, req Request, env Env, id uint32) (KeysetStatus, error) {
	return s.keyChange(ctx, req, env, "destroy key", func(ks *crypto.Keyset) (*crypto.Keyset, error) { return ks.Destroy(crypto.KeyID(id)) },
		func(m domain.Material) any { return domain.DestroyKey{KeyID: id, Material: m} })
}

// RewrapKeyset wraps the environment's keyset under this service's KEK
// (KEK rotation); the keys themselves do not change.
func (s *Service) RewrapKeyset(ctx context.Context, req Request, env Env) (KeysetStatus, error) {
	who, err := s.principal(ctx, req, env)
	if err != nil {
		return KeysetStatus{}, err
	}
	_, err = s.changeKeyset(ctx, req, env, "rewrap", func(cur keysetInfo) (*crypto.Keyset, error) {
		if !cur.exists || cur.kek == s.keys.kek.URI() {
			return nil, nil
		}
		return s.keys.unwrap(ctx, env, cur)
	}, func(cur keysetInfo, m domain.Material, _ *crypto.Keyset) (domain.Principal, any) {
		return who, domain.RewrapKeyset{To: s.keys.kek.URI(), Material: m}
	})
	if err != nil {
		return KeysetStatus{}, err
	}
	return s.KeysetStatus(ctx, systemRequest("status"), env)
}

// keyChange runs a keyset change that derives the next keyset from the
// current one. The domain decides first (changeKeyset asks it before
// storing anything), so the crypto change runs only when allowed.
func (s *Service) keyChange(ctx context.Context, req Request, env Env, name string, derive func(*crypto.Keyset) (*crypto.Keyset, error), cmd func(domain.Material) any) (KeysetStatus, error) {
	who, err := s.principal(ctx, req, env)
	if err != nil {
		return KeysetStatus{}, err
	}
	_, err = s.changeKeyset(ctx, req, env, name, func(cur keysetInfo) (*crypto.Keyset, error) {
		if !cur.exists {
			return nil, &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "environment " + env.String() + " has no keyset yet"}
		}
		// Ask the domain with a placeholder material first, so that a
		// refused change fails with the domain's reason, not the crypto's.
		if _, err := s.decideKeyset(ctx, env, who, cmd(domain.Material{Version: cur.material.Version + 1, Hash: placeholderHash})); err != nil {
			return nil, err
		}
		ks, err := s.keys.unwrap(ctx, env, cur)
		if err != nil {
			return nil, err
		}
		return derive(ks)
	}, func(cur keysetInfo, m domain.Material, _ *crypto.Keyset) (domain.Principal, any) {
		return who, cmd(m)
	})
	if err != nil {
		return KeysetStatus{}, err
	}
	return s.KeysetStatus(ctx, systemRequest("status"), env)
}

var placeholderHash = hex.EncodeToString(make([]byte, 32))

// decideKeyset asks the keyset aggregate about a command without
// appending. The caller holds the keyset's lock (changeKeyset does).
func (s *Service) decideKeyset(ctx context.Context, env Env, who domain.Principal, cmd any) ([]domain.Event, error) {
	e := s.aggs.get(env.keysetStream(), newKeysetAgg)
	return e.agg.(*domain.Keyset).Handle(who, cmd)
}

// catchUp waits until the catalog has applied the log's current head.
func (s *Service) catchUp(ctx context.Context) error {
	h, err := s.store.Head(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.catalog.WaitFor(wctx, h.Position); err != nil {
		return fmt.Errorf("app: the catalog is behind the log: %w", err)
	}
	return nil
}

// ResealReport says what a reseal pass did.
type ResealReport struct {
	Env       Env
	Primary   uint32
	Resealed  int
	Remaining int
}

// Reseal re-encrypts every current value of env that is not sealed by the
// primary key, then records that the keyset is fully resealed.
func (s *Service) Reseal(ctx context.Context, env Env) (ResealReport, error) {
	if s.catalog == nil {
		return ResealReport{}, errors.New("app: resealing needs the catalog")
	}
	req := systemRequest("resealer")
	who := domain.System("resealer")
	rep := ResealReport{Env: env}
	for pass := 0; pass < 5; pass++ {
		if err := s.catchUp(ctx); err != nil {
			return rep, err
		}
		info, _, err := s.keyset(ctx, req, who, env, false)
		if err != nil {
			return rep, err
		}
		rep.Primary = info.primary
		var todo []domain.SecretRef
		for _, sec := range s.catalog.Secrets(env) {
			if sec.KeyID != info.primary && !sec.Destroyed && sec.Current > 0 {
				todo = append(todo, domain.SecretRef{Org: env.Org, Project: env.Project, Env: env.Env, Name: sec.Name})
			}
		}
		n, err := s.resealAll(ctx, req, who, todo)
		rep.Resealed += n
		if err != nil {
			return rep, err
		}
		if len(todo) == 0 {
			rep.Remaining = 0
			_, _, err := s.execute(ctx, req, command{stream: env.keysetStream(), tenant: env.Org, mk: newKeysetAgg,
				decide: func(a aggregate) ([]domain.Event, error) {
					return a.(*domain.Keyset).Handle(who, domain.CompleteReseal{KeyID: info.primary, Values: rep.Resealed})
				}})
			if errors.Is(err, domain.ErrState) { // rotated again meanwhile: the next pass catches up
				err = nil
			}
			return rep, err
		}
	}
	if err := s.catchUp(ctx); err == nil {
		info, _, _ := s.keyset(ctx, req, who, env, false)
		rep.Remaining = s.catalog.NotUnder(env, info.primary)
	}
	return rep, nil
}

// resealWorkers is how many secrets the resealer works on at once.
const resealWorkers = 16

// resealAll reseals refs with resealWorkers goroutines and returns how
// many it resealed; it stops at the first error.
func (s *Service) resealAll(ctx context.Context, req Request, who domain.Principal, refs []domain.SecretRef) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan domain.SecretRef)
	var mu sync.Mutex
	var firstErr error
	done := 0
	var wg sync.WaitGroup
	for range min(resealWorkers, len(refs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ref := range work {
				n, err := s.resealOne(ctx, req, who, ref)
				mu.Lock()
				done += n
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	for _, ref := range refs {
		select {
		case work <- ref:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	return done, firstErr
}

// resealOne reseals one secret's current version under the primary key;
// it returns 1 if it did.
func (s *Service) resealOne(ctx context.Context, req Request, who domain.Principal, ref domain.SecretRef) (int, error) {
	env := envOf(ref)
	_, evs, err := s.execute(ctx, req, command{stream: ref.Stream(), tenant: ref.Org, mk: newSecretAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			sec := a.(*domain.Secret)
			cur, ok := sec.Version(0)
			if !ok || cur.Destroyed {
				return nil, nil
			}
			info, ks, err := s.keyset(ctx, req, who, env, false)
			if err != nil {
				return nil, err
			}
			if cur.Value.KeyID == info.primary {
				return nil, nil
			}
			value, err := s.open(ctx, req, who, ref, cur)
			if err != nil {
				if errors.Is(err, domain.ErrDestroyed) {
					return nil, nil // nothing left to reseal
				}
				return nil, err
			}
			v, err := seal(ks, ref, cur.Version, value)
			clear(value)
			if err != nil {
				return nil, err
			}
			return sec.Handle(who, domain.ResealSecret{Version: cur.Version, FromKeyID: cur.Value.KeyID, Value: v})
		}})
	return len(evs), err
}

// RunKeyMaintenance rotates every environment's keyset when its interval
// has passed and reseals what needs it, now and then every interval,
// until ctx is done. A server that was down catches up on start.
func (s *Service) RunKeyMaintenance(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.MaintainKeys(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// MaintainKeys does one round of RunKeyMaintenance; it also records the
// expiry of approval requests past their deadline.
func (s *Service) MaintainKeys(ctx context.Context) {
	if s.catalog == nil {
		return
	}
	if err := s.catchUp(ctx); err != nil {
		if ctx.Err() != nil {
			return // stopping
		}
		s.log.Warn("key maintenance waits for the catalog", "err", err)
		return
	}
	if n, err := s.ExpireApprovals(ctx); err != nil {
		s.log.Error("expiring approval requests", "err", err)
	} else if n > 0 {
		s.log.Info("approval requests expired", "count", n)
	}
	for _, env := range s.catalog.Envs() {
		if ctx.Err() != nil {
			return
		}
		settings, ok := s.catalog.Settings(env)
		if !ok {
			continue
		}
		interval := settings.RotationInterval()
		now := s.now()
		due := func(cur keysetInfo) bool { return interval > 0 && now.Sub(cur.primarySince) >= interval }
		st, err := s.rotate(ctx, systemRequest("rotation"), env, "scheduled", due)
		if err != nil {
			s.log.Error("scheduled key rotation failed", "env", env.String(), "err", err)
			continue
		}
		if st.ResealComplete {
			continue
		}
		rep, err := s.Reseal(ctx, env)
		if err != nil {
			s.log.Error("resealing failed", "env", env.String(), "err", err)
			continue
		}
		s.log.Info("resealed", "env", env.String(), "primary", rep.Primary, "values", rep.Resealed, "remaining", rep.Remaining)
	}
}

// CleanKeyMaterial erases stored key material that the ledger does not
// name (left by a crash between storing material and appending its event)
// and versions the ledger has replaced. It returns how many versions it
// erased.
func (s *Service) CleanKeyMaterial(ctx context.Context) (int, error) {
	envs, err := s.keys.material.Envs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range envs {
		parts := strings.Split(id, "/")
		if len(parts) != 3 {
			continue
		}
		env := Env{Org: parts[0], Project: parts[1], Env: parts[2]}
		var info keysetInfo
		if err := s.view(ctx, env.keysetStream(), newKeysetAgg, func(a aggregate) error { info = infoOf(a.(*domain.Keyset)); return nil }); err != nil {
			return n, err
		}
		vs, err := s.keys.material.Versions(ctx, id)
		if err != nil {
			return n, err
		}
		var drop []uint64
		for _, v := range vs {
			if v == info.material.Version {
				continue
			}
			if v > info.material.Version {
				if m, err := s.keys.material.Get(ctx, id, v); err != nil || s.now().Sub(m.CreatedAt) < time.Minute {
					continue // may be a change in progress
				}
			}
			drop = append(drop, v)
		}
		if len(drop) > 0 {
			if err := s.keys.material.Delete(ctx, id, drop...); err != nil {
				return n, err
			}
			n += len(drop)
		}
	}
	return n, nil
}
