package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/cli"
	"stele.dev/stele/internal/envfile"
)

// clientFlags say which server a client command talks to, and as whom.
type clientFlags struct {
	server string
	caFile string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.server, "server", "", "the Stele server's URL (default $STELE_ADDR or http://127.0.0.1:8080)")
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "trust the certificates in this PEM file for the server (default $STELE_CA_FILE; the system's otherwise)")
}

// client builds an API client; the credential is $STELE_TOKEN when set.
func (f *clientFlags) client() (*cli.Client, error) {
	server := f.server
	if server == "" {
		server = os.Getenv("STELE_ADDR")
	}
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	if !strings.HasPrefix(server, "http://") && !strings.HasPrefix(server, "https://") {
		return nil, usageError{fmt.Errorf("--server %q: want an http:// or https:// URL", server)}
	}
	ca := f.caFile
	if ca == "" {
		ca = os.Getenv("STELE_CA_FILE")
	}
	hc := &http.Client{Timeout: 2 * time.Minute}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", ca)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return &cli.Client{Server: server, Token: os.Getenv("STELE_TOKEN"), HTTP: hc, UserAgent: "stele/" + version}, nil
}

func newRequestCmd() *cobra.Command {
	var cf clientFlags
	var org, project, env, bundle, format string
	var keys []string
	var timeout, ttl time.Duration
	cmd := &cobra.Command{
		Use:   "request",
		Short: "Ask for secrets that a person approves in a browser; receive them sealed to a one-time key",
		Long: `Open an approval request for secrets of an environment (a bundle, or
key names), print the address where a person approves it and the code
that person must see on the page, wait for the decision, and print the
values on standard output. No sign-in is needed: the values are sealed to
a key pair made for this request, whose private half never leaves this
process. With STELE_TOKEN set, the request is made as that credential.

The address and the code go to standard error; only the values go to
standard output.`,
		Example: `  stele request --org acme --project web --env production --bundle backend
  stele request --org acme --project web --env production --keys DB_URL,API_KEY --format dotenv > .env`,
		RunE: func(c *cobra.Command, _ []string) error {
			for _, v := range []struct {
				dst *string
				env string
			}{{&org, "STELE_ORG"}, {&project, "STELE_PROJECT"}, {&env, "STELE_ENV"}} {
				if *v.dst == "" {
					*v.dst = os.Getenv(v.env)
				}
			}
			if org == "" || project == "" || env == "" {
				return usageError{errors.New("name the environment: --org, --project and --env (or STELE_ORG, STELE_PROJECT, STELE_ENV)")}
			}
			if (bundle == "") == (len(keys) == 0) {
				return usageError{errors.New("ask for --bundle or --keys, one of them")}
			}
			f, err := envfile.ParseFormat(format)
			if err != nil {
				return usageError{err}
			}
			client, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			q, err := cli.NewRequester(client)
			if err != nil {
				return err
			}
			t, err := q.Open(ctx, cli.SecretsRequest{Org: org, Project: project, Env: env, Bundle: bundle, Keys: keys, TTL: ttl})
			if err != nil {
				return err
			}
			errw := c.ErrOrStderr()
			fmt.Fprintf(errw, "Open %s to approve this request.\nThe page must show the code %s. It expires at %s.\nWaiting…\n",
				t.VerificationURL, t.UserCode, t.ExpiresAt.UTC().Format("15:04:05 UTC"))
			d, err := q.Wait(ctx)
			if err != nil {
				return err
			}
			names := make([]string, 0, len(d.Values))
			for n := range d.Values {
				names = append(names, n)
			}
			slices.Sort(names)
			entries := make([]envfile.Entry, 0, len(names))
			for _, n := range names {
				entries = append(entries, envfile.Entry{Name: n, Value: d.Values[n]})
			}
			var out []byte
			switch f {
			case envfile.Dotenv:
				out, err = envfile.FormatDotenv(entries)
			case envfile.YAML:
				out, err = envfile.FormatYAML(entries)
			default:
				out, err = envfile.FormatJSON(entries)
			}
			clear(d.Values)
			if err != nil {
				return err
			}
			fmt.Fprintf(errw, "Received %d %s.\n", len(names), plural(len(names), "value", "values"))
			_, err = c.OutOrStdout().Write(out)
			return err
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&org, "org", "", "organization (default $STELE_ORG)")
	cmd.Flags().StringVar(&project, "project", "", "project (default $STELE_PROJECT)")
	cmd.Flags().StringVar(&env, "env", "", "environment (default $STELE_ENV)")
	cmd.Flags().StringVar(&bundle, "bundle", "", "ask for this bundle's keys")
	cmd.Flags().StringSliceVar(&keys, "keys", nil, "ask for these keys (comma-separated)")
	cmd.Flags().StringVar(&format, "format", "json", "output: json, dotenv or yaml")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up waiting after this long")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the request stays open (default the server's, 5 minutes; at most 1h)")
	return cmd
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
