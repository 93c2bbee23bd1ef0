package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/cli"
	"stele.dev/stele/internal/envfile"
)

func newRequestCmd() *cobra.Command {
	var cf clientFlags
	var ui ticketUI
	var bundle, format string
	var keys []string
	var timeout, ttl time.Duration
	var run runFlags
	cmd := &cobra.Command{
		Use:   "request (--bundle B | --keys K1,K2) [-- COMMAND [ARG...]]",
		Short: "Ask for secrets that a colleague approves in a browser; receive them sealed to a one-time key",
		Long: `Open an approval request for secrets of an environment (a bundle, or
key names), print the address where a colleague approves it, as text and
as a QR code, and the code that person must see on the page, wait for the
decision with a countdown to the expiry, and then print the values in
the chosen format, or run COMMAND with them in its environment.

No sign-in is needed: the values are sealed to a key pair made for this
one request, whose private half lives only in this process's memory and
is never stored. A request is collected once. With STELE_TOKEN set or a
sign-in stored, the request is made as that identity.

The address and the code go to standard error; only the values go to
standard output.`,
		Example: `  stele request --env production --bundle backend
  stele request --env production --keys DB_URL,API_KEY --format dotenv > .env
  stele request --env production --bundle backend -- ./migrate --up`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if dash := c.ArgsLenAtDash(); dash > 0 || dash < 0 && len(args) > 0 {
				return usageError{fmt.Errorf("put the command to run after --: stele request … -- %s", args[0])}
			}
			if (bundle == "") == (len(keys) == 0) {
				return usageError{errors.New("ask for --bundle or --keys, one of them")}
			}
			f, err := envfile.ParseOutputFormat(format)
			if err != nil {
				return usageError{err}
			}
			s, err := cf.dial(c)
			if err != nil {
				return err
			}
			env, err := s.environment()
			if err != nil {
				return err
			}
			if s.Token != "" {
				if err := s.checkLog(c.Context()); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			q, err := cli.NewRequester(s.Client)
			if err != nil {
				return err
			}
			t, err := q.Open(ctx, cli.SecretsRequest{Org: env.Org, Project: env.Project, Env: env.Env, Bundle: bundle, Keys: keys, TTL: ttl})
			if err != nil {
				return s.explain(err)
			}
			errw := c.ErrOrStderr()
			what := "this request for " + env.String()
			if bundle != "" {
				what += " (bundle " + bundle + ")"
			}
			ui.show(errw, t, what)
			stop := countdown(ctx, errw, t.ExpiresAt)
			d, err := q.Wait(ctx)
			stop()
			if err != nil {
				return err
			}
			fmt.Fprintf(errw, "Received %d %s.\n", len(d.Values), plural(len(d.Values), "value", "values"))
			if len(args) > 0 {
				code, err := run.runOnce(c, args, d.Values)
				clear(d.Values)
				if err != nil {
					return err
				}
				return exitCode(code)
			}
			out, err := formatValues(f, d.Values)
			clear(d.Values)
			if err != nil {
				return err
			}
			_, err = c.OutOrStdout().Write(out)
			clear(out)
			return err
		},
	}
	cf.register(cmd)
	cf.registerEnv(cmd)
	ui.register(cmd.Flags())
	run.registerChild(cmd)
	cmd.Flags().StringVar(&bundle, "bundle", "", "ask for this bundle's keys")
	cmd.Flags().StringSliceVar(&keys, "keys", nil, "ask for these keys (comma-separated)")
	cmd.Flags().StringVarP(&format, "format", "f", "json", "output: json, dotenv, yaml, sh or fish")
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

// exitCode is the exit status of a child that `stele run` or
// `stele request` ran: stele exits with it, printing nothing.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
