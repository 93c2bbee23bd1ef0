package main

import (
	"context"
	"encoding/json"
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

// runFlags shape the child that `stele run` (and `stele request -- …`)
// starts.
type runFlags struct {
	mask         bool
	preserveEnv  bool
	grace        time.Duration
	forwardIntr  string
	restartDelay time.Duration
}

func (r *runFlags) registerChild(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&r.mask, "mask", false, "replace the secrets' values with **** in the command's output (values of 4 bytes or more)")
	cmd.Flags().BoolVar(&r.preserveEnv, "preserve-env", false, "keep variables already set in the environment instead of overriding them with the secrets")
	cmd.Flags().StringVar(&r.forwardIntr, "forward-interrupts", "auto", "pass SIGINT and SIGQUIT on to the command: auto (unless standard input is a terminal, which sends them to the command itself), always or never")
}

// childEnv is the environment of the child: this process's, with the
// secrets set (or added only where unset, with --preserve-env).
func (r *runFlags) childEnv(values map[string]string) []string {
	env := os.Environ()
	out := make([]string, 0, len(env)+len(values))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if _, secret := values[name]; secret && !r.preserveEnv {
			continue
		}
		if name == "STELE_TOKEN" { // the child gets its secrets, not stele's credential
			continue
		}
		out = append(out, kv)
	}
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if _, set := os.LookupEnv(n); set && r.preserveEnv {
			continue
		}
		out = append(out, n+"="+values[n])
	}
	return out
}

// child is the child to start with values.
func (r *runFlags) child(c *cobra.Command, argv []string, values map[string]string) cli.Child {
	fwd := r.forwardIntr == "always" || r.forwardIntr == "auto" && !isTerminal(os.Stdin)
	ch := cli.Child{Argv: argv, Env: r.childEnv(values), Stdin: c.InOrStdin(), Stdout: c.OutOrStdout(), Stderr: c.ErrOrStderr(), ForwardInterrupts: fwd}
	if r.mask {
		for _, v := range values {
			ch.Mask = append(ch.Mask, v)
		}
	}
	return ch
}

// runOnce runs argv once with values and returns its exit status.
func (r *runFlags) runOnce(c *cobra.Command, argv []string, values map[string]string) (int, error) {
	if err := r.check(); err != nil {
		return 0, err
	}
	if c.Context().Err() != nil { // a signal came while the values were read
		return 0, errors.New("interrupted before the command started")
	}
	p, err := r.child(c, argv, values).Start()
	if err != nil {
		return 0, err
	}
	return p.ExitCode(), nil
}

func (r *runFlags) check() error {
	switch r.forwardIntr {
	case "auto", "always", "never":
		return nil
	}
	return usageError{fmt.Errorf("--forward-interrupts %q: want auto, always or never", r.forwardIntr)}
}

// pick is what a command reads of an environment: some keys, a bundle,
// or (neither) every secret.
type pick struct {
	keys   []string
	bundle string
}

func (p *pick) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&p.bundle, "bundle", "b", "", "only this bundle's keys (its required keys must all have a value)")
	cmd.Flags().StringSliceVarP(&p.keys, "keys", "k", nil, "only these keys (comma-separated)")
}

func (p *pick) check() error {
	if p.bundle != "" && len(p.keys) > 0 {
		return usageError{errors.New("pass --bundle or --keys, not both")}
	}
	return nil
}

// fetched are values read from the server, and the log position of the
// last read recorded.
type fetched struct {
	values   map[string]string
	position uint64
	skipped  []string
}

// fetch reads the values of env that p picks, through the export endpoint
// (each value read is recorded in the log before it leaves the server).
func (s *session) fetch(ctx context.Context, env cli.Env, p pick, channel, reason string) (fetched, error) {
	body := map[string]any{"format": "json"}
	switch {
	case p.bundle != "":
		body["bundle"] = p.bundle
	case len(p.keys) > 0:
		body["names"] = p.keys
	}
	if channel != "" {
		body["channel"] = channel
	}
	if reason != "" {
		body["reason"] = reason
	}
	resp, err := s.call(ctx, cli.Call{Method: http.MethodPost, Path: env.Path() + "/export", JSON: body}, nil)
	if err != nil {
		return fetched{}, err
	}
	f := fetched{values: map[string]string{}, position: resp.Position()}
	err = json.Unmarshal(resp.Body, &f.values)
	clear(resp.Body)
	if err != nil {
		return fetched{}, fmt.Errorf("the server's export is not a JSON object of strings")
	}
	if sk := resp.Header.Get("X-Stele-Skipped"); sk != "" {
		f.skipped = strings.Split(sk, ",")
	}
	return f, nil
}

func newRunCmd() *cobra.Command {
	var cf clientFlags
	var rf runFlags
	var p pick
	var watch bool
	var reason string
	cmd := &cobra.Command{
		Use:   "run [--env E] [--bundle B | --keys K,…] [--mask] [--watch] -- COMMAND [ARG...]",
		Short: "Run a command with an environment's secrets in its environment",
		Long: `Read the environment's secrets (every one, a bundle's keys, or the keys
named) and run COMMAND with them set as environment variables. Each value
read is an event in the ledger (channel cli-run) before it leaves the
server, and the values never touch the disk.

stele passes COMMAND's exit status through (128+N when signal N ended it)
and passes on the signals it receives (SIGTERM, SIGHUP, SIGUSR1, SIGUSR2,
SIGWINCH; SIGINT and SIGQUIT too unless standard input is a terminal,
which delivers them to COMMAND itself).

--mask replaces the values in COMMAND's standard output and error with
****. Output then goes through stele, not straight to the terminal.

--watch restarts COMMAND when a secret it uses changes: the server
pushes each change as it is appended to the ledger (server-sent events),
stele reads the new values, stops COMMAND (SIGTERM, then SIGKILL after
--grace) and starts it again. It ends when COMMAND ends on its own.`,
		Example: `  stele run -- ./server
  stele run --env production --bundle backend --mask -- ./migrate
  stele run --watch -- npm start
  STELE_TOKEN=stele_tok_… stele run --org acme --project web --env ci -- make test`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("name the command to run after --: stele run -- COMMAND [ARG...]")}
			}
			if c.ArgsLenAtDash() != 0 {
				return usageError{fmt.Errorf("put the command after --: stele run [flags] -- %s", strings.Join(args, " "))}
			}
			if err := p.check(); err != nil {
				return err
			}
			if err := rf.check(); err != nil {
				return err
			}
			s, env, err := cf.dialEnv(c)
			if err != nil {
				return err
			}
			ctx := c.Context()
			checked := s.checkLogAsync(ctx)
			f, err := s.fetch(ctx, env, p, "cli-run", reason)
			if cerr := checked(); cerr != nil {
				clear(f.values)
				return cerr
			}
			if err != nil {
				return err
			}
			if len(f.skipped) > 0 {
				fmt.Fprintf(c.ErrOrStderr(), "stele: no value to pass for %s (deleted or destroyed meanwhile)\n", strings.Join(f.skipped, ", "))
			}
			if !watch {
				code, err := rf.runOnce(c, args, f.values)
				clear(f.values)
				if err != nil {
					return err
				}
				return exitCode(code)
			}
			return rf.watch(c, s, env, p, reason, args, f)
		},
	}
	cf.register(cmd)
	cf.registerEnv(cmd)
	p.register(cmd)
	rf.registerChild(cmd)
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "restart the command when a secret it uses changes (the server pushes changes)")
	cmd.Flags().DurationVar(&rf.grace, "grace", 10*time.Second, "with --watch: how long the command has to end after SIGTERM before it is killed")
	cmd.Flags().DurationVar(&rf.restartDelay, "settle", 300*time.Millisecond, "with --watch: wait this long after a change for more changes before restarting")
	cmd.Flags().StringVar(&reason, "reason", "", "why the values are read (recorded in the ledger with each read)")
	return cmd
}

// watch runs argv, and again whenever a secret it uses changes.
func (r *runFlags) watch(c *cobra.Command, s *session, env cli.Env, p pick, reason string, argv []string, f fetched) error {
	ctx, cancel := context.WithCancel(c.Context())
	defer cancel()
	errw := c.ErrOrStderr()
	relevant := func(name string) bool {
		if len(p.keys) > 0 {
			return slices.Contains(p.keys, name)
		}
		if p.bundle != "" {
			_, ok := f.values[name]
			return ok
		}
		return true
	}
	changes, _, errc := s.WatchChanges(ctx, env, f.position)
	for {
		proc, err := r.child(c, argv, f.values).Start()
		if err != nil {
			return err
		}
		var restart bool
		for !restart {
			select {
			case <-proc.Done():
				clear(f.values)
				return exitCode(proc.ExitCode())
			case <-proc.Terminated():
				// This process is asked to end: let the command end, and
				// restart nothing.
				<-proc.Done()
				clear(f.values)
				return exitCode(proc.ExitCode())
			case <-ctx.Done():
				// Asked to end as well, possibly by a signal that came
				// while no command ran (during a restart), which nothing
				// passed on: then ask the command to end now.
				select {
				case <-proc.Terminated():
					<-proc.Done()
				case <-proc.Done():
				case <-time.After(100 * time.Millisecond):
					proc.Stop(r.grace)
				}
				clear(f.values)
				return exitCode(proc.ExitCode())
			case err := <-errc:
				fmt.Fprintf(errw, "stele: no longer watching for changes: %v\n", s.explain(err))
				errc = nil
			case ch, ok := <-changes:
				if !ok {
					changes = nil
					continue
				}
				if !relevant(ch.Name) {
					continue
				}
				names := []string{ch.Name}
				// Let a burst of changes settle into one restart.
				settle := time.NewTimer(r.restartDelay)
			drain:
				for {
					select {
					case more, ok := <-changes:
						if !ok {
							changes = nil
							break drain
						}
						if relevant(more.Name) && !slices.Contains(names, more.Name) {
							names = append(names, more.Name)
						}
					case <-settle.C:
						break drain
					}
				}
				settle.Stop()
				nf, err := s.fetch(ctx, env, p, "cli-run", reason)
				if err != nil {
					fmt.Fprintf(errw, "stele: %s changed, but the new values could not be read (%v); the command keeps running\n", strings.Join(names, ", "), err)
					continue
				}
				fmt.Fprintf(errw, "stele: %s changed; restarting the command\n", strings.Join(names, ", "))
				proc.Stop(r.grace)
				clear(f.values)
				f = nf
				restart = true
			}
		}
	}
}

func newExportCmd() *cobra.Command {
	var cf clientFlags
	var p pick
	var format, reason string
	cmd := &cobra.Command{
		Use:   "export [--format sh|fish|dotenv|json|yaml]",
		Short: "Print an environment's secrets for a shell or a file",
		Long: `Print the environment's secrets (every one, a bundle's keys, or the
keys named) in a format: sh (export lines for bash, dash, zsh and other
POSIX shells), fish, dotenv, json or yaml. Every format reproduces each
value's exact bytes: quotes, $, backticks, backslashes, newlines, $(…),
unicode, empty values and leading dashes. Each value read is an event in
the ledger (channel export).`,
		Example: `  eval "$(stele export --format sh)"
  stele export --format fish | source
  stele export --env staging --format dotenv > .env
  stele export --bundle backend --format json`,
		RunE: func(c *cobra.Command, _ []string) error {
			f, err := envfile.ParseOutputFormat(format)
			if err != nil {
				return usageError{errors.New(strings.TrimPrefix(err.Error(), "envfile: "))}
			}
			if err := p.check(); err != nil {
				return err
			}
			s, env, err := cf.dialEnv(c)
			if err != nil {
				return err
			}
			checked := s.checkLogAsync(c.Context())
			got, err := s.fetch(c.Context(), env, p, "", reason)
			if cerr := checked(); cerr != nil {
				clear(got.values)
				return cerr
			}
			if err != nil {
				return err
			}
			out, err := formatValues(f, got.values)
			clear(got.values)
			if err != nil {
				return err
			}
			_, err = c.OutOrStdout().Write(out)
			clear(out)
			if len(got.skipped) > 0 {
				fmt.Fprintf(c.ErrOrStderr(), "stele: left out %s: no value (deleted or destroyed meanwhile)\n", strings.Join(got.skipped, ", "))
			}
			return err
		},
	}
	cf.register(cmd)
	cf.registerEnv(cmd)
	p.register(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "sh", "sh, fish, dotenv, json or yaml")
	cmd.Flags().StringVar(&reason, "reason", "", "why the values are read (recorded in the ledger with each read)")
	return cmd
}

// formatValues writes values in format f, sorted by name.
func formatValues(f envfile.Format, values map[string]string) ([]byte, error) {
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	slices.Sort(names)
	entries := make([]envfile.Entry, 0, len(names))
	for _, n := range names {
		entries = append(entries, envfile.Entry{Name: n, Value: values[n]})
	}
	return f.Format(entries)
}
