package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"stele.dev/stele/internal/pglocal"
)

func newDevDBCmd() *cobra.Command {
	var dir string
	resolve := func() (string, error) {
		if dir != "" {
			return dir, nil
		}
		return pglocal.DefaultDir()
	}
	cmd := &cobra.Command{
		Use:   "devdb",
		Short: "Start, stop or locate the project's private PostgreSQL for development and tests",
		Long: `Manage a private PostgreSQL cluster under .stele/postgres (or --dir):
initdb and pg_ctl, listening on a free loopback port with a generated
password. When the PostgreSQL binaries are missing and this runs as root,
Debian's postgresql package is installed first.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "", "cluster folder (default <project>/.stele/postgres)")
	cmd.AddCommand(&cobra.Command{
		Use:   "start",
		Short: "Start the cluster (creating it if needed) and print its URL",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := resolve()
			if err != nil {
				return err
			}
			url, err := pglocal.Ensure(cmd.Context(), d, pglocal.Options{
				Install: true,
				Logf:    func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...) },
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), url)
			return nil
		},
	}, &cobra.Command{
		Use:   "stop",
		Short: "Stop the cluster",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := resolve()
			if err != nil {
				return err
			}
			return pglocal.Stop(cmd.Context(), d)
		},
	})
	return cmd
}
