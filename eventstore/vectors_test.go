package eventstore_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/export"
	"stele.dev/stele/eventstore/memstore"
	"stele.dev/stele/eventstore/merkle"
	"stele.dev/stele/eventstore/verify"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the code")

// Vectors is the layout of testdata/vectors.json: ledger-format test
// vectors that docs/ledger-format.md quotes and that an independent
// verifier can use.
type Vectors struct {
	Comment    string            `json:"comment"`
	Events     []EventVector     `json:"events"`
	Malformed  []MalformedVector `json:"malformed"`
	Tampered   []TamperedVector  `json:"tampered"`
	Merkle     MerkleVector      `json:"merkle"`
	Checkpoint CheckpointVector  `json:"checkpoint"`
}

type EventVector struct {
	Description   string            `json:"description"`
	Position      uint64            `json:"position"`
	StreamID      string            `json:"stream_id"`
	StreamVersion uint64            `json:"stream_version"`
	EventID       string            `json:"event_id"`
	Type          string            `json:"type"`
	Metadata      map[string]string `json:"metadata"`
	RecordedAtUS  int64             `json:"recorded_at_unix_micros"`
	DataHex       string            `json:"data_hex"`
	PrevHash      string            `json:"prev_hash"`
	CanonicalHex  string            `json:"canonical_hex"`
	Hash          string            `json:"hash"`
	LeafHash      string            `json:"merkle_leaf_hash"`
}

type MalformedVector struct {
	Description  string `json:"description"`
	Mutation     string `json:"mutation"`
	CanonicalHex string `json:"canonical_hex"`
	Expect       string `json:"expect"`
}

type TamperedVector struct {
	Description string   `json:"description"`
	Mutation    string   `json:"mutation"`
	Chain       []string `json:"chain_canonical_hex"`
	Hashes      []string `json:"stored_hashes"`
	Expect      string   `json:"expect"`
	FailsAt     uint64   `json:"fails_at_position"`
}

type MerkleVector struct {
	Description    string            `json:"description"`
	Roots          map[string]string `json:"roots_by_size"`
	InclusionSize  uint64            `json:"inclusion_tree_size"`
	InclusionIndex uint64            `json:"inclusion_leaf_index"`
	InclusionProof []string          `json:"inclusion_proof"`
	ConsistencyOld uint64            `json:"consistency_old_size"`
	ConsistencyNew uint64            `json:"consistency_new_size"`
	Consistency    []string          `json:"consistency_proof"`
}

type CheckpointVector struct {
	Description string `json:"description"`
	SeedHex     string `json:"ed25519_seed_hex"`
	VerifierKey string `json:"verifier_key"`
	Note        string `json:"signed_note"`
	Size        uint64 `json:"size"`
	Root        string `json:"root"`
}

// vectorRecords builds the fixed chain the vectors describe.
func vectorRecords() []eventstore.Record {
	t0 := time.Date(2026, 11, 22, 9, 30, 0, 123456000, time.UTC)
	id := func(s string) eventstore.ID { v, _ := eventstore.ParseID(s); return v }
	recs := []eventstore.Record{
		{Position: 1, StreamID: "org-7f3a", StreamVersion: 1, ID: id("0199a0b1-0000-7000-8000-000000000001"), Type: "organization.created",
			Data: []byte(`{"name":"Acme"}`), RecordedAt: t0,
			Metadata: eventstore.Metadata{Actor: "user:ada", Tenant: "org-7f3a", RequestID: "req-1", ClientAddr: "192.0.2.10"}},
		{Position: 2, StreamID: "secret-91c2", StreamVersion: 1, ID: id("0199a0b1-0000-7000-8000-000000000002"), Type: "secret.created",
			Data: []byte(`{"name":"DATABASE_URL","ciphertext":"AQID"}`), RecordedAt: t0.Add(1500 * time.Microsecond),
			Metadata: eventstore.Metadata{Actor: "user:ada", Tenant: "org-7f3a", RequestID: "req-2", ClientAddr: "192.0.2.10", CausationID: "cmd-2", CorrelationID: "corr-2"}},
		{Position: 3, StreamID: "secret-91c2", StreamVersion: 2, ID: id("0199a0b1-0000-7000-8000-000000000003"), Type: "secret.viewed",
			Data: []byte{}, RecordedAt: t0.Add(2 * time.Second),
			Metadata: eventstore.Metadata{Actor: "token:ci-é", Tenant: "org-7f3a"}},
	}
	var prev eventstore.Hash
	for i := range recs {
		recs[i].PrevHash = prev
		recs[i].Hash = eventstore.ComputeHash(&recs[i])
		prev = recs[i].Hash
	}
	return recs
}

// vectorSeed is a fixed Ed25519 seed: test vectors only, never a real key.
var vectorSeed = bytes.Repeat([]byte{0x5e}, ed25519.SeedSize)

func vectorSigner(t *testing.T) (*checkpoint.Signer, string) {
	const origin = "example.com/stele/test-vectors"
	priv := ed25519.NewKeyFromSeed(vectorSeed)
	vkey, err := note.NewEd25519VerifierKey(origin, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(vkey, "+")
	skey := "PRIVATE+KEY+" + origin + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, vectorSeed...))
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

func buildVectors(t *testing.T) Vectors {
	recs := vectorRecords()
	var v Vectors
	v.Comment = "Stele ledger format test vectors; see docs/ledger-format.md. Generated by `go test ./eventstore -run TestVectors -update`."
	for i, r := range recs {
		c := eventstore.AppendCanonical(nil, &r)
		v.Events = append(v.Events, EventVector{
			Description: []string{"first event of the log (prev hash all zero)", "second event, every metadata field set", "third event, empty data, non-ASCII actor"}[i],
			Position:    r.Position, StreamID: r.StreamID, StreamVersion: r.StreamVersion, EventID: r.ID.String(), Type: r.Type,
			Metadata: map[string]string{"actor": r.Metadata.Actor, "tenant": r.Metadata.Tenant, "request_id": r.Metadata.RequestID,
				"client_addr": r.Metadata.ClientAddr, "causation_id": r.Metadata.CausationID, "correlation_id": r.Metadata.CorrelationID},
			RecordedAtUS: r.RecordedAt.UnixMicro(), DataHex: hex.EncodeToString(r.Data), PrevHash: r.PrevHash.String(),
			CanonicalHex: hex.EncodeToString(c), Hash: r.Hash.String(), LeafHash: merkle.LeafHash(r.Hash).String(),
		})
	}
	c := eventstore.AppendCanonical(nil, &recs[1])
	mal := func(desc, mutation string, b []byte) {
		v.Malformed = append(v.Malformed, MalformedVector{desc, mutation, hex.EncodeToString(b), "malformed"})
	}
	wrongTag := bytes.Clone(c)
	copy(wrongTag, "stele.event.v2")
	mal("event 2 with another version tag", "byte 13 of the tag changed from '1' to '2'", wrongTag)
	mal("event 2 cut short inside its data field", "last byte removed", c[:len(c)-1])
	mal("event 2 with a byte after its data field", "one 0x00 byte appended", append(bytes.Clone(c), 0))

	chain := func(rs []eventstore.Record) (cs, hs []string) {
		for _, r := range rs {
			cs = append(cs, hex.EncodeToString(eventstore.AppendCanonical(nil, &r)))
			hs = append(hs, r.Hash.String())
		}
		return
	}
	flipped := vectorRecords()
	flipped[1].Data = bytes.Replace(flipped[1].Data, []byte("AQID"), []byte("AQIE"), 1)
	cs, hs := chain(flipped)
	v.Tampered = append(v.Tampered, TamperedVector{"the three events with event 2's data changed, stored hashes kept",
		"data of position 2: ciphertext AQID became AQIE", cs, hs, "stored hash differs from the hash of the content", 2})
	removed := vectorRecords()
	removed = append(removed[:1], removed[2:]...)
	cs, hs = chain(removed)
	v.Tampered = append(v.Tampered, TamperedVector{"the three events with event 2 removed",
		"position 2 deleted", cs, hs, "event missing", 2})
	swapped := vectorRecords()
	swapped[1], swapped[2] = swapped[2], swapped[1]
	cs, hs = chain(swapped)
	v.Tampered = append(v.Tampered, TamperedVector{"the three events with events 2 and 3 swapped",
		"positions 2 and 3 exchanged", cs, hs, "position out of order", 2})

	var f merkle.Frontier
	v.Merkle.Description = "RFC 6962 roots over the three event hashes (leaf = SHA-256(0x00 || event hash))"
	v.Merkle.Roots = map[string]string{"0": f.Root().String()}
	for i, r := range recs {
		f.Append(nil, r.Hash)
		v.Merkle.Roots[[]string{"1", "2", "3"}[i]] = f.Root().String()
	}
	ms := memTree(t, recs)
	p, err := merkle.InclusionProof(t.Context(), ms, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	v.Merkle.InclusionSize, v.Merkle.InclusionIndex = 3, 1
	for _, h := range p {
		v.Merkle.InclusionProof = append(v.Merkle.InclusionProof, h.String())
	}
	cp, err := merkle.ConsistencyProof(t.Context(), ms, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	v.Merkle.ConsistencyOld, v.Merkle.ConsistencyNew = 2, 3
	for _, h := range cp {
		v.Merkle.Consistency = append(v.Merkle.Consistency, h.String())
	}

	signer, vkey := vectorSigner(t)
	signed, err := signer.Sign(3, f.Root())
	if err != nil {
		t.Fatal(err)
	}
	v.Checkpoint = CheckpointVector{"checkpoint of the three-event log, signed with the test key (seed 32 bytes of 0x5e)",
		hex.EncodeToString(vectorSeed), vkey, string(signed), 3, f.Root().String()}
	return v
}

// memTree is a merkle.Reader over the stored hashes of recs.
type memTreeReader []eventstore.Hash

func (m memTreeReader) TreeHashes(_ context.Context, idx []int64) ([]eventstore.Hash, error) {
	out := make([]eventstore.Hash, len(idx))
	for i, ix := range idx {
		if ix >= int64(len(m)) {
			return nil, errors.New("index beyond the tree")
		}
		out[i] = m[ix]
	}
	return out, nil
}

func memTree(t *testing.T, recs []eventstore.Record) memTreeReader {
	var f merkle.Frontier
	var stored []eventstore.Hash
	for _, r := range recs {
		stored = f.Append(stored, r.Hash)
	}
	return memTreeReader(stored)
}

func TestVectors(t *testing.T) {
	want := buildVectors(t)
	b, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *update {
		if err := os.WriteFile("testdata/vectors.json", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatalf("%v (run go test ./eventstore -run TestVectors -update)", err)
	}
	if !bytes.Equal(got, b) {
		t.Fatal("testdata/vectors.json differs from what the code computes: the ledger format changed (if on purpose, run with -update and bump the format version)")
	}
	var v Vectors
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatal(err)
	}
	// Every event vector parses back to its fields and hashes as stated.
	for _, ev := range v.Events {
		c, _ := hex.DecodeString(ev.CanonicalHex)
		r, err := eventstore.ParseCanonical(c)
		if err != nil {
			t.Fatalf("%s: %v", ev.Description, err)
		}
		r.Hash = eventstore.ComputeHash(&r)
		if r.Hash.String() != ev.Hash || r.Position != ev.Position || r.StreamID != ev.StreamID || r.Type != ev.Type ||
			r.ID.String() != ev.EventID || r.RecordedAt.UnixMicro() != ev.RecordedAtUS || hex.EncodeToString(r.Data) != ev.DataHex ||
			r.Metadata.Actor != ev.Metadata["actor"] || r.Metadata.CorrelationID != ev.Metadata["correlation_id"] {
			t.Fatalf("%s: parsed %+v", ev.Description, r)
		}
	}
	for _, m := range v.Malformed {
		c, _ := hex.DecodeString(m.CanonicalHex)
		if _, err := eventstore.ParseCanonical(c); !errors.Is(err, eventstore.ErrMalformed) {
			t.Errorf("%s (%s): %v, want ErrMalformed", m.Description, m.Mutation, err)
		}
	}
	// The checkpoint vector verifies under its key and commits to the root.
	cv, err := checkpoint.NewVerifier(v.Checkpoint.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	size, root, err := cv.Open([]byte(v.Checkpoint.Note))
	if err != nil || size != 3 || root.String() != v.Merkle.Roots["3"] {
		t.Fatalf("checkpoint vector: size %d root %s err %v", size, root, err)
	}
}

// TestDocsQuoteVectors keeps docs/ledger-format.md's worked examples equal
// to the vectors.
func TestDocsQuoteVectors(t *testing.T) {
	doc, err := os.ReadFile("../docs/ledger-format.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(doc)), "")
	v := buildVectors(t)
	for _, want := range []string{v.Events[0].CanonicalHex, v.Events[0].Hash, v.Events[1].Hash, v.Events[0].LeafHash,
		v.Merkle.Roots["2"], v.Merkle.Roots["3"], v.Checkpoint.VerifierKey} {
		if !strings.Contains(text, want) {
			t.Errorf("docs/ledger-format.md does not quote %s", want)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(v.Checkpoint.Note), "\n") {
		if !strings.Contains(string(doc), line) {
			t.Errorf("docs/ledger-format.md does not quote the checkpoint line %q", line)
		}
	}
}

// TestExampleExport keeps testdata/example.export: the vector events and
// checkpoint as an export file, for independent verifiers.
func TestExampleExport(t *testing.T) {
	recs := vectorRecords()
	i := 0
	st := memstore.New(func() time.Time { return recs[min(i, len(recs)-1)].RecordedAt })
	for ; i < len(recs); i++ {
		r := recs[i]
		if _, err := st.Append(t.Context(), r.StreamID, eventstore.Any, eventstore.Event{ID: r.ID, Type: r.Type, Data: r.Data, Metadata: r.Metadata}); err != nil {
			t.Fatal(err)
		}
	}
	stored, _ := st.ReadAll(t.Context(), 1, 0)
	for j := range stored {
		if stored[j].Hash != recs[j].Hash {
			t.Fatalf("event %d hashes differently in the store", j+1)
		}
	}
	signer, vkey := vectorSigner(t)
	var f merkle.Frontier
	for _, r := range recs {
		f.Append(nil, r.Hash)
	}
	note, err := signer.Sign(3, f.Root())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddCheckpoint(t.Context(), eventstore.Checkpoint{Size: 3, Root: f.Root(), Note: note, CreatedAt: recs[2].RecordedAt}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	meta := export.Meta{Origin: signer.Origin(), VerifierKey: vkey, ExportedAt: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	if _, err := export.Write(t.Context(), &buf, st, meta); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("testdata/example.export", buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("testdata/example.export")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf.Bytes()) {
		t.Fatal("testdata/example.export differs from what the code writes (run with -update if the change is intended)")
	}
	key, _ := checkpoint.NewVerifier(vkey)
	if _, rep, err := export.Verify(bytes.NewReader(got), verify.Options{Key: key}); err != nil || rep.Events != 3 {
		t.Fatalf("example export: %+v %v", rep, err)
	}
}
