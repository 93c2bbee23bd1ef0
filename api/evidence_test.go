package api_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	tdproof "github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/evidence"
	"stele.dev/stele/eventstore/postgres"
)

// evidenceHarness is a server that signs checkpoints on demand (signing
// true) or only serves the stored ones, with acme and globex both
// holding secrets, reads, grants and tokens.
func evidenceHarness(t *testing.T, signing bool) (*harness, *checkpoint.Signer) {
	skey, _, err := checkpoint.GenerateKey("stele.test/evidence")
	if err != nil {
		t.Fatal(err)
	}
	signer := must(checkpoint.NewSigner(skey))
	h := newHarness(t, func(c *api.Config) {
		c.CheckpointKey = signer.Verifier()
		if signing {
			c.Ledger = api.SigningLedger{Ledger: c.Ledger, Signer: &checkpoint.Checkpointer{Store: c.Ledger.(*postgres.Store), Signer: signer}}
		}
	})
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "globex-request-7731", ClientAddr: "198.51.100.77"}
	for _, x := range []struct {
		req               app.Request
		org, project, env string
		name              string
	}{{audAda, "acme", "web", "production", "DB_URL"}, {olga, "globex", "shop", "live", "GLOBEX_STRIPE_KEY"}} {
		must(h.App.CreateProject(ctx, x.req, x.org, x.project, "Project "+x.project))
		env := app.Env{Org: x.org, Project: x.project, Env: x.env}
		must(h.App.CreateEnvironment(ctx, x.req, env, app.EnvSpec{Production: true}))
		ref := domain.SecretRef{Org: x.org, Project: x.project, Env: x.env, Name: x.name}
		for _, v := range []string{"first-" + x.org + "-value", "second-" + x.org + "-value"} {
			must(h.App.SetSecret(ctx, x.req, ref, app.SetSecret{Value: []byte(v)}))
		}
		must(h.App.RevealSecret(ctx, x.req, ref, 0, "evidence test of "+x.org, domain.ChannelAPI))
		must(h.App.GrantRole(ctx, x.req, x.org, "dev-of-"+x.org+"@example.com", domain.RoleDeveloper, ""))
		if _, _, err := h.App.IssueToken(ctx, x.req, x.org, app.TokenSpec{Name: "ci-of-" + x.org, Role: domain.RoleViewer, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	return h, signer
}

// getEvidence fetches an organization's evidence.
func getEvidence(h *harness, org, cred string, q url.Values) response {
	h.t.Helper()
	p := "/v1/orgs/" + org + "/audit/evidence"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return h.get(p, cred)
}

func TestAuditEvidence(t *testing.T) {
	h, signer := evidenceHarness(t, true)
	recs := audLog(t, h)
	// The verifier's stream check relies on this: every event of a
	// stream has the same tenant.
	tenantOf := map[string]string{}
	for _, x := range recs {
		if ten, ok := tenantOf[x.StreamID]; ok && ten != x.Metadata.Tenant {
			t.Fatalf("stream %s holds events of tenants %q and %q", x.StreamID, ten, x.Metadata.Tenant)
		}
		tenantOf[x.StreamID] = x.Metadata.Tenant
	}
	r := getEvidence(h, "acme", h.Ada, nil).expect(t, 200)
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" || !strings.HasPrefix(r.header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("headers: %v", r.header)
	}
	rep, err := evidence.Verify(bytes.NewReader(r.body), signer.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	// Every event of acme, and only those: the checkpoint was signed now,
	// so it covers the head.
	var want []uint64
	for _, x := range recs {
		if x.Metadata.Tenant == "acme" {
			want = append(want, x.Position)
		}
	}
	if rep.Events != uint64(len(want)) || rep.FirstPosition != want[0] || rep.LastPosition != want[len(want)-1] || rep.Org != "acme" {
		t.Fatalf("report %+v, want %d events %d..%d", rep, len(want), want[0], want[len(want)-1])
	}
	if rep.TreeSize < uint64(len(recs)) || rep.Types["secret.viewed"] != 1 || rep.Types["organization.token_issued"] != 2 {
		t.Fatalf("report %+v", rep)
	}
	if cp := must(h.Store.LatestCheckpoint(ctx)); !strings.Contains(string(r.body), string(cp.Note)) || cp.Size != rep.TreeSize {
		t.Fatalf("the file's checkpoint is not the stored latest (%d)", cp.Size)
	}

	// An implementation Stele does not use checks the checkpoint and proofs.
	rd, err := evidence.NewReader(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _, err := log.ParseCheckpoint(rd.Header().Note, signer.Origin(), signer.Verifier().Note())
	if err != nil {
		t.Fatal(err)
	}
	th := rfc6962.DefaultHasher
	var decoded []byte
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		proof := make([][]byte, len(e.Proof))
		for i := range e.Proof {
			proof[i] = e.Proof[i].Bytes()
		}
		sum := sha256.Sum256(e.Record)
		if err := tdproof.VerifyInclusion(th, e.Position-1, cp.Size, th.HashLeaf(sum[:]), proof, cp.Hash); err != nil {
			t.Fatalf("position %d: %v", e.Position, err)
		}
		decoded = append(decoded, e.Record...)
	}

	// No byte of globex's events, nor of the events of no tenant
	// (sign-ins), is in acme's evidence.
	// (Data that an event of acme holds too, byte for byte, is acme's.)
	ownData := map[string]bool{}
	for _, x := range recs {
		if x.Metadata.Tenant == "acme" {
			ownData[string(x.Data)] = true
		}
	}
	var others int
	for _, x := range recs {
		if x.Metadata.Tenant == "acme" {
			continue
		}
		others++
		canon := eventstore.AppendCanonical(nil, &x)
		needles := map[string][]byte{
			"stream": []byte(x.StreamID), "event id": []byte(x.ID.String()), "event id hex": []byte(hex.EncodeToString(x.ID[:])),
			"event id bytes": x.ID[:], "data": x.Data, "data base64": []byte(base64.StdEncoding.EncodeToString(x.Data)),
			"event hash hex": []byte(x.Hash.String()), "record": canon, "record base64": []byte(base64.StdEncoding.EncodeToString(canon)),
			"record hex": []byte(hex.EncodeToString(canon)), "record after its fixed part": canon[87:],
		}
		if x.Metadata.Tenant != "" {
			needles["tenant"] = []byte(x.Metadata.Tenant)
		}
		if ownData[string(x.Data)] {
			delete(needles, "data")
			delete(needles, "data base64")
		}
		for what, b := range needles {
			if len(b) >= 8 && (bytes.Contains(r.body, b) || bytes.Contains(decoded, b)) {
				t.Fatalf("acme's evidence holds the %s of event %d (%s, tenant %q)", what, x.Position, x.Type, x.Metadata.Tenant)
			}
		}
	}
	if others < 10 {
		t.Fatalf("only %d events of others to look for", others)
	}
	for _, s := range []string{"globex", "GLOBEX", "olga", "globex-request-7731", "198.51.100.77", "session/"} {
		if bytes.Contains(r.body, []byte(s)) || bytes.Contains(decoded, []byte(s)) {
			t.Fatalf("acme's evidence mentions %q", s)
		}
	}

	// A time range: the events recorded in it.
	from, to := recs[want[2]-1].RecordedAt, recs[want[len(want)-2]-1].RecordedAt
	r = getEvidence(h, "acme", h.Ada, url.Values{"from": {from.Format(time.RFC3339Nano)}, "to": {to.Format(time.RFC3339Nano)}}).expect(t, 200)
	rep, err = evidence.Verify(bytes.NewReader(r.body), signer.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range want {
		if at := recs[p-1].RecordedAt; !at.Before(from) && at.Before(to) {
			n++
		}
	}
	if rep.Events != uint64(n) || !rep.From.Equal(from) || !rep.To.Equal(to) {
		t.Fatalf("range: %+v, want %d events", rep, n)
	}
	// A range before the first event: no event, still a checkpoint.
	r = getEvidence(h, "acme", h.Ada, url.Values{"to": {"2001-01-01T00:00:00Z"}}).expect(t, 200)
	if rep, err := evidence.Verify(bytes.NewReader(r.body), signer.Verifier()); err != nil || rep.Events != 0 {
		t.Fatalf("empty range: %+v %v", rep, err)
	}

	// globex's owner gets globex's evidence.
	r = getEvidence(h, "globex", h.Olga, nil).expect(t, 200)
	if rep, err := evidence.Verify(bytes.NewReader(r.body), signer.Verifier()); err != nil || rep.Org != "globex" || rep.Events < 8 {
		t.Fatalf("globex: %+v %v", rep, err)
	}
}

func TestAuditEvidenceAccessAndInput(t *testing.T) {
	h, _ := evidenceHarness(t, true)
	getEvidence(h, "acme", "", nil).expectProblem(t, 401, "unauthenticated")
	getEvidence(h, "acme", h.Bob, nil).expectProblem(t, 403, "forbidden")
	getEvidence(h, "acme", h.Eve, nil).expectProblem(t, 403, "forbidden")
	getEvidence(h, "acme", h.Olga, nil).expectProblem(t, 404, "not_found")
	getEvidence(h, "globex", h.Ada, nil).expectProblem(t, 404, "not_found")
	getEvidence(h, "no-such-org", h.Ada, nil).expectProblem(t, 404, "not_found")
	getEvidence(h, "acme", h.Owner, nil).expect(t, 200) // the bootstrap token is an owner
	r := h.do(call{method: "GET", path: "/v1/orgs/acme/audit/evidence?from=yesterday", cred: h.Ada, invalid: true})
	r.expectProblem(t, 400, "invalid_request")
	if !strings.Contains(string(r.body), `"field":"from"`) {
		t.Fatalf("%s", r.body)
	}
	getEvidence(h, "acme", h.Ada, url.Values{"from": {"2026-02-01T00:00:00Z"}, "to": {"2026-01-01T00:00:00Z"}}).expectProblem(t, 400, "invalid_request")
	getEvidence(h, "acme", h.Ada, url.Values{"from": {"2026-01-01T00:00:00.0000001Z"}, "to": {"2026-01-01T00:00:00.0000002Z"}}).expectProblem(t, 400, "invalid_request")
	h.do(call{method: "GET", path: "/v1/orgs/acme/audit/evidence?from=2026-01-01T00:00:00Z;to=x", cred: h.Ada, invalid: true}).expectProblem(t, 400, "invalid_request")
}

// Without a signer the server uses the latest stored checkpoint; when it
// does not cover the organization's last event, it answers 503 not_yet
// with Retry-After, until a checkpoint does.
func TestAuditEvidenceWaitsForCheckpoint(t *testing.T) {
	h, signer := evidenceHarness(t, false)
	cpr := &checkpoint.Checkpointer{Store: h.Store, Signer: signer}
	r := getEvidence(h, "acme", h.Ada, nil)
	r.expectProblem(t, 503, "not_yet")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	must(cpr.Checkpoint(ctx))
	r = getEvidence(h, "acme", h.Ada, nil).expect(t, 200)
	first, err := evidence.Verify(bytes.NewReader(r.body), signer.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	// Another tenant's event after the checkpoint does not hold acme up.
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "later"}
	must(h.App.GrantRole(ctx, olga, "globex", "late@example.com", domain.RoleViewer, ""))
	r = getEvidence(h, "acme", h.Ada, nil).expect(t, 200)
	if rep, err := evidence.Verify(bytes.NewReader(r.body), signer.Verifier()); err != nil || rep.Events != first.Events || rep.TreeSize != first.TreeSize {
		t.Fatalf("%+v %v", rep, err)
	}
	getEvidence(h, "globex", h.Olga, nil).expectProblem(t, 503, "not_yet")
	// A range that ends before globex's new event is covered.
	head := must(h.Store.Head(ctx))
	getEvidence(h, "globex", h.Olga, url.Values{"to": {head.RecordedAt.Format(time.RFC3339Nano)}}).expect(t, 200)
	// acme's own new event is not covered until the next checkpoint.
	must(h.App.GrantRole(ctx, audAda, "acme", "late@example.com", domain.RoleViewer, ""))
	getEvidence(h, "acme", h.Ada, nil).expectProblem(t, 503, "not_yet")
	must(cpr.Checkpoint(ctx))
	r = getEvidence(h, "acme", h.Ada, nil).expect(t, 200)
	if rep, err := evidence.Verify(bytes.NewReader(r.body), signer.Verifier()); err != nil || rep.Events != first.Events+1 {
		t.Fatalf("%+v %v", rep, err)
	}
}
