package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/internal/pgtest"
)

// api calls the server as its bootstrap owner token.
func apiCall(t *testing.T, s *Server, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+s.Addr+path, rd)
	req.Header.Set("Authorization", "Bearer "+s.BootstrapToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// stele request, a real process: it opens a request, prints where to
// approve it, waits, and prints the values an approver let through; a
// denied request ends it with a one-line error.
func TestRequestCommandEndToEnd(t *testing.T) {
	cfg := ServerConfig{DB: dbFlags{url: pgtest.Schema(t)}, Keys: keyFlags{dataDir: t.TempDir(), origin: "stele.test/request"},
		Listen: "127.0.0.1:0", CheckpointInterval: time.Hour, Logger: quietLogger(),
		API: apiFlags{BootstrapOrg: "acme", RatePerSecond: 100}}
	s, err := StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(5 * time.Second)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/orgs/acme/projects", map[string]any{"id": "web", "name": "Web"}},
		{"POST", "/v1/orgs/acme/projects/web/envs", map[string]any{"id": "production", "production": true}},
		{"PUT", "/v1/orgs/acme/projects/web/envs/production/secrets/DB_URL", map[string]any{"value": "postgres://app:s3cret@db/prod"}},
		{"PUT", "/v1/orgs/acme/projects/web/envs/production/secrets/API_KEY", map[string]any{"value": "sk_live_abc$HOME"}},
	} {
		if code, out := apiCall(t, s, c.method, c.path, c.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, out)
		}
	}

	start := func(args ...string) (*exec.Cmd, *bytes.Buffer, string) {
		cmd := exec.Command(steleBin, append([]string{"request", "--server", "http://" + s.Addr,
			"--org", "acme", "--project", "web", "--env", "production"}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The first lines name the approval page and the code.
		rd := bufio.NewReader(stderr)
		var head strings.Builder
		for !strings.Contains(head.String(), "Waiting") {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stele request printed %q then %v", head.String(), err)
			}
			head.WriteString(line)
		}
		go io.Copy(io.Discard, rd)
		m := regexp.MustCompile(`/approve/([0-9a-f]+) `).FindStringSubmatch(head.String())
		code := regexp.MustCompile(`code ([A-Z0-9-]+)\.`).FindStringSubmatch(head.String())
		if m == nil || code == nil {
			t.Fatalf("no approval address or code in %q", head.String())
		}
		return cmd, &stdout, m[1]
	}

	cmd, stdout, id := start("--keys", "DB_URL,API_KEY", "--format", "dotenv")
	time.Sleep(200 * time.Millisecond) // the client is waiting on its long poll
	if code, out := apiCall(t, s, "POST", "/v1/approvals/"+id+"/approve", map[string]any{"keys": []string{"DB_URL", "API_KEY"}}); code != 200 {
		t.Fatalf("approve: %d %s", code, out)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stele request: %v; stdout %q", err, stdout)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("stele request did not return after the approval")
	}
	want := "API_KEY='sk_live_abc$HOME'\nDB_URL='postgres://app:s3cret@db/prod'\n"
	if stdout.String() != want {
		t.Fatalf("stdout %q, want %q", stdout.String(), want)
	}

	// Denied: one line on stderr, exit 1, nothing on stdout.
	cmd, stdout, id = start("--keys", "DB_URL")
	if code, out := apiCall(t, s, "POST", "/v1/approvals/"+id+"/deny", map[string]any{"reason": "not today"}); code != 200 {
		t.Fatalf("deny: %d %s", code, out)
	}
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || stdout.Len() != 0 {
		t.Fatalf("a denied request: %v, stdout %q", err, stdout)
	}

	// Bad usage exits 2.
	r := stele(t, nil, "request", "--server", "http://"+s.Addr, "--org", "acme", "--project", "web", "--env", "production")
	oneLineError(t, r, 2, "--bundle or --keys")
}
