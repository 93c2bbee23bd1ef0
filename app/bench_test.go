package app_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// BenchmarkSetSecret measures secret updates through the application
// layer to the log on PostgreSQL: authorization, sealing under the
// environment's keyset, the domain decision and the append. One op is one
// update of a 64-byte value; each caller updates a secret of its own.
func BenchmarkSetSecret(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			f, _ := pgFixture(b)
			f.setup(b)
			refs := make([]domain.SecretRef, callers)
			for i := range refs {
				refs[i] = domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: fmt.Sprintf("S%d", i)}
				f.set(b, bob, refs[i], "initial")
			}
			value := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for c := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := f.svc.SetSecret(ctx, bob, refs[c], app.SetSecret{Value: value}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkRevealSecret measures audited reads: the SecretViewed append,
// then decryption. One op is one read.
func BenchmarkRevealSecret(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			f, _ := pgFixture(b)
			f.setup(b)
			refs := make([]domain.SecretRef, callers)
			for i := range refs {
				refs[i] = domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: fmt.Sprintf("S%d", i)}
				f.set(b, bob, refs[i], "value")
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for c := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := f.svc.RevealSecret(ctx, bob, refs[c], 0, "bench", domain.ChannelAPI); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkKeysetUnwrap: cold reads the wrapped keyset from PostgreSQL,
// checks it against the ledger's hash and unwraps it with the local KEK;
// a cache hit finds it in memory.
func BenchmarkKeysetUnwrap(b *testing.B) {
	f, _ := pgFixture(b)
	f.setup(b)
	for _, cold := range []bool{true, false} {
		name := "cache-hit"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := f.svc.UnwrapForTest(ctx, prod, cold); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReseal measures resealing after a rotation: one op is one
// value decrypted under the old key, sealed under the new primary and
// appended as secret.resealed.
func BenchmarkReseal(b *testing.B) {
	f, _ := pgFixture(b)
	f.setup(b)
	for i := range b.N {
		f.set(b, bob, domain.SecretRef{Org: "acme", Project: "web", Env: "production", Name: fmt.Sprintf("S%d", i)}, "value")
	}
	ok(f.svc.RotateKeyset(ctx, ada, prod, "bench"))
	b.ResetTimer()
	rep := ok(f.svc.Reseal(ctx, prod))
	b.StopTimer()
	if rep.Resealed != b.N {
		b.Fatalf("resealed %d of %d", rep.Resealed, b.N)
	}
}
