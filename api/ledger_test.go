package api_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"stele.dev/stele/api"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/merkle"
	"stele.dev/stele/eventstore/verify"
)

// ledgerVerified appends a verification outcome, as the server's
// scheduled verification does.
func ledgerVerified(t *testing.T, h *harness, ev domain.LedgerVerified) uint64 {
	t.Helper()
	data, err := domain.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Store.Append(ctx, domain.LedgerStream, eventstore.Any, eventstore.Event{ID: eventstore.NewID(), Type: ev.EventType(), Data: data,
		Metadata: eventstore.Metadata{Actor: "system:verifier", RequestID: "ledger-test"}})
	if err != nil {
		t.Fatal(err)
	}
	return res.LastPosition
}

func TestLedgerHead(t *testing.T) {
	h := newHarness(t)
	must(h.App.CreateProject(ctx, audAda, "acme", "web", "Web"))
	want := must(h.Store.Head(ctx))
	// Any signed-in caller, of any tenant and role, reads the same head.
	for _, cred := range []string{h.Owner, h.Eve, h.Olga} {
		var got api.LedgerHead
		h.get("/v1/ledger/head", cred).expect(t, 200).decode(t, &got)
		if got.Position != want.Position || got.Hash != want.Hash.String() || got.RecordedAt == nil || !got.RecordedAt.Equal(want.RecordedAt) {
			t.Fatalf("head %+v, the store's %d %s %s", got, want.Position, want.Hash, want.RecordedAt)
		}
	}
	h.get("/v1/ledger/head", "").expectProblem(t, 401, "unauthenticated")
}

func TestLedgerCheckpoint(t *testing.T) {
	h := newHarness(t)
	h.get("/v1/ledger/checkpoint", h.Eve).expectProblem(t, 404, "not_found")

	// Sign a checkpoint as the server does (cmd/stele: a key file, a
	// Checkpointer over the store).
	skey, vkey, err := checkpoint.GenerateKey("stele.test/ledger")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	must(h.App.CreateProject(ctx, audAda, "acme", "web", "Web"))
	cp, err := (&checkpoint.Checkpointer{Store: h.Store, Signer: signer}).Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	latest := must(h.Store.LatestCheckpoint(ctx))
	if latest.Size != cp.Size || latest.Size != must(h.Store.Head(ctx)).Position {
		t.Fatalf("checkpoint %d, store's latest %d", cp.Size, latest.Size)
	}

	// The note, by default and as text/plain; it verifies with the
	// ledger's public key and commits to the tree the events give.
	for _, accept := range []string{"", "text/plain", "text/*", "*/*", "application/json;q=0.5, text/plain"} {
		r := h.do(call{method: "GET", path: "/v1/ledger/checkpoint", cred: h.Olga, header: map[string]string{"Accept": accept}}).expect(t, 200)
		if !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || string(r.body) != string(latest.Note) {
			t.Fatalf("Accept %q: %s %q", accept, r.header.Get("Content-Type"), r.body)
		}
		verifier, err := checkpoint.NewVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		size, root, err := verifier.Open(r.body)
		if err != nil {
			t.Fatalf("the served note does not verify: %v", err)
		}
		want, err := merkle.Root(ctx, h.Store, size)
		if err != nil {
			t.Fatal(err)
		}
		if size != cp.Size || root != want {
			t.Fatalf("the note commits to %d %s; the log gives %s", size, root, want)
		}
		// And with the note package directly, as an auditor's tool would.
		v, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open(r.body, note.VerifierList(v)); err != nil {
			t.Fatalf("note.Open: %v", err)
		}
	}
	// A note signed by another key does not verify: the check above can fail.
	_, otherKey, _ := checkpoint.GenerateKey("stele.test/ledger")
	other, _ := checkpoint.NewVerifier(otherKey)
	if _, _, err := other.Open(latest.Note); err == nil {
		t.Fatal("the note verifies under an unrelated key")
	}

	// JSON on request.
	for _, accept := range []string{"application/json", "application/*", "text/plain;q=0.2, application/json", "text/plain;q=0, */*"} {
		var got api.LedgerCheckpoint
		r := h.do(call{method: "GET", path: "/v1/ledger/checkpoint", cred: h.Bob, header: map[string]string{"Accept": accept}}).expect(t, 200)
		if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Fatalf("Accept %q: served %s", accept, r.header.Get("Content-Type"))
		}
		r.decode(t, &got)
		if got.Size != cp.Size || got.RootHash != cp.Root.String() || got.Note != string(latest.Note) || got.Origin != "stele.test/ledger" ||
			!got.CreatedAt.Equal(latest.CreatedAt) {
			t.Fatalf("checkpoint %+v, the store's %d %s", got, latest.Size, latest.Root)
		}
	}
	for _, accept := range []string{"application/xml", "text/html", "text/plain;q=0"} {
		h.do(call{method: "GET", path: "/v1/ledger/checkpoint", cred: h.Bob, header: map[string]string{"Accept": accept}}).expectProblem(t, 406, "not_acceptable")
	}
	h.get("/v1/ledger/checkpoint", "").expectProblem(t, 401, "unauthenticated")

	// A later checkpoint replaces it.
	must(h.App.CreateProject(ctx, audAda, "acme", "api", "API"))
	cp2 := must((&checkpoint.Checkpointer{Store: h.Store, Signer: signer}).Checkpoint(ctx))
	var got api.LedgerCheckpoint
	h.do(call{method: "GET", path: "/v1/ledger/checkpoint", cred: h.Bob, header: map[string]string{"Accept": "application/json"}}).expect(t, 200).decode(t, &got)
	if got.Size != cp2.Size || got.Size <= cp.Size {
		t.Fatalf("latest checkpoint %d, signed %d", got.Size, cp2.Size)
	}
}

func TestLedgerStatus(t *testing.T) {
	h := newHarness(t)
	skey, _, _ := checkpoint.GenerateKey("stele.test/ledger")
	signer := must(checkpoint.NewSigner(skey))
	must(h.App.CreateProject(ctx, audAda, "acme", "web", "Web"))

	head := audCaughtUp(t, h)
	var st api.LedgerState
	h.get("/v1/ledger/status?min_position="+strconv.FormatUint(head, 10), h.Eve).expect(t, 200).decode(t, &st)
	storeHead := must(h.Store.Head(ctx))
	if st.Head.Position != storeHead.Position || st.Head.RecordedAt == nil || !st.Head.RecordedAt.Equal(storeHead.RecordedAt) ||
		st.LastCheckpoint != nil || st.LastVerification != nil {
		t.Fatalf("status %+v; the store's head %d", st, storeHead.Position)
	}

	// A checkpoint and a passing verification, as the server runs them.
	cp := must((&checkpoint.Checkpointer{Store: h.Store, Signer: signer}).Checkpoint(ctx))
	rep, err := verify.Store(ctx, h.Store, verify.Options{Key: signer.Verifier()})
	if err != nil {
		t.Fatal(err)
	}
	pos := ledgerVerified(t, h, domain.LedgerVerified{Events: rep.Events, Head: rep.Head.String(), Root: rep.Root.String(), Checkpoints: rep.Checkpoints,
		OK: true, Seconds: rep.Duration.Seconds()})
	h.get("/v1/ledger/status?min_position="+strconv.FormatUint(pos, 10), h.Olga).expect(t, 200).decode(t, &st)
	if st.Head.Position != pos || st.LastCheckpoint == nil || st.LastCheckpoint.Size != cp.Size || !st.LastCheckpoint.CreatedAt.Equal(cp.CreatedAt) ||
		st.LastVerification == nil || !st.LastVerification.OK || st.LastVerification.Events != rep.Events || st.LastVerification.Failure != "" ||
		!st.LastVerification.At.Equal(histRecordedAt(t, h, pos)) {
		t.Fatalf("status %+v (verification %+v); checkpoint %d, verified %d events at %d", st, st.LastVerification, cp.Size, rep.Events, pos)
	}

	// A failed one: its outcome and position show, the stream it names
	// (a tenant's secret) does not.
	failure := `ledger verification failed at position 7: stream "secret/acme/web/production/DB_URL" version 3, want 2`
	pos = ledgerVerified(t, h, domain.LedgerVerified{Events: 6, OK: false, Failure: failure})
	h.get("/v1/ledger/status?min_position="+strconv.FormatUint(pos, 10), h.Olga).expect(t, 200).decode(t, &st)
	if v := st.LastVerification; v == nil || v.OK || v.Events != 6 || !strings.Contains(v.Failure, "position 7") ||
		strings.Contains(v.Failure, "acme") || strings.Contains(v.Failure, "DB_URL") {
		t.Fatalf("failed verification shown as %+v", st.LastVerification)
	}

	h.get("/v1/ledger/status", "").expectProblem(t, 401, "unauthenticated")
	h.do(call{method: "GET", path: "/v1/ledger/status?min_position=x", cred: h.Eve, invalid: true}).expectProblem(t, 400, "invalid_request")
}

// The checkpoints' verifier key, as text and as JSON; 404 when the server
// has none.
func TestLedgerKey(t *testing.T) {
	h := newHarness(t)
	h.get("/v1/ledger/key", h.Eve).expectProblem(t, 404, "not_found")

	skey, vkey, err := checkpoint.GenerateKey("stele.test/ledger")
	if err != nil {
		t.Fatal(err)
	}
	signer := must(checkpoint.NewSigner(skey))
	h = newHarness(t, func(c *api.Config) { c.CheckpointKey = signer.Verifier() })
	for _, accept := range []string{"", "text/plain", "*/*"} {
		r := h.do(call{method: "GET", path: "/v1/ledger/key", cred: h.Olga, header: map[string]string{"Accept": accept}}).expect(t, 200)
		if !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || string(r.body) != vkey {
			t.Fatalf("Accept %q: %s %q, want %q", accept, r.header.Get("Content-Type"), r.body, vkey)
		}
		// It verifies the server's checkpoints.
		v := must(checkpoint.NewVerifier(string(r.body)))
		must(h.App.CreateProject(ctx, audAda, "acme", "p-"+strconv.Itoa(len(accept)), "P"))
		cp := must((&checkpoint.Checkpointer{Store: h.Store, Signer: signer}).Checkpoint(ctx))
		if size, _, err := v.Open(must(h.Store.LatestCheckpoint(ctx)).Note); err != nil || size != cp.Size {
			t.Fatalf("the served key does not verify the checkpoint: %v", err)
		}
	}
	var got api.LedgerKey
	h.do(call{method: "GET", path: "/v1/ledger/key", cred: h.Eve, header: map[string]string{"Accept": "application/json"}}).expect(t, 200).decode(t, &got)
	if got.Origin != "stele.test/ledger" || got.Key != vkey {
		t.Fatalf("key %+v, want %q", got, vkey)
	}
	h.do(call{method: "GET", path: "/v1/ledger/key", cred: h.Eve, header: map[string]string{"Accept": "application/xml"}}).expectProblem(t, 406, "not_acceptable")
	h.get("/v1/ledger/key", "").expectProblem(t, 401, "unauthenticated")
}

// ledgerHashes parses a proof's hex hashes.
func ledgerHashes(t *testing.T, hs []string) []eventstore.Hash {
	t.Helper()
	out := make([]eventstore.Hash, len(hs))
	for i, s := range hs {
		out[i] = must(eventstore.ParseHash(s))
	}
	return out
}

// Consistency and inclusion proofs verify against the roots of signed
// checkpoints, as a client that remembers the log's state checks them.
func TestLedgerProofs(t *testing.T) {
	skey, vkey, err := checkpoint.GenerateKey("stele.test/ledger")
	if err != nil {
		t.Fatal(err)
	}
	signer := must(checkpoint.NewSigner(skey))
	verifier := must(checkpoint.NewVerifier(vkey))
	h := newHarness(t, func(c *api.Config) { c.CheckpointKey = signer.Verifier() })
	// Before any checkpoint there is no default size.
	h.get("/v1/ledger/proof/consistency?from=1", h.Eve).expectProblem(t, 404, "not_found")
	h.get("/v1/ledger/proof/inclusion?position=1", h.Eve).expectProblem(t, 404, "not_found")

	sign := func() (uint64, eventstore.Hash) {
		t.Helper()
		must((&checkpoint.Checkpointer{Store: h.Store, Signer: signer}).Checkpoint(ctx))
		note := must(h.Store.LatestCheckpoint(ctx)).Note
		size, root, err := verifier.Open(note)
		if err != nil {
			t.Fatal(err)
		}
		return size, root
	}
	must(h.App.CreateProject(ctx, audAda, "acme", "web", "Web"))
	oldSize, oldRoot := sign()
	for _, p := range []string{"api", "ops", "data"} {
		must(h.App.CreateProject(ctx, audAda, "acme", p, p))
	}
	newSize, newRoot := sign()
	must(h.App.CreateProject(ctx, audAda, "acme", "later", "Later")) // the head is past the latest checkpoint
	head := must(h.Store.Head(ctx)).Position
	if !(oldSize < newSize && newSize < head) {
		t.Fatalf("sizes %d %d %d", oldSize, newSize, head)
	}

	// Consistency, from every size up to the old checkpoint's, to the new
	// one (by default) and to itself.
	for from := uint64(1); from <= oldSize; from++ {
		var pr api.LedgerConsistencyProof
		h.get(fmt.Sprintf("/v1/ledger/proof/consistency?from=%d", from), h.Olga).expect(t, 200).decode(t, &pr)
		if pr.From != from || pr.To != newSize {
			t.Fatalf("proof %+v, want from %d to %d", pr, from, newSize)
		}
		fromRoot := must(merkle.Root(ctx, h.Store, from))
		if from == oldSize && fromRoot != oldRoot {
			t.Fatal("the store's root differs from the signed one")
		}
		if err := merkle.VerifyConsistency(ledgerHashes(t, pr.Proof), newSize, newRoot, from, fromRoot); err != nil {
			t.Fatalf("consistency %d → %d: %v", from, newSize, err)
		}
	}
	var pr api.LedgerConsistencyProof
	h.get(fmt.Sprintf("/v1/ledger/proof/consistency?from=%d&to=%d", oldSize, newSize), h.Eve).expect(t, 200).decode(t, &pr)
	proof := ledgerHashes(t, pr.Proof)
	if err := merkle.VerifyConsistency(proof, newSize, newRoot, oldSize, oldRoot); err != nil {
		t.Fatal(err)
	}
	// A proof checks something: another root, or a changed hash, fails.
	if err := merkle.VerifyConsistency(proof, newSize, oldRoot, oldSize, oldRoot); err == nil {
		t.Fatal("the proof verifies against a wrong root")
	}
	if len(proof) > 0 {
		proof[0][0] ^= 1
		if err := merkle.VerifyConsistency(proof, newSize, newRoot, oldSize, oldRoot); err == nil {
			t.Fatal("a changed proof verifies")
		}
	}
	h.get(fmt.Sprintf("/v1/ledger/proof/consistency?from=%d&to=%d", newSize, newSize), h.Eve).expect(t, 200).decode(t, &pr)
	if len(pr.Proof) != 0 || pr.From != newSize || pr.To != newSize {
		t.Fatalf("a proof from a size to itself: %+v", pr)
	}
	// To the head, beyond any checkpoint.
	h.get(fmt.Sprintf("/v1/ledger/proof/consistency?from=%d&to=%d", newSize, head), h.Eve).expect(t, 200).decode(t, &pr)
	if err := merkle.VerifyConsistency(ledgerHashes(t, pr.Proof), head, must(merkle.Root(ctx, h.Store, head)), newSize, newRoot); err != nil {
		t.Fatal(err)
	}

	// Inclusion of every event of the old checkpoint, in it, and by
	// default in the latest one; the answer holds the event's hash and
	// nothing of its content.
	recs := must(h.Store.ReadAll(ctx, 1, int(newSize)))
	for _, rec := range recs {
		p := rec.Position
		for _, c := range []struct {
			query string
			size  uint64
			root  eventstore.Hash
		}{{fmt.Sprintf("&size=%d", newSize), newSize, newRoot}, {"", newSize, newRoot}, {fmt.Sprintf("&size=%d", oldSize), oldSize, oldRoot}} {
			if p > c.size {
				continue
			}
			r := h.get(fmt.Sprintf("/v1/ledger/proof/inclusion?position=%d%s", p, c.query), h.Olga).expect(t, 200)
			var raw map[string]any
			r.decode(t, &raw)
			if len(raw) != 5 {
				t.Fatalf("the inclusion proof carries more than its fields: %s", r.body)
			}
			var ip api.LedgerInclusionProof
			r.decode(t, &ip)
			if ip.Position != p || ip.Size != c.size || ip.LeafIndex != p-1 || ip.EventHash != rec.Hash.String() {
				t.Fatalf("inclusion %+v of %d in %d", ip, p, c.size)
			}
			if err := merkle.VerifyInclusion(ledgerHashes(t, ip.Proof), c.size, c.root, p-1, rec.Hash); err != nil {
				t.Fatalf("inclusion of %d in %d: %v", p, c.size, err)
			}
			if err := merkle.VerifyInclusion(ledgerHashes(t, ip.Proof), c.size, c.root, p-1, recs[(int(p)%len(recs))].Hash); err == nil && len(recs) > 1 {
				t.Fatalf("the proof of %d verifies another event's hash", p)
			}
		}
	}

	// Bad numbers name their field.
	for _, c := range []struct{ query, field string }{
		{"consistency", "from"},
		{"consistency?from=0", "from"},
		{"consistency?from=x", "from"},
		{"consistency?from=-1", "from"},
		{"consistency?from=1&to=0", "to"},
		{"consistency?from=1&to=1.5", "to"},
		{fmt.Sprintf("consistency?from=1&to=%d", head+1), "to"},
		{fmt.Sprintf("consistency?from=%d&to=%d", newSize, oldSize), "from"},
		{fmt.Sprintf("consistency?from=%d", newSize+1), "from"},
		{"inclusion", "position"},
		{"inclusion?position=0", "position"},
		{"inclusion?position=1&size=x", "size"},
		{fmt.Sprintf("inclusion?position=1&size=%d", head+1), "size"},
		{fmt.Sprintf("inclusion?position=%d&size=%d", oldSize+1, oldSize), "position"},
		{fmt.Sprintf("inclusion?position=%d", newSize+1), "position"},
	} {
		r := h.do(call{method: "GET", path: "/v1/ledger/proof/" + c.query, cred: h.Eve, invalid: true})
		r.expectProblem(t, 400, "invalid_request")
		var p api.Problem
		r.decode(t, &p)
		if p.Field != c.field {
			t.Errorf("%s: field %q, want %q (%s)", c.query, p.Field, c.field, p.Detail)
		}
	}
	h.get("/v1/ledger/proof/consistency?from=1", "").expectProblem(t, 401, "unauthenticated")
	h.get("/v1/ledger/proof/inclusion?position=1", "").expectProblem(t, 401, "unauthenticated")
}
