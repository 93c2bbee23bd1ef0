package api_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"stele.dev/stele/api"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/witness"
	"stele.dev/stele/eventstore/witness/witnesstest"
)

// logFixture is a harness whose checkpoints a witness (a real
// tlog-witness peer over HTTP) cosigns.
type logFixture struct {
	*harness
	signer   *checkpoint.Signer
	wt       *witnesstest.Witness
	cosigner *witness.Cosigner
	w        witness.Witness
}

func newLogFixture(t *testing.T, public bool) *logFixture {
	t.Helper()
	skey, _, err := checkpoint.GenerateKey("stele.test/log")
	if err != nil {
		t.Fatal(err)
	}
	signer := must(checkpoint.NewSigner(skey))
	wt := must(witnesstest.New("witness.test/w1"))
	if err := wt.Trust(signer.Verifier().String()); err != nil {
		t.Fatal(err)
	}
	wsrv := httptest.NewServer(wt)
	t.Cleanup(wsrv.Close)
	w := must(witness.Parse(wt.VerifierKey() + "@" + wsrv.URL))
	f := &logFixture{signer: signer, wt: wt, w: w}
	f.harness = newHarness(t, func(c *api.Config) {
		c.CheckpointKey = signer.Verifier()
		c.PublicLog = public
		if err := witness.Migrate(ctx, c.Pool); err != nil {
			t.Fatal(err)
		}
		f.cosigner = &witness.Cosigner{Log: c.Ledger, Store: witness.NewStore(c.Pool), Witnesses: []witness.Witness{w}}
		c.Witnesses = f.cosigner
	})
	return f
}

// fill appends ledger.verified events until the log holds at least n.
func fill(t testing.TB, h *harness, n uint64) {
	t.Helper()
	head := must(h.Store.Head(ctx)).Position
	for head < n {
		batch := min(int(n-head), eventstore.MaxAppendEvents)
		evs := make([]eventstore.Event, batch)
		for i := range evs {
			data := must(domain.Encode(domain.LedgerVerified{Events: head + uint64(i), OK: true}))
			evs[i] = eventstore.Event{ID: eventstore.NewID(), Type: domain.LedgerVerified{}.EventType(), Data: data,
				Metadata: eventstore.Metadata{Actor: "system:verifier", RequestID: "fill"}}
		}
		res, err := h.Store.Append(ctx, domain.LedgerStream, eventstore.Any, evs...)
		if err != nil {
			t.Fatal(err)
		}
		head = res.LastPosition
	}
}

// sign signs a checkpoint at the head and has the witness cosign it.
func (f *logFixture) sign(t *testing.T) eventstore.Checkpoint {
	t.Helper()
	cp := must((&checkpoint.Checkpointer{Store: f.Store, Signer: f.signer}).Checkpoint(ctx))
	if ok, err := f.cosigner.Submit(ctx, f.w); !ok || err != nil {
		t.Fatalf("cosigning %d: %v %v", cp.Size, ok, err)
	}
	return cp
}

// A transparency-log client that is not Stele's (Tessera's) follows the
// ledger over HTTP with no credential: it fetches checkpoints and tiles,
// builds inclusion and consistency proofs from the tiles, and they verify
// under transparency-dev/merkle against the signed, cosigned checkpoints.
func TestLogFollowedByTessera(t *testing.T) {
	f := newLogFixture(t, true)
	origin := f.signer.Origin()
	logV := f.signer.Verifier().Note()
	witnessV := must(fnote.NewVerifierForCosignatureV1(f.wt.VerifierKey()))

	// No credential, as a witness or a generic client has none; every
	// request still goes through the contract check.
	u := must(url.Parse(f.URL + "/v1/ledger/log/"))
	fetcher := must(client.NewHTTPFetcher(u, f.client))
	if _, err := fetcher.ReadCheckpoint(ctx); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("checkpoint before the first: %v", err)
	}

	fill(t, f.harness, 300)
	cp1 := f.sign(t)
	fill(t, f.harness, 777)
	cp2 := f.sign(t)
	if cp1.Size < 300 || cp2.Size < 777 {
		t.Fatalf("checkpoints at %d and %d", cp1.Size, cp2.Size)
	}

	// The checkpoint verifies under the log's key and carries the
	// witness's cosignature, which verifies under the witness's key.
	cp, raw, n, err := client.FetchCheckpoint(ctx, fetcher.ReadCheckpoint, logV, origin)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != cp2.Size || !bytes.Equal(cp.Hash, cp2.Root[:]) || !bytes.HasPrefix(raw, cp2.Note) || len(n.Sigs) != 1 {
		t.Fatalf("checkpoint %d %x, want %d %s", cp.Size, cp.Hash, cp2.Size, cp2.Root)
	}
	if _, _, cn, err := log.ParseCheckpoint(raw, origin, logV, witnessV); err != nil || len(cn.Sigs) != 2 {
		t.Fatalf("the cosigned checkpoint: %v\n%s", err, raw)
	}
	if _, err := note.Open(raw[len(cp2.Note):], note.VerifierList(witnessV)); err == nil {
		t.Fatal("the cosignature lines alone open as a note")
	}

	// Inclusion proofs for events across tiles, from the tiles alone.
	pb := must(client.NewProofBuilder(ctx, cp.Size, fetcher.ReadTile))
	for _, pos := range []uint64{1, 2, 256, 257, 300, 513, cp.Size} {
		rec := must(f.Store.ReadAll(ctx, pos, 1))[0]
		p, err := pb.InclusionProof(ctx, pos-1)
		if err != nil {
			t.Fatalf("inclusion proof of %d: %v", pos, err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(rec.Hash[:])
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, pos-1, cp.Size, leaf, p, cp.Hash); err != nil {
			t.Fatalf("inclusion of %d in %d: %v", pos, cp.Size, err)
		}
		// The same proof as the JSON endpoint's.
		var got api.LedgerInclusionProof
		f.get(fmt.Sprintf("/v1/ledger/proof/inclusion?position=%d&size=%d", pos, cp.Size), f.Eve).expect(t, 200).decode(t, &got)
		if len(got.Proof) != len(p) {
			t.Fatalf("position %d: %d hashes from the tiles, %d from the API", pos, len(p), len(got.Proof))
		}
		for i := range p {
			if got.Proof[i] != fmt.Sprintf("%x", p[i]) {
				t.Fatalf("position %d: hash %d differs", pos, i)
			}
		}
		// A wrong leaf fails.
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, pos-1, cp.Size, rfc6962.DefaultHasher.HashLeaf([]byte("x")), p, cp.Hash); err == nil {
			t.Fatal("a wrong leaf verifies")
		}
	}

	// A consistency proof between the two checkpoints, from tiles; the
	// older checkpoint as a client kept it when it was the latest.
	old, _, _, err := log.ParseCheckpoint(cp1.Note, origin, logV)
	if err != nil {
		t.Fatal(err)
	}
	cproof, err := pb.ConsistencyProof(ctx, old.Size, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cp.Size, cproof, old.Hash, cp.Hash); err != nil {
		t.Fatalf("consistency %d → %d: %v", old.Size, cp.Size, err)
	}
	if len(cproof) > 0 {
		cproof[0] = make([]byte, 32)
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cp.Size, cproof, old.Hash, cp.Hash); err == nil {
			t.Fatal("a tampered consistency proof verifies")
		}
	}
	// The tiles of the older tree are still served (its partial tiles
	// included) and agree with the newer.
	pb1 := must(client.NewProofBuilder(ctx, old.Size, fetcher.ReadTile))
	p1 := must(pb1.InclusionProof(ctx, 299))
	rec := must(f.Store.ReadAll(ctx, 300, 1))[0]
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 299, old.Size, rfc6962.DefaultHasher.HashLeaf(rec.Hash[:]), p1, old.Hash); err != nil {
		t.Fatalf("inclusion in the older tree: %v", err)
	}
	// The compact range of the tree hashes to its root.
	rng := must(client.FetchRangeNodes(ctx, cp.Size, fetcher.ReadTile))
	if len(rng) == 0 {
		t.Fatal("no range nodes")
	}

	// Entry bundles hold the events' hashes, nothing else, and hash to the
	// level 0 tiles' leaves.
	leaves := must(client.FetchLeafHashes(ctx, fetcher.ReadTile, 0, cp.Size, cp.Size))
	recs := must(f.Store.ReadAll(ctx, 1, int(cp.Size)))
	for i := uint64(0); i*256 < cp.Size; i++ {
		b, err := client.GetEntryBundle(ctx, fetcher.ReadEntryBundle, i, cp.Size)
		if err != nil {
			t.Fatalf("bundle %d: %v", i, err)
		}
		if want := min(256, cp.Size-i*256); uint64(len(b.Entries)) != want {
			t.Fatalf("bundle %d holds %d entries, want %d", i, len(b.Entries), want)
		}
		for j, e := range b.Entries {
			k := i*256 + uint64(j)
			if !bytes.Equal(e, recs[k].Hash[:]) {
				t.Fatalf("entry %d is not event %d's hash", k, k+1)
			}
			if !bytes.Equal(rfc6962.DefaultHasher.HashLeaf(e), leaves[k]) {
				t.Fatalf("entry %d does not hash to its leaf", k)
			}
		}
	}
	// Nothing of any event's content: the bundles are exactly
	// length-prefixed hashes.
	raw0 := f.get("/v1/ledger/log/tile/entries/000", "").expect(t, 200).body
	if len(raw0) != 256*34 {
		t.Fatalf("a full bundle of %d bytes", len(raw0))
	}
	for i := 0; i < 256; i++ {
		e := raw0[i*34:]
		if e[0] != 0 || e[1] != 32 || !bytes.Equal(e[2:34], recs[i].Hash[:]) {
			t.Fatalf("entry %d: %x", i, e[:34])
		}
	}
	for _, r := range recs[:20] {
		if bytes.Contains(raw0, r.Data) {
			t.Fatal("an event's data is in a bundle")
		}
	}

	// The tiles are what tlog computes: the level 1 partial tile's hashes
	// are the roots of the full level 0 tiles.
	l0 := f.get("/v1/ledger/log/tile/0/000", "").expect(t, 200).body
	l1 := f.get(fmt.Sprintf("/v1/ledger/log/tile/1/000.p/%d", cp.Size/256), "").expect(t, 200).body
	if len(l0) != 8192 || len(l1) != 32*int(cp.Size/256) {
		t.Fatalf("tile sizes %d and %d", len(l0), len(l1))
	}
	if root := subtreeRoot(l0); !bytes.Equal(root, l1[:32]) {
		t.Fatalf("level 1 hash 0 is %x, the root of level 0 tile 0 is %x", l1[:32], root)
	}
}

// subtreeRoot is the RFC 6962 root of a full tile's 256 hashes.
func subtreeRoot(tile []byte) []byte {
	level := make([][]byte, 0, 256)
	for i := 0; i < len(tile); i += 32 {
		level = append(level, tile[i:i+32])
	}
	for len(level) > 1 {
		next := make([][]byte, 0, len(level)/2)
		for i := 0; i < len(level); i += 2 {
			h := sha256.Sum256(append(append([]byte{1}, level[i]...), level[i+1]...))
			next = append(next, h[:])
		}
		level = next
	}
	return level[0]
}

// Paths, caching, and what is and is not served.
func TestLogTilePaths(t *testing.T) {
	f := newLogFixture(t, true)
	bad := func(path string) {
		t.Helper()
		f.do(call{method: "GET", path: "/v1/ledger/log/" + path, invalid: true}).expectProblem(t, 400, "invalid_request")
	}
	missing := func(path string) {
		t.Helper()
		f.do(call{method: "GET", path: "/v1/ledger/log/" + path, invalid: true}).expectProblem(t, 404, "not_found")
	}
	// Before any checkpoint, nothing.
	missing("checkpoint")
	missing("tile/0/000.p/1")
	missing("tile/entries/000.p/1")

	fill(t, f.harness, 300)
	cp := f.sign(t)
	w := cp.Size - 256 // the width of the partial tile 1
	for _, p := range []string{"tile/0/000", "tile/entries/000", fmt.Sprintf("tile/0/001.p/%d", w), fmt.Sprintf("tile/entries/001.p/%d", w),
		"tile/0/000.p/5", "tile/entries/000.p/255", "tile/1/000.p/1"} {
		r := f.get("/v1/ledger/log/"+p, "").expect(t, 200)
		if r.header.Get("Content-Type") != "application/octet-stream" || r.header.Get("Cache-Control") != "public, max-age=31536000, immutable" ||
			r.header.Get("Content-Length") != strconv.Itoa(len(r.body)) {
			t.Fatalf("%s: %v", p, r.header)
		}
	}
	// A partial tile is a prefix of the full one.
	full := f.get("/v1/ledger/log/tile/0/000", "").expect(t, 200).body
	part := f.get("/v1/ledger/log/tile/0/000.p/5", "").expect(t, 200).body
	if !bytes.Equal(part, full[:5*32]) {
		t.Fatal("the partial tile is not a prefix of the full one")
	}
	r := f.get("/v1/ledger/log/checkpoint", "").expect(t, 200)
	if r.header.Get("Content-Type") != "text/plain; charset=utf-8" || r.header.Get("Cache-Control") != "no-store" || !bytes.HasPrefix(r.body, cp.Note) {
		t.Fatalf("checkpoint: %v %q", r.header, r.body)
	}

	// Beyond the checkpoint: 404, though the log may hold the events.
	fill(t, f.harness, 600)
	for _, p := range []string{"tile/0/001", "tile/entries/001", fmt.Sprintf("tile/0/001.p/%d", w+1), "tile/0/002.p/1", "tile/1/000",
		"tile/1/000.p/2", "tile/2/000.p/1", "tile/7/000.p/1", "tile/63/000", "tile/0/x001/000", "tile/entries/x999/x999/x999/x999/x999/999"} {
		missing(p)
	}
	// Malformed or not canonical: 400.
	for _, p := range []string{"tile/0/0", "tile/0/0000", "tile/00/000", "tile/64/000", "tile/-1/000", "tile/a/000", "tile/0/x000/001",
		"tile/0/x001", "tile/0/001/002", "tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/05", "tile/0/000.p", "tile/0/000.p/", "tile/entries",
		"tile/entries/", "tile/0", "tile/", "tile/0/000/", "tile/0/x001/000.p/x1", "tile/0/X001/000", "tile/entries/000.p/1/2",
		"tile/entries/x999/x999/x999/x999/x999/x999/999"} { // the last past 2^64
		bad(p)
	}

	// Anonymous callers read only the log's public parts.
	for _, p := range []string{"/v1/ledger/checkpoint", "/v1/ledger/key", "/v1/ledger/log/checkpoint"} {
		f.get(p, "").expect(t, 200)
	}
	for _, p := range []string{"/v1/ledger/head", "/v1/ledger/status", "/v1/ledger/witnessed", "/v1/ledger/proof/inclusion?position=1"} {
		f.get(p, "").expectProblem(t, 401, "unauthenticated")
	}
	// A bad credential is still refused.
	f.get("/v1/ledger/log/checkpoint", "stele_tok_nonsense").expectProblem(t, 401, "unauthenticated")
}

// By default the log is for signed-in callers, and tiles are cached
// privately.
func TestLogNotPublic(t *testing.T) {
	f := newLogFixture(t, false)
	fill(t, f.harness, 260)
	f.sign(t)
	for _, p := range []string{"/v1/ledger/log/checkpoint", "/v1/ledger/log/tile/0/000", "/v1/ledger/log/tile/entries/000.p/4",
		"/v1/ledger/checkpoint", "/v1/ledger/key"} {
		f.get(p, "").expectProblem(t, 401, "unauthenticated")
		r := f.get(p, f.Olga).expect(t, 200) // any tenant's signed-in caller
		if strings.Contains(p, "/tile/") && r.header.Get("Cache-Control") != "private, max-age=31536000, immutable" {
			t.Fatalf("%s: Cache-Control %q", p, r.header.Get("Cache-Control"))
		}
	}
	// Tessera's client with a token.
	fetcher := must(client.NewHTTPFetcher(must(url.Parse(f.URL+"/v1/ledger/log")), f.client))
	if _, _, _, err := client.FetchCheckpoint(ctx, fetcher.ReadCheckpoint, f.signer.Verifier().Note(), f.signer.Origin()); err == nil {
		t.Fatal("an anonymous client read the checkpoint")
	}
	fetcher.SetAuthorizationHeader("Bearer " + f.Bob)
	cp, _, _, err := client.FetchCheckpoint(ctx, fetcher.ReadCheckpoint, f.signer.Verifier().Note(), f.signer.Origin())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := must(client.NewProofBuilder(ctx, cp.Size, fetcher.ReadTile)).InclusionProof(ctx, 100); err != nil {
		t.Fatal(err)
	}
}

// The checkpoint with its cosignatures on request, and which checkpoints
// are witnessed, by whom and when.
func TestLedgerWitnessed(t *testing.T) {
	f := newLogFixture(t, false)
	witnessed := func(query, cred string) (got api.LedgerWitnessed) {
		t.Helper()
		f.get("/v1/ledger/witnessed"+query, cred).expect(t, 200).decode(t, &got)
		return got
	}
	got := witnessed("", f.Eve)
	if len(got.Witnesses) != 1 || got.Witnesses[0].Name != "witness.test/w1" || got.Witnesses[0].Key != f.wt.VerifierKey() ||
		got.Witnesses[0].LatestSize != 0 || got.Witnesses[0].Problem != "" || len(got.Checkpoints) != 0 {
		t.Fatalf("witnessed %+v", got)
	}
	cps := []eventstore.Checkpoint{}
	for i := range 3 {
		fill(t, f.harness, uint64(40+10*i))
		cps = append(cps, f.sign(t))
	}
	got = witnessed("", f.Olga)
	if len(got.Checkpoints) != 3 || got.Checkpoints[0].Size != cps[2].Size || got.Checkpoints[2].Size != cps[0].Size ||
		got.Checkpoints[0].RootHash != cps[2].Root.String() || len(got.Checkpoints[0].Cosignatures) != 1 ||
		got.Checkpoints[0].Cosignatures[0].Witness != "witness.test/w1" || got.Checkpoints[0].Cosignatures[0].CosignedAt.IsZero() ||
		got.Witnesses[0].LatestSize != cps[2].Size || got.Witnesses[0].LatestCosignedAt == nil || got.Witnesses[0].LastAttemptAt == nil ||
		got.Witnesses[0].Failures != 0 {
		t.Fatalf("witnessed %+v", got)
	}
	got = witnessed(fmt.Sprintf("?before=%d&limit=1", cps[2].Size), f.Olga)
	if len(got.Checkpoints) != 1 || got.Checkpoints[0].Size != cps[1].Size {
		t.Fatalf("page %+v", got.Checkpoints)
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "before=0", "before=-1"} {
		f.do(call{method: "GET", path: "/v1/ledger/witnessed?" + q, cred: f.Eve, invalid: true}).expectProblem(t, 400, "invalid_request")
	}

	// The checkpoint: plain by default, with the cosignature on request.
	latest := cps[2]
	f.get("/v1/ledger/checkpoint", f.Eve).expect(t, 200)
	if r := f.get("/v1/ledger/checkpoint", f.Eve); !bytes.Equal(r.body, latest.Note) {
		t.Fatalf("plain note %q", r.body)
	}
	r := f.get("/v1/ledger/checkpoint?cosigned=true", f.Eve).expect(t, 200)
	witnessV := must(fnote.NewVerifierForCosignatureV1(f.wt.VerifierKey()))
	if !bytes.HasPrefix(r.body, latest.Note) || len(r.body) == len(latest.Note) {
		t.Fatalf("cosigned note %q", r.body)
	}
	if _, _, n, err := log.ParseCheckpoint(r.body, f.signer.Origin(), f.signer.Verifier().Note(), witnessV); err != nil || len(n.Sigs) != 2 {
		t.Fatalf("the cosigned note: %v", err)
	}
	var j api.LedgerCheckpoint
	f.do(call{method: "GET", path: "/v1/ledger/checkpoint?cosigned=1", cred: f.Eve, header: map[string]string{"Accept": "application/json"}}).expect(t, 200).decode(t, &j)
	if j.Note != string(r.body) || len(j.Cosignatures) != 1 || j.Cosignatures[0].Key != f.wt.VerifierKey() {
		t.Fatalf("JSON %+v", j)
	}
	var plain api.LedgerCheckpoint
	f.do(call{method: "GET", path: "/v1/ledger/checkpoint", cred: f.Eve, header: map[string]string{"Accept": "application/json"}}).expect(t, 200).decode(t, &plain)
	if plain.Note != string(latest.Note) || plain.Cosignatures != nil {
		t.Fatalf("JSON %+v", plain)
	}
	f.do(call{method: "GET", path: "/v1/ledger/checkpoint?cosigned=maybe", cred: f.Eve, invalid: true}).expectProblem(t, 400, "invalid_request")

	// A witness that is down: the server keeps serving, the status says so,
	// and the last witnessed checkpoint is still the one shown.
	f.wt.SetMode(witnesstest.Down)
	fill(t, f.harness, 80)
	cp := must((&checkpoint.Checkpointer{Store: f.Store, Signer: f.signer}).Checkpoint(ctx))
	if ok, err := f.cosigner.Submit(ctx, f.w); ok || err == nil {
		t.Fatalf("Submit to a witness that is down: %v %v", ok, err)
	}
	got = witnessed("", f.Eve)
	if got.Witnesses[0].Problem != "unavailable" || got.Witnesses[0].Failures != 1 || got.Witnesses[0].LatestSize != cps[2].Size {
		t.Fatalf("witness status %+v", got.Witnesses[0])
	}
	r = f.get("/v1/ledger/log/checkpoint", f.Eve).expect(t, 200)
	if !bytes.Equal(r.body, cp.Note) {
		t.Fatalf("an uncosigned checkpoint is served as %q", r.body)
	}
	// A witness whose cosignature does not verify: refused, not stored.
	f.wt.SetMode(witnesstest.Corrupt)
	if ok, err := f.cosigner.Submit(ctx, f.w); ok || !errors.Is(err, witness.ErrBadCosignature) {
		t.Fatalf("Submit to a corrupt witness: %v %v", ok, err)
	}
	got = witnessed("", f.Eve)
	if got.Witnesses[0].Problem != "bad_cosignature" || got.Witnesses[0].Failures != 2 || got.Checkpoints[0].Size != cps[2].Size {
		t.Fatalf("after a bad cosignature %+v", got)
	}
	// Back to normal: the witness already moved to cp (it cosigned it,
	// badly), so it answers 409 and the cosigner follows.
	f.wt.SetMode(witnesstest.Normal)
	fill(t, f.harness, 90)
	cp = f.sign(t)
	got = witnessed("", f.Eve)
	if got.Witnesses[0].Problem != "" || got.Witnesses[0].Failures != 0 || got.Checkpoints[0].Size != cp.Size {
		t.Fatalf("after recovery %+v", got)
	}
	if r := f.get("/v1/ledger/log/checkpoint", ""); r.status != 401 {
		t.Fatalf("anonymous: %d", r.status)
	}
}
