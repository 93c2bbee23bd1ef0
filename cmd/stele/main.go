// Command stele is Stele's one binary: the server (stele server) and the
// commands that operate on its ledger. It is the only place that wires
// concrete adapters together.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"stele.dev/stele/eventstore/verify"
)

// Exit codes.
const (
	exitError    = 1 // anything else that went wrong
	exitUsage    = 2 // bad flags or arguments
	exitTampered = 3 // ledger verification failed
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes the command line and returns the process exit code. Every
// failure is reported as one line on stderr.
func run(ctx context.Context, args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var child exitCode
	if errors.As(err, &child) { // the command stele ran has said all
		return int(child)
	}
	fmt.Fprintln(os.Stderr, "stele: "+oneLine(err.Error()))
	var ue usageError
	var ae authError
	var lr logRewrittenError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, verify.ErrFailed), errors.As(err, &lr):
		return exitTampered
	case errors.As(err, &ae):
		return exitAuth
	default:
		return exitError
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

type usageError struct{ error }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "stele",
		Short: "Stele: an event-sourced secrets ledger",
		Long: `Stele keeps application secrets in an append-only, hash-linked,
provable ledger on PostgreSQL. Every change and every read of a value is an
event in that ledger.

Client commands talk to a server (--server, STELE_ADDR, or the folder's
.stele.yaml written by 'stele init'), signed in by 'stele login' or
STELE_TOKEN. Exit status: 0 done, 1 failed, 2 bad usage, 3 the ledger
failed verification, 4 not signed in or not allowed; 'stele run' passes
its command's own status through. See docs/cli.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newServerCmd(),
		newMigrateCmd(),
		newLedgerCmd(),
		newKeysCmd(),
		newProjectionsCmd(),
		withSub(newBenchCmd(), newBenchCLICmd()),
		newDevDBCmd(),
		newVersionCmd(),
		newHealthcheckCmd(),
		newRequestCmd(),
		newLoginCmd(),
		newLogoutCmd(),
		newWhoamiCmd(),
		newInitCmd(),
		newRunCmd(),
		newExportCmd(),
		newImportCmd(),
		newSecretsCmd(),
		newProjectsCmd(),
		newEnvsCmd(),
		newBundlesCmd(),
		newMembersCmd(),
		newTokensCmd(),
		newAuditCmd(),
	)
	root.AddGroup(
		&cobra.Group{ID: "daily", Title: "Every day:"},
		&cobra.Group{ID: "org", Title: "Organizations, access and audit:"},
		&cobra.Group{ID: "server", Title: "On the server's host:"},
	)
	for _, c := range root.Commands() {
		switch c.Name() {
		case "login", "logout", "whoami", "init", "run", "export", "import", "secrets", "request":
			c.GroupID = "daily"
		case "projects", "envs", "bundles", "members", "tokens", "keys", "audit", "ledger":
			c.GroupID = "org"
		case "server", "migrate", "projections", "bench", "devdb", "healthcheck":
			c.GroupID = "server"
		}
	}
	addExamples(root)
	var wrap func(*cobra.Command)
	wrap = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			sub.Args = wrapArgs(sub.Args)
			wrap(sub)
		}
	}
	wrap(root)
	return root
}

// withSub adds subcommands to cmd and returns it.
func withSub(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	return cmd
}

// wrapArgs turns argument validation failures into usage errors.
func wrapArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	if v == nil {
		v = cobra.NoArgs
	}
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
