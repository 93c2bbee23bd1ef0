package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/cli"
)

// auditHistoryCmds are the auditor's history commands: stele audit
// replay, who-could-read, who-read and report.
func auditHistoryCmds() []*cobra.Command {
	return []*cobra.Command{newAuditReplayCmd(), newWhoCouldReadCmd(), newWhoReadCmd(), newAuditReportCmd()}
}

// reportNames are the server's reports (GET /v1/orgs/{org}/reports/…).
var reportNames = []string{"stale-secrets", "production-reads", "old-keys", "approvals", "production-tokens"}

// parseMoment reads a moment: a log position (digits), or a time in the
// forms parseWhen takes. It returns the query that names it (position=…
// or at=…).
func parseMoment(flag, v string) (url.Values, error) {
	q := url.Values{}
	if v == "" {
		return nil, usageError{fmt.Errorf("--%s is required: a time (RFC 3339, a date, or a duration ago such as 720h) or a log position", flag)}
	}
	if strings.Trim(v, "0123456789") == "" {
		p, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			return nil, usageError{fmt.Errorf("--%s %s: not a log position", flag, v)}
		}
		q.Set("position", strconv.FormatUint(p, 10))
		return q, nil
	}
	t, err := parseWhen(v)
	if err != nil {
		return nil, usageError{fmt.Errorf("--%s: %v, or a log position", flag, err)}
	}
	q.Set("at", t.UTC().Format(time.RFC3339Nano))
	return q, nil
}

// window reads --from and --to into a query; both optional, from before
// to.
func window(from, to string) (url.Values, error) {
	q := url.Values{}
	var bounds [2]time.Time
	for i, b := range []struct{ name, v string }{{"from", from}, {"to", to}} {
		if b.v == "" {
			continue
		}
		t, err := parseWhen(b.v)
		if err != nil {
			return nil, usageError{fmt.Errorf("--%s: %v", b.name, err)}
		}
		bounds[i] = t.UTC()
		q.Set(b.name, bounds[i].Format(time.RFC3339Nano))
	}
	if !bounds[0].IsZero() && !bounds[1].IsZero() && !bounds[0].Before(bounds[1]) {
		return nil, usageError{errors.New("--from must be before --to")}
	}
	return q, nil
}

// checkFormat accepts the output formats of the history commands; --json
// is --format json.
func checkFormat(format string, asJSON bool) (string, error) {
	switch format {
	case "table", "json", "csv":
	default:
		return "", usageError{fmt.Errorf("--format %q: want table, csv or json", format)}
	}
	if asJSON {
		return "json", nil
	}
	return format, nil
}

// stamp is a time as the history commands print it: local, to the
// second.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// guard keeps a spreadsheet from reading a CSV cell as a formula, as the
// server's exports do.
func guard(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// writeCSV writes a header and rows as CSV (RFC 4180, CRLF).
func writeCSV(w io.Writer, header []string, rows [][]string) error {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	cw.Write(header)
	for _, r := range rows {
		g := make([]string, len(r))
		for i, c := range r {
			g[i] = guard(c)
		}
		cw.Write(g)
	}
	cw.Flush()
	return cw.Error()
}

// momentLine says which moment an answer stands for.
func momentLine(position uint64, at *time.Time) string {
	if at == nil {
		return fmt.Sprintf("position %d (before the log began)", position)
	}
	return fmt.Sprintf("position %d, %s", position, stamp(*at))
}

// replayed is the server's answer to a replay (GET /v1/orgs/{org}/replay).
type replayed struct {
	Position     uint64     `json:"position"`
	At           *time.Time `json:"at"`
	Organization *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"organization"`
	Environments []envView `json:"environments"`
	Secrets      []struct {
		Project         string    `json:"project"`
		Env             string    `json:"env"`
		Name            string    `json:"name"`
		Version         int64     `json:"version"`
		KeyID           int64     `json:"key_id"`
		Deleted         bool      `json:"deleted"`
		Destroyed       bool      `json:"destroyed"`
		RotationSeconds int64     `json:"rotation_seconds"`
		RotationDue     bool      `json:"rotation_due"`
		ValueUpdatedAt  time.Time `json:"value_updated_at"`
		UpdatedAt       time.Time `json:"updated_at"`
		UpdatedBy       string    `json:"updated_by"`
	} `json:"secrets"`
	Keysets []keysetView `json:"keysets"`
	Members []struct {
		User      string    `json:"user"`
		Project   string    `json:"project"`
		Role      string    `json:"role"`
		GrantedBy string    `json:"granted_by"`
		GrantedAt time.Time `json:"granted_at"`
	} `json:"members"`
	Tokens []struct {
		ID           string    `json:"id"`
		Name         string    `json:"name"`
		Role         string    `json:"role"`
		Project      string    `json:"project"`
		Environments []string  `json:"environments"`
		ExpiresAt    time.Time `json:"expires_at"`
		IssuedBy     string    `json:"issued_by"`
		Status       string    `json:"status"`
	} `json:"tokens"`
}

func newAuditReplayCmd() *cobra.Command {
	var cf clientFlags
	var asOf string
	var q url.Values
	cmd := apiCommand(&cf, "replay --as-of TIME|POSITION", "An organization's secrets, keys, roles and tokens as they stood at a past time or log position", cobra.NoArgs,
		func(c *cobra.Command, s *session, _ []string) error {
			org, err := s.org()
			if err != nil {
				return err
			}
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: "/v1/orgs/" + org + "/replay?" + q.Encode()}, nil)
			if err != nil {
				return err
			}
			w := c.OutOrStdout()
			if cf.asJSON {
				return printRaw(w, resp.Body)
			}
			var st replayed
			if err := resp.Decode(&st); err != nil {
				return err
			}
			return printReplay(w, org, st)
		})
	cmd.PreRunE = func(*cobra.Command, []string) (err error) {
		q, err = parseMoment("as-of", asOf)
		return err
	}
	cf.registerOrg(cmd)
	cf.registerJSON(cmd)
	cmd.Flags().StringVar(&asOf, "as-of", "", "the moment: a time (RFC 3339, a date, or a duration ago such as 720h) or a log position")
	cmd.Long = `Replay an organization from the ledger as it stood at a past moment: its
projects and environments, every secret's metadata in every environment
(version, key, deleted or destroyed, who changed it last and when; never a
value), its keysets (keys, their states, the primary, the last rotation,
the reseal), who held which role, and its service tokens.

--as-of takes a time (the state after the last event recorded by then) or
a log position (the state right after that event). Needs the admin role
in the organization. --json prints the server's answer.`
	cmd.Example = `  stele audit replay --org acme --as-of 2026-03-31T23:59:59Z
  stele audit replay --as-of 1200 --json > acme-at-1200.json`
	return cmd
}

// printReplay prints a replay as titled tables.
func printReplay(w io.Writer, org string, st replayed) error {
	if st.Organization == nil {
		_, err := fmt.Fprintf(w, "Organization %s did not exist yet at %s.\n", org, momentLine(st.Position, st.At))
		return err
	}
	fmt.Fprintf(w, "Organization %s (%s) at %s.\n", st.Organization.ID, st.Organization.Name, momentLine(st.Position, st.At))
	section := func(title, header string, n int, rows func(tw io.Writer)) {
		fmt.Fprintf(w, "\n%s (%d)\n", title, n)
		if n == 0 {
			fmt.Fprintln(w, "  none")
			return
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		rows(tw)
		tw.Flush()
	}
	section("ENVIRONMENTS", "PROJECT/ENV\tNAME\tPRODUCTION\tKEY ROTATION\tAPPROVALS", len(st.Environments), func(tw io.Writer) {
		for _, e := range st.Environments {
			fmt.Fprintf(tw, "%s/%s\t%s\t%v\t%s\t%s\n", e.Project, e.ID, e.Name, e.Production, e.rotation(), e.approvals())
		}
	})
	section("SECRETS", "PROJECT/ENV\tNAME\tVERSION\tKEY\tSTATE\tVALUE SET\tCHANGED\tBY", len(st.Secrets), func(tw io.Writer) {
		for _, x := range st.Secrets {
			var state []string
			if x.Deleted {
				state = append(state, "deleted")
			}
			if x.Destroyed {
				state = append(state, "destroyed")
			}
			if x.RotationDue && !x.Deleted {
				state = append(state, "rotation due")
			}
			if len(state) == 0 {
				state = append(state, "current")
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", x.Project, x.Env, x.Name, x.Version, x.KeyID, strings.Join(state, ", "),
				stamp(x.ValueUpdatedAt), stamp(x.UpdatedAt), x.UpdatedBy)
		}
	})
	nkeys := 0
	for _, k := range st.Keysets {
		nkeys += len(k.Keys)
	}
	section("KEYS", "PROJECT/ENV\tKEY\tSTATE\tPRIMARY\tADDED\tLAST ROTATION\tRESEAL", nkeys, func(tw io.Writer) {
		for _, k := range st.Keysets {
			last := "-"
			if k.LastRotation != nil {
				last = stamp(*k.LastRotation)
			}
			reseal := "complete"
			if !k.Reseal.Complete {
				reseal = fmt.Sprintf("%d pending", k.Reseal.Pending)
			}
			for _, key := range k.Keys {
				primary := ""
				if key.Primary {
					primary = "primary"
					if k.RotationDue {
						primary += ", rotation due"
					}
				}
				fmt.Fprintf(tw, "%s/%s\t%d\t%s\t%s\t%s\t%s\t%s\n", k.Project, k.Env, key.ID, key.State, firstOf(primary, "-"), stamp(key.AddedAt), last, reseal)
			}
		}
	})
	section("ROLES", "USER\tPROJECT\tROLE\tGRANTED BY\tGRANTED", len(st.Members), func(tw io.Writer) {
		for _, m := range st.Members {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.User, firstOf(m.Project, "*"), m.Role, m.GrantedBy, stamp(m.GrantedAt))
		}
	})
	section("TOKENS", "ID\tNAME\tROLE\tSCOPE\tEXPIRES\tSTATUS\tISSUED BY", len(st.Tokens), func(tw io.Writer) {
		for _, t := range st.Tokens {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, tokenScope(org, t.Project, t.Environments), stamp(t.ExpiresAt), t.Status, t.IssuedBy)
		}
	})
	return nil
}

// tokenScope writes a token's scope as tokens list does.
func tokenScope(org, project string, envs []string) string {
	scope := org
	if project != "" {
		scope += "/" + project
	}
	if len(envs) > 0 {
		scope += "/{" + strings.Join(envs, ",") + "}"
	}
	return scope
}

func newWhoCouldReadCmd() *cobra.Command {
	var cf clientFlags
	var at, format string
	var q url.Values
	cmd := envCommand(&cf, "who-could-read NAME --at TIME|POSITION", "Who could read a secret's value at a past time or log position", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: env.Path() + "/secrets/" + args[0] + "/could-read?" + q.Encode()}, nil)
			if err != nil {
				return err
			}
			w := c.OutOrStdout()
			if format == "json" {
				return printRaw(w, resp.Body)
			}
			var out struct {
				Position uint64     `json:"position"`
				At       *time.Time `json:"at"`
				Items    []struct {
					Actor, Role, Via string
				} `json:"items"`
			}
			if err := resp.Decode(&out); err != nil {
				return err
			}
			rows := make([][]string, len(out.Items))
			for i, x := range out.Items {
				rows[i] = []string{x.Actor, x.Role, x.Via}
			}
			if format == "csv" {
				return writeCSV(w, []string{"actor", "role", "via"}, rows)
			}
			fmt.Fprintf(w, "Who could read %s %s at %s:\n", env, args[0], momentLine(out.Position, out.At))
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACTOR\tROLE\tVIA")
			for _, r := range rows {
				fmt.Fprintln(tw, strings.Join(r, "\t"))
			}
			return tw.Flush()
		})
	cmd.PreRunE = func(*cobra.Command, []string) (err error) {
		if format, err = checkFormat(format, cf.asJSON); err != nil {
			return err
		}
		q, err = parseMoment("at", at)
		return err
	}
	cf.registerJSON(cmd)
	cmd.Flags().StringVar(&at, "at", "", "the moment: a time (RFC 3339, a date, or a duration ago such as 720h) or a log position")
	cmd.Flags().StringVarP(&format, "format", "f", "table", "table, csv or json")
	cmd.Long = `List everyone whose role let them reveal a secret's value at a past
moment: people by their organization or project role, and service tokens
that were unrevoked, unexpired and scoped to the environment, with the
role and where it came from. Approvals, which let single reads through,
are not counted. Needs the admin role in the organization or project.`
	cmd.Example = `  stele audit who-could-read DB_URL --env production --at 2026-03-31T23:59:59Z
  stele audit who-could-read DB_URL --env production --at 1200 --format csv`
	return cmd
}

func newWhoReadCmd() *cobra.Command {
	var cf clientFlags
	var from, to, format string
	var q url.Values
	cmd := envCommand(&cf, "who-read NAME [--from T1] [--to T2]", "Who read a secret's value in a window of time", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			path := env.Path() + "/secrets/" + args[0] + "/reads"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: path}, nil)
			if err != nil {
				return err
			}
			w := c.OutOrStdout()
			if format == "json" {
				return printRaw(w, resp.Body)
			}
			var out struct {
				From  *time.Time `json:"from"`
				To    time.Time  `json:"to"`
				Items []struct {
					Actor      string    `json:"actor"`
					ActorKind  string    `json:"actor_kind"`
					Version    uint64    `json:"version"`
					Channel    string    `json:"channel"`
					Reason     string    `json:"reason"`
					RecordedAt time.Time `json:"recorded_at"`
					Position   uint64    `json:"position"`
				} `json:"items"`
			}
			if err := resp.Decode(&out); err != nil {
				return err
			}
			if format == "csv" {
				rows := make([][]string, len(out.Items))
				for i, x := range out.Items {
					rows[i] = []string{x.RecordedAt.UTC().Format(time.RFC3339Nano), x.Actor, x.ActorKind, strconv.FormatUint(x.Version, 10), x.Channel, x.Reason,
						strconv.FormatUint(x.Position, 10)}
				}
				return writeCSV(w, []string{"recorded_at", "actor", "actor_kind", "version", "channel", "reason", "position"}, rows)
			}
			since := "the start of the log"
			if out.From != nil {
				since = stamp(*out.From)
			}
			fmt.Fprintf(w, "Reads of %s %s from %s to %s: %d\n", env, args[0], since, stamp(out.To), len(out.Items))
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tACTOR\tKIND\tVERSION\tCHANNEL\tREASON\tPOSITION")
			for _, x := range out.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\n", stamp(x.RecordedAt), x.Actor, x.ActorKind, x.Version, x.Channel, firstOf(x.Reason, "-"), x.Position)
			}
			return tw.Flush()
		})
	cmd.PreRunE = func(*cobra.Command, []string) (err error) {
		if format, err = checkFormat(format, cf.asJSON); err != nil {
			return err
		}
		q, err = window(from, to)
		return err
	}
	cf.registerJSON(cmd)
	fs := cmd.Flags()
	fs.StringVar(&from, "from", "", "from this time (RFC 3339, a date, or a duration ago such as 2160h; default the start of the log)")
	fs.StringVar(&to, "to", "", "until this time (same forms; default now)")
	fs.StringVarP(&format, "format", "f", "table", "table, csv or json")
	cmd.Long = `List every read of a secret's value recorded in [--from, --to), oldest
first: who (a person or a token), which version, through which channel,
the reason given, and where the read is in the ledger. Needs the admin
role in the organization or project.`
	cmd.Example = `  stele audit who-read DB_URL --env production --from 2026-01-01 --to 2026-04-01
  stele audit who-read DB_URL --env production --from 2160h --format csv > reads.csv`
	return cmd
}

func newAuditReportCmd() *cobra.Command {
	var cf clientFlags
	var from, to, format string
	var days int
	var q url.Values
	cmd := apiCommand(&cf, "report NAME", "A compliance report: "+strings.Join(reportNames, ", "), cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, args []string) error {
			org, err := s.org()
			if err != nil {
				return err
			}
			path := "/v1/orgs/" + org + "/reports/" + args[0]
			call := cli.Call{Method: http.MethodGet}
			if format == "csv" {
				q.Set("format", "csv")
				call.Header = http.Header{"Accept": {"*/*"}}
			}
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			call.Path = path
			resp, err := s.call(c.Context(), call, nil)
			if err != nil {
				return err
			}
			w := c.OutOrStdout()
			if resp.Header.Get("X-Stele-Truncated") == "true" {
				fmt.Fprintln(c.ErrOrStderr(), "stele: note: the report was cut at its limit of rows")
			}
			switch format {
			case "csv":
				_, err := w.Write(resp.Body)
				return err
			case "json":
				return printRaw(w, resp.Body)
			}
			return printComplianceReport(w, resp.Body)
		})
	cmd.PreRunE = func(_ *cobra.Command, args []string) (err error) {
		if len(args) == 1 && !slices.Contains(reportNames, args[0]) {
			return usageError{fmt.Errorf("no report %q: want %s", args[0], strings.Join(reportNames, ", "))}
		}
		if format, err = checkFormat(format, cf.asJSON); err != nil {
			return err
		}
		if q, err = window(from, to); err != nil {
			return err
		}
		if len(args) == 1 && len(q) > 0 && args[0] != "production-reads" && args[0] != "approvals" {
			return usageError{fmt.Errorf("--from and --to: the %s report covers no period (production-reads and approvals do)", args[0])}
		}
		switch {
		case days < 0:
			return usageError{errors.New("--days: want a number of days, 0 or more")}
		case days > 0 && len(args) == 1 && args[0] != "stale-secrets":
			return usageError{errors.New("--days: only stale-secrets takes it")}
		case days > 0:
			q.Set("days", strconv.Itoa(days))
		}
		return nil
	}
	cf.registerOrg(cmd)
	cf.registerJSON(cmd)
	fs := cmd.Flags()
	fs.StringVarP(&format, "format", "f", "table", "table, csv or json")
	fs.StringVar(&from, "from", "", "production-reads, approvals: from this time (RFC 3339, a date, or a duration ago such as 2160h)")
	fs.StringVar(&to, "to", "", "production-reads, approvals: until this time (default now)")
	fs.IntVar(&days, "days", 0, "stale-secrets: also list secrets without a rotation interval whose value is older than this many days")
	cmd.Long = `Print a compliance report of the organization, from its read models:

  stale-secrets      secrets whose value is older than their rotation
                     interval (or, with --days, than N days when they
                     have none), with the days overdue
  production-reads   reads of production values by people (not tokens)
                     in [--from, --to): who, which secret, when, the
                     channel and the reason
  old-keys           data keys, not destroyed, older than their
                     environment's rotation interval
  approvals          approval requests people approved in [--from, --to):
                     for whom, by whom, which keys, when
  production-tokens  live service tokens that may reveal production
                     values: scope, role, expiry

As a table, as CSV (the server's export, with a header row) or as JSON.
Needs the admin role in the organization.`
	cmd.Example = `  stele audit report stale-secrets --days 90
  stele audit report production-reads --from 2026-01-01 --to 2026-04-01 --format csv > q1-reads.csv
  stele audit report production-tokens --json`
	return cmd
}

// printComplianceReport prints a report's JSON answer as a table of its columns.
func printComplianceReport(w io.Writer, body []byte) error {
	var rep struct {
		Report      string           `json:"report"`
		Org         string           `json:"org"`
		GeneratedAt time.Time        `json:"generated_at"`
		From        *time.Time       `json:"from"`
		To          *time.Time       `json:"to"`
		Days        int              `json:"days"`
		Columns     []string         `json:"columns"`
		Items       []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return err
	}
	title := fmt.Sprintf("Report %s of %s, %s", rep.Report, rep.Org, stamp(rep.GeneratedAt))
	if rep.To != nil {
		since := "the start of the log"
		if rep.From != nil {
			since = stamp(*rep.From)
		}
		title += fmt.Sprintf(", for %s to %s", since, stamp(*rep.To))
	}
	if rep.Days > 0 {
		title += fmt.Sprintf(", %s for secrets without a rotation interval", fmt.Sprint(rep.Days, " ", plural(rep.Days, "day", "days")))
	}
	fmt.Fprintf(w, "%s: %d %s\n", title, len(rep.Items), plural(len(rep.Items), "row", "rows"))
	if len(rep.Items) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := make([]string, len(rep.Columns))
	for i, c := range rep.Columns {
		head[i] = strings.ToUpper(strings.ReplaceAll(c, "_", " "))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, it := range rep.Items {
		cells := make([]string, len(rep.Columns))
		for i, c := range rep.Columns {
			cells[i] = reportCell(it[c])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// reportCell writes a report's value for a table: times local to the
// second, lists with commas, nothing as -.
func reportCell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return stamp(t)
		}
		return strings.Join(strings.Fields(x), " ")
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case []any:
		if len(x) == 0 {
			return "-"
		}
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = reportCell(e)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}
