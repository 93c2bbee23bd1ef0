// Package materialtest is the conformance suite of crypto.MaterialStore.
// Every implementation runs it:
//
//	func TestConformance(t *testing.T) {
//		materialtest.Run(t, func(t *testing.T) crypto.MaterialStore { return newStore(t) })
//	}
package materialtest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"stele.dev/stele/crypto"
)

// Run runs the suite. newStore must return an empty store of its own each
// time it is called.
func Run(t *testing.T, newStore func(t *testing.T) crypto.MaterialStore) {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 891234000, time.UTC)
	mat := func(env string, v uint64) crypto.Material {
		return crypto.Material{EnvID: env, Version: v, KEKURI: "local:///k", Wrapped: []byte(fmt.Sprintf("wrapped %s %d", env, v)), CreatedAt: t0.Add(time.Duration(v) * time.Second)}
	}

	t.Run("PutGet", func(t *testing.T) {
		s := newStore(t)
		want := mat("env-1", 1)
		if err := s.Put(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(t.Context(), "env-1", 1)
		if err != nil {
			t.Fatal(err)
		}
		if got.EnvID != want.EnvID || got.Version != want.Version || got.KEKURI != want.KEKURI ||
			!bytes.Equal(got.Wrapped, want.Wrapped) || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("Get = %+v, want %+v", got, want)
		}
	})

	t.Run("GetReturnsACopy", func(t *testing.T) {
		s := newStore(t)
		m := mat("env-1", 1)
		if err := s.Put(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		m.Wrapped[0] ^= 0xff
		a, _ := s.Get(t.Context(), "env-1", 1)
		a.Wrapped[1] ^= 0xff
		b, _ := s.Get(t.Context(), "env-1", 1)
		if !bytes.Equal(b.Wrapped, mat("env-1", 1).Wrapped) {
			t.Fatalf("stored bytes changed through a caller's slice: %q", b.Wrapped)
		}
	})

	t.Run("ZeroCreatedAtIsTheTimeOfPut", func(t *testing.T) {
		s := newStore(t)
		m := mat("env-1", 1)
		m.CreatedAt = time.Time{}
		before := time.Now().Add(-time.Second)
		if err := s.Put(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(t.Context(), "env-1", 1)
		if err != nil {
			t.Fatal(err)
		}
		if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Second)) {
			t.Fatalf("CreatedAt = %v, want about now", got.CreatedAt)
		}
	})

	t.Run("PutTwiceIsErrExists", func(t *testing.T) {
		s := newStore(t)
		if err := s.Put(t.Context(), mat("env-1", 1)); err != nil {
			t.Fatal(err)
		}
		other := mat("env-1", 1)
		other.Wrapped = []byte("something else")
		if err := s.Put(t.Context(), other); !errors.Is(err, crypto.ErrExists) {
			t.Fatalf("second Put = %v, want ErrExists", err)
		}
		got, _ := s.Get(t.Context(), "env-1", 1)
		if !bytes.Equal(got.Wrapped, mat("env-1", 1).Wrapped) {
			t.Fatalf("a refused Put overwrote the material: %q", got.Wrapped)
		}
	})

	t.Run("PutRefusesIncompleteMaterial", func(t *testing.T) {
		s := newStore(t)
		for name, m := range map[string]crypto.Material{
			"no env":     {Version: 1, KEKURI: "local:///k", Wrapped: []byte{1}},
			"no KEK URI": {EnvID: "e", Version: 1, Wrapped: []byte{1}},
			"no bytes":   {EnvID: "e", Version: 1, KEKURI: "local:///k"},
		} {
			if err := s.Put(t.Context(), m); err == nil {
				t.Errorf("%s: Put accepted %+v", name, m)
			}
		}
	})

	t.Run("GetMissingIsErrNotFound", func(t *testing.T) {
		s := newStore(t)
		if err := s.Put(t.Context(), mat("env-1", 1)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			env string
			v   uint64
		}{{"env-1", 2}, {"env-2", 1}, {"", 0}} {
			if _, err := s.Get(t.Context(), c.env, c.v); !errors.Is(err, crypto.ErrNotFound) {
				t.Errorf("Get(%q, %d) = %v, want ErrNotFound", c.env, c.v, err)
			}
		}
	})

	t.Run("VersionsAndEnvs", func(t *testing.T) {
		s := newStore(t)
		if vs, err := s.Versions(t.Context(), "env-1"); err != nil || len(vs) != 0 {
			t.Fatalf("Versions of an unknown env = %v, %v", vs, err)
		}
		if es, err := s.Envs(t.Context()); err != nil || len(es) != 0 {
			t.Fatalf("Envs of an empty store = %v, %v", es, err)
		}
		for _, m := range []crypto.Material{mat("env-b", 3), mat("env-b", 1), mat("env-a", 7), mat("env-b", 10), mat("env-b", 2)} {
			if err := s.Put(t.Context(), m); err != nil {
				t.Fatal(err)
			}
		}
		vs, err := s.Versions(t.Context(), "env-b")
		if err != nil || !slices.Equal(vs, []uint64{1, 2, 3, 10}) {
			t.Fatalf("Versions = %v, %v; want [1 2 3 10]", vs, err)
		}
		es, err := s.Envs(t.Context())
		if err != nil || !slices.Equal(es, []string{"env-a", "env-b"}) {
			t.Fatalf("Envs = %v, %v", es, err)
		}
	})

	t.Run("LargeVersions", func(t *testing.T) {
		s := newStore(t)
		for _, v := range []uint64{0, 1 << 40} {
			if err := s.Put(t.Context(), mat("env-1", v)); err != nil {
				t.Fatalf("Put version %d: %v", v, err)
			}
			if _, err := s.Get(t.Context(), "env-1", v); err != nil {
				t.Fatalf("Get version %d: %v", v, err)
			}
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		for _, m := range []crypto.Material{mat("env-1", 1), mat("env-1", 2), mat("env-1", 3), mat("env-2", 1)} {
			if err := s.Put(t.Context(), m); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(t.Context(), "env-1", 1, 3, 99); err != nil {
			t.Fatal(err)
		}
		if vs, _ := s.Versions(t.Context(), "env-1"); !slices.Equal(vs, []uint64{2}) {
			t.Fatalf("Versions after Delete = %v, want [2]", vs)
		}
		if _, err := s.Get(t.Context(), "env-1", 1); !errors.Is(err, crypto.ErrNotFound) {
			t.Fatalf("Get of a deleted version = %v, want ErrNotFound", err)
		}
		if _, err := s.Get(t.Context(), "env-2", 1); err != nil {
			t.Fatalf("Delete touched another environment: %v", err)
		}
		if err := s.Delete(t.Context(), "env-1"); err != nil {
			t.Fatalf("Delete of no versions: %v", err)
		}
		if err := s.Delete(t.Context(), "env-1", 2); err != nil {
			t.Fatal(err)
		}
		if es, _ := s.Envs(t.Context()); !slices.Equal(es, []string{"env-2"}) {
			t.Fatalf("Envs after deleting every version of env-1 = %v", es)
		}
		// A deleted version may be written again (a new wrapping).
		if err := s.Put(t.Context(), mat("env-1", 1)); err != nil {
			t.Fatalf("Put after Delete: %v", err)
		}
	})

	t.Run("ConcurrentPutsOfOneVersion", func(t *testing.T) {
		s := newStore(t)
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = s.Put(t.Context(), mat("env-1", 1)) })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, crypto.ErrExists):
				t.Errorf("Put: %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d concurrent Puts of one version succeeded, want 1", ok)
		}
	})
}
