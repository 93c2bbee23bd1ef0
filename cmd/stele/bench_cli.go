package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"
)

// cliBench is the JSON that stele bench cli prints: wall-clock times of
// whole processes, as a person or a CI job sees them.
type cliBench struct {
	Runs    int `json:"runs"`
	Secrets int `json:"secrets"`
	// Scenarios by name: "true" (the bare program), "version" (stele
	// version: starting the binary), "run" (stele run -- true),
	// "run_no_verify_log" (the same without the ledger check), "export_sh"
	// (stele export --format sh), "export_request" (the HTTP request that
	// stele run makes, alone, from a warm client: the server's share).
	Scenarios map[string]cliTimes `json:"scenarios"`
	// RunOverheadMs is the median of run minus the median of true.
	RunOverheadMs float64 `json:"run_overhead_ms"`
	// LedgerCheckMs is the median of run minus that of run_no_verify_log.
	LedgerCheckMs float64 `json:"ledger_check_ms"`
}

type cliTimes struct {
	P50ms float64 `json:"p50_ms"`
	P90ms float64 `json:"p90_ms"`
	Minms float64 `json:"min_ms"`
}

func newBenchCLICmd() *cobra.Command {
	var db dbFlags
	var runs, secrets int
	cmd := &cobra.Command{
		Use:   "cli",
		Short: "Time the CLI against a warm server: stele run -- true beside a bare true, and stele export",
		Long: `In a scratch schema, start a server on a loopback port with an environment
of --secrets secrets, warm it up, and then time whole processes, --runs
times each, interleaved so that the machine's drift hits every scenario
alike:

  true               the bare program (/bin/true), the floor
  version            stele version: what starting the binary costs
  run                stele run -- true (reads every secret, each read an
                     event in the ledger, and checks the ledger's
                     checkpoint against the one remembered)
  run_no_verify_log  the same without the ledger check
  export_sh          stele export --format sh
  export_request     the export request of stele run alone, over a
                     kept-alive connection from this process: the
                     server's share

and print one JSON object with the median, 90th percentile and minimum of
each, and the overhead of stele run over the bare program.`,
		Example: `  stele bench cli --dev --runs 50`,
		RunE: func(c *cobra.Command, _ []string) error {
			if runs < 5 || runs > 10000 || secrets < 1 || secrets > 1000 {
				return usageError{errors.New("--runs must be 5 to 10000 and --secrets 1 to 1000")}
			}
			ctx := c.Context()
			admin, err := db.connect(ctx, quietLogger(), 2)
			if err != nil {
				return err
			}
			defer admin.Close()
			schema, drop, err := scratchSchema(ctx, admin)
			if err != nil {
				return err
			}
			defer drop()
			dbURL, err := db.resolve(ctx, quietLogger())
			if err != nil {
				return err
			}
			u, err := url.Parse(dbURL)
			if err != nil || u.Scheme == "" {
				return usageError{errors.New("bench cli needs a postgres:// URL")}
			}
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			tmp, err := os.MkdirTemp("", "stele-bench-cli-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			srv, err := StartServer(ctx, ServerConfig{DB: dbFlags{url: u.String()}, Keys: keyFlags{dataDir: filepath.Join(tmp, "data"), origin: "stele.bench/cli"},
				Listen: "127.0.0.1:0", CheckpointInterval: time.Second, Logger: quietLogger(),
				API: apiFlags{BootstrapOrg: "bench", RatePerSecond: 100000}})
			if err != nil {
				return err
			}
			defer srv.Stop(10 * time.Second)
			base := "http://" + srv.Addr
			call := func(method, path string, body any) error {
				b, _ := json.Marshal(body)
				req, _ := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(b))
				req.Header.Set("Authorization", "Bearer "+srv.BootstrapToken)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				if resp.StatusCode >= 300 {
					out, _ := io.ReadAll(resp.Body)
					return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, out)
				}
				return nil
			}
			if err := call("POST", "/v1/orgs/bench/projects", map[string]any{"id": "app", "name": "App"}); err != nil {
				return err
			}
			if err := call("POST", "/v1/orgs/bench/projects/app/envs", map[string]any{"id": "prod"}); err != nil {
				return err
			}
			for i := range secrets {
				if err := call("PUT", fmt.Sprintf("/v1/orgs/bench/projects/app/envs/prod/secrets/SECRET_%03d", i),
					map[string]any{"value": fmt.Sprintf("value-%03d-%s", i, randomHex(16))}); err != nil {
					return err
				}
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			truePath, err := exec.LookPath("true")
			if err != nil {
				return err
			}
			env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + tmp, "XDG_CONFIG_HOME=" + filepath.Join(tmp, "config"),
				"STELE_ADDR=" + base, "STELE_TOKEN=" + srv.BootstrapToken, "STELE_ORG=bench", "STELE_PROJECT=app", "STELE_ENV=prod"}
			scenarios := []struct {
				name string
				argv []string
			}{
				{"true", []string{truePath}},
				{"version", []string{self, "version"}},
				{"run", []string{self, "run", "--", truePath}},
				{"run_no_verify_log", []string{self, "run", "--no-verify-log", "--", truePath}},
				{"export_sh", []string{self, "export", "--format", "sh"}},
			}
			once := func(argv []string) (time.Duration, error) {
				cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
				cmd.Env = env
				var errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = io.Discard, &errb
				start := time.Now()
				err := cmd.Run()
				d := time.Since(start)
				if err != nil {
					return 0, fmt.Errorf("%v: %v: %s", argv[1:], err, errb.String())
				}
				return d, nil
			}
			for range 3 { // warm up: the server's caches, the remembered checkpoint, the page cache
				for _, s := range scenarios {
					if _, err := once(s.argv); err != nil {
						return err
					}
				}
			}
			times := map[string][]time.Duration{}
			for range runs {
				for _, s := range scenarios {
					d, err := once(s.argv)
					if err != nil {
						return err
					}
					times[s.name] = append(times[s.name], d)
				}
			}
			// The server's share: the export request of stele run alone, from
			// this process over a kept-alive connection.
			body, _ := json.Marshal(map[string]any{"format": "json", "channel": "cli-run"})
			for range runs {
				req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/orgs/bench/projects/app/envs/prod/export", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+srv.BootstrapToken)
				req.Header.Set("Content-Type", "application/json")
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("export: %d", resp.StatusCode)
				}
				times["export_request"] = append(times["export_request"], time.Since(start))
			}
			out := cliBench{Runs: runs, Secrets: secrets, Scenarios: map[string]cliTimes{}}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			med := map[string]float64{}
			for name, ds := range times {
				slices.Sort(ds)
				out.Scenarios[name] = cliTimes{P50ms: ms(ds[len(ds)/2]), P90ms: ms(ds[len(ds)*9/10]), Minms: ms(ds[0])}
				med[name] = ms(ds[len(ds)/2])
			}
			out.RunOverheadMs = med["run"] - med["true"]
			out.LedgerCheckMs = med["run"] - med["run_no_verify_log"]
			enc := json.NewEncoder(c.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
	db.register(cmd.Flags())
	cmd.Flags().IntVar(&runs, "runs", 30, "processes timed per scenario")
	cmd.Flags().IntVar(&secrets, "secrets", 20, "secrets in the environment that run and export read")
	return cmd
}
