package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"stele.dev/stele/cli"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/export"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/eventstore/verify"
)

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// loadSigner finds the checkpoint signing key: $STELE_SIGNING_KEY, then the
// key file. When neither exists and create is true it makes a new key,
// unless the ledger already records another one. It checks the key
// against the one the ledger records, recording it on first use.
func loadSigner(ctx context.Context, store *postgres.Store, k *keyFlags, dev, create bool, logger *slog.Logger) (*checkpoint.Signer, string, error) {
	var signer *checkpoint.Signer
	var err error
	source := "$STELE_SIGNING_KEY"
	if v := strings.TrimSpace(os.Getenv("STELE_SIGNING_KEY")); v != "" {
		if signer, err = checkpoint.NewSigner(v); err != nil {
			return nil, "", fmt.Errorf("$STELE_SIGNING_KEY: %w", err)
		}
	} else {
		path, err := k.path(dev)
		if err != nil {
			return nil, "", err
		}
		source = path
		signer, err = checkpoint.LoadKeyFile(path)
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist) && create:
			if recorded, ok, err := store.VerifierKey(ctx); err != nil {
				return nil, "", err
			} else if ok {
				return nil, "", fmt.Errorf("no signing key at %s, and this ledger's checkpoints are signed by %s: give its signing key with --signing-key-file or $STELE_SIGNING_KEY", path, recorded)
			}
			if signer, err = checkpoint.CreateKeyFile(path, k.originOrDefault()); err != nil {
				return nil, "", err
			}
			logger.Info("created the ledger's checkpoint signing key", "file", path, "origin", signer.Origin())
		case errors.Is(err, fs.ErrNotExist):
			return nil, "", fmt.Errorf("no signing key at %s (give one with --signing-key-file or $STELE_SIGNING_KEY)", path)
		default:
			return nil, "", err
		}
	}
	vkey := signer.Verifier().String()
	recorded, err := store.SetVerifierKey(ctx, vkey)
	if err != nil {
		return nil, "", err
	}
	if recorded != vkey {
		return nil, "", fmt.Errorf("the signing key in %s (%s) is not this ledger's key (%s)", source, vkey, recorded)
	}
	return signer, source, nil
}

func checkpointStateFile(k *keyFlags, dev bool) string {
	d, err := k.dir(dev)
	if err != nil {
		return ""
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return ""
	}
	return filepath.Join(d, "latest-checkpoint")
}

func newLedgerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Inspect, verify, checkpoint and export the ledger",
	}
	cmd.AddCommand(newLedgerHeadCmd(), newLedgerKeyCmd(), newLedgerCheckpointCmd(), newLedgerVerifyCmd(), newLedgerExportCmd(), newLedgerForgetCmd())
	return cmd
}

func newLedgerHeadCmd() *cobra.Command {
	var db dbFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "head",
		Short: "Print the ledger's head and latest checkpoint",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			store, closeStore, err := db.open(ctx, quietLogger(), 4)
			if err != nil {
				return err
			}
			defer closeStore()
			h, err := store.Head(ctx)
			if err != nil {
				return err
			}
			out := map[string]any{"position": h.Position, "hash": h.Hash.String()}
			if !h.RecordedAt.IsZero() {
				out["recorded_at"] = h.RecordedAt.Format(time.RFC3339Nano)
			}
			cp, err := store.LatestCheckpoint(ctx)
			if err == nil {
				out["checkpoint"] = map[string]any{"size": cp.Size, "root": cp.Root.String(), "created_at": cp.CreatedAt.Format(time.RFC3339)}
			} else if !errors.Is(err, eventstore.ErrNotFound) {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "head        %d\nhead hash   %s\n", h.Position, h.Hash)
			if err == nil {
				fmt.Fprintf(w, "checkpoint  %d (root %s, %s)\n", cp.Size, cp.Root, cp.CreatedAt.Format(time.RFC3339))
			} else {
				fmt.Fprintln(w, "checkpoint  none yet")
			}
			return nil
		},
	}
	db.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newLedgerKeyCmd() *cobra.Command {
	var db dbFlags
	var k keyFlags
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Print the public key that verifies the ledger's checkpoints",
		Long: `Print the ledger's checkpoint verifier key, in signed-note form
(<origin>+<key hash>+<base64 Ed25519 key>). Auditors pass it to
'stele ledger verify --key'. With --signing-key-file (or a key file in the
data folder) it is derived from the private key, needing no database.
With --server it is the key the server publishes at /v1/ledger/key (to
compare with a copy you trust; stele remembers it from the first contact).`,
		Example: `  stele ledger key --dev
  stele ledger key --signing-key-file /var/lib/stele/ledger-signing.key
  stele ledger key --server https://stele.example.com`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if cmd.Flags().Changed("server") {
				s, err := cf.dial(cmd)
				if err != nil {
					return err
				}
				resp, err := s.call(ctx, cli.Call{Method: http.MethodGet, Path: "/v1/ledger/key", Header: http.Header{"Accept": {"text/plain"}}}, nil)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(resp.Body)))
				return nil
			}
			if k.keyFile != "" || os.Getenv("STELE_SIGNING_KEY_FILE") != "" || os.Getenv("STELE_SIGNING_KEY") != "" {
				var s *checkpoint.Signer
				var err error
				if v := strings.TrimSpace(os.Getenv("STELE_SIGNING_KEY")); v != "" && k.keyFile == "" {
					s, err = checkpoint.NewSigner(v)
				} else {
					p, perr := k.path(db.dev)
					if perr != nil {
						return perr
					}
					s, err = checkpoint.LoadKeyFile(p)
				}
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), s.Verifier().String())
				return nil
			}
			store, closeStore, err := db.open(ctx, quietLogger(), 2)
			if err != nil {
				return err
			}
			defer closeStore()
			vkey, ok, err := store.VerifierKey(ctx)
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("this ledger has no signing key yet: start the server once (stele server) or run stele ledger checkpoint")
			}
			fmt.Fprintln(cmd.OutOrStdout(), vkey)
			return nil
		},
	}
	db.register(cmd.Flags())
	k.register(cmd.Flags())
	cf.register(cmd)
	return cmd
}

func newLedgerCheckpointCmd() *cobra.Command {
	var db dbFlags
	var k keyFlags
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Sign a checkpoint of the ledger now",
		Long: `Sign a C2SP checkpoint of the ledger's current head with the ledger's
signing key and store it, after proving that the log extends the last
trusted checkpoint. Prints the signed note. Creates the signing key if the
ledger has none yet.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			logger := quietLogger()
			store, closeStore, err := db.open(ctx, logger, 4)
			if err != nil {
				return err
			}
			defer closeStore()
			signer, _, err := loadSigner(ctx, store, &k, db.dev, true, logger)
			if err != nil {
				return err
			}
			c := &checkpoint.Checkpointer{Store: store, Signer: signer, StateFile: checkpointStateFile(&k, db.dev), Logger: logger}
			cp, err := c.Checkpoint(ctx)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(cp.Note)
			return err
		},
	}
	db.register(cmd.Flags())
	k.register(cmd.Flags())
	return cmd
}

// readKeyArg accepts a verifier key, or @FILE holding one.
func readKeyArg(s string) (*checkpoint.Verifier, error) {
	if strings.HasPrefix(s, "@") {
		b, err := os.ReadFile(s[1:])
		if err != nil {
			return nil, usageError{fmt.Errorf("--key: %v", err)}
		}
		s = string(b)
	}
	v, err := checkpoint.NewVerifier(s)
	if err != nil {
		return nil, usageError{err}
	}
	return v, nil
}

type verifyOutput struct {
	OK           bool    `json:"ok"`
	Source       string  `json:"source"`
	Events       uint64  `json:"events"`
	EventsPerSec float64 `json:"events_per_sec"`
	Seconds      float64 `json:"seconds"`
	Head         string  `json:"head_hash"`
	Root         string  `json:"root"`
	verify.Report
	Failure *verify.Error `json:"failure,omitempty"`
	Key     string        `json:"key,omitempty"`
}

func newLedgerVerifyCmd() *cobra.Command {
	var db dbFlags
	var cf clientFlags
	var file, keyArg, trustedFile string
	var asJSON, record bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify the ledger: every hash, the chain, the Merkle tree and every signed checkpoint",
		Long: `Verify the ledger, in one of three places.

With --database-url or --dev (on the server's host, or an auditor's
copy of the database): the whole ledger from position 1, each event's
hash against its content, the hash chain, positions and stream versions,
recorded times, the Merkle tree (every stored hash) and each signed
checkpoint's signature and root.

With --file: the same, offline, over an export made by
'stele ledger export', with no database.

Otherwise, through the server (--server, STELE_ADDR, the folder's
defaults): its latest signed checkpoint, checked with the key this client
trusts (--key, or the one remembered since first contact), and proven by
a consistency proof to extend the checkpoint this client verified before;
then the outcome of the server's own last full verification.

--checkpoint names a signed checkpoint you kept earlier (an auditor's copy,
or the server's data folder file latest-checkpoint): the log must still
contain it. That catches a tail rewritten together with its checkpoints.

Exit status: 0 verified, 3 verification failed (the first bad position and
the reason are printed), 1, 2 or 4 for other errors.`,
		Example: `  stele ledger verify
  stele ledger verify --dev
  stele ledger verify --database-url postgres://… --key "$(cat ledger.pub)"
  stele ledger verify --file ledger.export --key @ledger.pub --checkpoint saved-checkpoint`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var opts verify.Options
			if keyArg != "" {
				v, err := readKeyArg(keyArg)
				if err != nil {
					return err
				}
				opts.Key = v
			}
			if trustedFile != "" {
				b, err := os.ReadFile(trustedFile)
				if err != nil {
					return usageError{fmt.Errorf("--checkpoint: %v", err)}
				}
				opts.Trusted = b
				if opts.Key == nil && file != "" {
					return usageError{errors.New("--checkpoint needs --key")}
				}
			}
			if file == "" && !cmd.Flags().Changed("database-url") && !db.dev {
				return verifyOnline(cmd, &cf, opts.Key, trustedFile, asJSON)
			}
			var rep verify.Report
			var err error
			out := verifyOutput{}
			if file != "" {
				if opts.Key == nil {
					return usageError{errors.New("--file needs --key: the public key you trust for this ledger (stele ledger key)")}
				}
				f, ferr := os.Open(file)
				if ferr != nil {
					return ferr
				}
				defer f.Close()
				out.Source = file
				_, rep, err = export.Verify(f, opts)
			} else {
				store, closeStore, oerr := db.open(ctx, quietLogger(), 4)
				if oerr != nil {
					return oerr
				}
				defer closeStore()
				if opts.Key == nil {
					vkey, ok, kerr := store.VerifierKey(ctx)
					if kerr != nil {
						return kerr
					}
					if ok {
						if opts.Key, kerr = checkpoint.NewVerifier(vkey); kerr != nil {
							return kerr
						}
						fmt.Fprintln(cmd.ErrOrStderr(), "note: checking signatures with the key recorded in the database; pass --key to use a copy you trust")
					}
				}
				if opts.Trusted != nil && opts.Key == nil {
					return usageError{errors.New("--checkpoint needs --key (the ledger records no key yet)")}
				}
				out.Source = "database"
				if record {
					rep, err = recordVerificationWith(ctx, store, opts, "system:operator")
				} else {
					rep, err = verify.Store(ctx, store, opts)
				}
			}
			var ve *verify.Error
			if err != nil && !errors.As(err, &ve) {
				return err
			}
			out.OK = err == nil
			out.Report = rep
			out.Events = rep.Events
			out.Seconds = rep.Duration.Seconds()
			out.EventsPerSec = rep.EventsPerSecond()
			out.Head, out.Root = rep.Head.String(), rep.Root.String()
			out.Failure = ve
			if opts.Key != nil {
				out.Key = opts.Key.String()
			}
			w := cmd.OutOrStdout()
			if asJSON {
				if jerr := json.NewEncoder(w).Encode(out); jerr != nil {
					return jerr
				}
			} else {
				printReport(w, out)
			}
			return err
		},
	}
	db.register(cmd.Flags())
	cf.register(cmd)
	cmd.Flags().StringVar(&file, "file", "", "verify this export file instead of the database (needs --key)")
	cmd.Flags().StringVar(&keyArg, "key", "", "the ledger's public key (as printed by stele ledger key), or @FILE holding it")
	cmd.Flags().StringVar(&trustedFile, "checkpoint", "", "a signed checkpoint kept outside the ledger that the log must contain")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&record, "record", false, "append the outcome to the ledger as a ledger.verified event (database only)")
	return cmd
}

func printReport(w io.Writer, o verifyOutput) {
	status := "OK"
	if !o.OK {
		status = "FAILED"
	}
	fmt.Fprintf(w, "ledger %s: %s\n", o.Source, status)
	fmt.Fprintf(w, "  events verified   %d (%.0f events/s, %.3fs)\n", o.Events, o.EventsPerSec, o.Seconds)
	if o.Events > 0 {
		fmt.Fprintf(w, "  head              %d %s\n", o.Events, o.Head)
		fmt.Fprintf(w, "  recorded          %s .. %s\n", o.First.Format(time.RFC3339), o.Last.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  merkle root       %s\n", o.Root)
	if o.TreeHashes > 0 {
		fmt.Fprintf(w, "  merkle hashes     %d stored hashes checked\n", o.TreeHashes)
	}
	sig := "signatures checked"
	if !o.Signed {
		sig = "roots only; no key, signatures NOT checked"
	}
	fmt.Fprintf(w, "  checkpoints       %d, latest at %d (%s)\n", o.Checkpoints, o.LastCheckpoint, sig)
	if o.Trusted > 0 {
		fmt.Fprintf(w, "  trusted checkpoint at %d matches\n", o.Trusted)
	}
	if o.Failure != nil {
		fmt.Fprintf(w, "  failure           %s\n", o.Failure.Error())
	}
}

func newLedgerExportCmd() *cobra.Command {
	var db dbFlags
	var k keyFlags
	var out string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export the ledger and its signed checkpoints to a file for offline verification",
		Long: `Write every event and every signed checkpoint to one file (format in
docs/ledger-format.md) that 'stele ledger verify --file FILE --key KEY'
checks with no database. When the signing key is at hand a fresh checkpoint
is signed first, so the export reaches the current head; otherwise it
stops at the latest stored checkpoint, so that everything in it is signed.`,
		Example: `  stele ledger export --dev --out ledger.export`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{errors.New("--out is required")}
			}
			ctx := cmd.Context()
			logger := quietLogger()
			store, closeStore, err := db.open(ctx, logger, 4)
			if err != nil {
				return err
			}
			defer closeStore()
			vkey, _, err := store.VerifierKey(ctx)
			if err != nil {
				return err
			}
			if signer, _, serr := loadSigner(ctx, store, &k, db.dev, false, logger); serr == nil {
				c := &checkpoint.Checkpointer{Store: store, Signer: signer, StateFile: checkpointStateFile(&k, db.dev), Logger: logger}
				if _, err := c.Checkpoint(ctx); err != nil {
					return err
				}
				vkey = signer.Verifier().String()
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: no signing key here (%v); exporting up to the latest stored checkpoint\n", oneLine(serr.Error()))
			}
			origin := ""
			if v, err := checkpoint.NewVerifier(vkey); err == nil {
				origin = v.Origin()
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), ".stele-export-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			sum, err := export.Write(ctx, tmp, store, export.Meta{Origin: origin, VerifierKey: vkey, ExportedAt: time.Now().UTC()})
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %d events and %d checkpoints (%d bytes) to %s\nverify with: stele ledger verify --file %s --key '%s'\n",
				sum.Events, sum.Checkpoints, sum.Bytes, out, out, vkey)
			return nil
		},
	}
	db.register(cmd.Flags())
	k.register(cmd.Flags())
	cmd.Flags().StringVar(&out, "out", "", "the file to write")
	return cmd
}

func newMigrateCmd() *cobra.Command {
	var db dbFlags
	return withFlags(&cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the database schema (the server also does this on start)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			pool, err := db.connect(ctx, quietLogger(), 2)
			if err != nil {
				return err
			}
			defer pool.Close()
			if err := migrateAll(ctx, pool); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "schema up to date")
			return nil
		},
	}, db.register)
}

func withFlags(cmd *cobra.Command, regs ...func(*pflag.FlagSet)) *cobra.Command {
	for _, r := range regs {
		r(cmd.Flags())
	}
	return cmd
}
