package crypto

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// Material is one stored version of an environment's wrapped keyset.
//
// Key material is not kept in the immutable event log, where a destroyed
// key could never be erased. It lives in a small mutable store, one row per
// (environment, keyset version); the log records each keyset lifecycle
// event with the MaterialHash of the version it produced.
type Material struct {
	EnvID   string // the environment's stable identifier
	Version uint64 // the keyset's version; each change wraps a new one
	KEKURI  string // the KEK that wrapped it (KEK.URI)
	Wrapped []byte // Keyset.Wrap's output
	// CreatedAt is when the version was made. A store keeps it with at
	// least microsecond precision; a zero CreatedAt is stored as the time
	// of Put.
	CreatedAt time.Time
}

// MaterialHash returns the SHA-256 of a wrapped keyset, the digest the log
// records for each keyset version so that stored material can be checked
// against the log.
func MaterialHash(wrapped []byte) [32]byte { return sha256.Sum256(wrapped) }

// MaterialStore keeps wrapped keysets. Implementations are safe for
// concurrent use; materialtest.Run is their conformance suite.
type MaterialStore interface {
	// Put stores m. It returns an error matching ErrExists if material for
	// (m.EnvID, m.Version) is already stored, whatever its content: a
	// version is written once. EnvID, KEKURI and Wrapped must not be
	// empty.
	Put(ctx context.Context, m Material) error
	// Get returns the material of an environment's keyset version, or an
	// error matching ErrNotFound.
	Get(ctx context.Context, envID string, version uint64) (Material, error)
	// Versions returns the stored versions of an environment's keyset in
	// ascending order; none (and no error) for an unknown environment.
	Versions(ctx context.Context, envID string) ([]uint64, error)
	// Delete erases the given versions of an environment's keyset; versions
	// not stored are ignored. Crypto-shredding relies on it: once every
	// version that held a destroyed key is deleted, the store no longer
	// holds that key.
	Delete(ctx context.Context, envID string, versions ...uint64) error
	// Envs returns every environment with stored material, sorted.
	Envs(ctx context.Context) ([]string, error)
}

// CheckMaterial returns an error if m lacks a field every store requires.
// Stores call it in Put.
func CheckMaterial(m Material) error {
	switch {
	case m.EnvID == "":
		return errors.New("crypto: material: empty environment ID")
	case m.KEKURI == "":
		return errors.New("crypto: material: empty KEK URI")
	case len(m.Wrapped) == 0:
		return errors.New("crypto: material: empty wrapped keyset")
	}
	return nil
}

// NewMemoryMaterialStore returns a MaterialStore that keeps material in
// memory, for tests and tools.
func NewMemoryMaterialStore() MaterialStore {
	return &memoryStore{envs: make(map[string]map[uint64]Material)}
}

type memoryStore struct {
	mu   sync.Mutex
	envs map[string]map[uint64]Material
}

var _ MaterialStore = (*memoryStore)(nil)

func (s *memoryStore) Put(ctx context.Context, m Material) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckMaterial(m); err != nil {
		return err
	}
	m.Wrapped = slices.Clone(m.Wrapped)
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now()
	}
	m.CreatedAt = m.CreatedAt.Round(0)
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.envs[m.EnvID]
	if _, ok := vs[m.Version]; ok {
		return fmt.Errorf("%w: environment %s version %d", ErrExists, m.EnvID, m.Version)
	}
	if vs == nil {
		vs = make(map[uint64]Material)
		s.envs[m.EnvID] = vs
	}
	vs[m.Version] = m
	return nil
}

func (s *memoryStore) Get(ctx context.Context, envID string, version uint64) (Material, error) {
	if err := ctx.Err(); err != nil {
		return Material{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.envs[envID][version]
	if !ok {
		return Material{}, fmt.Errorf("%w: environment %s version %d", ErrNotFound, envID, version)
	}
	m.Wrapped = slices.Clone(m.Wrapped)
	return m, nil
}

func (s *memoryStore) Versions(ctx context.Context, envID string) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.envs[envID])), nil
}

func (s *memoryStore) Delete(ctx context.Context, envID string, versions ...uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.envs[envID]
	for _, v := range versions {
		if m, ok := vs[v]; ok {
			clear(m.Wrapped) // best effort: no other copy is handed out
			delete(vs, v)
		}
	}
	if len(vs) == 0 {
		delete(s.envs, envID)
	}
	return nil
}

func (s *memoryStore) Envs(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.envs)), nil
}
