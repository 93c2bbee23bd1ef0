package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore/checkpoint"
)

// stele audit export and stele audit verify, real processes against a
// real server: the export holds acme's events and nothing of globex's,
// verifies offline with the ledger's key (given as a key or @FILE), and
// each kind of tampering fails with a one-line error and exit status 3;
// bad input gets its documented status.
func TestCLIAuditEvidence(t *testing.T) {
	cs := newCLIServer(t)
	ctx := context.Background()
	// Another tenant with a secret, a read and a grant.
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga@example.com"}, RequestID: "globex-req"}
	if _, err := cs.App.CreateOrganization(ctx, olga, "globex", "Globex"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.App.CreateProject(ctx, olga, "globex", "shop", "Shop"); err != nil {
		t.Fatal(err)
	}
	genv := app.Env{Org: "globex", Project: "shop", Env: "live"}
	if _, err := cs.App.CreateEnvironment(ctx, olga, genv, app.EnvSpec{Production: true}); err != nil {
		t.Fatal(err)
	}
	gref := domain.SecretRef{Org: "globex", Project: "shop", Env: "live", Name: "GLOBEX_PAYMENT_KEY"}
	if _, err := cs.App.SetSecret(ctx, olga, gref, app.SetSecret{Value: []byte("globex-secret-value")}); err != nil {
		t.Fatal(err)
	}
	// acme: secrets, reads through the CLI, a grant.
	cs.set(t, "dev", "DB_URL", "postgres://acme-db")
	cs.set(t, "production", "API_KEY", "acme-prod-key")
	for _, args := range [][]string{{"secrets", "get", "DB_URL"}, {"secrets", "get", "API_KEY", "--env", "production"}, {"members", "grant", "bob@example.com", "--role", "developer"}} {
		if r := cs.run(t, nil, args...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	if _, err := cs.App.RevealSecret(ctx, olga, gref, 0, "globex read", domain.ChannelAPI); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "ledger.pub")
	vkey := cs.Signer.Verifier().String()
	if err := os.WriteFile(keyFile, []byte(vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "acme.evidence")

	// The export waits for a checkpoint that covers acme's last event
	// (the server signs one every 100ms here), checks the file with the
	// key it trusts since first contact, and keeps it.
	r := cs.run(t, nil, "audit", "export", "--out", file)
	if r.code != 0 || !strings.Contains(r.stdout, "events of acme") || !strings.Contains(r.stdout, "stele audit verify --file "+file) {
		t.Fatalf("export: %+v", r)
	}
	t.Logf("stele audit export:\n%s%s", r.stdout, r.stderr)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"globex", "GLOBEX", "olga", "shop/live"} {
		if strings.Contains(string(data), s) || strings.Contains(decodedRecords(t, data), s) {
			t.Fatalf("acme's evidence mentions %q", s)
		}
	}

	// Verify offline: the key, or @FILE.
	r = cs.run(t, nil, "audit", "verify", "--file", file, "--key", "@"+keyFile)
	if r.code != 0 || !strings.Contains(r.stdout, ": OK") || !strings.Contains(r.stdout, "organization   acme") ||
		!strings.Contains(r.stdout, "secret.viewed") || !strings.Contains(r.stdout, "token:") {
		t.Fatalf("verify: %+v", r)
	}
	t.Logf("stele audit verify:\n%s", r.stdout)
	r = cs.run(t, nil, "audit", "verify", "--file", file, "--key", vkey, "--json")
	var out struct {
		OK         bool   `json:"ok"`
		Org        string `json:"org"`
		Events     uint64 `json:"events"`
		First      uint64 `json:"first_position"`
		Last       uint64 `json:"last_position"`
		EventTypes []struct {
			Name  string `json:"name"`
			Count uint64 `json:"count"`
		} `json:"event_types"`
		Actors []struct {
			Name  string `json:"name"`
			Count uint64 `json:"count"`
		} `json:"actors"`
		Checkpoint struct {
			Size uint64 `json:"size"`
		} `json:"checkpoint"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || !out.OK || out.Org != "acme" {
		t.Fatalf("verify --json: %+v", r)
	}
	// Every event of acme up to the checkpoint, and only those.
	var want, viewed uint64
	for from := uint64(1); from <= out.Checkpoint.Size; {
		recs, err := cs.Store.ReadAll(ctx, from, 1000)
		if err != nil || len(recs) == 0 {
			t.Fatal(err)
		}
		for _, x := range recs {
			if x.Position <= out.Checkpoint.Size && x.Metadata.Tenant == "acme" {
				want++
				if x.Type == "secret.viewed" {
					viewed++
				}
			}
		}
		from = recs[len(recs)-1].Position + 1
	}
	var gotViewed uint64
	for _, c := range out.EventTypes {
		if c.Name == "secret.viewed" {
			gotViewed = c.Count
		}
	}
	if out.Events != want || viewed != 2 || gotViewed != 2 || len(out.Actors) < 2 {
		t.Fatalf("verify --json: %d events (want %d), %d reads (want %d): %s", out.Events, want, gotViewed, viewed, r.stdout)
	}

	// A range: --from as a duration ago.
	ranged := filepath.Join(dir, "recent.evidence")
	if r := cs.run(t, nil, "audit", "export", "--out", ranged, "--from", "1h", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"org": "acme"`) {
		t.Fatalf("export --from 1h: %+v", r)
	}
	if r := cs.run(t, nil, "audit", "verify", "--file", ranged, "--key", vkey); r.code != 0 {
		t.Fatalf("verify the ranged export: %+v", r)
	}

	// Tampering: exit 3, one line naming the event and the check.
	lines := strings.SplitAfter(string(data), "\n")
	var events []int
	for i, l := range lines {
		if strings.HasPrefix(l, "event ") {
			events = append(events, i)
		}
	}
	write := func(name string, ls []string, reseal bool) string {
		p := filepath.Join(dir, name)
		b := []byte(strings.Join(ls, ""))
		if reseal {
			b = resealEvidence(ls)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mid, last := events[len(events)/2], events[len(events)-1]
	changed := append([]string(nil), lines...)
	fs := strings.Fields(changed[mid])
	rec, _ := base64.StdEncoding.DecodeString(fs[3])
	rec[len(rec)-2] ^= 1
	fs[3] = base64.StdEncoding.EncodeToString(rec)
	changed[mid] = strings.Join(fs, " ") + "\n"
	oneLineError(t, cs.run(t, nil, "audit", "verify", "--file", write("changed", changed, true), "--key", vkey), exitTampered, "hash: the record hashes to")
	oneLineError(t, cs.run(t, nil, "audit", "verify", "--file", write("removed", append(append([]string(nil), lines[:last]...), lines[last+1:]...), false), "--key", vkey),
		exitTampered, "end: the end line counts")
	other, _, _ := checkpoint.GenerateKey(cs.Signer.Origin())
	otherSigner, _ := checkpoint.NewSigner(other)
	r = cs.run(t, nil, "audit", "verify", "--file", file, "--key", otherSigner.Verifier().String())
	oneLineError(t, r, exitTampered, "checkpoint: the checkpoint does not verify")
	t.Logf("with another key:\n%s%s", r.stdout, r.stderr)
	if !strings.Contains(r.stdout, "FAILED") {
		t.Fatalf("no FAILED summary: %+v", r)
	}
	r = cs.run(t, nil, "audit", "verify", "--file", write("truncated", lines[:len(lines)-3], false), "--key", vkey, "--json")
	if r.code != exitTampered || !strings.Contains(r.stdout, `"check": "end"`) || !strings.Contains(r.stdout, `"ok": false`) {
		t.Fatalf("truncated, --json: %+v", r)
	}

	// Bad input.
	oneLineError(t, cs.run(t, nil, "audit", "verify", "--file", file), exitUsage, "--key is required")
	oneLineError(t, cs.run(t, nil, "audit", "verify", "--key", vkey), exitUsage, "--file is required")
	oneLineError(t, cs.run(t, nil, "audit", "verify", "--file", file, "--key", "not-a-key"), exitUsage, "verifier key")
	oneLineError(t, cs.run(t, nil, "audit", "verify", "--file", file, "--key", "@"+filepath.Join(dir, "nope.pub")), exitUsage, "--key")
	oneLineError(t, cs.run(t, nil, "audit", "verify", "--file", filepath.Join(dir, "nope"), "--key", vkey), exitError, "no such file")
	oneLineError(t, cs.run(t, nil, "audit", "verify", "--file", keyFile, "--key", vkey), exitTampered, "not an evidence file")
	oneLineError(t, cs.run(t, nil, "audit", "export"), exitUsage, "--out is required")
	oneLineError(t, cs.run(t, nil, "audit", "export", "--out", filepath.Join(dir, "x"), "--from", "yesterday"), exitUsage, "--from")
	oneLineError(t, cs.run(t, nil, "audit", "export", "--out", filepath.Join(dir, "x"), "--from", "1h", "--to", "2h"), exitUsage, "--from must be before --to")
	oneLineError(t, cs.run(t, nil, "audit", "export", "--out", filepath.Join(dir, "x"), "--org", "globex"), exitError, "not_found")
	oneLineError(t, cs.run(t, []string{"STELE_TOKEN="}, "audit", "export", "--out", filepath.Join(dir, "x")), exitAuth, "not signed in")
	// A viewer may not export the evidence.
	code, body := apiCall(t, cs.Server, "POST", "/v1/orgs/acme/tokens", map[string]any{"name": "auditor-viewer", "role": "viewer", "ttl_seconds": 3600})
	var tok struct {
		Secret string `json:"secret"`
	}
	if code >= 300 || json.Unmarshal(body, &tok) != nil {
		t.Fatalf("token: %d %s", code, body)
	}
	oneLineError(t, cs.run(t, []string{"STELE_TOKEN=" + tok.Secret}, "audit", "export", "--out", filepath.Join(dir, "x")), exitAuth, "forbidden")
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Fatal("a failed export left a file")
	}
}

// decodedRecords concatenates the records of an evidence file.
func decodedRecords(t *testing.T, data []byte) string {
	var b strings.Builder
	for _, l := range strings.Split(string(data), "\n") {
		if fs := strings.Fields(l); len(fs) >= 4 && fs[0] == "event" {
			rec, err := base64.StdEncoding.DecodeString(fs[3])
			if err != nil {
				t.Fatal(err)
			}
			b.Write(rec)
		}
	}
	return b.String()
}

// resealEvidence recomputes the end line of changed lines, as a careful
// forger would.
func resealEvidence(ls []string) []byte {
	var body strings.Builder
	n := 0
	for _, l := range ls {
		if strings.HasPrefix(l, "end ") || l == "" {
			continue
		}
		if strings.HasPrefix(l, "event ") {
			n++
		}
		body.WriteString(l)
	}
	return []byte(body.String() + fmt.Sprintf("end %d %x\n", n, sha256.Sum256([]byte(body.String()))))
}
