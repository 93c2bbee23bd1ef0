package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/cli"
	"stele.dev/stele/domain"
)

// apiCommand builds a client command that needs a credential.
func apiCommand(cf *clientFlags, use, short string, args cobra.PositionalArgs, run func(c *cobra.Command, s *session, args []string) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(c *cobra.Command, args []string) error {
			s, err := cf.connect(c)
			if err != nil {
				return err
			}
			if err := s.needAuth(); err != nil {
				return err
			}
			return run(c, s, args)
		},
	}
	cf.register(cmd)
	return cmd
}

// table prints rows under a header, or the raw JSON answer with --json.
func table(w io.Writer, cf *clientFlags, resp *cli.Response, header string, rows func(tw io.Writer) error) error {
	if cf.asJSON {
		return printRaw(w, resp.Body)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	if err := rows(tw); err != nil {
		return err
	}
	return tw.Flush()
}

// written prints what a write did, or its answer with --json.
func written(w io.Writer, cf *clientFlags, resp *cli.Response, format string, args ...any) error {
	if cf.asJSON {
		if len(resp.Body) == 0 {
			return printJSON(w, map[string]any{"position": resp.Position()})
		}
		return printRaw(w, resp.Body)
	}
	_, err := fmt.Fprintf(w, format+"\n", args...)
	return err
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

func newProjectsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "projects", Aliases: []string{"project"}, Short: "List and create an organization's projects"}
	var lf clientFlags
	list := apiCommand(&lf, "list", "List the organization's projects", cobra.NoArgs, func(c *cobra.Command, s *session, _ []string) error {
		org, err := s.org()
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: "/v1/orgs/" + org + "/projects"}, nil)
		if err != nil {
			return err
		}
		var page struct {
			Items []struct {
				ID, Name, CreatedBy string
				CreatedAt           time.Time `json:"created_at"`
			} `json:"items"`
		}
		return table(c.OutOrStdout(), &lf, resp, "PROJECT\tNAME\tCREATED", func(tw io.Writer) error {
			if err := resp.Decode(&page); err != nil {
				return err
			}
			for _, p := range page.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", p.ID, p.Name, when(p.CreatedAt))
			}
			return nil
		})
	})
	lf.registerOrg(list)
	lf.registerJSON(list)
	var cf clientFlags
	var name string
	create := apiCommand(&cf, "create ID", "Create a project", cobra.ExactArgs(1), func(c *cobra.Command, s *session, args []string) error {
		org, err := s.org()
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: "/v1/orgs/" + org + "/projects", JSON: map[string]any{"id": args[0], "name": firstOf(name, args[0])}}, nil)
		if err != nil {
			return err
		}
		return written(c.OutOrStdout(), &cf, resp, "Created project %s/%s.", org, args[0])
	})
	cf.registerOrg(create)
	cf.registerJSON(create)
	create.Flags().StringVar(&name, "name", "", "a display name (default the id)")
	cmd.AddCommand(list, create)
	return cmd
}

func newEnvsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "envs", Aliases: []string{"env", "environments"}, Short: "List and create a project's environments"}
	var lf clientFlags
	list := apiCommand(&lf, "list", "List the project's environments", cobra.NoArgs, func(c *cobra.Command, s *session, _ []string) error {
		org, project, err := s.project()
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: "/v1/orgs/" + org + "/projects/" + project + "/envs"}, nil)
		if err != nil {
			return err
		}
		var page struct {
			Items []envView `json:"items"`
		}
		return table(c.OutOrStdout(), &lf, resp, "ENVIRONMENT\tNAME\tPRODUCTION\tAPPROVALS\tKEY ROTATION", func(tw io.Writer) error {
			if err := resp.Decode(&page); err != nil {
				return err
			}
			for _, e := range page.Items {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", e.ID, e.Name, e.Production, e.approvals(), e.rotation())
			}
			return nil
		})
	})
	lf.registerProject(list)
	lf.registerJSON(list)
	var cf clientFlags
	var name string
	var production bool
	create := apiCommand(&cf, "create ID", "Create an environment (its keyset is created with it)", cobra.ExactArgs(1), func(c *cobra.Command, s *session, args []string) error {
		org, project, err := s.project()
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: "/v1/orgs/" + org + "/projects/" + project + "/envs",
			JSON: map[string]any{"id": args[0], "name": firstOf(name, args[0]), "production": production}}, nil)
		if err != nil {
			return err
		}
		return written(c.OutOrStdout(), &cf, resp, "Created environment %s/%s/%s.", org, project, args[0])
	})
	cf.registerProject(create)
	cf.registerJSON(create)
	create.Flags().StringVar(&name, "name", "", "a display name (default the id)")
	create.Flags().BoolVar(&production, "production", false, "mark it as production (policies and reports single it out)")
	cmd.AddCommand(list, create)
	return cmd
}

func newBundlesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bundles", Aliases: []string{"bundle"}, Short: "List, set and delete a project's bundles (named sets of keys)"}
	bundlesPath := func(s *session) (string, error) {
		org, project, err := s.project()
		if err != nil {
			return "", err
		}
		return "/v1/orgs/" + org + "/projects/" + project + "/bundles", nil
	}
	type bundle struct {
		ID   string `json:"id"`
		Keys []struct {
			Name     string `json:"name"`
			Required bool   `json:"required"`
		} `json:"keys"`
		UpdatedAt time.Time `json:"updated_at"`
		UpdatedBy string    `json:"updated_by"`
	}
	keysOf := func(b bundle) string {
		var ks []string
		for _, k := range b.Keys {
			if k.Required {
				ks = append(ks, k.Name+"!")
			} else {
				ks = append(ks, k.Name)
			}
		}
		return strings.Join(ks, ",")
	}
	var lf clientFlags
	list := apiCommand(&lf, "list", "List the project's bundles (a required key ends with !)", cobra.NoArgs, func(c *cobra.Command, s *session, _ []string) error {
		p, err := bundlesPath(s)
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: p}, nil)
		if err != nil {
			return err
		}
		var page struct {
			Items []bundle `json:"items"`
		}
		return table(c.OutOrStdout(), &lf, resp, "BUNDLE\tKEYS\tUPDATED\tBY", func(tw io.Writer) error {
			if err := resp.Decode(&page); err != nil {
				return err
			}
			for _, b := range page.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.ID, keysOf(b), when(b.UpdatedAt), b.UpdatedBy)
			}
			return nil
		})
	})
	lf.registerProject(list)
	lf.registerJSON(list)
	var sf clientFlags
	var keys []string
	set := apiCommand(&sf, "set ID --keys K1,K2!,…", "Create or replace a bundle (a key ending with ! is required)", cobra.ExactArgs(1), func(c *cobra.Command, s *session, args []string) error {
		p, err := bundlesPath(s)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return usageError{errors.New("name the bundle's keys: --keys K1,K2!,… (! marks a required key)")}
		}
		var ks []map[string]any
		for _, k := range keys {
			name, req := strings.CutSuffix(k, "!")
			if err := checkName(name); err != nil {
				return err
			}
			ks = append(ks, map[string]any{"name": name, "required": req})
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodPut, Path: p + "/" + url.PathEscape(args[0]), JSON: map[string]any{"keys": ks}}, nil)
		if cli.IsCode(err, "not_found") { // a new bundle
			resp, err = s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: p, JSON: map[string]any{"id": args[0], "keys": ks}}, nil)
		}
		if err != nil {
			return err
		}
		return written(c.OutOrStdout(), &sf, resp, "Bundle %s holds %s.", args[0], strings.Join(keys, ","))
	})
	sf.registerProject(set)
	sf.registerJSON(set)
	set.Flags().StringSliceVar(&keys, "keys", nil, "the keys, in order (comma-separated; a trailing ! marks a required key)")
	var df clientFlags
	del := apiCommand(&df, "delete ID", "Delete a bundle", cobra.ExactArgs(1), func(c *cobra.Command, s *session, args []string) error {
		p, err := bundlesPath(s)
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodDelete, Path: p + "/" + url.PathEscape(args[0])}, nil)
		if err != nil {
			return err
		}
		return written(c.OutOrStdout(), &df, resp, "Deleted bundle %s.", args[0])
	})
	df.registerProject(del)
	df.registerJSON(del)
	cmd.AddCommand(list, set, del)
	return cmd
}

func newMembersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "members", Aliases: []string{"member"}, Short: "List, grant and revoke roles in an organization or one of its projects"}
	var lf clientFlags
	list := apiCommand(&lf, "list", "List who holds which role", cobra.NoArgs, func(c *cobra.Command, s *session, _ []string) error {
		org, err := s.org()
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: "/v1/orgs/" + org + "/members"}, nil)
		if err != nil {
			return err
		}
		var page struct {
			Items []struct {
				User      string    `json:"user"`
				Project   string    `json:"project"`
				Role      string    `json:"role"`
				GrantedBy string    `json:"granted_by"`
				GrantedAt time.Time `json:"granted_at"`
			} `json:"items"`
		}
		return table(c.OutOrStdout(), &lf, resp, "USER\tPROJECT\tROLE\tGRANTED BY\tGRANTED", func(tw io.Writer) error {
			if err := resp.Decode(&page); err != nil {
				return err
			}
			for _, m := range page.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.User, firstOf(m.Project, "*"), m.Role, m.GrantedBy, when(m.GrantedAt))
			}
			return nil
		})
	})
	lf.registerOrg(list)
	lf.registerJSON(list)
	memberPath := func(s *session, project, user string) (string, error) {
		org, err := s.org()
		if err != nil {
			return "", err
		}
		if project != "" {
			return "/v1/orgs/" + org + "/projects/" + url.PathEscape(project) + "/members/" + url.PathEscape(user), nil
		}
		return "/v1/orgs/" + org + "/members/" + url.PathEscape(user), nil
	}
	var gf clientFlags
	var role string
	grant := apiCommand(&gf, "grant USER --role ROLE [--project P]", "Grant a person a role (owner, admin, developer, viewer) in the organization or one project", cobra.ExactArgs(1), func(c *cobra.Command, s *session, args []string) error {
		if _, err := domain.ParseRole(role); err != nil || role == "" {
			return usageError{fmt.Errorf("--role %q: want owner, admin, developer or viewer", role)}
		}
		p, err := memberPath(s, gf.project, args[0])
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodPut, Path: p, JSON: map[string]any{"role": role}}, nil)
		if err != nil {
			return err
		}
		return written(c.OutOrStdout(), &gf, resp, "%s is %s in %s.", args[0], role, firstOf(gf.project, "the organization"))
	})
	gf.registerOrg(grant)
	gf.registerJSON(grant)
	grant.Flags().StringVar(&gf.project, "project", "", "grant the role in this project only")
	grant.Flags().StringVar(&role, "role", "", "owner, admin, developer or viewer")
	var rf clientFlags
	revoke := apiCommand(&rf, "revoke USER [--project P]", "Revoke a person's role in the organization or one project", cobra.ExactArgs(1), func(c *cobra.Command, s *session, args []string) error {
		p, err := memberPath(s, rf.project, args[0])
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodDelete, Path: p}, nil)
		if err != nil {
			return err
		}
		return written(c.OutOrStdout(), &rf, resp, "Revoked the role of %s in %s.", args[0], firstOf(rf.project, "the organization"))
	})
	rf.registerOrg(revoke)
	rf.registerJSON(revoke)
	revoke.Flags().StringVar(&rf.project, "project", "", "revoke the role in this project only")
	cmd.AddCommand(list, grant, revoke)
	return cmd
}

func newTokensCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Aliases: []string{"token"}, Short: "List, issue and revoke service tokens for machines"}
	var lf clientFlags
	list := apiCommand(&lf, "list", "List the organization's service tokens (never their secrets)", cobra.NoArgs, func(c *cobra.Command, s *session, _ []string) error {
		org, err := s.org()
		if err != nil {
			return err
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: "/v1/orgs/" + org + "/tokens"}, nil)
		if err != nil {
			return err
		}
		var page struct {
			Items []struct {
				ID           string    `json:"id"`
				Name         string    `json:"name"`
				Role         string    `json:"role"`
				Project      string    `json:"project"`
				Environments []string  `json:"environments"`
				ExpiresAt    time.Time `json:"expires_at"`
				Status       string    `json:"status"`
			} `json:"items"`
		}
		return table(c.OutOrStdout(), &lf, resp, "ID\tNAME\tROLE\tSCOPE\tEXPIRES\tSTATUS", func(tw io.Writer) error {
			if err := resp.Decode(&page); err != nil {
				return err
			}
			for _, t := range page.Items {
				scope := org
				if t.Project != "" {
					scope += "/" + t.Project
				}
				if len(t.Environments) > 0 {
					scope += "/{" + strings.Join(t.Environments, ",") + "}"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, scope, when(t.ExpiresAt), t.Status)
			}
			return nil
		})
	})
	lf.registerOrg(list)
	lf.registerJSON(list)
	var cf clientFlags
	var role string
	var envs []string
	var ttl time.Duration
	create := apiCommand(&cf, "create NAME --role ROLE [--project P] [--envs E1,E2] [--ttl D]", "Issue a service token; its secret is printed once, on standard output", cobra.ExactArgs(1), func(c *cobra.Command, s *session, args []string) error {
		org, err := s.org()
		if err != nil {
			return err
		}
		body := map[string]any{"name": args[0], "role": role}
		if cf.project != "" {
			body["project"] = cf.project
		}
		if len(envs) > 0 {
			body["environments"] = envs
		}
		if ttl > 0 {
			body["ttl_seconds"] = int64(ttl / time.Second)
		}
		var out struct {
			ID        string    `json:"id"`
			Secret    string    `json:"secret"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: "/v1/orgs/" + org + "/tokens", JSON: body}, &out)
		if err != nil {
			return err
		}
		if cf.asJSON {
			return printRaw(c.OutOrStdout(), resp.Body)
		}
		fmt.Fprintf(c.ErrOrStderr(), "Issued token %s (%s) until %s. Its secret, shown only now:\n", out.ID, args[0], when(out.ExpiresAt))
		_, err = fmt.Fprintln(c.OutOrStdout(), out.Secret)
		return err
	})
	cf.registerOrg(create)
	cf.registerJSON(create)
	create.Flags().StringVar(&cf.project, "project", "", "limit the token to this project")
	create.Flags().StringSliceVar(&envs, "envs", nil, "limit the token to these environments of the project (comma-separated)")
	create.Flags().StringVar(&role, "role", "viewer", "the token's role: admin, developer or viewer")
	create.Flags().DurationVar(&ttl, "ttl", 0, "how long the token lives (default the server's)")
	var rf clientFlags
	var reason string
	revoke := apiCommand(&rf, "revoke ID", "Revoke a service token", cobra.ExactArgs(1), func(c *cobra.Command, s *session, args []string) error {
		org, err := s.org()
		if err != nil {
			return err
		}
		p := "/v1/orgs/" + org + "/tokens/" + url.PathEscape(args[0])
		if reason != "" {
			p += "?reason=" + url.QueryEscape(reason)
		}
		resp, err := s.call(c.Context(), cli.Call{Method: http.MethodDelete, Path: p}, nil)
		if err != nil {
			return err
		}
		return written(c.OutOrStdout(), &rf, resp, "Revoked token %s.", args[0])
	})
	rf.registerOrg(revoke)
	rf.registerJSON(revoke)
	revoke.Flags().StringVar(&reason, "reason", "", "why (recorded in the ledger)")
	cmd.AddCommand(list, create, revoke)
	return cmd
}

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the organization's audit trail (the ledger's events)"}
	var cf clientFlags
	var actor, action, secret, from, to, format string
	var limit int
	var all bool
	log := apiCommand(&cf, "log", "List events of the audit trail, newest first, with filters", cobra.NoArgs, func(c *cobra.Command, s *session, _ []string) error {
		org, err := s.org()
		if err != nil {
			return err
		}
		q := url.Values{}
		for k, v := range map[string]string{"actor": actor, "action": action, "secret": secret, "project": cf.project, "env": cf.env} {
			if v != "" {
				q.Set(k, v)
			}
		}
		for k, v := range map[string]string{"from": from, "to": to} {
			if v == "" {
				continue
			}
			t, err := parseWhen(v)
			if err != nil {
				return usageError{fmt.Errorf("--%s: %v", k, err)}
			}
			q.Set(k, t.UTC().Format(time.RFC3339Nano))
		}
		switch format {
		case "table", "json":
		case "csv", "jsonl":
			q.Set("format", format)
		default:
			return usageError{fmt.Errorf("--format %q: want table, json, csv or jsonl", format)}
		}
		if limit > 0 {
			q.Set("limit", fmt.Sprint(limit))
		}
		w := c.OutOrStdout()
		if format == "csv" || format == "jsonl" {
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: "/v1/orgs/" + org + "/audit?" + q.Encode(), Header: http.Header{"Accept": {"*/*"}}}, nil)
			if err != nil {
				return err
			}
			_, err = w.Write(resp.Body)
			return err
		}
		type entry struct {
			Position   uint64    `json:"position"`
			RecordedAt time.Time `json:"recorded_at"`
			Actor      string    `json:"actor"`
			Action     string    `json:"action"`
			Target     string    `json:"target"`
			Channel    string    `json:"channel"`
			Reason     string    `json:"reason"`
		}
		var items []entry
		var raw []any
		for {
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodGet, Path: "/v1/orgs/" + org + "/audit?" + q.Encode()}, nil)
			if err != nil {
				return err
			}
			var page struct {
				Items      []entry `json:"items"`
				NextCursor string  `json:"next_cursor"`
			}
			var rawPage struct {
				Items []any `json:"items"`
			}
			if err := resp.Decode(&page); err != nil {
				return err
			}
			resp.Decode(&rawPage)
			items, raw = append(items, page.Items...), append(raw, rawPage.Items...)
			if !all || page.NextCursor == "" {
				break
			}
			q.Set("cursor", page.NextCursor)
		}
		if format == "json" || cf.asJSON {
			return printJSON(w, map[string]any{"items": raw})
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "POSITION\tTIME\tACTOR\tACTION\tTARGET\tDETAIL")
		for _, e := range items {
			detail := e.Channel
			if e.Reason != "" {
				detail = strings.TrimSpace(detail + " " + fmt.Sprintf("%q", e.Reason))
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Position, e.RecordedAt.Local().Format("2006-01-02 15:04:05"), e.Actor, e.Action, e.Target, detail)
		}
		return tw.Flush()
	})
	cf.registerOrg(log)
	cf.registerJSON(log)
	fs := log.Flags()
	fs.StringVar(&cf.project, "project", "", "only this project")
	fs.StringVarP(&cf.env, "env", "e", "", "only this environment")
	fs.StringVar(&actor, "actor", "", "only this actor (user:ada@example.com, token:<id>)")
	fs.StringVar(&action, "action", "", "only this event type (secret.viewed), category (secret) or prefix (secret.*)")
	fs.StringVar(&secret, "secret", "", "only events of this secret")
	fs.StringVar(&from, "from", "", "from this time (RFC 3339, a date, or a duration ago such as 24h)")
	fs.StringVar(&to, "to", "", "until this time (same forms as --from)")
	fs.StringVarP(&format, "format", "f", "table", "table, json, csv or jsonl")
	fs.IntVar(&limit, "limit", 0, "events per page (default the server's)")
	fs.BoolVar(&all, "all", false, "follow every page, not just the first")
	log.Example = `  stele audit log --action secret.viewed --env production --from 720h
  stele audit log --secret DB_URL --format csv --all > reads.csv`
	cmd.AddCommand(log)
	cmd.AddCommand(auditEvidenceCmds()...)
	cmd.AddCommand(auditHistoryCmds()...)
	return cmd
}

// parseWhen reads a time: RFC 3339, a date (YYYY-MM-DD, local midnight),
// or a duration before now ("24h", "90m").
func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time, a date (2006-01-02) or a duration ago (24h)", s)
}

func newImportCmd() *cobra.Command {
	var cf clientFlags
	var format string
	var dryRun, skip bool
	cmd := envCommand(&cf, "import FILE", "Import secrets from a dotenv, JSON or YAML file (- for standard input)", cobra.ExactArgs(1),
		func(c *cobra.Command, s *session, env cli.Env, args []string) error {
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(io.LimitReader(c.InOrStdin(), 2<<20))
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			f := format
			if f == "" {
				switch strings.ToLower(filepath.Ext(args[0])) {
				case ".json":
					f = "json"
				case ".yaml", ".yml":
					f = "yaml"
				default:
					f = "dotenv"
				}
			}
			ct := map[string]string{"dotenv": "text/plain; charset=utf-8", "json": "application/json", "yaml": "application/yaml"}[f]
			if ct == "" {
				return usageError{fmt.Errorf("--format %q: want dotenv, json or yaml", f)}
			}
			q := url.Values{}
			if dryRun {
				q.Set("dry_run", "true")
			}
			if skip {
				q.Set("existing", "skip")
			}
			p := env.Path() + "/import"
			if len(q) > 0 {
				p += "?" + q.Encode()
			}
			resp, err := s.call(c.Context(), cli.Call{Method: http.MethodPost, Path: p, Body: data, ContentType: ct}, nil)
			clear(data)
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printRaw(c.OutOrStdout(), resp.Body)
			}
			var out struct {
				DryRun bool `json:"dry_run"`
				Items  []struct {
					Name    string `json:"name"`
					Line    int    `json:"line"`
					Action  string `json:"action"`
					Version uint64 `json:"version"`
				} `json:"items"`
			}
			if err := resp.Decode(&out); err != nil {
				return err
			}
			w := c.OutOrStdout()
			counts := map[string]int{}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tLINE\tACTION\tVERSION")
			for _, it := range out.Items {
				counts[it.Action]++
				v := "-"
				if it.Version > 0 {
					v = fmt.Sprint(it.Version)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", it.Name, it.Line, it.Action, v)
			}
			tw.Flush()
			var parts []string
			for _, a := range []string{"created", "updated", "unchanged", "skipped"} {
				if counts[a] > 0 {
					parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
				}
			}
			if out.DryRun {
				fmt.Fprintf(w, "Dry run: nothing was written. Would be %s in %s.\n", strings.Join(parts, ", "), env)
			} else {
				fmt.Fprintf(w, "Imported into %s: %s.\n", env, strings.Join(parts, ", "))
			}
			return nil
		})
	cf.registerJSON(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "", "dotenv, json or yaml (default by the file's extension; dotenv otherwise)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would change, and change nothing")
	cmd.Flags().BoolVar(&skip, "skip-existing", false, "leave secrets that exist as they are (default: a new version)")
	cmd.Long = `Import secrets from a dotenv, JSON or YAML file into an environment.
Every value is taken literally: $VAR, ${VAR} and $(…) are never expanded.
Dotenv files may use export prefixes, comments, and quoted values that span
lines. The server checks the whole file before writing anything: a file
with one bad line imports nothing. --dry-run shows what would change.`
	cmd.Example = `  stele import .env --dry-run
  stele import secrets.json --env staging --skip-existing`
	return cmd
}
