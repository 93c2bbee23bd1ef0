package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/cli"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/evidence"
	"stele.dev/stele/eventstore/verify"
)

// auditEvidenceCmds are the auditor's evidence commands: stele audit
// export and stele audit verify.
func auditEvidenceCmds() []*cobra.Command {
	return []*cobra.Command{newAuditExportCmd(), newAuditVerifyCmd()}
}

// evidenceWait bounds how long stele audit export waits for the server
// to sign a checkpoint that covers the organization's latest events.
const evidenceWait = 2 * time.Minute

func newAuditExportCmd() *cobra.Command {
	var cf clientFlags
	var from, to, out string
	cmd := apiCommand(&cf, "export", "Export the organization's events with inclusion proofs, for offline verification", cobra.NoArgs,
		func(c *cobra.Command, s *session, _ []string) error {
			if out == "" {
				return usageError{errors.New("--out is required: the file to write")}
			}
			org, err := s.org()
			if err != nil {
				return err
			}
			q := url.Values{}
			var bounds [2]time.Time
			for i, b := range []struct{ name, v string }{{"from", from}, {"to", to}} {
				if b.v == "" {
					continue
				}
				t, err := parseWhen(b.v)
				if err != nil {
					return usageError{fmt.Errorf("--%s: %v", b.name, err)}
				}
				bounds[i] = t.UTC()
				q.Set(b.name, t.UTC().Format(time.RFC3339Nano))
			}
			if !bounds[0].IsZero() && !bounds[1].IsZero() && !bounds[0].Before(bounds[1]) {
				return usageError{errors.New("--from must be before --to")}
			}
			path := "/v1/orgs/" + org + "/audit/evidence"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			resp, err := getEvidenceStream(c.Context(), s, path)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			tmp, err := os.CreateTemp(filepath.Dir(out), ".stele-evidence-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			n, err := io.Copy(tmp, resp.Body)
			if err != nil {
				tmp.Close()
				return fmt.Errorf("reading the evidence from %s: %w (after %d bytes)", s.Server, err, n)
			}
			if err := tmp.Sync(); err != nil {
				tmp.Close()
				return err
			}
			if _, err := tmp.Seek(0, io.SeekStart); err != nil {
				tmp.Close()
				return err
			}
			// Check the file before keeping it, with the key this client
			// trusts for the server, and tie its checkpoint to the one this
			// client verified before.
			key, keyNote, err := s.evidenceKey(c.Context())
			if err != nil {
				tmp.Close()
				return err
			}
			var rep evidence.Report
			if key != nil {
				rep, err = evidence.Verify(tmp, key)
				if err != nil {
					tmp.Close()
					if errors.Is(err, evidence.ErrFailed) {
						return evidenceFailure{fmt.Errorf("the server's evidence does not verify, nothing was written: %w", err)}
					}
					return err
				}
				if err := s.evidenceExtends(c.Context(), key, rep); err != nil {
					tmp.Close()
					return err
				}
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			w := c.OutOrStdout()
			if key == nil {
				fmt.Fprintf(c.ErrOrStderr(), "stele: note: %s; the file was not checked\n", keyNote)
				if cf.asJSON {
					return printJSON(w, map[string]any{"file": out, "bytes": n, "verified": false})
				}
				fmt.Fprintf(w, "exported the evidence of %s (%d bytes) to %s\n", org, n, out)
				return nil
			}
			if cf.asJSON {
				o := evidenceJSON(rep, out, nil)
				o["bytes"], o["key"] = n, key.String()
				return printJSON(w, o)
			}
			span := "no events"
			if rep.Events > 0 {
				span = fmt.Sprintf("positions %d..%d, recorded %s .. %s", rep.FirstPosition, rep.LastPosition,
					rep.FirstRecorded.Format(time.RFC3339), rep.LastRecorded.Format(time.RFC3339))
			}
			fmt.Fprintf(w, "exported %d events of %s (%s) with their proofs against the checkpoint of %d events to %s (%d bytes); checked with %s\nverify with: stele audit verify --file %s --key '%s'\n",
				rep.Events, org, span, rep.TreeSize, out, n, keyNote, out, key)
			return nil
		})
	cf.registerOrg(cmd)
	cf.registerJSON(cmd)
	fs := cmd.Flags()
	fs.StringVar(&from, "from", "", "only events recorded at or after this time (RFC 3339, a date, or a duration ago such as 720h)")
	fs.StringVar(&to, "to", "", "only events recorded before this time (same forms as --from)")
	fs.StringVar(&out, "out", "", "the file to write (required)")
	cmd.Long = `Download the organization's evidence: every event of the organization
recorded in [--from, --to), each with its full record and an inclusion
proof against one signed checkpoint of the ledger, and that checkpoint
(format in docs/ledger-format.md, "Evidence file"). Other organizations'
events are not in it; of them it holds only the Merkle hashes the proofs
need. Needs the admin role in the organization.

The file is checked before it is kept, with the ledger key this client
trusts for the server, and its checkpoint is proven consistent with the
one this client verified before. An auditor checks it anywhere, offline,
with 'stele audit verify --file FILE --key KEY'.

Exit status: 0 written, 3 the server's evidence or ledger failed the
check (nothing is written), 1, 2 or 4 for other errors.`
	cmd.Example = `  stele audit export --org acme --from 2026-01-01 --to 2026-04-01 --out acme-q1.evidence
  stele audit export --from 720h --out last-30-days.evidence`
	return cmd
}

// getEvidenceStream GETs the evidence, streaming the answer; while the
// server has no checkpoint that covers the organization's latest events
// (503 not_yet) it waits as Retry-After says, up to evidenceWait.
func getEvidenceStream(ctx context.Context, s *session, path string) (*http.Response, error) {
	hc := http.Client{}
	if s.HTTP != nil {
		hc = *s.HTTP
	}
	hc.Timeout = 0 // a large export takes its time; ctx ends it
	deadline := time.Now().Add(evidenceWait)
	said := false
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(s.Server, "/")+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "text/plain")
		req.Header.Set("User-Agent", s.UserAgent)
		if s.Token != "" {
			req.Header.Set("Authorization", "Bearer "+s.Token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("cannot reach %s: %w", s.Server, err)
		}
		if resp.StatusCode < 400 {
			return resp, nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		p := &cli.Problem{Status: resp.StatusCode}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
			json.Unmarshal(body, p)
		}
		if p.Code == "" {
			p.Code = "http_" + strconv.Itoa(resp.StatusCode)
		}
		if p.Code != "not_yet" || time.Now().After(deadline) {
			return nil, s.explain(p)
		}
		wait := 2 * time.Second
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
			wait = min(time.Duration(n)*time.Second, 10*time.Second)
		}
		if !said {
			fmt.Fprintln(s.stderr, "stele: waiting for the server to sign a checkpoint that covers the latest events…")
			said = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// evidenceKey is the key that checks downloaded evidence: the one this
// client remembers for the server (trusted on first contact), else the
// one the server publishes. It returns nil when there is neither, and
// says which it is.
func (s *session) evidenceKey(ctx context.Context) (*checkpoint.Verifier, string, error) {
	if st, ok, err := s.dirs.ledgers.Load(s.Server); err != nil {
		return nil, "", err
	} else if ok {
		v, err := checkpoint.NewVerifier(st.Key)
		if err != nil {
			return nil, "", fmt.Errorf("the remembered ledger key of %s: %w", s.Server, err)
		}
		return v, "the ledger key this client trusts", nil
	}
	resp, err := s.call(ctx, cli.Call{Method: http.MethodGet, Path: "/v1/ledger/key", Header: http.Header{"Accept": {"text/plain"}}}, nil)
	if cli.IsCode(err, "not_found") {
		return nil, "the server publishes no ledger key", nil
	}
	if err != nil {
		return nil, "", err
	}
	v, err := checkpoint.NewVerifier(string(resp.Body))
	if err != nil {
		return nil, "", fmt.Errorf("the server's ledger key does not parse: %w", err)
	}
	return v, "the ledger key the server publishes (compare it with the operator's)", nil
}

// evidenceExtends proves that the evidence's checkpoint and the one this
// client verified before belong to one log: a consistency proof from the
// smaller to the larger.
func (s *session) evidenceExtends(ctx context.Context, key *checkpoint.Verifier, rep evidence.Report) error {
	st, ok, err := s.dirs.ledgers.Load(s.Server)
	if err != nil || !ok || st.Checkpoint == "" || st.Key != key.String() {
		return err
	}
	oldSize, oldRoot, err := key.Open([]byte(st.Checkpoint))
	if err != nil {
		return err
	}
	if rep.TreeSize >= oldSize {
		err = s.Extends(ctx, key, []byte(st.Checkpoint), rep.TreeSize, rep.Root)
	} else {
		err = s.Extends(ctx, key, rep.Note, oldSize, oldRoot)
	}
	if errors.Is(err, cli.ErrLogRewritten) {
		return logRewrittenError{err, s.Server}
	}
	return err
}

func newAuditVerifyCmd() *cobra.Command {
	var file, keyArg string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify an evidence file offline, with the ledger's public key",
		Long: `Verify an evidence file made by 'stele audit export' (or
GET /v1/orgs/{org}/audit/evidence), with no server and no database: the
checkpoint's signature and origin against --key; for each event, its hash
from its content, its inclusion proof against the checkpoint's root, that
positions increase, that it is the file's organization's and recorded in
the file's range, and that each stream's versions are contiguous (from 1
when the range is open at its start); and the end line's count and
digest. Prints a summary: events, positions, times, actors and event
types with their counts.

What it cannot tell: that the file holds every event of the organization
in the range. A removed event is caught when a later event of its stream
is in the file, or when the end line was left as it was; a forger who
removes the last events of streams and rewrites the end line is not
(docs/ledger-format.md, "Evidence file", says exactly what is and is not
caught).

Exit status: 0 verified, 3 the file failed (the first failure is named:
its line, the event's position and the check), 1 the file cannot be
read, 2 bad usage (a missing flag, a malformed key).`,
		Example: `  stele audit verify --file acme-q1.evidence --key @ledger.pub
  stele audit verify --file acme-q1.evidence --key 'stele.example.com+57c1fd3a+AYFGZ…' --json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("--file is required: the evidence file to verify")}
			}
			if keyArg == "" {
				return usageError{errors.New("--key is required: the ledger's public key you trust (stele ledger key), or @FILE holding it")}
			}
			key, err := readKeyArg(keyArg)
			if err != nil {
				return err
			}
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer f.Close()
			rep, err := evidence.Verify(f, key)
			var fe *evidence.Error
			if err != nil && !errors.As(err, &fe) {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				o := evidenceJSON(rep, file, fe)
				o["key"] = key.String()
				if jerr := printJSON(w, o); jerr != nil {
					return jerr
				}
			} else {
				printEvidence(w, file, rep, fe, key)
			}
			if fe != nil {
				return evidenceFailure{err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "the evidence file (required)")
	cmd.Flags().StringVar(&keyArg, "key", "", "the ledger's public key (as stele ledger key prints it), or @FILE holding it (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON")
	return cmd
}

// evidenceFailure is an evidence file that failed verification: it
// exits with exitTampered.
type evidenceFailure struct{ err error }

func (e evidenceFailure) Error() string        { return e.err.Error() }
func (e evidenceFailure) Unwrap() error        { return e.err }
func (e evidenceFailure) Is(target error) bool { return target == verify.ErrFailed }

// counted is a name and its count, for summaries.
type counted struct {
	Name  string `json:"name"`
	Count uint64 `json:"count"`
}

// byCount sorts counts, largest first, then by name.
func byCount(m map[string]uint64) []counted {
	out := make([]counted, 0, len(m))
	for k, v := range m {
		out = append(out, counted{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func evidenceJSON(rep evidence.Report, file string, fe *evidence.Error) map[string]any {
	o := map[string]any{
		"ok":          fe == nil,
		"file":        file,
		"org":         rep.Org,
		"from":        timeOrNil(rep.From),
		"to":          timeOrNil(rep.To),
		"events":      rep.Events,
		"streams":     rep.Streams,
		"actors":      byCount(rep.Actors),
		"event_types": byCount(rep.Types),
	}
	if rep.TreeSize > 0 || rep.Origin != "" {
		o["checkpoint"] = map[string]any{"origin": rep.Origin, "size": rep.TreeSize, "root": rep.Root.String()}
	}
	if rep.Events > 0 {
		o["first_position"], o["last_position"] = rep.FirstPosition, rep.LastPosition
		o["first_recorded_at"], o["last_recorded_at"] = rep.FirstRecorded, rep.LastRecorded
	}
	if fe != nil {
		o["failure"] = fe
	}
	return o
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func printEvidence(w io.Writer, file string, rep evidence.Report, fe *evidence.Error, key *checkpoint.Verifier) {
	status := "OK"
	if fe != nil {
		status = "FAILED"
	}
	fmt.Fprintf(w, "evidence %s: %s\n", file, status)
	if rep.Org != "" {
		bound := func(t time.Time, open string) string {
			if t.IsZero() {
				return open
			}
			return t.Format(time.RFC3339Nano)
		}
		fmt.Fprintf(w, "  organization   %s\n", rep.Org)
		fmt.Fprintf(w, "  range          %s .. %s\n", bound(rep.From, "the log's start"), bound(rep.To, "its head when exported"))
	}
	if rep.Origin != "" {
		fmt.Fprintf(w, "  checkpoint     %s, %d events, root %s (signed by %s)\n", rep.Origin, rep.TreeSize, rep.Root, key)
	}
	verified := "events"
	if fe != nil {
		verified = "verified"
	}
	fmt.Fprintf(w, "  %-14s %d", verified, rep.Events)
	if rep.Events > 0 {
		fmt.Fprintf(w, ", positions %d..%d, streams %d\n", rep.FirstPosition, rep.LastPosition, rep.Streams)
		fmt.Fprintf(w, "  recorded       %s .. %s\n", rep.FirstRecorded.Format(time.RFC3339Nano), rep.LastRecorded.Format(time.RFC3339Nano))
	} else {
		fmt.Fprintln(w)
	}
	for _, part := range []struct {
		title string
		m     map[string]uint64
	}{{"actors", rep.Actors}, {"event types", rep.Types}} {
		if len(part.m) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %s\n", part.title)
		for _, c := range byCount(part.m) {
			fmt.Fprintf(w, "    %8d  %s\n", c.Count, c.Name)
		}
	}
	if fe != nil {
		fmt.Fprintf(w, "  failure        %s\n", fe.Error())
	}
}
