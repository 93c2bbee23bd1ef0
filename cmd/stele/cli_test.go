package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/spf13/cobra"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/internal/aptget"
	"stele.dev/stele/internal/pgtest"
	"stele.dev/stele/internal/syncbuf"
)

// cliServer is a real stele server on a random port, with an
// organization acme (owned by ada@example.com and by the bootstrap
// token), a project web and the environments dev and production.
type cliServer struct {
	*Server
	url string
	// env is the environment of a CLI process: a home of its own, the
	// server's address and the owner token.
	env []string
	dir string // a working folder with an .stele.yaml for acme/web/dev
}

func newCLIServer(t *testing.T) *cliServer {
	t.Helper()
	cfg := ServerConfig{DB: dbFlags{url: pgtest.Schema(t)}, Keys: keyFlags{dataDir: t.TempDir(), origin: "stele.test/cli"},
		Listen: "127.0.0.1:0", CheckpointInterval: 100 * time.Millisecond, Logger: quietLogger(),
		API: apiFlags{BootstrapOrg: "acme", BootstrapOwner: "ada@example.com", DevSignIn: true, RatePerSecond: 1000}}
	s, err := StartServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(5 * time.Second) })
	cs := &cliServer{Server: s, url: "http://" + s.Addr}
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/orgs/acme/projects", map[string]any{"id": "web", "name": "Web"}},
		{"POST", "/v1/orgs/acme/projects/web/envs", map[string]any{"id": "dev"}},
		{"POST", "/v1/orgs/acme/projects/web/envs", map[string]any{"id": "production", "production": true}},
	} {
		if code, out := apiCall(t, s, c.method, c.path, c.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, out)
		}
	}
	home := t.TempDir()
	cs.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"STELE_ADDR=" + cs.url, "STELE_TOKEN=" + s.BootstrapToken, "LANG=C.UTF-8"}
	cs.dir = t.TempDir()
	if r := cs.run(t, nil, "init", "--org", "acme", "--project", "web", "--env", "dev"); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	cs.waitCheckpoint(t)
	return cs
}

// set sets a secret through the API.
func (cs *cliServer) set(t *testing.T, env, name, value string) {
	t.Helper()
	if code, out := apiCall(t, cs.Server, "PUT", "/v1/orgs/acme/projects/web/envs/"+env+"/secrets/"+name, map[string]any{"value": value}); code >= 300 {
		t.Fatalf("set %s: %d %s", name, code, out)
	}
}

// waitCheckpoint waits until the latest checkpoint covers the head.
func (cs *cliServer) waitCheckpoint(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		h, err := cs.Store.Head(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cp, err := cs.Store.LatestCheckpoint(context.Background())
		if err == nil && cp.Size >= h.Position {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no checkpoint covers the head after 10s")
}

// run runs the CLI in the server's working folder, with extra
// environment variables (which override the default ones) and stdin.
func (cs *cliServer) run(t *testing.T, extra []string, args ...string) result {
	t.Helper()
	return cs.runIn(t, cs.dir, extra, nil, args...)
}

func (cs *cliServer) runIn(t *testing.T, dir string, extra []string, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, steleBin, args...)
	cmd.Env = mergeEnv(cs.env, extra)
	cmd.Dir = dir
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// mergeEnv is base with the variables of extra set (NAME= with an empty
// value unsets NAME).
func mergeEnv(base, extra []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range extra {
		name, value, _ := strings.Cut(kv, "=")
		out = slicesDeleteFunc(out, func(e string) bool { return strings.HasPrefix(e, name+"=") })
		if value != "" {
			out = append(out, kv)
		}
	}
	return out
}

func slicesDeleteFunc(s []string, del func(string) bool) []string {
	out := s[:0]
	for _, e := range s {
		if !del(e) {
			out = append(out, e)
		}
	}
	return out
}

// noValue fails if any of values shows in what the CLI printed on
// standard error.
func noValue(t *testing.T, r result, values ...string) {
	t.Helper()
	for _, v := range values {
		if len(v) >= 4 && strings.Contains(r.stderr, v) {
			t.Fatalf("a value shows on standard error: %q", r.stderr)
		}
	}
}

// The secrets commands: the folder's defaults, set from standard input
// (never an argument), get as exact bytes (a read in the ledger), list,
// history, rollback, check-and-set, delete, restore, destroy, JSON.
func TestCLISecrets(t *testing.T) {
	cs := newCLIServer(t)
	value := "postgres://app:p4ss'w\"ord@db/app?x=$HOME\n"
	r := cs.runIn(t, cs.dir, nil, strings.NewReader(value), "secrets", "set", "DB_URL", "--description", "the app's database")
	if r.code != 0 || !strings.Contains(r.stdout, "version 1") {
		t.Fatalf("set: %+v", r)
	}
	noValue(t, r, value)
	r = cs.runIn(t, cs.dir, nil, strings.NewReader("second\n"), "secrets", "set", "DB_URL", "--trim-newline", "--if-version", "1")
	if r.code != 0 || !strings.Contains(r.stdout, "version 2") {
		t.Fatalf("set v2: %+v", r)
	}
	// A check-and-set against an old version fails and changes nothing.
	oneLineError(t, cs.runIn(t, cs.dir, nil, strings.NewReader("third"), "secrets", "set", "DB_URL", "--if-version", "1"), 1, "version")
	oneLineError(t, cs.runIn(t, cs.dir, nil, strings.NewReader("x"), "secrets", "set", "DB_URL", "--create"), 1, "exists")
	if r := cs.run(t, nil, "secrets", "get", "DB_URL"); r.code != 0 || r.stdout != "second" {
		t.Fatalf("get: %+v", r)
	}
	if r := cs.run(t, nil, "secrets", "get", "DB_URL", "--version", "1", "--reason", "compare"); r.code != 0 || r.stdout != value {
		t.Fatalf("get v1: %+v", r)
	}
	var got struct {
		Name    string `json:"name"`
		Version int    `json:"version"`
		Value   string `json:"value"`
	}
	if r := cs.run(t, nil, "secrets", "get", "DB_URL", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil || got.Value != "second" || got.Version != 2 {
		t.Fatalf("get --json: %+v", r)
	}
	r = cs.run(t, nil, "secrets", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "DB_URL") || !strings.Contains(r.stdout, "token:") || strings.Contains(r.stdout, "second") {
		t.Fatalf("list: %+v", r)
	}
	r = cs.run(t, nil, "secrets", "history", "DB_URL")
	if r.code != 0 || !strings.Contains(r.stdout, "2 ") || !strings.Contains(r.stdout, "current") {
		t.Fatalf("history: %+v", r)
	}
	if r := cs.run(t, nil, "secrets", "rollback", "DB_URL", "--to", "1"); r.code != 0 || !strings.Contains(r.stdout, "version 3") {
		t.Fatalf("rollback: %+v", r)
	}
	if r := cs.run(t, nil, "secrets", "get", "DB_URL"); r.stdout != value {
		t.Fatalf("after the rollback: %+v", r)
	}
	if r := cs.run(t, nil, "secrets", "delete", "DB_URL"); r.code != 0 {
		t.Fatalf("delete: %+v", r)
	}
	oneLineError(t, cs.run(t, nil, "secrets", "get", "DB_URL"), 1, "deleted")
	if r := cs.run(t, nil, "secrets", "restore", "DB_URL"); r.code != 0 {
		t.Fatalf("restore: %+v", r)
	}
	if r := cs.run(t, nil, "secrets", "destroy", "DB_URL", "--version", "2"); r.code != 0 {
		t.Fatalf("destroy: %+v", r)
	}
	oneLineError(t, cs.run(t, nil, "secrets", "get", "DB_URL", "--version", "2"), 1, "destroyed")
	// Another environment by flag, and by variable.
	cs.runIn(t, cs.dir, nil, strings.NewReader("prod-value"), "secrets", "set", "API_KEY", "--env", "production")
	if r := cs.run(t, []string{"STELE_ENV=production"}, "secrets", "get", "API_KEY"); r.stdout != "prod-value" {
		t.Fatalf("STELE_ENV: %+v", r)
	}
	if r := cs.run(t, nil, "secrets", "get", "API_KEY", "-e", "production"); r.stdout != "prod-value" {
		t.Fatalf("-e: %+v", r)
	}
	// Every read was recorded, through the CLI's channel.
	r = cs.run(t, nil, "audit", "log", "--action", "secret.viewed", "--format", "json")
	var feed struct {
		Items []struct {
			Secret  string `json:"secret"`
			Channel string `json:"channel"`
			Reason  string `json:"reason"`
		} `json:"items"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &feed) != nil || len(feed.Items) < 6 {
		t.Fatalf("audit log: %+v", r)
	}
	reasons := map[string]bool{}
	for _, it := range feed.Items {
		reasons[it.Reason] = true
	}
	if !reasons["compare"] {
		t.Fatalf("the reason of a read is not in the feed: %+v", feed.Items)
	}
	// Bad input: one line, exit 2, nothing written.
	oneLineError(t, cs.run(t, nil, "secrets", "get", "not-a-name"), 2, "not a secret name")
	oneLineError(t, cs.run(t, nil, "secrets", "set", "A", "B"), 2, "accepts 1 arg")
	oneLineError(t, cs.run(t, nil, "secrets", "rollback", "DB_URL"), 2, "--to")
	oneLineError(t, cs.runIn(t, t.TempDir(), nil, nil, "secrets", "list"), 2, "which organization")
	oneLineError(t, cs.run(t, []string{"STELE_ENV=Bad_Env"}, "secrets", "list"), 2, "slug")
	big := strings.Repeat("x", 64<<10+1)
	oneLineError(t, cs.runIn(t, cs.dir, nil, strings.NewReader(big), "secrets", "set", "BIG"), 1, "more than 65536 bytes")
	oneLineError(t, cs.run(t, nil, "secrets", "get", "BIG"), 1, "not_found")
}

// Errors a user meets: one line, a documented exit status, advice.
func TestCLIErrors(t *testing.T) {
	cs := newCLIServer(t)
	oneLineError(t, cs.run(t, []string{"STELE_TOKEN="}, "secrets", "list"), exitAuth, "stele login")
	oneLineError(t, cs.run(t, []string{"STELE_TOKEN=stele_tok_acme.nope.nope"}, "secrets", "list"), exitAuth, "STELE_TOKEN")
	oneLineError(t, cs.run(t, []string{"STELE_ADDR=http://127.0.0.1:1"}, "secrets", "list", "--no-verify-log"), 1, "cannot reach http://127.0.0.1:1")
	oneLineError(t, cs.run(t, []string{"STELE_ADDR=ftp://x"}, "secrets", "list"), 2, "http://")
	oneLineError(t, cs.run(t, nil, "secrets", "list", "--env", "nope"), 1, "not_found")
	oneLineError(t, cs.run(t, nil, "run"), 2, "after --")
	oneLineError(t, cs.run(t, nil, "run", "--", "/no/such/program"), 1, "/no/such/program")
	oneLineError(t, cs.run(t, nil, "export", "--format", "csv"), 2, "sh or fish")
	oneLineError(t, cs.run(t, nil, "init", "--org", "acme"), 2, "--project")
	oneLineError(t, cs.run(t, nil, "init", "--org", "acme", "--project", "web", "--env", "dev"), 1, "exists here already")
	oneLineError(t, cs.run(t, nil, "members", "grant", "bob@example.com", "--role", "king"), 2, "--role")
	oneLineError(t, cs.run(t, nil, "keys", "reseal", "acme/web/dev"), 2, "database")
	// A bad .stele.yaml names itself.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ".stele.yaml"), []byte("orgg: acme\n"), 0o644)
	oneLineError(t, cs.runIn(t, dir, nil, nil, "secrets", "list"), 1, ".stele.yaml")
	// Help exists for every command, with examples where they help.
	for _, c := range [][]string{{"run"}, {"export"}, {"import"}, {"login"}, {"request"}, {"secrets", "set"}, {"audit", "log"}} {
		r := cs.run(t, nil, append(c, "--help")...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, "Examples:") {
			t.Fatalf("%v --help: %+v", c, r)
		}
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if r := cs.run(t, nil, "completion", sh); r.code != 0 || !strings.Contains(r.stdout, "stele") {
			t.Fatalf("completion %s: %+v", sh, r)
		}
	}
}

// lineReader follows a process's output line by line.
type lineReader struct {
	mu    sync.Mutex
	lines []string
	more  chan struct{}
	eof   chan struct{} // closed once the pipe is read to its end
}

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{more: make(chan struct{}, 1), eof: make(chan struct{})}
	go func() {
		defer close(lr.eof)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.mu.Lock()
			lr.lines = append(lr.lines, sc.Text())
			lr.mu.Unlock()
			select {
			case lr.more <- struct{}{}:
			default:
			}
		}
	}()
	return lr
}

// waitFor waits until a line matches re and returns it.
func (lr *lineReader) waitFor(t *testing.T, re string, d time.Duration) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(d)
	for {
		lr.mu.Lock()
		for _, l := range lr.lines {
			if rx.MatchString(l) {
				lr.mu.Unlock()
				return l
			}
		}
		all := strings.Join(lr.lines, "\n")
		lr.mu.Unlock()
		select {
		case <-lr.more:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no line matches %q after %s; got:\n%s", re, d, all)
		}
	}
}

func (lr *lineReader) all() string {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return strings.Join(lr.lines, "\n")
}

// started is a CLI process running in the background.
type started struct {
	cmd    *exec.Cmd
	stdout *lineReader
	stderr *lineReader
	done   chan struct{}
	code   int
}

func (cs *cliServer) start(t *testing.T, extra []string, args ...string) *started {
	t.Helper()
	cmd := exec.Command(steleBin, args...)
	cmd.Env = mergeEnv(cs.env, extra)
	cmd.Dir = cs.dir
	out, _ := cmd.StdoutPipe()
	errp, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &started{cmd: cmd, stdout: newLineReader(out), stderr: newLineReader(errp), done: make(chan struct{})}
	go func() {
		// Read the pipes to their end before Wait closes them.
		<-p.stdout.eof
		<-p.stderr.eof
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		}
		close(p.done)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	return p
}

func (p *started) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		t.Fatalf("the process did not end after %s; stdout %q, stderr %q", d, p.stdout.all(), p.stderr.all())
	}
	return -1
}

// stele run: the values in the child's environment, its exit status
// passed through, signals passed on, --mask, --watch.
func TestCLIRun(t *testing.T) {
	cs := newCLIServer(t)
	cs.set(t, "dev", "API_KEY", "sk_live_first-value")
	cs.set(t, "dev", "DB_URL", "postgres://u:pw@db/x")
	cs.set(t, "dev", "SHORT", "on")

	r := cs.run(t, []string{"API_KEY=from-the-parent"}, "run", "--", "sh", "-c", `printf '%s|%s|%s' "$API_KEY" "$DB_URL" "${STELE_TOKEN:-unset}"; exit 7`)
	if r.code != 7 || r.stdout != "sk_live_first-value|postgres://u:pw@db/x|unset" {
		t.Fatalf("run: %+v", r)
	}
	if r := cs.run(t, []string{"API_KEY=from-the-parent"}, "run", "--preserve-env", "--", "sh", "-c", `printf %s "$API_KEY"`); r.stdout != "from-the-parent" {
		t.Fatalf("--preserve-env: %+v", r)
	}
	if r := cs.run(t, nil, "run", "--keys", "DB_URL", "--", "sh", "-c", `printf '%s/%s' "$DB_URL" "${API_KEY:-none}"`); r.stdout != "postgres://u:pw@db/x/none" {
		t.Fatalf("--keys: %+v", r)
	}
	// A child killed by a signal: 128 + its number, as shells report it.
	if r := cs.run(t, nil, "run", "--", "sh", "-c", "kill -9 $$"); r.code != 137 {
		t.Fatalf("killed child: %+v", r)
	}
	// --mask: values of 4 bytes and more never reach the output.
	r = cs.run(t, nil, "run", "--mask", "--", "sh", "-c", `echo "key=$API_KEY db=$DB_URL short=$SHORT"; echo "err=$API_KEY" >&2`)
	if r.code != 0 || r.stdout != "key=**** db=**** short=on\n" || !strings.Contains(r.stderr, "err=****") || strings.Contains(r.stderr, "sk_live") {
		t.Fatalf("--mask: %+v", r)
	}

	// SIGTERM to stele reaches the child, whose exit status comes back.
	p := cs.start(t, nil, "run", "--", "sh", "-c", `trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done`)
	p.stdout.waitFor(t, "^ready$", 20*time.Second)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 42 || !strings.Contains(p.stdout.all(), "got-term") {
		t.Fatalf("SIGTERM: exit %d, stdout %q, stderr %q", code, p.stdout.all(), p.stderr.all())
	}
	// SIGINT too, when stele's standard input is not a terminal.
	p = cs.start(t, nil, "run", "--", "sh", "-c", `trap 'echo got-int; exit 43' INT; echo ready; while :; do sleep 0.05; done`)
	p.stdout.waitFor(t, "^ready$", 20*time.Second)
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t, 10*time.Second); code != 43 || !strings.Contains(p.stdout.all(), "got-int") {
		t.Fatalf("SIGINT: exit %d, stdout %q", code, p.stdout.all())
	}

	// --watch: another client's change restarts the child with the new
	// value, pushed by the server.
	p = cs.start(t, nil, "run", "--watch", "--settle", "50ms", "--", "sh", "-c", `echo "v=$API_KEY"; trap 'exit 0' TERM; while :; do sleep 0.05; done`)
	p.stdout.waitFor(t, "^v=sk_live_first-value$", 20*time.Second)
	time.Sleep(300 * time.Millisecond) // let the stream open; a change before it would be caught up anyway
	changed := time.Now()
	cs.set(t, "dev", "API_KEY", "sk_live_second-value")
	p.stdout.waitFor(t, "^v=sk_live_second-value$", 10*time.Second)
	t.Logf("restarted %s after the change", time.Since(changed).Round(time.Millisecond))
	if !strings.Contains(p.stderr.all(), "API_KEY changed; restarting") {
		t.Fatalf("stderr does not say why it restarted: %q", p.stderr.all())
	}
	// A change in another environment does not restart it.
	cs.set(t, "production", "API_KEY", "prod")
	time.Sleep(500 * time.Millisecond)
	if n := strings.Count(p.stdout.all(), "v="); n != 2 {
		t.Fatalf("%d starts; a change elsewhere restarted it: %q", n, p.stdout.all())
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("--watch after SIGTERM: exit %d, stderr %q", code, p.stderr.all())
	}

	// Each run's reads are in the ledger, as cli-run.
	r = cs.run(t, nil, "audit", "log", "--action", "secret.viewed", "--format", "jsonl", "--all")
	if r.code != 0 || !strings.Contains(r.stdout, `"channel":"cli-run"`) {
		t.Fatalf("no cli-run read in the audit log: %+v", r)
	}
}

// dev signs ada in with the development sign-in and returns a client
// that carries her session and its CSRF token.
func (cs *cliServer) ada(t *testing.T) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	resp, err := hc.Post(cs.url+"/v1/auth/dev", "application/json", strings.NewReader(`{"email":"ada@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("dev sign-in: %d", resp.StatusCode)
	}
	var csrf string
	for _, ck := range resp.Cookies() {
		if strings.HasSuffix(ck.Name, "stele_csrf") {
			csrf = ck.Value
		}
	}
	if csrf == "" {
		t.Fatal("no CSRF cookie")
	}
	return hc, csrf
}

// approve approves an approval request as ada, through the API.
func (cs *cliServer) approve(t *testing.T, id string, keys []string) {
	t.Helper()
	hc, csrf := cs.ada(t)
	body := "{}"
	if keys != nil {
		b, _ := json.Marshal(map[string]any{"keys": keys})
		body = string(b)
	}
	req, _ := http.NewRequest("POST", cs.url+"/v1/approvals/"+id+"/approve", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("approve: %d %s", resp.StatusCode, out)
	}
}

var approvalID = regexp.MustCompile(`/approve/([0-9a-f]+)`)

// stele login, approved through the API by a signed-in person: the
// session goes to the keychain (the kernel keyring here), whoami uses
// it, logout ends it on the server and removes it.
func TestCLILogin(t *testing.T) {
	kc, err := openKeychain()
	if err != nil {
		t.Skipf("no keychain on this machine (%v): the kernel keyring (keyctl) is missing or refused, as in some containers", err)
	}
	t.Logf("keychain: %s", kc.backend)
	cs := newCLIServer(t)
	noToken := []string{"STELE_TOKEN="}
	p := cs.start(t, noToken, "login", "--no-browser", "--qr", "always")
	line := p.stderr.waitFor(t, "/approve/", 20*time.Second)
	id := approvalID.FindStringSubmatch(line)[1]
	p.stderr.waitFor(t, "must show the code [A-Z0-9]{4}-[A-Z0-9]{4}", 5*time.Second)
	if !strings.Contains(p.stderr.all(), "█") && !strings.Contains(p.stderr.all(), "▀") {
		t.Fatalf("no QR code: %q", p.stderr.all())
	}
	cs.approve(t, id, nil)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("login: exit %d, stderr %q", code, p.stderr.all())
	}
	t.Cleanup(func() { kc.Remove(cs.url) })
	if !strings.Contains(p.stdout.all(), "Signed in to "+cs.url+" as ada@example.com") {
		t.Fatalf("login said %q", p.stdout.all())
	}
	stored, err := kc.Get(cs.url)
	if err != nil || !strings.HasPrefix(stored, "stele_ses_") {
		t.Fatalf("the keychain holds %q, %v", stored, err)
	}
	// Nothing under HOME holds the credential.
	home := strings.TrimPrefix(cs.env[1], "HOME=")
	filepath.Walk(home, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(stored)) {
				t.Errorf("%s holds the credential", path)
			}
		}
		return nil
	})
	r := cs.run(t, noToken, "whoami")
	if r.code != 0 || !strings.Contains(r.stdout, "user:ada@example.com") || !strings.Contains(r.stdout, "owner") {
		t.Fatalf("whoami: %+v", r)
	}
	// STELE_TOKEN wins over the stored sign-in.
	if r := cs.run(t, nil, "whoami", "--json"); !strings.Contains(r.stdout, `"token:`) {
		t.Fatalf("whoami with STELE_TOKEN: %+v", r)
	}
	if r := cs.run(t, noToken, "logout"); r.code != 0 || !strings.Contains(r.stdout, "Signed out") {
		t.Fatalf("logout: %+v", r)
	}
	if _, err := kc.Get(cs.url); err == nil {
		t.Fatal("the sign-in is still in the keychain")
	}
	// The session was ended on the server too.
	req, _ := http.NewRequest("GET", cs.url+"/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+stored)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("the ended session still works: %v %v", resp.StatusCode, err)
	}
	oneLineError(t, cs.run(t, noToken, "whoami"), exitAuth, "stele login")

	// --print-token: the credential on standard output, stored nowhere.
	p = cs.start(t, noToken, "login", "--print-token", "--no-browser")
	id = approvalID.FindStringSubmatch(p.stderr.waitFor(t, "/approve/", 20*time.Second))[1]
	cs.approve(t, id, nil)
	if code := p.wait(t, 20*time.Second); code != 0 || !strings.HasPrefix(p.stdout.all(), "stele_ses_") {
		t.Fatalf("--print-token: %d %q %q", code, p.stdout.all(), p.stderr.all())
	}
	if _, err := kc.Get(cs.url); err == nil {
		t.Fatal("--print-token stored the sign-in")
	}
	if r := cs.run(t, []string{"STELE_TOKEN=" + strings.TrimSpace(p.stdout.all())}, "whoami"); !strings.Contains(r.stdout, "ada@example.com") {
		t.Fatalf("the printed token does not sign in: %+v", r)
	}
}

// stele request runs a command with what a colleague let through.
func TestCLIRequestRunsCommand(t *testing.T) {
	cs := newCLIServer(t)
	cs.set(t, "production", "DB_URL", "postgres://prod")
	cs.set(t, "production", "API_KEY", "sk_prod")
	p := cs.start(t, []string{"STELE_TOKEN="}, "request", "--env", "production", "--keys", "DB_URL,API_KEY", "--", "sh", "-c", `printf '%s %s' "$DB_URL" "${API_KEY:-withheld}"; exit 3`)
	id := approvalID.FindStringSubmatch(p.stderr.waitFor(t, "/approve/", 20*time.Second))[1]
	cs.approve(t, id, []string{"DB_URL"})
	if code := p.wait(t, 20*time.Second); code != 3 || p.stdout.all() != "postgres://prod withheld" {
		t.Fatalf("request --: exit %d, stdout %q, stderr %q", code, p.stdout.all(), p.stderr.all())
	}
	// sh format for eval.
	p = cs.start(t, []string{"STELE_TOKEN="}, "request", "--env", "production", "--keys", "API_KEY", "--format", "sh")
	id = approvalID.FindStringSubmatch(p.stderr.waitFor(t, "/approve/", 20*time.Second))[1]
	cs.approve(t, id, []string{"API_KEY"})
	if code := p.wait(t, 20*time.Second); code != 0 || p.stdout.all() != "export API_KEY='sk_prod'" {
		t.Fatalf("request --format sh: exit %d, stdout %q", code, p.stdout.all())
	}
	oneLineError(t, cs.run(t, nil, "request", "--env", "production", "--keys", "A", "sh"), 2, "after --")
}

// shellValues are adversarial values from the envfile tests' data (the
// UTF-8 ones: the server exports text), as secrets V0, V1, …, with the
// path of a file that no shell may create.
func shellValues(t *testing.T) (map[string]string, string) {
	t.Helper()
	data, err := os.ReadFile("../../internal/envfile/testdata/shell-values.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Values []struct {
			Value  *string `json:"value"`
			Repeat int     `json:"repeat"`
		} `json:"values"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	pwned := filepath.Join(t.TempDir(), "pwned")
	out := map[string]string{}
	for i, v := range doc.Values {
		if v.Value == nil {
			continue
		}
		s := strings.ReplaceAll(*v.Value, "{{PWNED}}", pwned)
		if v.Repeat > 1 {
			s = strings.Repeat(s, v.Repeat)
		}
		if len(s) > 64<<10 || strings.ContainsRune(s, 0) {
			continue
		}
		out[fmt.Sprintf("V%d", i)] = s
	}
	return out, pwned
}

// stele export's output, sourced by real bash, dash, zsh and fish,
// gives back every value byte for byte and runs nothing; dotenv, JSON and
// YAML exports import back to the same values.
func TestCLIExportInRealShells(t *testing.T) {
	cs := newCLIServer(t)
	values, pwned := shellValues(t)
	for name, v := range values {
		cs.set(t, "dev", name, v)
	}
	for _, sh := range []struct{ bin, pkg, format, load string }{
		{"bash", "bash", "sh", `eval "$(cat %s)"`},
		{"dash", "dash", "sh", ". %s"},
		{"zsh", "zsh", "sh", ". %s"},
		{"fish", "fish", "fish", "source %s"},
	} {
		t.Run(sh.bin, func(t *testing.T) {
			path, installed, err := aptget.Find(sh.bin, sh.pkg)
			if err != nil {
				t.Skip(err)
			}
			if installed {
				t.Logf("installed %s with apt-get", sh.pkg)
			}
			r := cs.run(t, nil, "export", "--format", sh.format)
			if r.code != 0 {
				t.Fatalf("export: %+v", r)
			}
			noValue(t, r, "$(touch")
			dir := t.TempDir()
			file := filepath.Join(dir, "export."+sh.format)
			os.WriteFile(file, []byte(r.stdout), 0o600)
			var script strings.Builder
			fmt.Fprintf(&script, sh.load+"\n", "'"+file+"'")
			for name := range values {
				fmt.Fprintf(&script, "printf '%%s' \"$%s\" > '%s'\n", name, filepath.Join(dir, name))
			}
			args := []string{"-c", script.String()}
			if sh.bin == "zsh" {
				args = append([]string{"-f"}, args...)
			}
			if sh.bin == "fish" {
				args = append([]string{"--no-config"}, args...)
			}
			cmd := exec.Command(path, args...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LC_ALL=C.UTF-8", "XDG_CONFIG_HOME=" + dir, "XDG_DATA_HOME=" + dir}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", sh.bin, err, out)
			}
			for name, want := range values {
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil || string(got) != want {
					t.Errorf("%s: %s = %q, want %q (%v)", sh.bin, name, got, want, err)
				}
			}
			if _, err := os.Stat(pwned); err == nil {
				t.Fatalf("sourcing the export in %s ran a command", sh.bin)
			}
		})
	}
	// Files: each format imports into another environment and exports
	// back to the same values.
	for _, f := range []string{"dotenv", "json", "yaml"} {
		t.Run(f, func(t *testing.T) {
			env := "copy-" + f
			if code, out := apiCall(t, cs.Server, "POST", "/v1/orgs/acme/projects/web/envs", map[string]any{"id": env}); code >= 300 {
				t.Fatalf("%d %s", code, out)
			}
			r := cs.run(t, nil, "export", "--format", f)
			file := filepath.Join(t.TempDir(), "secrets."+map[string]string{"dotenv": "env", "json": "json", "yaml": "yaml"}[f])
			os.WriteFile(file, []byte(r.stdout), 0o600)
			dry := cs.run(t, nil, "import", file, "--env", env, "--dry-run")
			if dry.code != 0 || !strings.Contains(dry.stdout, fmt.Sprintf("Would be %d created", len(values))) {
				t.Fatalf("import --dry-run: %+v", dry)
			}
			if r := cs.run(t, nil, "export", "--env", env, "--format", "json"); r.stdout != "{}\n" && r.stdout != "{}" {
				t.Fatalf("the dry run wrote: %q", r.stdout)
			}
			if r := cs.run(t, nil, "import", file, "--env", env); r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("%d created", len(values))) {
				t.Fatalf("import: %+v", r)
			}
			r = cs.run(t, nil, "export", "--env", env, "--format", "json")
			var back map[string]string
			if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || len(back) != len(values) {
				t.Fatalf("export after import: %v, %d values", err, len(back))
			}
			for name, want := range values {
				if back[name] != want {
					t.Errorf("%s: %s came back as %q, want %q", f, name, back[name], want)
				}
			}
		})
	}
	// A dotenv import never expands $VAR and reads multiline values,
	// export prefixes and comments.
	file := filepath.Join(t.TempDir(), ".env")
	os.WriteFile(file, []byte("# a comment\nexport PLAIN=pa$HOME\nQUOTED=\"line one\nline two\"\nSINGLE='${X} $(id)' # trailing\n"), 0o600)
	if r := cs.run(t, nil, "import", file); r.code != 0 {
		t.Fatalf("import: %+v", r)
	}
	for name, want := range map[string]string{"PLAIN": "pa$HOME", "QUOTED": "line one\nline two", "SINGLE": "${X} $(id)"} {
		if r := cs.run(t, nil, "secrets", "get", name); r.stdout != want {
			t.Errorf("%s = %q, want %q", name, r.stdout, want)
		}
	}
	os.WriteFile(file, []byte("GOOD=1\nBAD LINE\n"), 0o600)
	oneLineError(t, cs.run(t, nil, "import", file), 1, "line 2")
	if r := cs.run(t, nil, "secrets", "get", "GOOD"); r.code == 0 {
		t.Fatal("a file with a bad line imported its good lines")
	}
}

// The remembered ledger state: trusted on first contact, extended by
// consistency proofs as the log grows, and a loud refusal (exit 3) of a
// server whose log does not extend it.
func TestCLIRemembersTheLedger(t *testing.T) {
	cs := newCLIServer(t)
	r := cs.run(t, nil, "secrets", "list")
	if r.code != 0 || !strings.Contains(r.stderr, "first contact with "+cs.url) {
		t.Fatalf("first contact: %+v", r)
	}
	stateDir := filepath.Join(strings.TrimPrefix(cs.env[2], "XDG_CONFIG_HOME="), "stele", "ledgers")
	files, _ := filepath.Glob(filepath.Join(stateDir, "*.json"))
	if len(files) != 1 {
		t.Fatalf("state files: %v", files)
	}
	var st struct {
		Key  string `json:"key"`
		Size uint64 `json:"size"`
	}
	read := func() {
		b, _ := os.ReadFile(files[0])
		json.Unmarshal(b, &st)
	}
	read()
	first := st.Size
	if first == 0 || st.Key != cs.Signer.Verifier().String() {
		t.Fatalf("remembered %+v", st)
	}
	for i := range 5 {
		cs.set(t, "dev", fmt.Sprintf("K%d", i), "v")
	}
	cs.waitCheckpoint(t)
	if r := cs.run(t, nil, "secrets", "list"); r.code != 0 || strings.Contains(r.stderr, "first contact") {
		t.Fatalf("second contact: %+v", r)
	}
	read()
	if st.Size <= first {
		t.Fatalf("the remembered checkpoint did not move: %d -> %d", first, st.Size)
	}
	if r := cs.run(t, nil, "ledger", "key", "--server", cs.url); r.code != 0 || strings.TrimSpace(r.stdout) != st.Key {
		t.Fatalf("ledger key --server: %+v, want %s", r, st.Key)
	}
	r = cs.run(t, nil, "ledger", "verify")
	if r.code != 0 || !strings.Contains(r.stdout, "OK") || !strings.Contains(r.stdout, "signed checkpoint") {
		t.Fatalf("ledger verify: %+v", r)
	}
	var rep map[string]any
	if r := cs.run(t, nil, "ledger", "verify", "--json", "--key", st.Key); r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || rep["ok"] != true {
		t.Fatalf("ledger verify --json: %+v", r)
	}
	good, _ := os.ReadFile(files[0])

	// A checkpoint of the same size with another root, signed by the
	// log's own key: the history was rewritten.
	forged, err := cs.Signer.Sign(st.Size, eventstoreHash(0x42))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal(good, &doc)
	doc["checkpoint"] = string(forged)
	b, _ := json.Marshal(doc)
	os.WriteFile(files[0], b, 0o600)
	r = cs.run(t, nil, "secrets", "list")
	oneLineError(t, r, exitTampered, "LEDGER CHECK FAILED")
	if r.stdout != "" {
		t.Fatalf("a refused server's answer was printed: %q", r.stdout)
	}
	oneLineError(t, cs.run(t, nil, "ledger", "verify"), exitTampered, "different roots")
	// --no-verify-log goes on regardless; ledger forget starts afresh.
	if r := cs.run(t, nil, "secrets", "list", "--no-verify-log"); r.code != 0 {
		t.Fatalf("--no-verify-log: %+v", r)
	}
	if r := cs.run(t, nil, "ledger", "forget"); r.code != 0 {
		t.Fatalf("forget: %+v", r)
	}
	if r := cs.run(t, nil, "secrets", "list"); r.code != 0 || !strings.Contains(r.stderr, "first contact") {
		t.Fatalf("after forget: %+v", r)
	}
	// Another key for the same server is refused.
	_, other, err := checkpoint.GenerateKey("stele.test/other")
	if err != nil {
		t.Fatal(err)
	}
	doc["key"] = other
	delete(doc, "checkpoint")
	delete(doc, "size")
	b, _ = json.Marshal(doc)
	os.WriteFile(files[0], b, 0o600)
	oneLineError(t, cs.run(t, nil, "whoami"), exitTampered, "LEDGER CHECK FAILED")
	oneLineError(t, cs.run(t, nil, "ledger", "verify", "--key", st.Key), exitTampered, "trusts")
}

func eventstoreHash(b byte) (h eventstore.Hash) {
	for i := range h {
		h[i] = b
	}
	return h
}

// The commands for the rest of the API: projects, environments,
// bundles, members, tokens, keys and the audit log, as tables and JSON.
func TestCLIResources(t *testing.T) {
	cs := newCLIServer(t)
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"projects", "create", "api", "--name", "The API"}, "Created project acme/api"},
		{[]string{"projects", "list"}, "The API"},
		{[]string{"envs", "create", "staging", "--project", "api"}, "Created environment acme/api/staging"},
		{[]string{"envs", "list"}, "production"},
		{[]string{"bundles", "set", "backend", "--keys", "DB_URL!,API_KEY"}, "Bundle backend holds"},
		{[]string{"bundles", "list"}, "DB_URL!,API_KEY"},
		{[]string{"members", "grant", "bob@example.com", "--role", "developer", "--project", "web"}, "bob@example.com is developer in web"},
		{[]string{"members", "list"}, "bob@example.com"},
		{[]string{"members", "revoke", "bob@example.com", "--project", "web"}, "Revoked"},
		{[]string{"keys", "status"}, "primary"},
		{[]string{"keys", "rotate", "acme/web/dev"}, "primary"},
		{[]string{"tokens", "list"}, "bootstrap"},
		{[]string{"audit", "log", "--action", "keyset.*"}, "keyset."},
		{[]string{"bundles", "delete", "backend"}, "Deleted bundle backend"},
	}
	for _, s := range steps {
		r := cs.run(t, nil, s.args...)
		if r.code != 0 || !strings.Contains(r.stdout, s.want) {
			t.Fatalf("%v: %+v", s.args, r)
		}
	}
	// A token: its secret once, on standard output; it works, then is
	// revoked.
	cs.set(t, "dev", "API_KEY", "for-the-ci")
	r := cs.run(t, nil, "tokens", "create", "ci", "--role", "developer", "--project", "web", "--envs", "dev", "--ttl", "1h")
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(tok, "stele_tok_acme.") || !strings.Contains(r.stderr, "shown only now") {
		t.Fatalf("tokens create: %+v", r)
	}
	if r := cs.run(t, []string{"STELE_TOKEN=" + tok}, "run", "--", "sh", "-c", `printf %s "$API_KEY"`); r.stdout != "for-the-ci" {
		t.Fatalf("the new token: %+v", r)
	}
	oneLineError(t, cs.run(t, []string{"STELE_TOKEN=" + tok}, "secrets", "list", "--env", "production"), 1, "not_found")
	var list struct {
		Items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"items"`
	}
	r = cs.run(t, nil, "tokens", "list", "--json")
	if json.Unmarshal([]byte(r.stdout), &list) != nil {
		t.Fatalf("tokens list --json: %+v", r)
	}
	var id string
	for _, it := range list.Items {
		if it.Name == "ci" {
			id = it.ID
		}
	}
	if r := cs.run(t, nil, "tokens", "revoke", id, "--reason", "rotated"); r.code != 0 {
		t.Fatalf("revoke: %+v", r)
	}
	oneLineError(t, cs.run(t, []string{"STELE_TOKEN=" + tok}, "secrets", "list"), exitAuth, "STELE_TOKEN")
	// JSON for scripts.
	var envs struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if r := cs.run(t, nil, "envs", "list", "--json"); json.Unmarshal([]byte(r.stdout), &envs) != nil || len(envs.Items) != 2 {
		t.Fatalf("envs list --json: %+v", r)
	}
	var ks struct {
		Keys []any `json:"keys"`
	}
	if r := cs.run(t, nil, "keys", "status", "--json", "--env", "dev"); json.Unmarshal([]byte(r.stdout), &ks) != nil || len(ks.Keys) != 2 {
		t.Fatalf("keys status --json: %+v", r)
	}
	r = cs.run(t, nil, "audit", "log", "--format", "csv", "--from", "1h")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "position,") {
		t.Fatalf("audit log csv: %+v", r)
	}
}

// Every client command's --help shows an example.
func TestClientCommandsHaveExamples(t *testing.T) {
	root := newRootCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && c.Example == "" {
			t.Errorf("%s has no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	for _, c := range root.Commands() {
		switch {
		case c.GroupID == "daily", c.GroupID == "org" && c.Name() != "ledger":
			walk(c)
		case c.Name() == "ledger":
			for _, sub := range c.Commands() {
				if sub.Name() == "verify" || sub.Name() == "forget" {
					walk(sub)
				}
			}
		}
	}
}

// On a terminal: secrets set prompts for the value without echoing it;
// request shows a QR code and counts down to the expiry.
func TestCLIOnATerminal(t *testing.T) {
	cs := newCLIServer(t)
	startTTY := func(args ...string) (*exec.Cmd, *os.File, *syncbuf.Buffer) {
		cmd := exec.Command(steleBin, args...)
		cmd.Env = mergeEnv(cs.env, []string{"TERM=xterm"})
		cmd.Dir = cs.dir
		tty, err := pty.Start(cmd)
		if err != nil {
			t.Skipf("no pseudo-terminal here: %v", err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); tty.Close() })
		out := &syncbuf.Buffer{}
		go io.Copy(out, tty)
		return cmd, tty, out
	}
	waitOut := func(out *syncbuf.Buffer, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("the terminal never showed %q: %q", want, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	const value = "hunter2-typed-at-a-tty"
	cmd, tty, out := startTTY("secrets", "set", "TYPED")
	waitOut(out, "(not shown): ")
	tty.Write([]byte(value + "\r"))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("secrets set: %v; terminal: %q", err, out.String())
	}
	waitOut(out, "TYPED is at version 1.")
	if strings.Contains(out.String(), value) {
		t.Fatalf("the value was echoed: %q", out.String())
	}
	if r := cs.run(t, nil, "secrets", "get", "TYPED"); r.stdout != value {
		t.Fatalf("get: %+v", r)
	}

	cs.set(t, "production", "API_KEY", "sk")
	cmd, _, out = startTTY("request", "--env", "production", "--keys", "API_KEY", "--ttl", "5m")
	waitOut(out, "left")
	screen := out.String()
	if !strings.Contains(screen, "▀") && !strings.Contains(screen, "█") {
		t.Fatalf("no QR code on the terminal: %q", screen)
	}
	if !regexp.MustCompile(`Waiting… [45]:\d\d left`).MatchString(screen) {
		t.Fatalf("no countdown: %q", screen)
	}
	cmd.Process.Signal(syscall.SIGTERM)
}
