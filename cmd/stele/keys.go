package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/app"
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
		Short: "Inspect and manage environment data keys (run where the server runs: needs the database and the KEK)",
		Long: `Each environment has a Tink keyset of AES-256-GCM data keys, wrapped by
the KEK. These commands act directly on the database as the operator
(actor system:operator); every change is an event in the ledger.`,
	}
	db.register(cmd.PersistentFlags())
	k.register(cmd.PersistentFlags())
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")

	run := func(use, short string, nargs int, fn func(ctx context.Context, svc *app.Service, env app.Env, args []string) (any, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ExactArgs(nargs),
			RunE: func(c *cobra.Command, args []string) error {
				env, err := parseEnv(args[0])
				if err != nil {
					return err
				}
				ctx, cancel := context.WithCancel(c.Context())
				defer cancel()
				logger := quietLogger()
				store, closeStore, err := db.open(ctx, logger, 8)
				if err != nil {
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
	}
	keyID := func(s string) (uint32, error) {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return 0, usageError{fmt.Errorf("key id %q: want a number (see stele keys status)", s)}
		}
		return uint32(v), nil
	}
	cmd.AddCommand(
		run("status ORG/PROJECT/ENV", "Show the keyset: keys, primary, age, reseal progress", 1, func(ctx context.Context, svc *app.Service, env app.Env, _ []string) (any, error) {
			return svc.KeysetStatus(ctx, operator(), env)
		}),
		run("rotate ORG/PROJECT/ENV", "Add a new data key, make it primary, and reseal current values under it", 1, func(ctx context.Context, svc *app.Service, env app.Env, _ []string) (any, error) {
			if _, err := svc.RotateKeyset(ctx, operator(), env, "manual"); err != nil {
				return nil, err
			}
			if _, err := svc.Reseal(ctx, env); err != nil {
				return nil, err
			}
			return svc.KeysetStatus(ctx, operator(), env)
		}),
		run("reseal ORG/PROJECT/ENV", "Reseal current values not yet under the primary key", 1, func(ctx context.Context, svc *app.Service, env app.Env, _ []string) (any, error) {
			return svc.Reseal(ctx, env)
		}),
		run("disable ORG/PROJECT/ENV KEY_ID", "Disable a key that seals no current value", 2, func(ctx context.Context, svc *app.Service, env app.Env, args []string) (any, error) {
			id, err := keyID(args[0])
			if err != nil {
				return nil, err
			}
			return svc.DisableKey(ctx, operator(), env, id)
		}),
		run("enable ORG/PROJECT/ENV KEY_ID", "Re-enable a disabled key", 2, func(ctx context.Context, svc *app.Service, env app.Env, args []string) (any, error) {
			id, err := keyID(args[0])
			if err != nil {
				return nil, err
			}
			return svc.EnableKey(ctx, operator(), env, id)
		}),
		run("destroy ORG/PROJECT/ENV KEY_ID", "Destroy a disabled key for good: what only it sealed can never be read again", 2, func(ctx context.Context, svc *app.Service, env app.Env, args []string) (any, error) {
			id, err := keyID(args[0])
			if err != nil {
				return nil, err
			}
			return svc.DestroyKey(ctx, operator(), env, id)
		}),
		run("rewrap ORG/PROJECT/ENV", "Wrap the keyset under the configured KEK (KEK rotation)", 1, func(ctx context.Context, svc *app.Service, env app.Env, _ []string) (any, error) {
			return svc.RewrapKeyset(ctx, operator(), env)
		}),
	)
	return cmd
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
