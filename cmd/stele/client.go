package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/cli"
	"stele.dev/stele/domain"
)

// Exit codes of the client commands, besides those in main.go.
const (
	exitAuth = 4 // not signed in, or not allowed
)

// defaultServer is the server a client talks to when nothing names one:
// the address `make run` listens on.
const defaultServer = "http://127.0.0.1:8080"

// clientFlags say which server a client command talks to, as whom, and
// (for commands on an environment's secrets) which environment.
type clientFlags struct {
	server      string
	caFile      string
	org         string
	project     string
	env         string
	asJSON      bool
	noVerifyLog bool
}

// register adds the flags that every client command takes.
func (f *clientFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.server, "server", "", "the Stele server's URL (default $STELE_ADDR, the folder's "+cli.DirFileName+", or "+defaultServer+")")
	fs.StringVar(&f.caFile, "ca-file", "", "trust the certificates in this PEM file for the server (default $STELE_CA_FILE; the system's otherwise)")
	fs.BoolVar(&f.noVerifyLog, "no-verify-log", false, "do not check that the server's ledger extends the one this client verified before (default $STELE_NO_VERIFY_LOG)")
}

// registerJSON adds --json.
func (f *clientFlags) registerJSON(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print JSON, for scripts")
}

// registerOrg adds --org.
func (f *clientFlags) registerOrg(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.org, "org", "", "organization (default $STELE_ORG or the folder's "+cli.DirFileName+")")
}

// registerProject adds --org and --project.
func (f *clientFlags) registerProject(cmd *cobra.Command) {
	f.registerOrg(cmd)
	cmd.Flags().StringVar(&f.project, "project", "", "project (default $STELE_PROJECT or the folder's "+cli.DirFileName+")")
}

// registerEnv adds --org, --project and --env.
func (f *clientFlags) registerEnv(cmd *cobra.Command) {
	f.registerProject(cmd)
	cmd.Flags().StringVarP(&f.env, "env", "e", "", "environment (default $STELE_ENV or the folder's "+cli.DirFileName+")")
}

// session is a client command's connection to its server.
type session struct {
	*cli.Client
	flags *clientFlags
	dirs  clientDirs
	// defaults are the folder's, where one names them.
	defaults cli.Defaults
	// fromEnv says whether the credential is $STELE_TOKEN.
	fromEnv bool
	stderr  io.Writer
}

// clientDirs are where the client keeps its state.
type clientDirs struct {
	// ledgers holds what the client remembers of each server's ledger.
	ledgers cli.LogStateDir
}

func userDirs() (clientDirs, error) {
	base := os.Getenv("STELE_CONFIG_DIR")
	if base == "" {
		d, err := os.UserConfigDir()
		if err != nil {
			return clientDirs{}, fmt.Errorf("no folder for the client's state: set STELE_CONFIG_DIR (%v)", err)
		}
		base = filepath.Join(d, "stele")
	}
	return clientDirs{ledgers: cli.LogStateDir(filepath.Join(base, "ledgers"))}, nil
}

// firstOf returns the first non-empty string.
func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// connect resolves the server, the credential and the defaults, and,
// unless told not to, checks the server's ledger against the state this
// client remembers.
func (f *clientFlags) connect(cmd *cobra.Command) (*session, error) {
	s, err := f.dial(cmd)
	if err != nil {
		return nil, err
	}
	if err := s.checkLog(cmd.Context()); err != nil {
		return nil, err
	}
	return s, nil
}

// dial is connect without the ledger check.
func (f *clientFlags) dial(cmd *cobra.Command) (*session, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	defs, path, err := cli.FindDefaults(wd)
	if err != nil {
		return nil, err
	}
	_ = path
	server := strings.TrimRight(firstOf(f.server, os.Getenv("STELE_ADDR"), defs.Server, defaultServer), "/")
	if !strings.HasPrefix(server, "http://") && !strings.HasPrefix(server, "https://") {
		return nil, usageError{fmt.Errorf("server %q: want an http:// or https:// URL", server)}
	}
	hc := &http.Client{Timeout: 2 * time.Minute}
	if ca := firstOf(f.caFile, os.Getenv("STELE_CA_FILE")); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", ca)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: http.ProxyFromEnvironment}
	}
	dirs, err := userDirs()
	if err != nil {
		return nil, err
	}
	s := &session{
		Client:   &cli.Client{Server: server, HTTP: hc, UserAgent: "stele/" + version},
		flags:    f,
		dirs:     dirs,
		defaults: defs,
		stderr:   cmd.ErrOrStderr(),
	}
	if tok := strings.TrimSpace(os.Getenv("STELE_TOKEN")); tok != "" {
		s.Token, s.fromEnv = tok, true
	} else if kc, err := openKeychain(); err == nil {
		if tok, err := kc.Get(server); err == nil {
			s.Token = tok
		}
	}
	return s, nil
}

// dialEnv is dial for a command on an environment's secrets: it resolves
// the environment and needs a credential. The caller checks the ledger
// (checkLog or checkLogAsync).
func (f *clientFlags) dialEnv(cmd *cobra.Command) (*session, cli.Env, error) {
	s, err := f.dial(cmd)
	if err != nil {
		return nil, cli.Env{}, err
	}
	env, err := s.environment()
	if err != nil {
		return nil, cli.Env{}, err
	}
	if err := s.needAuth(); err != nil {
		return nil, cli.Env{}, err
	}
	return s, env, nil
}

// checkLogAsync starts checkLog and returns a function that waits for
// its outcome: a command reads what it needs meanwhile, and uses it only
// once the ledger is found sound.
func (s *session) checkLogAsync(ctx context.Context) func() error {
	done := make(chan error, 1)
	go func() { done <- s.checkLog(ctx) }()
	return func() error { return <-done }
}

// checkLog checks the server's ledger against what this client remembers
// of it (see cli.Client.CheckLog).
func (s *session) checkLog(ctx context.Context) error {
	if s.flags.noVerifyLog || truthy(os.Getenv("STELE_NO_VERIFY_LOG")) {
		return nil
	}
	res, err := s.CheckLog(ctx, s.dirs.ledgers)
	if err != nil {
		if errors.Is(err, cli.ErrLogRewritten) {
			return logRewrittenError{err, s.Server}
		}
		return err
	}
	if res.Trusted {
		fmt.Fprintf(s.stderr, "stele: first contact with %s: trusting its ledger key from now on\n", s.Server)
	}
	return nil
}

// logRewrittenError is a ledger that does not extend the one the client
// verified before; it exits with exitTampered.
type logRewrittenError struct {
	err    error
	server string
}

func (e logRewrittenError) Error() string {
	return fmt.Sprintf("LEDGER CHECK FAILED for %s: %v. Do not trust this server until an operator explains it; if the change is legitimate, run 'stele ledger forget' and sign in again", e.server, e.err)
}

func (e logRewrittenError) Unwrap() error { return e.err }

func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// needAuth fails early, with advice, when there is no credential.
func (s *session) needAuth() error {
	if s.Token == "" {
		return authError{fmt.Errorf("not signed in to %s: run 'stele login', or set STELE_TOKEN to a service token", s.Server)}
	}
	return nil
}

// authError exits with exitAuth.
type authError struct{ error }

func (e authError) Unwrap() error { return e.error }

// org returns the organization: the flag, $STELE_ORG, the folder's.
func (s *session) org() (string, error) {
	o := firstOf(s.flags.org, os.Getenv("STELE_ORG"), s.defaults.Org)
	if o == "" {
		return "", usageError{errors.New("which organization? pass --org, set STELE_ORG, or run 'stele init' here")}
	}
	if !domain.ValidSlug(o) {
		return "", usageError{fmt.Errorf("organization %q: want a slug (lowercase letters, digits, inner hyphens)", o)}
	}
	return o, nil
}

// project returns the organization and the project.
func (s *session) project() (org, project string, err error) {
	if org, err = s.org(); err != nil {
		return "", "", err
	}
	project = firstOf(s.flags.project, os.Getenv("STELE_PROJECT"), s.defaults.Project)
	if project == "" {
		return "", "", usageError{errors.New("which project? pass --project, set STELE_PROJECT, or run 'stele init' here")}
	}
	if !domain.ValidSlug(project) {
		return "", "", usageError{fmt.Errorf("project %q: want a slug (lowercase letters, digits, inner hyphens)", project)}
	}
	return org, project, nil
}

// environment returns the environment the command acts on.
func (s *session) environment() (cli.Env, error) {
	org, project, err := s.project()
	if err != nil {
		return cli.Env{}, err
	}
	env := firstOf(s.flags.env, os.Getenv("STELE_ENV"), s.defaults.Env)
	if env == "" {
		return cli.Env{}, usageError{errors.New("which environment? pass --env, set STELE_ENV, or run 'stele init' here")}
	}
	if !domain.ValidSlug(env) {
		return cli.Env{}, usageError{fmt.Errorf("environment %q: want a slug (lowercase letters, digits, inner hyphens)", env)}
	}
	return cli.Env{Org: org, Project: project, Env: env}, nil
}

// call does one API call and decodes its JSON answer into out (when not
// nil).
func (s *session) call(ctx context.Context, c cli.Call, out any) (*cli.Response, error) {
	resp, err := s.Do(ctx, c)
	if err != nil {
		return nil, s.explain(err)
	}
	if out != nil && len(resp.Body) > 0 {
		if err := resp.Decode(out); err != nil {
			return resp, err
		}
	}
	return resp, nil
}

// explain turns the problems that have one remedy into advice.
func (s *session) explain(err error) error {
	var p *cli.Problem
	if !errors.As(err, &p) {
		return err
	}
	switch p.Code {
	case "unauthenticated":
		if s.Token == "" {
			return authError{fmt.Errorf("not signed in to %s: run 'stele login', or set STELE_TOKEN", s.Server)}
		}
		if s.fromEnv {
			return authError{fmt.Errorf("the server refused STELE_TOKEN (unknown, revoked or expired): set a valid token")}
		}
		return authError{fmt.Errorf("the sign-in for %s has ended or was revoked: run 'stele login' again", s.Server)}
	case "forbidden", "approval_required", "csrf_failed":
		return authError{err}
	}
	return err
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printRaw writes a JSON answer as indented JSON.
func printRaw(w io.Writer, body []byte) error {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	return printJSON(w, v)
}
