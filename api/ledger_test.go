package api_test

import (
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
