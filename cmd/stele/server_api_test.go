package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/internal/pgtest"
)

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stele test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// An empty ledger gets an organization and an owner token, written once
// with mode 0600; the server speaks TLS 1.2 or later with HSTS.
func TestServerBootstrapsAndServesTLS(t *testing.T) {
	url := pgtest.Schema(t)
	dataDir := t.TempDir()
	certFile, keyFile, roots := selfSigned(t)
	cfg := ServerConfig{DB: dbFlags{url: url}, Keys: keyFlags{dataDir: dataDir, origin: "stele.test/tls"},
		Listen: "127.0.0.1:0", CheckpointInterval: time.Hour, Logger: quietLogger(),
		API: apiFlags{TLSCert: certFile, TLSKey: keyFile, BootstrapOrg: "acme", BootstrapOwner: "ada@example.com", RatePerSecond: 100}}
	s, err := StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(5 * time.Second)
	if !s.TLS || !strings.HasPrefix(s.BootstrapToken, "stele_tok_acme.") {
		t.Fatalf("tls %v, bootstrap token %q", s.TLS, s.BootstrapToken)
	}
	fi, err := os.Stat(s.BootstrapFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bootstrap token file %v %v; want mode 0600", fi, err)
	}
	b, _ := os.ReadFile(s.BootstrapFile)
	if strings.TrimSpace(string(b)) != s.BootstrapToken {
		t.Fatal("the file does not hold the token")
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	req, _ := http.NewRequest("GET", "https://"+s.Addr+"/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+s.BootstrapToken)
	var resp *http.Response
	var me map[string]any
	for range 50 { // the access-control read model follows the log within milliseconds
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&me)
		resp.Body.Close()
		if roles, _ := me["roles"].([]any); len(roles) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp.StatusCode != 200 || me["org"] != "acme" || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("/v1/me over TLS: %d %v (HSTS %q)", resp.StatusCode, me, resp.Header.Get("Strict-Transport-Security"))
	}
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}}}
	if _, err := old.Get("https://" + s.Addr + "/healthz"); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
	s.Stop(5 * time.Second)

	// A restart does not bootstrap again.
	s2, err := StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop(5 * time.Second)
	if s2.BootstrapToken != "" || s2.BootstrapFile != s.BootstrapFile {
		t.Fatalf("restart: token %q file %q", s2.BootstrapToken, s2.BootstrapFile)
	}
}

// stele bench api runs every scenario at each client count, with no
// failed request, beside the ledger's rate, and drops its schemas.
func TestBenchAPIPrintsJSONAndCleansUp(t *testing.T) {
	url := pgtest.URL(t)
	r := stele(t, []string{"DATABASE_URL=" + url}, "bench", "api", "--clients", "2,3", "--duration", "200ms", "--secrets", "5")
	var out struct {
		Scenarios map[string][]struct {
			Clients   int     `json:"clients"`
			Requests  int     `json:"requests"`
			OpsPerSec float64 `json:"ops_per_sec"`
			P99ms     float64 `json:"p99_ms"`
			Errors    int     `json:"errors"`
		} `json:"scenarios"`
		Ledger    map[string]float64 `json:"ledger_appends_per_sec"`
		Projector bool               `json:"projector"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
		t.Fatalf("bench: %+v", r)
	}
	for _, name := range []string{"set", "reveal", "list"} {
		runs := out.Scenarios[name]
		if len(runs) != 2 || runs[0].Clients != 2 || runs[1].Clients != 3 {
			t.Fatalf("%s: %+v", name, runs)
		}
		for _, x := range runs {
			if x.Requests == 0 || x.OpsPerSec <= 0 || x.P99ms <= 0 || x.Errors != 0 {
				t.Errorf("%s: %+v", name, x)
			}
		}
	}
	if out.Ledger["2"] <= 0 || out.Ledger["3"] <= 0 || !out.Projector {
		t.Errorf("ledger %v, projector %v", out.Ledger, out.Projector)
	}
	pool, _ := pgxpool.New(context.Background(), url)
	defer pool.Close()
	var left int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'stele_bench_%'`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d scratch schemas left behind", left)
	}
}
