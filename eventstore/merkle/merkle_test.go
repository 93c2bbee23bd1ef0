package merkle_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	tdproof "github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

type stored []eventstore.Hash

func (s stored) TreeHashes(_ context.Context, idx []int64) ([]eventstore.Hash, error) {
	out := make([]eventstore.Hash, len(idx))
	for i, ix := range idx {
		if ix >= int64(len(s)) {
			return nil, errors.New("beyond the tree")
		}
		out[i] = s[ix]
	}
	return out, nil
}

func entry(i int) eventstore.Hash { return sha256.Sum256(fmt.Appendf(nil, "event %d", i)) }

// The frontier stores exactly what tlog.StoredHashes would, and its root
// is tlog's and transparency-dev's root at every size.
func TestFrontierMatchesTlogAndRFC6962(t *testing.T) {
	var f merkle.Frontier
	var mine stored
	var theirs []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, ix := range idx {
			out[i] = theirs[ix]
		}
		return out, nil
	})
	td := rfc6962.DefaultHasher
	var leaves [][]byte
	for i := range 300 {
		e := entry(i)
		mine = f.Append(mine, e)
		hs, err := tlog.StoredHashes(int64(i), e[:], hr)
		if err != nil {
			t.Fatal(err)
		}
		theirs = append(theirs, hs...)
		if len(mine) != len(theirs) {
			t.Fatalf("size %d: %d stored hashes, tlog has %d", i+1, len(mine), len(theirs))
		}
		for j := range mine {
			if mine[j] != eventstore.Hash(theirs[j]) {
				t.Fatalf("size %d: stored hash %d differs", i+1, j)
			}
		}
		th, err := tlog.TreeHash(int64(i+1), hr)
		if err != nil {
			t.Fatal(err)
		}
		if f.Root() != eventstore.Hash(th) {
			t.Fatalf("size %d: root %s, tlog %s", i+1, f.Root(), th)
		}
		leaves = append(leaves, td.HashLeaf(e[:]))
		if got := rootOf(td, leaves); string(got) != string(f.Root().Bytes()) {
			t.Fatalf("size %d: root differs from the RFC 6962 definition", i+1)
		}
	}
	if merkle.EmptyRoot != eventstore.Hash(sha256.Sum256(nil)) {
		t.Fatal("empty root is not SHA-256 of nothing")
	}
	lf, err := merkle.LoadFrontier(context.Background(), mine, 300)
	if err != nil {
		t.Fatal(err)
	}
	if lf.Root() != f.Root() {
		t.Fatal("LoadFrontier gives another root")
	}
	next := entry(300)
	a := f.Append(nil, next)
	b := lf.Append(nil, next)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("a loaded frontier appends differently")
	}
}

// rootOf is RFC 6962's MTH written from the definition, for comparison.
func rootOf(h *rfc6962.Hasher, leaves [][]byte) []byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return h.HashChildren(rootOf(h, leaves[:k]), rootOf(h, leaves[k:]))
}

// Stele's proofs verify under transparency-dev/merkle, an implementation
// Stele does not use to prove.
func TestProofsVerifyUnderTransparencyDev(t *testing.T) {
	ctx := context.Background()
	var f merkle.Frontier
	var s stored
	roots := map[uint64]eventstore.Hash{}
	const n = 77
	for i := range n {
		s = f.Append(s, entry(i))
		roots[f.Size()] = f.Root()
	}
	td := rfc6962.DefaultHasher
	for size := uint64(1); size <= n; size += 7 {
		for i := uint64(0); i < size; i++ {
			p, err := merkle.InclusionProof(ctx, s, size, i)
			if err != nil {
				t.Fatal(err)
			}
			e := entry(int(i))
			root := roots[size]
			if err := tdproof.VerifyInclusion(td, i, size, td.HashLeaf(e[:]), bytesOf(p), root[:]); err != nil {
				t.Fatalf("inclusion %d in %d: %v", i, size, err)
			}
			if err := merkle.VerifyInclusion(p, size, root, i, e); err != nil {
				t.Fatalf("own check of inclusion %d in %d: %v", i, size, err)
			}
		}
		for old := uint64(1); old <= size; old += 5 {
			p, err := merkle.ConsistencyProof(ctx, s, size, old)
			if err != nil {
				t.Fatal(err)
			}
			o, nw := roots[old], roots[size]
			if err := tdproof.VerifyConsistency(td, old, size, bytesOf(p), o[:], nw[:]); err != nil {
				t.Fatalf("consistency %d→%d: %v", old, size, err)
			}
			if err := merkle.VerifyConsistency(p, size, nw, old, o); err != nil {
				t.Fatalf("own check of consistency %d→%d: %v", old, size, err)
			}
		}
	}
	// A proof against the wrong root fails.
	p, _ := merkle.ConsistencyProof(ctx, s, 50, 20)
	if err := merkle.VerifyConsistency(p, 50, roots[50], 20, roots[21]); err == nil {
		t.Fatal("consistency proof accepted the wrong old root")
	}
	if err := merkle.VerifyConsistency(nil, 5, roots[5], 0, merkle.EmptyRoot); err != nil {
		t.Fatalf("consistency from the empty tree: %v", err)
	}
}

func TestLocateInvertsStoredHashIndex(t *testing.T) {
	var f merkle.Frontier
	var s stored
	pos := map[int64][2]int{}
	for i := range 100 {
		before := len(s)
		s = f.Append(s, entry(i))
		for j := before; j < len(s); j++ {
			pos[int64(j)] = [2]int{i + 1, j - before}
		}
	}
	for ix, want := range pos {
		p, off := merkle.Locate(ix)
		if int(p) != want[0] || off != want[1] {
			t.Fatalf("Locate(%d) = %d, %d; want %v", ix, p, off, want)
		}
	}
}

func bytesOf(p []eventstore.Hash) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i].Bytes()
	}
	return out
}
