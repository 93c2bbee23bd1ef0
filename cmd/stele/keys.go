package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/app"
	"stele.dev/stele/cli"
	"stele.dev/stele/crypto"
	"stele.dev/stele/crypto/pgstore"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore/postgres"
)

// openKEK opens the KEK that wraps environment keysets. With no URI
// configured it uses the local master key in the data folder, creating it
// only while no keyset exists (a missing master key is never silently
// replaced when keysets depend on it).
func openKEK(ctx context.Context, k *keyFlags, dev bool, material crypto.MaterialStore, logger *slog.Logger) (crypto.KEK, error) {
	uri := k.kekURI
	if uri == "" {
		uri = os.Getenv("STELE_KEK_URI")
	}
	if uri != "" {
		return crypto.OpenKEK(ctx, uri)
	}
	dir, err := k.dir(dev)
	if err != nil {
		return nil, err
	}
	path, err := filepath.Abs(filepath.Join(dir, "master.key"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		envs, err := material.Envs(ctx)
		if err != nil {
			return nil, err
		}
		if len(envs) > 0 {
			return nil, fmt.Errorf("no master key at %s, but %d environments have keysets wrapped by a KEK: restore the master key or give --kek-uri", path, len(envs))
		}
		if _, err := crypto.CreateLocalMasterKey(path); err != nil {
			return nil, err
		}
		logger.Info("created the local master key (KEK)", "file", path)
	}
	return crypto.OpenKEK(ctx, "local://"+path)
}

// openKEKFunc opens other KEKs by URI (keysets not yet rewrapped).
func openKEKFunc(ctx context.Context) func(string) (crypto.KEK, error) {
	return func(uri string) (crypto.KEK, error) { return crypto.OpenKEK(ctx, uri) }
}

// newApp builds the application layer on an open store, with its catalog
// following the log until ctx is done.
func newApp(ctx context.Context, store *postgres.Store, material crypto.MaterialStore, kek crypto.KEK, logger *slog.Logger) (*app.Service, error) {
	cat := app.NewCatalog()
	svc, err := app.New(app.Config{Store: store, Material: material, KEK: kek, OpenKEK: openKEKFunc(ctx), Logger: logger, Catalog: cat})
	if err != nil {
		return nil, err
	}
	go func() {
		backoff := time.Second
		for {
			err := cat.Run(ctx, store) // returns only when ctx ends or the log cannot be read
			if ctx.Err() != nil {
				return
			}
			logger.Error("the catalog lost the log; following again", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
		}
	}()
	return svc, nil
}

// operator is the request of a command run on the server's host, with
// the database and the KEK at hand.
func operator() app.Request {
	host, _ := os.Hostname()
	return app.Request{Actor: domain.Actor{Kind: domain.ActorSystem, ID: "operator"}, RequestID: "cli-" + randomHex(6), ClientAddr: "local:" + host}
}

func parseEnv(s string) (app.Env, error) {
	p := strings.Split(s, "/")
	if len(p) != 3 || !domain.ValidSlug(p[0]) || !domain.ValidSlug(p[1]) || !domain.ValidSlug(p[2]) {
		return app.Env{}, usageError{fmt.Errorf("environment %q: want ORG/PROJECT/ENV", s)}
	}
	return app.Env{Org: p[0], Project: p[1], Env: p[2]}, nil
}

func newKeysCmd() *cobra.Command {
	var db dbFlags
	var k keyFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Show and rotate an environment's data keys",
		Long: `Each environment has a Tink keyset of AES-256-GCM data keys, wrapped by
the KEK. Through the server (the default), 'keys status' shows the keyset
and 'keys rotate', 'disable', 'enable' and 'destroy' change it, as the
signed-in person or STELE_TOKEN, with the environment named by
ORG/PROJECT/ENV or by --org, --project, --env and the folder's defaults.

With --database-url or --dev, the commands act on the database directly
as the operator (actor system:operator), on the host where the server
runs with the KEK at hand; 'reseal' and 'rewrap' exist only there. Every
change is an event in the ledger either way.`,
		Example: `  stele keys status --env production
  stele keys rotate acme/web/production
  stele keys status acme/web/production --database-url "$DATABASE_URL"`,
	}
	db.register(cmd.PersistentFlags())
	k.register(cmd.PersistentFlags())
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")

	// direct reports whether the command acts on the database itself:
	// only when told so by a flag, so that a DATABASE_URL meant for
	// something else never sends a developer's command to a database.
	direct := func(c *cobra.Command) bool { return c.Flags().Changed("database-url") || db.dev }

	keyID := func(s string) (uint32, error) {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return 0, usageError{fmt.Errorf("key id %q: want a number (see stele keys status)", s)}
		}
		return uint32(v), nil
	}
	type apiFn func(c *cobra.Command, s *session, env cli.Env, args []string) (*cli.Response, error)
	run := func(use, short string, nargs int, fn func(ctx context.Context, svc *app.Service, env app.Env, args []string) (any, error), api apiFn) *cobra.Command {
		var cf clientFlags
		cmd := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.RangeArgs(nargs-1, nargs),
			RunE: func(c *cobra.Command, args []string) error {
				if !direct(c) {
					if api == nil {
						return usageError{fmt.Errorf("keys %s acts on the database only: pass --database-url or --dev, on the server's host", c.Name())}
					}
					s, err := cf.connect(c)
					if err != nil {
						return err
					}
					if len(args) == nargs {
						e, err := parseEnv(args[0])
						if err != nil {
							return err
						}
						cf.org, cf.project, cf.env = e.Org, e.Project, e.Env
						args = args[1:]
					}
					env, err := s.environment()
					if err != nil {
						return err
					}
					if err := s.needAuth(); err != nil {
						return err
					}
					resp, err := api(c, s, env, args)
					if err != nil {
						return err
					}
					if asJSON {
						return printRaw(c.OutOrStdout(), resp.Body)
					}
					return printKeyset(c.OutOrStdout(), env, resp)
				}
				if len(args) != nargs {
					return usageError{fmt.Errorf("with --database-url or --dev, name the environment: keys %s", use)}
				}
				env, err := parseEnv(args[0])
				if err != nil {
					return err
				}
				if nargs == 2 { // check the key id before opening anything
					if _, err := keyID(args[1]); err != nil {
						return err
					}
				}
				ctx, cancel := context.WithCancel(c.Context())
				logger := quietLogger()
				store, closeStore, err := db.open(ctx, logger, 8)
				if err != nil {
					cancel()
					return err
				}
				// Stop the catalog before the store closes under it.
				defer func() { cancel(); closeStore() }()
				material := pgstore.New(store.Pool())
				kek, err := openKEK(ctx, &k, db.dev, material, logger)
				if err != nil {
					return err
				}
				svc, err := newApp(ctx, store, material, kek, logger)
				if err != nil {
					return err
				}
				out, err := fn(ctx, svc, env, args[1:])
				if err != nil {
					return err
				}
				return printOut(c.OutOrStdout(), out, asJSON)
			},
		}
		if api != nil {
			cf.register(cmd)
			cf.registerEnv(cmd)
		}
		return cmd
	}
	keysetPath := func(env cli.Env) string { return env.Path() + "/keyset" }
	keyCall := func(method, action string) apiFn {
		return func(c *cobra.Command, s *session, env cli.Env, args []string) (*cli.Response, error) {
			if len(args) != 1 {
				return nil, usageError{errors.New("name the key: KEY_ID (see stele keys status)")}
			}
			id, err := keyID(args[0])
			if err != nil {
				return nil, err
			}
			p := fmt.Sprintf("%s/keys/%d", keysetPath(env), id)
			if action != "" {
				p += "/" + action
			}
			return s.call(c.Context(), cli.Call{Method: method, Path: p, JSON: map[string]any{}}, nil)
		}
	}
	// withKey reads the key id argument, then acts.
	withKey := func(act func(ctx context.Context, svc *app.Service, env app.Env, id uint32) (any, error)) func(ctx context.Context, svc *app.Service, env app.Env, args []string) (any, error) {
		return func(ctx context.Context, svc *app.Service, env app.Env, args []string) (any, error) {
			id, err := keyID(args[0])
			if err != nil {
				return nil, err
			}
			return act(ctx, svc, env, id)
		}
	}
	noAPI := apiFn(nil)
	cmd.AddCommand(
		run("status [ORG/PROJECT/ENV]", "Show the keyset: keys, primary, age, reseal progress", 1, func(ctx context.Context, svc *app.Service, env app.Env, _ []string) (any, error) {
			return svc.KeysetStatus(ctx, operator(), env)
		}, func(c *cobra.Command, s *session, env cli.Env, _ []string) (*cli.Response, error) {
			return s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: keysetPath(env)}, nil)
		}),
		run("rotate [ORG/PROJECT/ENV]", "Add a new data key, make it primary, and reseal current values under it", 1, func(ctx context.Context, svc *app.Service, env app.Env, _ []string) (any, error) {
			if _, err := svc.RotateKeyset(ctx, operator(), env, "manual"); err != nil {
				return nil, err
			}
			if _, err := svc.Reseal(ctx, env); err != nil {
				return nil, err
			}
			return svc.KeysetStatus(ctx, operator(), env)
		}, func(c *cobra.Command, s *session, env cli.Env, _ []string) (*cli.Response, error) {
			return s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: keysetPath(env) + "/rotate", JSON: map[string]any{"reason": "manual"}}, nil)
		}),
		run("reseal ORG/PROJECT/ENV", "Reseal current values not yet under the primary key (with --database-url or --dev)", 1, func(ctx context.Context, svc *app.Service, env app.Env, _ []string) (any, error) {
			return svc.Reseal(ctx, env)
		}, noAPI),
		run("disable [ORG/PROJECT/ENV] KEY_ID", "Disable a key that seals no current value", 2, withKey(func(ctx context.Context, svc *app.Service, env app.Env, id uint32) (any, error) {
			return svc.DisableKey(ctx, operator(), env, id)
		}), keyCall(http.MethodPost, "disable")),
		run("enable [ORG/PROJECT/ENV] KEY_ID", "Re-enable a disabled key", 2, withKey(func(ctx context.Context, svc *app.Service, env app.Env, id uint32) (any, error) {
			return svc.EnableKey(ctx, operator(), env, id)
		}), keyCall(http.MethodPost, "enable")),
		run("destroy [ORG/PROJECT/ENV] KEY_ID", "Destroy a disabled key for good: what only it sealed can never be read again", 2, withKey(func(ctx context.Context, svc *app.Service, env app.Env, id uint32) (any, error) {
			return svc.DestroyKey(ctx, operator(), env, id)
		}), keyCall(http.MethodDelete, "")),
		run("rewrap ORG/PROJECT/ENV", "Wrap the keyset under the configured KEK (KEK rotation; with --database-url or --dev)", 1, func(ctx context.Context, svc *app.Service, env app.Env, _ []string) (any, error) {
			return svc.RewrapKeyset(ctx, operator(), env)
		}, noAPI),
	)
	return cmd
}

// printKeyset prints a keyset as the API describes it.
func printKeyset(w io.Writer, env cli.Env, resp *cli.Response) error {
	var ks keysetView
	if err := resp.Decode(&ks); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "environment\t%s\nprimary\t%d (since %s)\n", env, ks.PrimaryKey, when(ks.PrimarySince))
	if ks.LastRotation != nil {
		fmt.Fprintf(tw, "last rotation\t%s\n", when(*ks.LastRotation))
	}
	fmt.Fprintf(tw, "rotation due\t%v\nresealed\t%v (%d values pending)\n", ks.RotationDue, ks.Reseal.Complete, ks.Reseal.Pending)
	fmt.Fprintln(tw, "\nKEY\tSTATE\tPRIMARY\tADDED")
	for _, k := range ks.Keys {
		fmt.Fprintf(tw, "%d\t%s\t%v\t%s\n", k.ID, k.State, k.Primary, when(k.AddedAt))
	}
	return tw.Flush()
}

func printOut(w io.Writer, v any, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(v)
	}
	switch v := v.(type) {
	case app.KeysetStatus:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "environment\t%s\nkek\t%s\nprimary\t%d (since %s)\nmaterial version\t%d\nresealed\t%v (%d values pending)\nrotation due\t%v\n",
			v.Env, v.KEK, v.Primary, v.PrimarySince.Format(time.RFC3339), v.MaterialVersion, v.ResealComplete, v.Pending, v.RotationDue)
		fmt.Fprintln(tw, "\nKEY\tSTATE\tPRIMARY\tADDED")
		for _, key := range v.Keys {
			fmt.Fprintf(tw, "%d\t%s\t%v\t%s\n", key.ID, key.State, key.Primary, key.AddedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	case app.ResealReport:
		_, err := fmt.Fprintf(w, "%s: resealed %d values under key %d; %d remaining\n", v.Env, v.Resealed, v.Primary, v.Remaining)
		return err
	}
	return json.NewEncoder(w).Encode(v)
}
