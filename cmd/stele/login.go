package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/cli"
	"stele.dev/stele/domain"
)

func newLoginCmd() *cobra.Command {
	var cf clientFlags
	var ui ticketUI
	var printToken, noBrowser bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Sign this machine in: approve the sign-in in a browser where you are signed in",
		Long: `Sign the CLI in to a Stele server. stele makes a one-time X25519 key
pair, opens a sign-in request, and prints its address (as text and as a QR
code, to open on another device) and a short code; it opens the address in
this machine's browser when there is one. Once you approve the request,
signed in to Stele in the browser, the server seals a session credential
to the one-time key, and stele opens it and keeps it in the operating
system's keychain (the kernel keyring on a headless Linux machine). The
private key lives only in memory.

The credential is never written to a file. Where no keychain works, stele
says so before asking anything: then use --print-token and put what it
prints in STELE_TOKEN, or use a service token. STELE_TOKEN, when set,
always wins over the stored sign-in and is never stored.`,
		Example: `  stele login
  stele login --server https://stele.example.com
  export STELE_TOKEN="$(stele login --print-token)"`,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := cf.dial(c)
			if err != nil {
				return err
			}
			var kc *keychain
			if !printToken {
				if kc, err = openKeychain(); err != nil {
					return fmt.Errorf("%v, so the sign-in could not be kept: run 'stele login --print-token' and put what it prints in STELE_TOKEN, or use a service token in STELE_TOKEN", err)
				}
			}
			errw := c.ErrOrStderr()
			if s.fromEnv && !printToken {
				fmt.Fprintln(errw, "stele: note: STELE_TOKEN is set, and wins over the sign-in stored now until you unset it")
			}
			anon := *s.Client
			anon.Token = "" // a sign-in is asked for by a client that is not signed in
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			q, err := cli.NewRequester(&anon)
			if err != nil {
				return err
			}
			t, err := q.OpenLogin(ctx, 0)
			if err != nil {
				return s.explain(err)
			}
			ui.openBrowser = !noBrowser
			ui.show(errw, t, "this sign-in")
			stop := countdown(ctx, errw, t.ExpiresAt)
			l, err := q.WaitLogin(ctx)
			stop()
			if err != nil {
				return err
			}
			if printToken {
				_, err := fmt.Fprintln(c.OutOrStdout(), l.Credential)
				fmt.Fprintf(errw, "Signed in as %s until %s. The credential is on standard output; it is not stored.\n", l.User, l.ExpiresAt.Local().Format(time.RFC1123))
				return err
			}
			if err := kc.Set(s.Server, l.Credential); err != nil {
				return fmt.Errorf("the sign-in succeeded but the keychain refused it (%v); sign out in the browser's session list, and use --print-token", err)
			}
			fmt.Fprintf(c.OutOrStdout(), "Signed in to %s as %s until %s (kept in the %s keychain).\n", s.Server, l.User, l.ExpiresAt.Local().Format(time.RFC1123), kc.backend)
			if !s.fromEnv {
				s.Token = l.Credential
				if err := s.checkLog(c.Context()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cf.register(cmd)
	ui.register(cmd.Flags())
	cmd.Flags().BoolVar(&printToken, "print-token", false, "print the session credential on standard output instead of keeping it in the keychain")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "do not open a browser; just print the address")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up waiting after this long")
	return cmd
}

func newLogoutCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "End this machine's sign-in: on the server, and in the keychain",
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := cf.dial(c)
			if err != nil {
				return err
			}
			kc, err := openKeychain()
			if err != nil {
				return fmt.Errorf("%v: there is no stored sign-in to end", err)
			}
			tok, err := kc.Get(s.Server)
			if err != nil || tok == "" {
				fmt.Fprintf(c.OutOrStdout(), "Not signed in to %s.\n", s.Server)
				if s.fromEnv {
					fmt.Fprintln(c.ErrOrStderr(), "stele: STELE_TOKEN is set; logout does not touch it")
				}
				return nil
			}
			signedIn := *s.Client
			signedIn.Token = tok
			_, err = signedIn.Do(c.Context(), cli.Call{Method: http.MethodPost, Path: "/v1/auth/logout", JSON: map[string]any{}})
			var p *cli.Problem
			switch {
			case err == nil, errors.As(err, &p) && p.Code == "unauthenticated":
				// Ended now, or already.
			default:
				fmt.Fprintf(c.ErrOrStderr(), "stele: the server could not end the session (%v); forgetting it here anyway\n", err)
			}
			if err := kc.Remove(s.Server); err != nil {
				return fmt.Errorf("removing the sign-in from the keychain: %w", err)
			}
			fmt.Fprintf(c.OutOrStdout(), "Signed out of %s.\n", s.Server)
			if s.fromEnv {
				fmt.Fprintln(c.ErrOrStderr(), "stele: STELE_TOKEN is still set and still signs commands in")
			}
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func newWhoamiCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Say who this machine is signed in as, where, and with which roles",
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := cf.connect(c)
			if err != nil {
				return err
			}
			if err := s.needAuth(); err != nil {
				return err
			}
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: "/v1/me"}, nil)
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printRaw(c.OutOrStdout(), resp.Body)
			}
			var me struct {
				Actor     string     `json:"actor"`
				Kind      string     `json:"kind"`
				Method    string     `json:"method"`
				ExpiresAt *time.Time `json:"expires_at"`
				DevSignIn bool       `json:"dev_sign_in"`
				Roles     []struct {
					Org     string `json:"org"`
					Project string `json:"project"`
					Role    string `json:"role"`
				} `json:"roles"`
			}
			if err := resp.Decode(&me); err != nil {
				return err
			}
			w := c.OutOrStdout()
			from := "the keychain"
			if s.fromEnv {
				from = "STELE_TOKEN"
			}
			fmt.Fprintf(w, "%s on %s (credential from %s", me.Actor, s.Server, from)
			if me.ExpiresAt != nil {
				fmt.Fprintf(w, ", until %s", me.ExpiresAt.Local().Format(time.RFC1123))
			}
			fmt.Fprintln(w, ")")
			if me.DevSignIn {
				fmt.Fprintln(w, "warning: the server's development sign-in is on: anyone can sign in as anyone")
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ORGANIZATION\tPROJECT\tROLE")
			for _, r := range me.Roles {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Org, firstOf(r.Project, "*"), r.Role)
			}
			return tw.Flush()
		},
	}
	cf.register(cmd)
	cf.registerJSON(cmd)
	return cmd
}

func newInitCmd() *cobra.Command {
	var d cli.Defaults
	var force bool
	cmd := &cobra.Command{
		Use:   "init --org O --project P --env E [--server URL]",
		Short: "Write " + cli.DirFileName + ": this folder's organization, project and environment",
		Long: `Write ` + cli.DirFileName + ` in the current folder, naming the organization,
project, environment (and optionally the server) that stele commands run
here and in the folders below use by default. It holds no secret and can
be committed with the code. Flags and STELE_ADDR, STELE_ORG,
STELE_PROJECT and STELE_ENV override it.`,
		Example: `  stele init --org acme --project web --env development`,
		RunE: func(c *cobra.Command, _ []string) error {
			for _, v := range []struct{ flag, val string }{{"org", d.Org}, {"project", d.Project}, {"env", d.Env}} {
				if v.val == "" {
					return usageError{fmt.Errorf("--%s is required", v.flag)}
				}
				if !domain.ValidSlug(v.val) {
					return usageError{fmt.Errorf("--%s %q: want a slug (lowercase letters, digits, inner hyphens)", v.flag, v.val)}
				}
			}
			if d.Server != "" && !strings.HasPrefix(d.Server, "http://") && !strings.HasPrefix(d.Server, "https://") {
				return usageError{fmt.Errorf("--server %q: want an http:// or https:// URL", d.Server)}
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(cli.DirFileName, flags, 0o644)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists here already: pass --force to replace it", cli.DirFileName)
			}
			if err != nil {
				return err
			}
			if _, err := f.Write(d.Format()); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			abs, _ := filepath.Abs(cli.DirFileName)
			fmt.Fprintf(c.OutOrStdout(), "Wrote %s: commands here use %s/%s/%s.\n", abs, d.Org, d.Project, d.Env)
			return nil
		},
	}
	cmd.Flags().StringVar(&d.Org, "org", "", "organization")
	cmd.Flags().StringVar(&d.Project, "project", "", "project")
	cmd.Flags().StringVarP(&d.Env, "env", "e", "", "environment")
	cmd.Flags().StringVar(&d.Server, "server", "", "the Stele server's URL (optional)")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing "+cli.DirFileName)
	return cmd
}
