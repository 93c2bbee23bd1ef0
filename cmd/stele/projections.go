package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/projections"
)

// newProjector builds the projector of every read model, plus the NATS
// publisher when a URL is configured.
func newProjector(store *postgres.Store, natsURL string, logger *slog.Logger) (*projections.Projector, func(), error) {
	projs := projections.All()
	closeFn := func() {}
	if natsURL == "" {
		natsURL = os.Getenv("STELE_NATS_URL")
	}
	if natsURL != "" {
		pub, err := projections.NewPublisher(projections.PublisherConfig{URL: natsURL})
		if err != nil {
			return nil, nil, err
		}
		projs = append(projs, pub)
		closeFn = func() { pub.Close() }
	}
	return projections.New(projections.Config{Pool: store.Pool(), Store: store, Logger: logger}, projs...), closeFn, nil
}

func newProjectionsCmd() *cobra.Command {
	var db dbFlags
	var natsURL string
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Inspect, rebuild and run the read models",
	}
	db.register(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVar(&natsURL, "nats-url", "", "also publish the event stream to this NATS JetStream server (default $STELE_NATS_URL)")

	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show each projection's position, lag (events and milliseconds) and state",
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			store, closeStore, err := db.open(ctx, quietLogger(), 4)
			if err != nil {
				return err
			}
			defer closeStore()
			sts, err := projections.Statuses(ctx, store.Pool(), store, time.Now())
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(c.OutOrStdout()).Encode(sts)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROJECTION\tVERSION\tPOSITION\tLAG EVENTS\tLAG MS\tSTATE\tERROR")
			for _, s := range sts {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Name, s.Version, s.Position, s.LagEvents, s.LagMillis, s.Status, s.Error)
			}
			return tw.Flush()
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	rebuild := &cobra.Command{
		Use:   "rebuild [NAME...]",
		Short: "Rebuild projections (all by default) from position 0 into shadow tables and swap them in, while readers keep reading",
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			logger := quietLogger()
			store, closeStore, err := db.open(ctx, logger, 8)
			if err != nil {
				return err
			}
			defer closeStore()
			p, closePub, err := newProjector(store, natsURL, logger)
			if err != nil {
				return err
			}
			defer closePub()
			if len(args) == 0 {
				for _, pr := range p.Projections() {
					if pr.Name() != "publisher" { // republishing the whole log is never implied
						args = append(args, pr.Name())
					}
				}
			}
			for _, name := range args {
				res, err := p.RebuildReport(ctx, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "rebuilt %s: %d events in %.2fs; readers paused %.1f ms for the swap\n",
					name, res.Position, res.Duration.Seconds(), float64(res.Swap.Microseconds())/1000)
			}
			return nil
		},
	}

	var logFormat, logLevel string
	var batch int
	run := &cobra.Command{
		Use:   "run",
		Short: "Run the projector alone (when the server runs with --no-projector, or in another process)",
		RunE: func(c *cobra.Command, _ []string) error {
			logger, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			if ms, _ := strconv.Atoi(os.Getenv("STELE_TEST_HOLD_BATCH_MS")); ms > 0 {
				// Crash tests: hold batches past a position open, so that a
				// kill lands inside one.
				after, _ := strconv.ParseUint(os.Getenv("STELE_TEST_HOLD_AFTER"), 10, 64)
				projections.BeforeCommit = func(name string, pos uint64) {
					if pos > after {
						fmt.Fprintf(os.Stderr, "holding %s batch up to %d\n", name, pos)
						time.Sleep(time.Duration(ms) * time.Millisecond)
					}
				}
			}
			ctx := c.Context()
			store, closeStore, err := db.open(ctx, logger, 16)
			if err != nil {
				return err
			}
			defer closeStore()
			p, closePub, err := newProjector(store, natsURL, logger)
			if err != nil {
				return err
			}
			defer closePub()
			if batch > 0 {
				p.SetBatch(batch)
			}
			logger.Info("projector running", "projections", len(p.Projections()))
			err = p.Run(ctx)
			if ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	addLogFlags(run, &logFormat, &logLevel)
	run.Flags().IntVar(&batch, "batch", 0, "most events per delivered batch (default 2000)")
	cmd.AddCommand(status, rebuild, run)
	return cmd
}
