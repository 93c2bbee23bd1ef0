package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/memstore"
	"stele.dev/stele/eventstore/merkle"
	"stele.dev/stele/eventstore/storetest"
)

func newSigner(t *testing.T, origin string) *checkpoint.Signer {
	t.Helper()
	skey, _, err := checkpoint.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignAndOpen(t *testing.T) {
	s := newSigner(t, "example.com/ledger")
	root := eventstore.Hash{1, 2, 3}
	signed, err := s.Sign(42, root)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(signed), "example.com/ledger\n42\n") {
		t.Fatalf("note does not start with the C2SP body:\n%s", signed)
	}
	// transparency-dev/formats parses and verifies it.
	cp, _, _, err := log.ParseCheckpoint(signed, "example.com/ledger", s.Verifier().Note())
	if err != nil || cp.Size != 42 || !bytes.Equal(cp.Hash, root[:]) {
		t.Fatalf("formats/log: %+v, %v", cp, err)
	}
	v, err := checkpoint.NewVerifier(s.Verifier().String())
	if err != nil {
		t.Fatal(err)
	}
	size, got, err := v.Open(signed)
	if err != nil || size != 42 || got != root {
		t.Fatalf("Open = %d %s %v", size, got, err)
	}

	other := newSigner(t, "example.com/ledger")
	if _, _, err := other.Verifier().Open(signed); !errors.Is(err, checkpoint.ErrInvalid) {
		t.Fatalf("another key of the same name accepted the note: %v", err)
	}
	forged := bytes.Replace(signed, []byte("\n42\n"), []byte("\n43\n"), 1)
	if _, _, err := v.Open(forged); !errors.Is(err, checkpoint.ErrInvalid) {
		t.Fatalf("a changed size verified: %v", err)
	}
	if _, _, err := v.Open([]byte("garbage")); !errors.Is(err, checkpoint.ErrInvalid) {
		t.Fatalf("garbage verified: %v", err)
	}
}

func TestBadKeysAndOrigins(t *testing.T) {
	for _, origin := range []string{"", "has space", "a+b", "tab\there"} {
		if _, _, err := checkpoint.GenerateKey(origin); err == nil {
			t.Errorf("origin %q accepted", origin)
		}
	}
	if _, err := checkpoint.NewSigner("PRIVATE+KEY+nonsense"); err == nil {
		t.Error("malformed signing key accepted")
	}
	if _, err := checkpoint.NewVerifier("nonsense"); err == nil {
		t.Error("malformed verifier key accepted")
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "ledger.key")
	s, err := checkpoint.CreateKeyFile(path, "stele.test/log")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := checkpoint.CreateKeyFile(path, "stele.test/log"); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second create: %v", err)
	}
	loaded, err := checkpoint.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Verifier().String() != s.Verifier().String() || loaded.Origin() != "stele.test/log" {
		t.Fatal("loaded key differs from the created one")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.LoadKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key accepted: %v", err)
	}
}

func appendN(t *testing.T, s eventstore.Store, n int) {
	t.Helper()
	for range n {
		if _, err := s.Append(context.Background(), "s", eventstore.Any, storetest.Ev("thing.happened", "x")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckpointerSignsTheHead(t *testing.T) {
	ctx := context.Background()
	st := memstore.New(nil)
	c := &checkpoint.Checkpointer{Store: st, Signer: newSigner(t, "stele.test/log"), StateFile: filepath.Join(t.TempDir(), "latest")}
	appendN(t, st, 5)
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := merkle.Root(ctx, st, 5)
	if cp.Size != 5 || cp.Root != root {
		t.Fatalf("checkpoint %d %s, want 5 %s", cp.Size, cp.Root, root)
	}
	again, err := c.Checkpoint(ctx)
	if err != nil || again.Size != 5 {
		t.Fatalf("second checkpoint with no new events: %+v %v", again, err)
	}
	cps, _ := st.Checkpoints(ctx, 0, 0)
	if len(cps) != 1 {
		t.Fatalf("%d checkpoints stored, want 1", len(cps))
	}
	appendN(t, st, 3)
	if cp, err := c.Checkpoint(ctx); err != nil || cp.Size != 8 {
		t.Fatalf("checkpoint after growth: %+v %v", cp, err)
	}
	state, err := os.ReadFile(c.StateFile)
	if err != nil || !strings.Contains(string(state), "\n8\n") {
		t.Fatalf("state file %q, %v", state, err)
	}
}

// lyingStore serves another history's Merkle hashes: what a database
// whose events were rewritten (and tree recomputed) looks like.
type lyingStore struct {
	eventstore.Store
	other eventstore.Store
}

func (l lyingStore) TreeHashes(ctx context.Context, idx []int64) ([]eventstore.Hash, error) {
	return l.other.TreeHashes(ctx, idx)
}

func TestCheckpointerRefusesARewrittenHistory(t *testing.T) {
	ctx := context.Background()
	signer := newSigner(t, "stele.test/log")
	state := filepath.Join(t.TempDir(), "latest")
	honest := memstore.New(nil)
	appendN(t, honest, 10)
	c := &checkpoint.Checkpointer{Store: honest, Signer: signer, StateFile: state}
	if _, err := c.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// Another history of the same length and more, with the honest
	// checkpoints still stored.
	rewritten := memstore.New(nil)
	appendN(t, rewritten, 12)
	appendN(t, honest, 2)
	c.Store = lyingStore{Store: honest, other: rewritten}
	if _, err := c.Checkpoint(ctx); !errors.Is(err, checkpoint.ErrInconsistent) {
		t.Fatalf("signed a rewritten history: %v", err)
	}
	// The database's checkpoints are gone too, but the state file remembers.
	c.Store = rewritten
	if _, err := c.Checkpoint(ctx); !errors.Is(err, checkpoint.ErrInconsistent) {
		t.Fatalf("signed a rewritten history with no stored checkpoints: %v", err)
	}
	if cps, _ := rewritten.Checkpoints(ctx, 0, 0); len(cps) != 0 {
		t.Fatalf("stored %d checkpoints for the rewritten log", len(cps))
	}
	// A stored checkpoint signed by another key is refused too.
	intruder := memstore.New(nil)
	appendN(t, intruder, 1)
	forged := &checkpoint.Checkpointer{Store: intruder, Signer: newSigner(t, "stele.test/log")}
	if _, err := forged.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	c2 := &checkpoint.Checkpointer{Store: intruder, Signer: signer}
	if _, err := c2.Checkpoint(ctx); !errors.Is(err, checkpoint.ErrInvalid) {
		t.Fatalf("accepted a checkpoint signed by another key: %v", err)
	}
}

// A checkpoint the state file remembers but the store lacks is stored
// again when nothing new needs signing.
func TestCheckpointerRestoresAMissingCheckpoint(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return at }
	a, b := memstore.New(clock), memstore.New(clock)
	for i := range 5 {
		ev := eventstore.Event{ID: eventstore.ID{byte(i + 1)}, Type: "thing.happened", Data: []byte("x")}
		for _, s := range []eventstore.Store{a, b} {
			if _, err := s.Append(ctx, "s", eventstore.Any, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	signer := newSigner(t, "stele.test/log")
	state := filepath.Join(t.TempDir(), "latest")
	if _, err := (&checkpoint.Checkpointer{Store: a, Signer: signer, StateFile: state}).Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	cp, err := (&checkpoint.Checkpointer{Store: b, Signer: signer, StateFile: state}).Checkpoint(ctx)
	if err != nil || cp.Size != 5 {
		t.Fatalf("checkpoint on the twin store: %+v %v", cp, err)
	}
	stored, err := b.LatestCheckpoint(ctx)
	if err != nil || stored.Size != 5 || !bytes.Equal(stored.Note, cp.Note) {
		t.Fatalf("the twin store holds %+v, %v", stored, err)
	}
}
