package app

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
)

// Env names one project environment.
type Env struct {
	Org, Project, Env string
}

func (e Env) String() string { return e.Org + "/" + e.Project + "/" + e.Env }

// materialID is the environment's id in the material store.
func (e Env) materialID() string { return e.String() }

func (e Env) keysetStream() string { return domain.KeysetStream(e.Org, e.Project, e.Env) }

func (e Env) ad() []byte { return crypto.KeysetAD(e.Org, e.Project, e.Env) }

// keysetInfo is a copy of a keyset aggregate's state, safe to use outside
// the aggregate's lock.
type keysetInfo struct {
	exists       bool
	version      uint64
	kek          string
	material     domain.Material
	primary      uint32
	primarySince time.Time
	keys         []domain.KeysetKey
	destroyed    []uint32
	resealed     bool
}

func infoOf(k *domain.Keyset) keysetInfo {
	return keysetInfo{exists: k.Exists(), version: k.Version(), kek: k.KEK(), material: k.Material(), primary: k.Primary(),
		primarySince: k.PrimarySince(), keys: k.Keys(), destroyed: k.Destroyed(), resealed: k.ResealComplete()}
}

// keys holds the KEKs and the cache of unwrapped keysets.
type keys struct {
	material crypto.MaterialStore
	kek      crypto.KEK
	openKEK  func(uri string) (crypto.KEK, error)
	cache    *keysetCache
	log      *slog.Logger

	mu   sync.Mutex
	keks map[string]crypto.KEK
}

// kekFor returns the KEK a keyset is wrapped by.
func (k *keys) kekFor(uri string) (crypto.KEK, error) {
	if uri == k.kek.URI() {
		return k.kek, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if kek, ok := k.keks[uri]; ok {
		return kek, nil
	}
	if k.openKEK == nil {
		return nil, fmt.Errorf("app: keyset wrapped by %s, which this server cannot open (it uses %s)", uri, k.kek.URI())
	}
	kek, err := k.openKEK(uri)
	if err != nil {
		return nil, err
	}
	if k.keks == nil {
		k.keks = map[string]crypto.KEK{}
	}
	k.keks[uri] = kek
	return kek, nil
}

// unwrap returns the unwrapped keyset for the material the ledger names,
// from the cache or the material store. It checks the stored material
// against the hash in the log.
func (k *keys) unwrap(ctx context.Context, env Env, info keysetInfo) (*crypto.Keyset, error) {
	if ks := k.cache.get(env.materialID(), info.material.Version); ks != nil {
		return ks, nil
	}
	m, err := k.material.Get(ctx, env.materialID(), info.material.Version)
	if err != nil {
		return nil, fmt.Errorf("app: key material of %s version %d: %w", env, info.material.Version, err)
	}
	h := crypto.MaterialHash(m.Wrapped)
	if hex.EncodeToString(h[:]) != info.material.Hash {
		return nil, fmt.Errorf("app: key material of %s version %d does not match the hash in the ledger", env, info.material.Version)
	}
	kek, err := k.kekFor(info.kek)
	if err != nil {
		return nil, err
	}
	ks, err := crypto.UnwrapKeyset(m.Wrapped, kek, env.ad())
	if err != nil {
		return nil, fmt.Errorf("app: keyset of %s: %w", env, err)
	}
	k.cache.put(env.materialID(), info.material.Version, ks)
	return ks, nil
}

// keysetCache keeps unwrapped keysets in memory only, bounded.
type keysetCache struct {
	mu  sync.Mutex
	m   map[string]cachedKeyset
	max int
}

type cachedKeyset struct {
	version uint64
	ks      *crypto.Keyset
}

func newKeysetCache(max int) *keysetCache {
	return &keysetCache{m: map[string]cachedKeyset{}, max: max}
}

func (c *keysetCache) get(env string, version uint64) *crypto.Keyset {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[env]; ok && e.version == version {
		return e.ks
	}
	return nil
}

func (c *keysetCache) put(env string, version uint64, ks *crypto.Keyset) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[env]; ok && e.version > version {
		return
	}
	if len(c.m) >= c.max {
		for k := range c.m { // drop an arbitrary tenth
			delete(c.m, k)
			if len(c.m) < c.max*9/10 {
				break
			}
		}
	}
	c.m[env] = cachedKeyset{version, ks}
}

func (c *keysetCache) drop(env string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, env)
}

// Len returns how many keysets are unwrapped in memory.
func (c *keysetCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// keyset returns the environment's keyset state and its unwrapped keyset,
// creating the keyset (as who) if the environment has none yet and create
// is true.
func (s *Service) keyset(ctx context.Context, req Request, who domain.Principal, env Env, create bool) (keysetInfo, *crypto.Keyset, error) {
	var info keysetInfo
	err := s.view(ctx, env.keysetStream(), newKeysetAgg, func(a aggregate) error {
		info = infoOf(a.(*domain.Keyset))
		return nil
	})
	if err != nil {
		return info, nil, err
	}
	if !info.exists {
		if !create {
			return info, nil, &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "environment " + env.String() + " has no keyset yet"}
		}
		if info, err = s.createKeyset(ctx, req, who, env); err != nil {
			return info, nil, err
		}
	}
	ks, err := s.keys.unwrap(ctx, env, info)
	return info, ks, err
}

func newKeysetAgg() aggregate { return domain.NewKeyset() }

// createKeyset makes the environment's first keyset.
func (s *Service) createKeyset(ctx context.Context, req Request, who domain.Principal, env Env) (keysetInfo, error) {
	ks, err := crypto.NewKeyset()
	if err != nil {
		return keysetInfo{}, err
	}
	info, err := s.changeKeyset(ctx, req, env, "create keyset", func(cur keysetInfo) (*crypto.Keyset, error) {
		if cur.exists {
			return nil, nil // another writer made it first
		}
		return ks, nil
	}, func(cur keysetInfo, m domain.Material, _ *crypto.Keyset) (domain.Principal, any) {
		return who, domain.CreateKeyset{Org: env.Org, Project: env.Project, Env: env.Env, KEK: s.keys.kek.URI(),
			KeyID: uint32(ks.Primary()), Material: m, Now: s.now()}
	})
	return info, err
}

// changeKeyset makes one keyset change: it derives the new keyset from
// the current one (derive returns nil when nothing is to change), stores
// its wrapped material as the next version, appends the event the domain
// decides, and erases the material versions the new one replaces. The
// material of a keyset is therefore the last version the ledger names;
// versions that held a destroyed key are gone once the change commits.
func (s *Service) changeKeyset(ctx context.Context, req Request, env Env, name string,
	derive func(cur keysetInfo) (*crypto.Keyset, error),
	cmd func(cur keysetInfo, m domain.Material, next *crypto.Keyset) (domain.Principal, any)) (keysetInfo, error) {
	stream := env.keysetStream()
	e := s.aggs.get(stream, newKeysetAgg)
	e.mu.Lock()
	defer e.mu.Unlock()
	for attempt := 1; ; attempt++ {
		if err := s.reload(ctx, e, stream); err != nil { // key changes always read the database
			return keysetInfo{}, err
		}
		cur := infoOf(e.agg.(*domain.Keyset))
		next, err := derive(cur)
		if err != nil || next == nil {
			return cur, err
		}
		kekURI := s.keys.kek.URI()
		wrapped, err := next.Wrap(s.keys.kek, env.ad())
		if err != nil {
			return cur, err
		}
		h := crypto.MaterialHash(wrapped)
		m := domain.Material{Version: cur.material.Version + 1, Hash: hex.EncodeToString(h[:])}
		who, c := cmd(cur, m, next)
		// Let the domain refuse before anything is stored.
		events, err := e.agg.(*domain.Keyset).Handle(who, c)
		if err != nil || len(events) == 0 {
			return cur, err
		}
		err = s.keys.material.Put(ctx, crypto.Material{EnvID: env.materialID(), Version: m.Version, KEKURI: kekURI, Wrapped: wrapped, CreatedAt: s.now()})
		if errors.Is(err, crypto.ErrExists) {
			// Another process is making the same version, or crashed while
			// making it. Wait for its event; erase an orphan.
			if attempt >= maxAttempts {
				return cur, fmt.Errorf("%w (key material of %s)", ErrBusy, env)
			}
			if old, gerr := s.keys.material.Get(ctx, env.materialID(), m.Version); gerr == nil && s.now().Sub(old.CreatedAt) > time.Minute {
				s.log.Warn("erasing orphaned key material", "env", env.String(), "version", m.Version)
				if err := s.keys.material.Delete(ctx, env.materialID(), m.Version); err != nil {
					return cur, err
				}
			} else {
				time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
			}
			continue
		}
		if err != nil {
			return cur, err
		}
		_, err = s.appendDecided(ctx, req, e, stream, env.Org, events, nil)
		if err != nil {
			// Nothing committed: the material version is ours to erase.
			if derr := s.keys.material.Delete(context.WithoutCancel(ctx), env.materialID(), m.Version); derr != nil {
				s.log.Error("could not erase uncommitted key material", "env", env.String(), "version", m.Version, "err", derr)
			}
			if errors.Is(err, errConflict) && attempt < maxAttempts {
				continue
			}
			return cur, err
		}
		s.keys.cache.put(env.materialID(), m.Version, next)
		s.pruneMaterial(ctx, env, m.Version)
		s.log.Info("keyset changed", "change", name, "env", env.String(), "material_version", m.Version, "primary", next.Primary())
		return infoOf(e.agg.(*domain.Keyset)), nil
	}
}

// pruneMaterial erases every material version of env but keep.
func (s *Service) pruneMaterial(ctx context.Context, env Env, keep uint64) {
	vs, err := s.keys.material.Versions(ctx, env.materialID())
	if err != nil {
		s.log.Error("listing key material", "env", env.String(), "err", err)
		return
	}
	var old []uint64
	for _, v := range vs {
		if v < keep {
			old = append(old, v)
		}
	}
	if len(old) > 0 {
		if err := s.keys.material.Delete(context.WithoutCancel(ctx), env.materialID(), old...); err != nil {
			s.log.Error("erasing replaced key material", "env", env.String(), "err", err)
		}
	}
}
