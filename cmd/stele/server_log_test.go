package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"

	"stele.dev/stele/api"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/witness/witnesstest"
	"stele.dev/stele/internal/pgtest"
)

// The server with --public-log and two witnesses, one of them down: it
// signs checkpoints, the witness that is up cosigns them, and anyone can
// follow the log with Tessera's client and check the cosignature; the
// one that is down holds up nothing and shows as unavailable.
func TestServerPublicLogAndWitnesses(t *testing.T) {
	dbURL := pgtest.Schema(t)
	dataDir := t.TempDir()
	// The log's key first, so that the witness can trust it.
	signer, err := checkpoint.CreateKeyFile(dataDir+"/ledger-signing.key", "stele.test/public-log")
	if err != nil {
		t.Fatal(err)
	}
	wt, err := witnesstest.New("witness.test/up")
	if err != nil {
		t.Fatal(err)
	}
	if err := wt.Trust(signer.Verifier().String()); err != nil {
		t.Fatal(err)
	}
	wsrv := httptest.NewServer(wt)
	defer wsrv.Close()
	down, err := witnesstest.New("witness.test/down")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there

	cfg := ServerConfig{DB: dbFlags{url: dbURL}, Keys: keyFlags{dataDir: dataDir}, Listen: "127.0.0.1:0", CheckpointInterval: time.Second,
		Logger: quietLogger(), API: apiFlags{BootstrapOrg: "acme", RatePerSecond: 1000, PublicLog: true,
			Witnesses: []string{wt.VerifierKey() + "@" + wsrv.URL + "/", down.VerifierKey() + "@" + downURL}}}
	s, err := StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(5 * time.Second)
	if s.Signer.Verifier().String() != signer.Verifier().String() {
		t.Fatal("the server uses another key")
	}
	appendEvents(t, dbURL, 300)
	base := "http://" + s.Addr

	// Wait for a checkpoint of the whole log, cosigned by the witness.
	witnessV, err := fnote.NewVerifierForCosignatureV1(wt.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	fetcher, err := client.NewHTTPFetcher(mustURL(t, base+"/v1/ledger/log/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cp *log.Checkpoint
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, err := fetcher.ReadCheckpoint(context.Background())
		if err == nil {
			c, _, n, err := log.ParseCheckpoint(raw, signer.Origin(), signer.Verifier().Note(), witnessV)
			if err == nil && c.Size >= 300 && len(n.Sigs) == 2 { // the log's signature and the witness's

				cp = c
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cosigned checkpoint of 300 events: %q %v", raw, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pb, err := client.NewProofBuilder(context.Background(), cp.Size, fetcher.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := client.GetEntryBundle(context.Background(), fetcher.ReadEntryBundle, 1, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pb.InclusionProof(context.Background(), 256+7)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 256+7, cp.Size, rfc6962.DefaultHasher.HashLeaf(bundle.Entries[7]), p, cp.Hash); err != nil {
		t.Fatalf("inclusion: %v", err)
	}

	// The witnesses, as a signed-in caller sees them.
	req, _ := http.NewRequest("GET", base+"/v1/ledger/witnessed", nil)
	req.Header.Set("Authorization", "Bearer "+s.BootstrapToken)
	var got api.LedgerWitnessed
	deadline = time.Now().Add(30 * time.Second)
	for {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = api.LedgerWitnessed{}
		if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil {
			t.Fatalf("witnessed: %d %s", resp.StatusCode, b)
		}
		if len(got.Witnesses) == 2 && got.Witnesses[1].Problem == "unavailable" && got.Witnesses[1].Failures > 0 &&
			got.Witnesses[0].LatestSize >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("witnessed: %s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got.Witnesses[0].Name != "witness.test/up" || got.Witnesses[0].LatestSize < 300 || got.Witnesses[0].Problem != "" ||
		got.Witnesses[1].Name != "witness.test/down" || got.Witnesses[1].LatestSize != 0 || len(got.Checkpoints) == 0 ||
		len(got.Checkpoints[0].Cosignatures) != 1 {
		t.Fatalf("witnessed %+v", got)
	}
	// Anonymous callers get the log, not the rest.
	resp, err := http.Get(base + "/v1/ledger/witnessed")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("anonymous /v1/ledger/witnessed: %d", resp.StatusCode)
	}
	// The server goes on: readiness and a later checkpoint.
	appendEvents(t, dbURL, 5)
	deadline = time.Now().Add(30 * time.Second)
	for {
		raw, err := fetcher.ReadCheckpoint(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c, _, _, err := log.ParseCheckpoint(raw, signer.Origin(), signer.Verifier().Note(), witnessV)
		if err == nil && c.Size >= cp.Size+5 && strings.Count(string(raw), "\n— ") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no later cosigned checkpoint: %q", raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Bad witness and public-log settings are usage errors, before anything
// starts.
func TestServerWitnessFlags(t *testing.T) {
	r := stele(t, nil, "server", "--witness", "nonsense")
	oneLineError(t, r, 2, "--witness")
	r = stele(t, []string{"STELE_WITNESSES=witness.example/w+00000000+AAAA@https://w.example"}, "server")
	oneLineError(t, r, 2, "--witness")
	r = stele(t, []string{"STELE_PUBLIC_LOG=maybe"}, "server")
	oneLineError(t, r, 2, "STELE_PUBLIC_LOG")
}
