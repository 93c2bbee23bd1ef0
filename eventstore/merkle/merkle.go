// Package merkle keeps the ledger's Merkle tree: an RFC 6962 (C2SP
// tlog) tree whose entries are event hashes, so leaf i is
// SHA-256(0x00 || hash of the event at position i+1) and an interior node
// is SHA-256(0x01 || left || right). The tree math is
// golang.org/x/mod/sumdb/tlog's; stored hashes follow its numbering
// (tlog.StoredHashIndex), which lets any tlog or tlog-tiles client check
// Stele's proofs.
package merkle

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"

	"golang.org/x/mod/sumdb/tlog"

	"stele.dev/stele/eventstore"
)

// LeafHash returns the Merkle leaf hash of an event hash:
// SHA-256(0x00 || eventHash).
func LeafHash(eventHash eventstore.Hash) eventstore.Hash {
	// tlog.RecordHash computes the same, through an allocated hash.Hash.
	var b [1 + eventstore.HashSize]byte
	copy(b[1:], eventHash[:])
	return sha256.Sum256(b[:])
}

// EmptyRoot is the root hash of the empty tree, SHA-256 of no bytes.
var EmptyRoot = mustRoot()

func mustRoot() eventstore.Hash {
	h, err := tlog.TreeHash(0, nil)
	if err != nil {
		panic(err)
	}
	return eventstore.Hash(h)
}

type peak struct {
	level int
	hash  tlog.Hash
}

// Frontier is the right edge of a Merkle tree: the roots of its complete
// subtrees ("peaks"), enough to append the next entry and to compute the
// root, in O(log n) memory. The zero Frontier is the empty tree.
type Frontier struct {
	size  uint64
	peaks []peak // left to right, strictly decreasing levels
}

// Size returns the number of entries in the tree.
func (f *Frontier) Size() uint64 { return f.size }

// Append adds an entry (an event hash) and appends to dst the hashes that
// this entry adds to the stored tree, in tlog.StoredHashes order: the
// leaf hash, then each interior node it completes.
func (f *Frontier) Append(dst []eventstore.Hash, entry eventstore.Hash) []eventstore.Hash {
	return f.AppendLeaf(dst, LeafHash(entry))
}

// AppendLeaf is Append given the entry's leaf hash (LeafHash), computed
// beforehand (possibly in parallel).
func (f *Frontier) AppendLeaf(dst []eventstore.Hash, leaf eventstore.Hash) []eventstore.Hash {
	h := tlog.Hash(leaf)
	dst = append(dst, leaf)
	level := 0
	for n := len(f.peaks); n > 0 && f.peaks[n-1].level == level; n = len(f.peaks) {
		h = tlog.NodeHash(f.peaks[n-1].hash, h)
		f.peaks = f.peaks[:n-1]
		level++
		dst = append(dst, eventstore.Hash(h))
	}
	f.peaks = append(f.peaks, peak{level, h})
	f.size++
	return dst
}

// Root returns the tree's root hash (RFC 6962 MTH of all entries).
func (f *Frontier) Root() eventstore.Hash {
	if len(f.peaks) == 0 {
		return EmptyRoot
	}
	n := len(f.peaks) - 1
	h := f.peaks[n].hash
	for i := n - 1; i >= 0; i-- {
		h = tlog.NodeHash(f.peaks[i].hash, h)
	}
	return eventstore.Hash(h)
}

// Clone returns an independent copy of f.
func (f *Frontier) Clone() *Frontier {
	return &Frontier{size: f.size, peaks: append([]peak(nil), f.peaks...)}
}

// PeakIndexes returns the stored-hash indexes of the peaks of a tree of
// the given size, left to right: what LoadFrontier reads.
func PeakIndexes(size uint64) []int64 {
	idx := make([]int64, 0, bits.OnesCount64(size))
	for level := 63; level >= 0; level-- {
		if size&(1<<uint(level)) != 0 {
			idx = append(idx, tlog.StoredHashIndex(level, int64(size>>uint(level))-1))
		}
	}
	return idx
}

// LoadFrontier rebuilds the frontier of a tree of the given size from its
// stored hashes.
func LoadFrontier(ctx context.Context, r Reader, size uint64) (*Frontier, error) {
	idx := PeakIndexes(size)
	f := &Frontier{size: size}
	if len(idx) == 0 {
		return f, nil
	}
	hs, err := r.TreeHashes(ctx, idx)
	if err != nil {
		return nil, fmt.Errorf("merkle: load frontier at size %d: %w", size, err)
	}
	if len(hs) != len(idx) {
		return nil, fmt.Errorf("merkle: load frontier at size %d: got %d hashes for %d indexes", size, len(hs), len(idx))
	}
	for i, ix := range idx {
		level, _ := tlog.SplitStoredHashIndex(ix)
		f.peaks = append(f.peaks, peak{level, tlog.Hash(hs[i])})
	}
	return f, nil
}

// Reader reads stored tree hashes; eventstore.Store satisfies it.
type Reader interface {
	TreeHashes(ctx context.Context, indexes []int64) ([]eventstore.Hash, error)
}

// HashReader adapts r to tlog.HashReader for calls made under ctx.
func HashReader(ctx context.Context, r Reader) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		hs, err := r.TreeHashes(ctx, indexes)
		if err != nil {
			return nil, err
		}
		out := make([]tlog.Hash, len(hs))
		for i := range hs {
			out[i] = tlog.Hash(hs[i])
		}
		return out, nil
	})
}

// StoredIndexRange returns the stored-hash indexes written when the entry
// at 0-based index n was appended: [first, end).
func StoredIndexRange(n uint64) (first, end int64) {
	return tlog.StoredHashIndex(0, int64(n)), tlog.StoredHashIndex(0, int64(n)+1)
}

// Locate maps a stored-hash index to the 1-based log position whose append
// wrote it and the hash's offset within that append's TreeEntry.Hashes.
func Locate(index int64) (position uint64, offset int) {
	level, n := tlog.SplitStoredHashIndex(index)
	// A level-L hash with index n covers entries [n<<L, (n+1)<<L); the
	// last of those, whose append completed it, is (n+1)<<L - 1.
	return uint64((n+1)<<uint(level)-1) + 1, level
}

// Root computes the root hash of the tree at size from stored hashes.
func Root(ctx context.Context, r Reader, size uint64) (eventstore.Hash, error) {
	h, err := tlog.TreeHash(int64(size), HashReader(ctx, r))
	return eventstore.Hash(h), err
}

// InclusionProof returns the proof that the entry at 0-based index lies in
// the tree of size treeSize (RFC 6962 audit path), read from stored hashes.
func InclusionProof(ctx context.Context, r Reader, treeSize, index uint64) ([]eventstore.Hash, error) {
	if index >= treeSize {
		return nil, fmt.Errorf("merkle: index %d is not below tree size %d", index, treeSize)
	}
	p, err := tlog.ProveRecord(int64(treeSize), int64(index), HashReader(ctx, r))
	if err != nil {
		return nil, err
	}
	return fromTlog(p), nil
}

// ConsistencyProof returns the proof that the tree of size oldSize is a
// prefix of the tree of size newSize (RFC 6962 consistency proof).
func ConsistencyProof(ctx context.Context, r Reader, newSize, oldSize uint64) ([]eventstore.Hash, error) {
	if oldSize > newSize {
		return nil, fmt.Errorf("merkle: old size %d is above new size %d", oldSize, newSize)
	}
	if oldSize == 0 {
		return []eventstore.Hash{}, nil // the empty tree is a prefix of every tree
	}
	p, err := tlog.ProveTree(int64(newSize), int64(oldSize), HashReader(ctx, r))
	if err != nil {
		return nil, err
	}
	return fromTlog(p), nil
}

// VerifyInclusion checks that an event hash is the entry at 0-based index
// of the tree of size treeSize with the given root.
func VerifyInclusion(proof []eventstore.Hash, treeSize uint64, root eventstore.Hash, index uint64, eventHash eventstore.Hash) error {
	return tlog.CheckRecord(toTlog(proof), int64(treeSize), tlog.Hash(root), int64(index), tlog.RecordHash(eventHash[:]))
}

// VerifyConsistency checks that the tree (oldSize, oldRoot) is a prefix of
// the tree (newSize, newRoot).
func VerifyConsistency(proof []eventstore.Hash, newSize uint64, newRoot eventstore.Hash, oldSize uint64, oldRoot eventstore.Hash) error {
	if oldSize == 0 {
		if oldRoot != EmptyRoot || len(proof) != 0 {
			return errors.New("merkle: invalid consistency proof from the empty tree")
		}
		return nil
	}
	return tlog.CheckTree(toTlog(proof), int64(newSize), tlog.Hash(newRoot), int64(oldSize), tlog.Hash(oldRoot))
}

func fromTlog[S ~[]tlog.Hash](p S) []eventstore.Hash {
	out := make([]eventstore.Hash, len(p))
	for i := range p {
		out[i] = eventstore.Hash(p[i])
	}
	return out
}

func toTlog(p []eventstore.Hash) []tlog.Hash {
	out := make([]tlog.Hash, len(p))
	for i := range p {
		out[i] = tlog.Hash(p[i])
	}
	return out
}
