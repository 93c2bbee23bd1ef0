package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"stele.dev/stele/cli"
	"stele.dev/stele/domain"
)

// maxValue is the largest value the server takes (crypto.MaxValueSize).
const maxValue = 64 << 10

// secretPath is the API path of a secret.
func secretPath(env cli.Env, name string) string {
	return env.Path() + "/secrets/" + url.PathEscape(name)
}

// checkName fails on a name that is not an environment variable name.
func checkName(name string) error {
	if !domain.ValidSecretName(name) {
		return usageError{fmt.Errorf("%q is not a secret name: want an environment variable name (a letter or _, then letters, digits or _)", name)}
	}
	return nil
}

// envCommand builds a client command on an environment's secrets: it
// connects, resolves the environment and needs a credential.
func envCommand(cf *clientFlags, use, short string, args cobra.PositionalArgs, run func(c *cobra.Command, s *session, env cli.Env, args []string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(c *cobra.Command, args []string) error {
			if strings.Contains(use, "NAME") && len(args) > 0 {
				if err := checkName(args[0]); err != nil {
					return err
				}
			}
			s, env, err := cf.dialEnv(c)
			if err != nil {
				return err
			}
			if err := s.checkLog(c.Context()); err != nil {
				return err
			}
			return run(c, s, env, args)
		},
	}
	cf.register(cmd)
	cf.registerEnv(cmd)
	return cmd
}

// secretMeta is a secret's metadata, as the API lists it.
type secretMeta struct {
	Name            string    `json:"name"`
	Version         int64     `json:"version"`
	Deleted         bool      `json:"deleted"`
	Destroyed       bool      `json:"destroyed"`
	Description     string    `json:"description"`
	Tags            []string  `json:"tags"`
	Owner           string    `json:"owner"`
	RotationSeconds int64     `json:"rotation_seconds"`
	RotationDue     bool      `json:"rotation_due"`
	ValueUpdatedAt  time.Time `json:"value_updated_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	UpdatedBy       string    `json:"updated_by"`
}

// ago says how long ago t was, briefly.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func newSecretsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "secrets",
		Aliases: []string{"secret"},
		Short:   "List, read, set, delete, restore and roll back an environment's secrets",
	}
	cmd.AddCommand(newSecretsListCmd(), newSecretsGetCmd(), newSecretsSetCmd(), newSecretsDeleteCmd(), newSecretsRestoreCmd(),
		newSecretsHistoryCmd(), newSecretsRollbackCmd(), newSecretsDestroyCmd())
	return cmd
}

func newSecretsListCmd() *cobra.Command {
	var cf clientFlags
	var deleted bool
	cmd := envCommand(&cf, "list", "List the environment's secrets: names, versions, who changed them and when (no values)", cobra.NoArgs,
		func(c *cobra.Command, s *session, env cli.Env, _ []string) error {
			path := env.Path() + "/secrets"
			if deleted {
				path += "?include_deleted=true"
			}
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: path}, nil)
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printRaw(c.OutOrStdout(), resp.Body)
			}
			var page struct {
				Items []secretMeta `json:"items"`
			}
			if err := resp.Decode(&page); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tUPDATED\tBY\tNOTE")
			for _, m := range page.Items {
				var note []string
				if m.Deleted {
					note = append(note, "deleted")
				}
				if m.Destroyed {
					note = append(note, "destroyed")
				}
				if m.RotationDue {
					note = append(note, "rotation due")
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", m.Name, m.Version, ago(m.ValueUpdatedAt), m.UpdatedBy, strings.Join(note, ", "))
			}
			return tw.Flush()
		})
	cf.registerJSON(cmd)
	cmd.Flags().BoolVar(&deleted, "deleted", false, "include deleted secrets")
	cmd.Example = "  stele secrets list --env production"
	return cmd
}

func newSecretsGetCmd() *cobra.Command {
	var cf clientFlags
	var version uint64
	var reason string
	cmd := envCommand(&cf, "get NAME", "Print a secret's value (a read recorded in the ledger)", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			body := map[string]any{}
			if version > 0 {
				body["version"] = version
			}
			if reason != "" {
				body["reason"] = reason
			}
			var out struct {
				Name        string  `json:"name"`
				Version     uint64  `json:"version"`
				Value       *string `json:"value"`
				ValueBase64 *string `json:"value_base64"`
			}
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: secretPath(env, args[0]) + "/reveal", JSON: body}, &out)
			if err != nil {
				return err
			}
			clear(resp.Body)
			if cf.asJSON {
				err := printJSON(c.OutOrStdout(), out)
				return err
			}
			var value []byte
			switch {
			case out.Value != nil:
				value = []byte(*out.Value)
			case out.ValueBase64 != nil:
				if value, err = base64.StdEncoding.DecodeString(*out.ValueBase64); err != nil {
					return fmt.Errorf("the server's value_base64 does not decode")
				}
			}
			w := c.OutOrStdout()
			if _, err := w.Write(value); err != nil {
				return err
			}
			clear(value)
			if isTerminal(w) {
				fmt.Fprintln(w)
			}
			return nil
		})
	cf.registerJSON(cmd)
	cmd.Flags().Uint64Var(&version, "version", 0, "an earlier version (default the current one)")
	cmd.Flags().StringVar(&reason, "reason", "", "why you read it (recorded in the ledger)")
	cmd.Long = `Print a secret's value on standard output, exactly its bytes (with a
newline after it only when standard output is a terminal). The read is an
event in the ledger, with the reason given, before the value leaves the
server. --json prints {"name", "version", "value"} (value_base64 for a
value that is not UTF-8).`
	cmd.Example = `  stele secrets get DB_URL --env production --reason "incident 4711"
  psql "$(stele secrets get DB_URL)"`
	return cmd
}

func newSecretsSetCmd() *cobra.Command {
	var cf clientFlags
	var fromFile, description, owner string
	var tags []string
	var ifVersion uint64
	var createOnly, trim bool
	var rotation time.Duration
	cmd := envCommand(&cf, "set NAME", "Set a secret's value (a new version), read from standard input or a hidden prompt", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			if ifVersion > 0 && createOnly {
				return usageError{errors.New("pass --if-version or --create, not both")}
			}
			value, err := readValue(c, args[0], fromFile, trim)
			if err != nil {
				return err
			}
			body := map[string]any{}
			if utf8.Valid(value) {
				body["value"] = string(value)
			} else {
				body["value_base64"] = base64.StdEncoding.EncodeToString(value)
			}
			clear(value)
			if c.Flags().Changed("description") {
				body["description"] = description
			}
			if c.Flags().Changed("owner") {
				body["owner"] = owner
			}
			if c.Flags().Changed("tags") {
				body["tags"] = tags
			}
			if c.Flags().Changed("rotation") {
				body["rotation_seconds"] = int64(rotation / time.Second)
			}
			h := http.Header{}
			if ifVersion > 0 {
				h.Set("If-Match", fmt.Sprintf("%q", strconv.FormatUint(ifVersion, 10)))
			}
			if createOnly {
				h.Set("If-None-Match", "*")
			}
			var out struct {
				Name    string `json:"name"`
				Version uint64 `json:"version"`
			}
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodPut, Path: secretPath(env, args[0]), JSON: body, Header: h}, &out)
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printJSON(c.OutOrStdout(), map[string]any{"name": out.Name, "version": out.Version, "position": resp.Position()})
			}
			fmt.Fprintf(c.OutOrStdout(), "%s is at version %d.\n", args[0], out.Version)
			return nil
		})
	cf.registerJSON(cmd)
	cmd.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file, exactly its bytes")
	cmd.Flags().BoolVar(&trim, "trim-newline", false, "drop one newline (\\n or \\r\\n) at the end of what standard input or the file holds")
	cmd.Flags().Uint64Var(&ifVersion, "if-version", 0, "check-and-set: change it only if it is at this version now")
	cmd.Flags().BoolVar(&createOnly, "create", false, "create it only: fail if it exists")
	cmd.Flags().StringVar(&description, "description", "", "what the secret is for")
	cmd.Flags().StringVar(&owner, "owner", "", "who looks after it")
	cmd.Flags().StringSliceVar(&tags, "tags", nil, "tags (comma-separated)")
	cmd.Flags().DurationVar(&rotation, "rotation", 0, "how often it should be rotated (e.g. 2160h); 0 for never")
	cmd.Long = `Set a secret's value, as a new version. The value is read from standard
input when it is not a terminal (exactly its bytes: use --trim-newline to
drop the newline that echo adds), from --from-file, or else from a hidden
prompt. It is never taken from an argument, where other users of the
machine could see it in the process list.`
	cmd.Example = `  stele secrets set API_KEY                      # prompts, without echo
  printf '%s' "$NEW_KEY" | stele secrets set API_KEY --env production
  stele secrets set TLS_KEY --from-file server.key --if-version 3`
	return cmd
}

// readValue reads a value to set: from a file, standard input, or a
// hidden prompt on the terminal.
func readValue(c *cobra.Command, name, file string, trim bool) ([]byte, error) {
	var v []byte
	var err error
	switch in := c.InOrStdin(); {
	case file != "":
		v, err = os.ReadFile(filepath.Clean(file))
		if err != nil {
			return nil, fmt.Errorf("--from-file: %w", err)
		}
	case !isTerminalReader(in):
		v, err = io.ReadAll(io.LimitReader(in, maxValue+3))
		if err != nil {
			return nil, fmt.Errorf("reading the value from standard input: %w", err)
		}
	default:
		f := in.(*os.File)
		fmt.Fprintf(c.ErrOrStderr(), "Value for %s (not shown): ", name)
		v, err = term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.ErrOrStderr())
		if err != nil {
			return nil, fmt.Errorf("reading the value: %w", err)
		}
		trim = false
	}
	if trim {
		v = bytes.TrimSuffix(v, []byte("\n"))
		v = bytes.TrimSuffix(v, []byte("\r"))
	}
	if len(v) > maxValue {
		clear(v)
		return nil, fmt.Errorf("the value has more than %d bytes, the most a secret holds", maxValue)
	}
	return v, nil
}

// isTerminalReader reports whether r is a terminal.
func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newSecretsDeleteCmd() *cobra.Command {
	var cf clientFlags
	cmd := envCommand(&cf, "delete NAME", "Delete a secret (it can be restored; its versions stay in the history)", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			if _, err := s.call(c.Context(), cli.Call{Method: http.MethodDelete, Path: secretPath(env, args[0])}, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Deleted %s (stele secrets restore %s brings it back).\n", args[0], args[0])
			return nil
		})
	return cmd
}

func newSecretsRestoreCmd() *cobra.Command {
	var cf clientFlags
	return envCommand(&cf, "restore NAME", "Restore a deleted secret", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			if _, err := s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: secretPath(env, args[0]) + "/restore", JSON: map[string]any{}}, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Restored %s.\n", args[0])
			return nil
		})
}

func newSecretsHistoryCmd() *cobra.Command {
	var cf clientFlags
	cmd := envCommand(&cf, "history NAME", "List a secret's versions: who made each and when (no values)", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: secretPath(env, args[0]) + "/versions"}, nil)
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printRaw(c.OutOrStdout(), resp.Body)
			}
			var page struct {
				Items []struct {
					Version        int64     `json:"version"`
					Current        bool      `json:"current"`
					Destroyed      bool      `json:"destroyed"`
					RolledBackFrom int64     `json:"rolled_back_from"`
					CreatedAt      time.Time `json:"created_at"`
					CreatedBy      string    `json:"created_by"`
				} `json:"items"`
			}
			if err := resp.Decode(&page); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tCREATED\tBY\tNOTE")
			for _, v := range page.Items {
				var note []string
				if v.Current {
					note = append(note, "current")
				}
				if v.Destroyed {
					note = append(note, "destroyed")
				}
				if v.RolledBackFrom > 0 {
					note = append(note, fmt.Sprintf("rollback to %d", v.RolledBackFrom))
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", v.Version, v.CreatedAt.Local().Format("2006-01-02 15:04:05"), v.CreatedBy, strings.Join(note, ", "))
			}
			return tw.Flush()
		})
	cf.registerJSON(cmd)
	return cmd
}

func newSecretsRollbackCmd() *cobra.Command {
	var cf clientFlags
	var to uint64
	cmd := envCommand(&cf, "rollback NAME --to VERSION", "Roll a secret back: a new version that carries an earlier version's value", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			if to == 0 {
				return usageError{errors.New("name the version to roll back to: --to N (see stele secrets history)")}
			}
			var out struct {
				Version uint64 `json:"version"`
			}
			if _, err := s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: secretPath(env, args[0]) + "/rollback", JSON: map[string]any{"version": to}}, &out); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s is at version %d, with the value of version %d.\n", args[0], out.Version, to)
			return nil
		})
	cmd.Flags().Uint64Var(&to, "to", 0, "the version whose value comes back")
	return cmd
}

func newSecretsDestroyCmd() *cobra.Command {
	var cf clientFlags
	var version uint64
	cmd := envCommand(&cf, "destroy NAME --version N", "Destroy one version of a secret for good (its value can never be read again)", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			if version == 0 {
				return usageError{errors.New("name the version to destroy: --version N (see stele secrets history)")}
			}
			if _, err := s.call(c.Context(), cli.Call{Method: http.MethodDelete, Path: fmt.Sprintf("%s/versions/%d", secretPath(env, args[0]), version)}, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Destroyed version %d of %s.\n", version, args[0])
			return nil
		})
	cmd.Flags().Uint64Var(&version, "version", 0, "the version to destroy")
	return cmd
}
