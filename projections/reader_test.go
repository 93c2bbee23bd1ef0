package projections_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/projections"
)

// otherOrg writes a second organization whose names (project, environment,
// secrets, members) overlap acme's: none of it may show in acme's reads.
func otherOrg(t *testing.T, e *env) {
	t.Helper()
	olga := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "olga"}, RequestID: "o1"}
	env := app.Env{Org: "other", Project: "web", Env: "production"}
	ok(e.svc.CreateOrganization(ctx, olga, "other", "Other"))
	ok(e.svc.GrantRole(ctx, olga, "other", "bob", domain.RoleAdmin, ""))
	ok(e.svc.CreateProject(ctx, olga, "other", "web", "Other web"))
	ok(e.svc.CreateEnvironment(ctx, olga, env, app.EnvSpec{}))
	ok(e.svc.CreateBundle(ctx, olga, "other", "web", "backend", []domain.BundleKey{{Name: "X"}}))
	for _, name := range []string{"S1", "X"} {
		ref := domain.SecretRef{Org: "other", Project: "web", Env: "production", Name: name}
		ok(e.svc.SetSecret(ctx, olga, ref, app.SetSecret{Value: []byte("other"), Metadata: domain.SecretMetadata{RotationSeconds: 3600}}))
		ok(e.svc.RevealSecret(ctx, olga, ref, 0, "other", domain.ChannelCLI))
	}
	ok3(e.svc.IssueToken(ctx, olga, "other", app.TokenSpec{Name: "ci", Role: domain.RoleViewer, TTL: time.Hour}))
	ok3(e.svc.RequestApproval(ctx, bob, app.ApprovalSpec{Kind: domain.ApprovalSecrets, Org: "other", Project: "web", Env: "production",
		Keys: []string{"X"}, PublicKey: make([]byte, 32)}))
}

func TestReaders(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	otherOrg(t, e)
	scenario(t, e, 5, 3)
	e.caughtUp(t)
	r := projections.NewReader(e.pool)
	now := time.Now()

	t.Run("directory", func(t *testing.T) {
		o := ok(r.Organization(ctx, "acme"))
		if o.ID != "acme" || o.Name != "Acme Inc" || o.Owner != "ada" || o.CreatedBy != "user:ada" || !o.UpdatedAt.After(o.CreatedAt) {
			t.Fatalf("organization %+v", o)
		}
		if _, err := r.Organization(ctx, "nope"); !errors.Is(err, projections.ErrNotFound) {
			t.Fatalf("missing organization: %v", err)
		}
		ps := ok(r.Projects(ctx, "acme"))
		if len(ps) != 1 || ps[0].ID != "web" || ps[0].Name != "Web" || ps[0].Org != "acme" {
			t.Fatalf("projects %+v", ps)
		}
		envs := ok(r.Environments(ctx, "acme", "web"))
		if len(envs) != 2 || envs[0].ID != "production" || !envs[0].Production || envs[0].RotationSeconds != 86400 ||
			envs[1].ID != "staging" || envs[1].Name != "Staging" || envs[1].Production || envs[1].RotationSeconds != 7200 {
			t.Fatalf("environments %+v", envs)
		}
		bs := ok(r.Bundles(ctx, "acme", "web"))
		want := []domain.BundleKey{{Name: "S1", Required: true}, {Name: "S0"}, {Name: "S2"}}
		if len(bs) != 1 || bs[0].ID != "backend" || !slices.Equal(bs[0].Keys, want) || bs[0].Org != "acme" {
			t.Fatalf("bundles %+v", bs)
		}
		if o := ok(r.Bundles(ctx, "other", "web")); len(o) != 1 || len(o[0].Keys) != 1 || o[0].Keys[0].Name != "X" {
			t.Fatalf("other's bundles %+v", o)
		}
	})

	t.Run("secrets", func(t *testing.T) {
		ss := ok(r.Secrets(ctx, "acme", "web", "production"))
		if len(ss) != 5 {
			t.Fatalf("%d secrets", len(ss))
		}
		for i, s := range ss {
			if s.Org != "acme" || s.Name != "S"+string(rune('0'+i)) || s.Destroyed || s.CreatedBy != "user:bob" {
				t.Fatalf("secret %d: %+v", i, s)
			}
		}
		s0, s1 := ss[0], ss[1]
		if s1.Version != 4 || !s1.Deleted || strings.Join(s1.Tags, ",") != "a,b" {
			t.Fatalf("S1 %+v", s1)
		}
		if s0.Version != 3 || s0.Deleted || s0.RotationSeconds != 3600 || s0.Owner != "bob" {
			t.Fatalf("S0 %+v", s0)
		}
		vs := ok(r.SecretVersions(ctx, "acme", "web", "production", "S1"))
		if len(vs) != 4 || !vs[0].Destroyed || vs[3].From != 1 || vs[3].Version != 4 || vs[1].Destroyed {
			t.Fatalf("S1 versions %+v", vs)
		}
		if o := ok(r.SecretVersions(ctx, "other", "web", "production", "S1")); len(o) != 1 {
			t.Fatalf("other's S1 versions %+v", o)
		}
		// No value, sealed or not, in what readers return.
		for _, v := range []any{ss[0], vs[0]} {
			b, _ := json.Marshal(v)
			typ := reflect.TypeOf(v)
			for i := range typ.NumField() {
				if typ.Field(i).Type == reflect.TypeFor[[]byte]() {
					t.Fatalf("%s.%s is bytes", typ.Name(), typ.Field(i).Name)
				}
			}
			if strings.Contains(string(b), "cipher") || strings.Contains(string(b), "value-") {
				t.Fatalf("%s", b)
			}
		}
		names := func(s []projections.SecretInfo) string {
			var out []string
			for _, x := range s {
				if x.Org != "acme" {
					t.Fatalf("another organization's secret: %+v", x)
				}
				out = append(out, x.Name)
			}
			return strings.Join(out, ",")
		}
		if got := names(ok(r.SecretsNotRotated(ctx, "acme", 0, now))); got != "" {
			t.Fatalf("not rotated now: %s", got)
		}
		if got := names(ok(r.SecretsNotRotated(ctx, "acme", 0, now.Add(2*time.Hour)))); got != "S0" {
			t.Fatalf("not rotated in 2h, by policy: %s", got)
		}
		if got := names(ok(r.SecretsNotRotated(ctx, "acme", 3*time.Hour, now.Add(2*time.Hour)))); got != "S0" {
			t.Fatalf("not rotated in 2h, by policy or 3h: %s", got)
		}
		if got := names(ok(r.SecretsNotRotated(ctx, "acme", time.Hour, now.Add(2*time.Hour)))); got != "S0,S2,S3,S4" {
			t.Fatalf("not rotated in 2h, by policy or 1h: %s", got)
		}
	})

	t.Run("access control", func(t *testing.T) {
		var got []string
		for _, m := range ok(r.Members(ctx, "acme")) {
			if m.Org != "acme" {
				t.Fatalf("member %+v", m)
			}
			got = append(got, m.UserID+"@"+m.Project+"="+m.Role+" by "+m.GrantedBy)
		}
		want := []string{"ada@=owner by user:ada", "bob@=developer by user:ada", "carol@web=viewer by user:ada", "erin@web=developer by user:ada"}
		if !slices.Equal(got, want) {
			t.Fatalf("members %q", got)
		}
		if o := ok(r.Members(ctx, "other")); len(o) != 2 || o[0].UserID != "bob" || o[0].Role != "admin" || o[1].UserID != "olga" {
			t.Fatalf("other's members %+v", o)
		}
		ts := ok(r.Tokens(ctx, "acme"))
		if len(ts) != 2 {
			t.Fatalf("tokens %+v", ts)
		}
		ci, deploy := ts[0], ts[1]
		if ci.Name != "ci" || ci.RevokedAt != nil || ci.Role != "developer" || ci.Project != "web" || len(ci.Environments) != 0 || ci.IssuedBy != "user:ada" {
			t.Fatalf("ci %+v", ci)
		}
		if deploy.Name != "deploy" || deploy.RevokedAt == nil || deploy.RevokedBy != "user:ada" || deploy.RevokeReason != "leaked" ||
			!slices.Equal(deploy.Environments, []string{"staging"}) || !deploy.ExpiresAt.After(now.Add(23*time.Hour)) {
			t.Fatalf("deploy %+v", deploy)
		}
		if o := ok(r.Tokens(ctx, "other")); len(o) != 1 || o[0].Org != "other" {
			t.Fatalf("other's tokens %+v", o)
		}
	})

	t.Run("keys", func(t *testing.T) {
		ks := ok(r.Keysets(ctx, "acme"))
		if len(ks) != 2 || ks[0].Env != "production" || ks[1].Env != "staging" {
			t.Fatalf("keysets %+v", ks)
		}
		p, s := ks[0], ks[1]
		if p.Rotations != 1 || p.LastRotation == nil || !p.ResealComplete || p.ResealedKey != p.PrimaryKey || p.Sealed != 5 || p.Values != 5 ||
			p.MaterialVersion != 3 || len(p.Keys) != 2 {
			t.Fatalf("production %+v", p)
		}
		if old, cur := p.Keys[0], p.Keys[1]; old.Primary || old.State != "disabled" || !cur.Primary || cur.State != "enabled" || cur.ID != p.PrimaryKey ||
			!cur.AddedAt.Equal(p.PrimarySince) {
			t.Fatalf("production keys %+v", p.Keys)
		}
		if s.Rotations != 0 || s.LastRotation != nil || !s.ResealComplete || s.Values != 0 || len(s.Keys) != 1 || !s.Keys[0].Primary {
			t.Fatalf("staging %+v", s)
		}
		if o := ok(r.Keysets(ctx, "other")); len(o) != 1 || o[0].Org != "other" || o[0].Values != 2 {
			t.Fatalf("other's keysets %+v", o)
		}
		// A rotation leaves every value under an older key until resealed.
		ok(e.svc.RotateKeyset(ctx, ada, prod, "test"))
		e.caughtUp(t)
		p = ok(r.Keysets(ctx, "acme"))[0]
		if p.ResealComplete || p.Sealed != 0 || p.Values != 5 || p.Rotations != 2 || len(p.Keys) != 3 {
			t.Fatalf("production after a rotation %+v", p)
		}
		if sealed, values := ok3(r.ResealProgress(ctx, "acme", "web", "production")); sealed != 0 || values != 5 {
			t.Fatalf("reseal progress %d/%d", sealed, values)
		}
		if _, _, err := r.ResealProgress(ctx, "acme", "web", "nope"); !errors.Is(err, projections.ErrNotFound) {
			t.Fatalf("no keyset: %v", err)
		}
	})

	t.Run("approvals", func(t *testing.T) {
		as := ok(r.Approvals(ctx, "acme", "", now))
		byStatus := map[string][]projections.ApprovalInfo{}
		for _, a := range as {
			if a.Org != "acme" || a.Kind != "secrets" || a.Requester != "user:bob" {
				t.Fatalf("approval %+v", a)
			}
			byStatus[a.Status] = append(byStatus[a.Status], a)
		}
		if len(as) != 5 || len(byStatus) != 5 {
			t.Fatalf("approvals by status %v", byStatus)
		}
		two := byStatus["approved"][0]
		if !slices.Equal(two.ApprovedBy, []string{"user:ada", "user:erin"}) || !slices.Equal(two.GrantedKeys, []string{"S1"}) ||
			two.DecidedBy != "user:erin" || two.DecidedAt == nil || two.ApprovalsRequired != 2 || two.Bundle != "backend" || len(two.Keys) != 3 {
			t.Fatalf("approved %+v", two)
		}
		if d := byStatus["delivered"][0]; d.DeliveredAt == nil || len(d.DeliveredKeys) != 0 || d.DeliveredKeys == nil {
			t.Fatalf("delivered %+v", d)
		}
		if d := byStatus["denied"][0]; d.DenyReason != "not today" || d.DecidedBy != "user:ada" || d.DecidedAt == nil {
			t.Fatalf("denied %+v", d)
		}
		if p := byStatus["pending"][0]; len(p.ApprovedBy) != 0 || p.DecidedAt != nil || p.UserCode == "" || p.Keys[0].Name != "S3" {
			t.Fatalf("pending %+v", p)
		}
		if x := byStatus["expired"][0]; x.Keys[0].Name != "S4" || x.DecidedAt != nil {
			t.Fatalf("expired %+v", x)
		}
		// Past their deadline, pending and approved requests read expired.
		later := now.Add(time.Hour)
		if x := ok(r.Approvals(ctx, "acme", "expired", later)); len(x) != 3 {
			t.Fatalf("expired in an hour: %+v", x)
		}
		if x := ok(r.Approvals(ctx, "acme", "pending", now)); len(x) != 1 {
			t.Fatalf("pending: %+v", x)
		}
		a := ok(r.Approval(ctx, two.ID, now))
		if !reflect.DeepEqual(a, two) {
			t.Fatalf("by id:\n%+v\n%+v", a, two)
		}
		if a := ok(r.Approval(ctx, two.ID, later)); a.Status != "expired" {
			t.Fatalf("in an hour: %s", a.Status)
		}
		if _, err := r.Approval(ctx, "nope", now); !errors.Is(err, projections.ErrNotFound) {
			t.Fatalf("missing approval: %v", err)
		}
		if o := ok(r.Approvals(ctx, "other", "", now)); len(o) != 1 || o[0].Org != "other" || o[0].Status != "pending" {
			t.Fatalf("other's approvals %+v", o)
		}
		// The sign-in request is in the table, listed under no organization.
		var login int
		e.pool.QueryRow(ctx, `SELECT count(*) FROM proj_approvals WHERE kind = 'login' AND org = ''`).Scan(&login)
		if login != 1 {
			t.Fatalf("%d sign-in requests", login)
		}
	})

	t.Run("audit", func(t *testing.T) {
		rows, _ := e.pool.Query(ctx, `SELECT position FROM proj_audit WHERE org = 'acme' ORDER BY position DESC`)
		acme := ok(pgx.CollectRows(rows, pgx.RowTo[int64]))
		all := auditPages(t, r, projections.AuditFilter{}, 7)
		if len(all) != len(acme) {
			t.Fatalf("%d rows through the feed, %d in the table", len(all), len(acme))
		}
		for i, a := range all {
			if int64(a.Position) != acme[i] {
				t.Fatalf("row %d: position %d, want %d", i, a.Position, acme[i])
			}
		}
		mid := all[len(all)/2].RecordedAt
		for _, f := range []projections.AuditFilter{
			{Actor: "user:bob"},
			{ActorKind: "system"},
			{Action: "secret.viewed"},
			{Action: "secret."},
			{Action: "secret"},
			{Action: "keyset.*"},
			{Secret: "S1"},
			{Env: "staging"},
			{Project: "web", Action: "bundle"},
			{From: mid},
			{To: mid},
			{Actor: "user:bob", Secret: "S0", From: all[len(all)-1].RecordedAt, To: all[0].RecordedAt.Add(time.Second)},
		} {
			want := filterAudit(all, f)
			if len(want) == 0 {
				t.Fatalf("%+v matches nothing", f)
			}
			for _, size := range []int{3, 1000} {
				got := auditPages(t, r, f, size)
				if !slices.Equal(got, want) {
					t.Fatalf("filter %+v, pages of %d: got %d rows, want %d", f, size, len(got), len(want))
				}
			}
		}
		if n := len(filterAudit(all, projections.AuditFilter{Action: "secret.viewed"})); n != 6 {
			t.Fatalf("%d reads in the feed", n)
		}
		// Another organization's events never show.
		for _, a := range auditPages(t, r, projections.AuditFilter{Secret: "X"}, 1000) {
			t.Fatalf("other's secret in acme's feed: %+v", a)
		}
		rows, _ = e.pool.Query(ctx, `SELECT position FROM proj_audit WHERE org = 'other'`)
		otherPos := ok(pgx.CollectRows(rows, pgx.RowTo[int64]))
		if len(otherPos) == 0 {
			t.Fatal("no events of the other organization")
		}
		for _, a := range all {
			if slices.Contains(otherPos, int64(a.Position)) {
				t.Fatalf("position %d of other in acme's feed", a.Position)
			}
		}
		// Limits.
		page, next := ok3(r.AuditFeed(ctx, "acme", projections.AuditFilter{}, 0, 0))
		wantNext := uint64(0)
		if len(all) > projections.DefaultAuditPage {
			wantNext = all[projections.DefaultAuditPage-1].Position
		}
		if len(page) != min(len(all), projections.DefaultAuditPage) || next != wantNext {
			t.Fatalf("default page: %d rows, next %d", len(page), next)
		}
		page, next = ok3(r.AuditFeed(ctx, "acme", projections.AuditFilter{}, 0, 1_000_000))
		if len(page) != len(all) || next != 0 {
			t.Fatalf("large page: %d rows, next %d", len(page), next)
		}
	})

	t.Run("access", func(t *testing.T) {
		stats := ok(r.AccessStats(ctx, "acme", time.Time{}, time.Time{}))
		var sum int64
		for _, s := range stats {
			if s.Env != "production" || s.ActorKind != "user" {
				t.Fatalf("stat %+v", s)
			}
			sum += s.Reads
		}
		if sum != 6 || len(stats) != 2 {
			t.Fatalf("stats %+v", stats)
		}
		if s := ok(r.AccessStats(ctx, "acme", now.Add(-time.Minute), now.Add(time.Minute))); len(s) != 2 {
			t.Fatalf("stats today %+v", s)
		}
		if s := ok(r.AccessStats(ctx, "acme", now.Add(48*time.Hour), time.Time{})); len(s) != 0 {
			t.Fatalf("stats in two days %+v", s)
		}
		if s := ok(r.AccessStats(ctx, "acme", time.Time{}, now.Add(-48*time.Hour))); len(s) != 0 {
			t.Fatalf("stats two days ago %+v", s)
		}
		if s := ok(r.AccessStats(ctx, "other", time.Time{}, time.Time{})); len(s) != 2 || s[0].Reads != 1 {
			t.Fatalf("other's stats %+v", s)
		}
		reads := ok(r.Reads(ctx, "acme", "", "", "", time.Time{}, time.Time{}))
		if len(reads) != 6 {
			t.Fatalf("%d reads", len(reads))
		}
		for i, rd := range reads {
			if rd.Actor != "user:bob" || rd.Channel != "api" || rd.Reason != "test" || (rd.Name != "S0" && rd.Name != "S3") ||
				(i > 0 && rd.Position >= reads[i-1].Position) {
				t.Fatalf("read %d %+v", i, rd)
			}
		}
		if s0 := ok(r.Reads(ctx, "acme", "web", "production", "S0", time.Time{}, time.Time{})); len(s0) != 3 {
			t.Fatalf("reads of S0 %+v", s0)
		}
		if s1 := ok(r.Reads(ctx, "acme", "web", "production", "S1", time.Time{}, time.Time{})); len(s1) != 0 {
			t.Fatalf("reads of acme's S1 %+v", s1)
		}
		mid := reads[3].RecordedAt
		if got := ok(r.Reads(ctx, "acme", "", "", "", mid, time.Time{})); len(got) != 4 {
			t.Fatalf("reads from %s: %d", mid, len(got))
		}
		if got := ok(r.Reads(ctx, "acme", "", "", "", time.Time{}, mid)); len(got) != 2 {
			t.Fatalf("reads to %s: %d", mid, len(got))
		}
		if o := ok(r.Reads(ctx, "other", "", "", "", time.Time{}, time.Time{})); len(o) != 2 || o[0].Actor != "user:olga" {
			t.Fatalf("other's reads %+v", o)
		}
	})

	t.Run("an organization is required", func(t *testing.T) {
		for name, call := range map[string]func() error{
			"Organization":      func() error { _, err := r.Organization(ctx, ""); return err },
			"Projects":          func() error { _, err := r.Projects(ctx, ""); return err },
			"Environments":      func() error { _, err := r.Environments(ctx, "", ""); return err },
			"Bundles":           func() error { _, err := r.Bundles(ctx, "", ""); return err },
			"Secrets":           func() error { _, err := r.Secrets(ctx, "", "", ""); return err },
			"SecretVersions":    func() error { _, err := r.SecretVersions(ctx, "", "", "", ""); return err },
			"SecretsNotRotated": func() error { _, err := r.SecretsNotRotated(ctx, "", 0, now); return err },
			"Members":           func() error { _, err := r.Members(ctx, ""); return err },
			"Tokens":            func() error { _, err := r.Tokens(ctx, ""); return err },
			"Keysets":           func() error { _, err := r.Keysets(ctx, ""); return err },
			"ResealProgress":    func() error { _, _, err := r.ResealProgress(ctx, "", "", ""); return err },
			"Approvals":         func() error { _, err := r.Approvals(ctx, "", "", now); return err },
			"AuditFeed":         func() error { _, _, err := r.AuditFeed(ctx, "", projections.AuditFilter{}, 0, 10); return err },
			"AccessStats":       func() error { _, err := r.AccessStats(ctx, "", time.Time{}, time.Time{}); return err },
			"Reads":             func() error { _, err := r.Reads(ctx, "", "", "", "", time.Time{}, time.Time{}); return err },
		} {
			if call() == nil {
				t.Errorf("%s without an organization: no error", name)
			}
		}
	})
}

// auditPages reads acme's whole feed under f in pages of size, checking
// that pages are newest first and never repeat a row.
func auditPages(t *testing.T, r *projections.Reader, f projections.AuditFilter, size int) []projections.AuditRow {
	t.Helper()
	var out []projections.AuditRow
	var cursor uint64
	for range 10_000 {
		page, next, err := r.AuditFeed(ctx, "acme", f, cursor, size)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > size {
			t.Fatalf("page of %d rows, asked for %d", len(page), size)
		}
		for _, a := range page {
			if len(out) > 0 && a.Position >= out[len(out)-1].Position {
				t.Fatalf("position %d after %d", a.Position, out[len(out)-1].Position)
			}
			out = append(out, a)
		}
		if next == 0 {
			return out
		}
		if len(page) == 0 || next != page[len(page)-1].Position {
			t.Fatalf("next %d after a page of %d", next, len(page))
		}
		cursor = next
	}
	t.Fatal("the feed does not end")
	return nil
}

// filterAudit is AuditFeed's filter, in Go.
func filterAudit(rows []projections.AuditRow, f projections.AuditFilter) []projections.AuditRow {
	var out []projections.AuditRow
	for _, a := range rows {
		action := true
		switch {
		case f.Action == "":
		case strings.HasSuffix(f.Action, "*"):
			action = strings.HasPrefix(a.Action, strings.TrimSuffix(f.Action, "*"))
		case !strings.Contains(f.Action, "."):
			action = strings.HasPrefix(a.Action, f.Action+".")
		case strings.HasSuffix(f.Action, "."):
			action = strings.HasPrefix(a.Action, f.Action)
		default:
			action = a.Action == f.Action
		}
		if action && (f.Actor == "" || a.Actor == f.Actor) && (f.ActorKind == "" || a.ActorKind == f.ActorKind) &&
			(f.Secret == "" || (strings.HasPrefix(a.Stream, "secret/") && a.Target == f.Secret)) &&
			(f.Project == "" || a.Project == f.Project) && (f.Env == "" || a.Env == f.Env) &&
			(f.From.IsZero() || !a.RecordedAt.Before(f.From)) && (f.To.IsZero() || a.RecordedAt.Before(f.To)) {
			out = append(out, a)
		}
	}
	return out
}

// synthLog appends a varied history of orgs organizations straight to the
// store (no application layer, no cryptography) and returns its length.
func synthLog(tb testing.TB, e *env, orgs int) uint64 {
	tb.Helper()
	hash := strings.Repeat("ab", 32)
	var wg sync.WaitGroup
	errs := make(chan error, orgs)
	for i := range orgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			org := fmt.Sprintf("o%d", i)
			md := eventstore.Metadata{Actor: "user:ada", Tenant: org, RequestID: "bench"}
			put := func(stream string, evs []domain.Event) {
				for len(evs) > 0 {
					n := min(len(evs), eventstore.MaxAppendEvents)
					out := make([]eventstore.Event, n)
					for j, ev := range evs[:n] {
						data, err := domain.Encode(ev)
						if err != nil {
							errs <- err
							return
						}
						out[j] = eventstore.Event{ID: eventstore.NewID(), Type: ev.EventType(), Data: data, Metadata: md}
					}
					if _, err := e.store.Append(ctx, stream, eventstore.Any, out...); err != nil {
						errs <- err
						return
					}
					evs = evs[n:]
				}
			}
			now := time.Now().UTC()
			evs := []domain.Event{domain.OrganizationCreated{OrgID: org, Name: org, Owner: "ada"}, domain.RoleGranted{UserID: "ada", Role: domain.RoleOwner}}
			for u := range 50 {
				user := fmt.Sprintf("u%d", u)
				evs = append(evs, domain.RoleGranted{UserID: user, Role: domain.RoleDeveloper, Project: "p0"})
				if u%5 == 0 {
					evs = append(evs, domain.RoleRevoked{UserID: user, Project: "p0", Previous: domain.RoleDeveloper})
				}
				tok := fmt.Sprintf("t%d", u)
				evs = append(evs, domain.TokenIssued{TokenID: tok, Name: tok, Role: domain.RoleViewer, Project: "p0",
					Environments: []string{"e0", "e1"}, ExpiresAt: now.Add(time.Hour), SecretHash: hash})
				if u%3 == 0 {
					evs = append(evs, domain.TokenRevoked{TokenID: tok, Reason: "bench"})
				}
			}
			put(domain.OrgStream(org), evs)
			for p := range 5 {
				project := fmt.Sprintf("p%d", p)
				evs := []domain.Event{domain.ProjectCreated{OrgID: org, ProjectID: project, Name: project}}
				for b := range 10 {
					id := fmt.Sprintf("b%d", b)
					keys := []domain.BundleKey{{Name: "A", Required: true}, {Name: "B"}}
					evs = append(evs, domain.BundleCreated{BundleID: id, Keys: keys}, domain.BundleUpdated{BundleID: id, Before: keys, After: keys[:1]})
					if b%3 == 0 {
						evs = append(evs, domain.BundleDeleted{BundleID: id, Keys: keys[:1]})
					}
				}
				for v := range 3 {
					envID := fmt.Sprintf("e%d", v)
					settings := domain.EnvSettings{Name: envID, RotationSeconds: 86400}
					evs = append(evs, domain.EnvironmentCreated{EnvID: envID, EnvSettings: settings},
						domain.EnvironmentUpdated{EnvID: envID, Before: settings, After: domain.EnvSettings{Name: "E", RotationSeconds: 3600}})
					ks := []domain.Event{domain.KeysetCreated{Org: org, Project: project, Env: envID, KEK: "local:///k", KeyID: 1, At: now,
						Material: domain.Material{Version: 1, Hash: hash}}}
					for k := uint32(2); k <= 6; k++ {
						ks = append(ks, domain.KeysetRotated{KeyID: k, Previous: k - 1, Reason: "bench", At: now, Material: domain.Material{Version: uint64(len(ks) + 1), Hash: hash}},
							domain.KeysetResealed{KeyID: k, Values: 20},
							domain.KeyDisabled{KeyID: k - 1, Material: domain.Material{Version: uint64(len(ks) + 2), Hash: hash}})
					}
					put(domain.KeysetStream(org, project, envID), ks)
					for s := range 20 {
						ref := domain.SecretRef{Org: org, Project: project, Env: envID, Name: fmt.Sprintf("S%d", s)}
						val := domain.Sealed{KeyID: 6, Ciphertext: []byte("sealed-bench-value")}
						ss := []domain.Event{domain.SecretCreated{Version: 1, Value: val, Metadata: domain.SecretMetadata{Tags: []string{"x"}}}}
						for ver := uint64(2); ver <= 4; ver++ {
							ss = append(ss, domain.SecretUpdated{Version: ver, Value: val})
						}
						ss = append(ss, domain.SecretViewed{Version: 4, Reason: "bench", Channel: domain.ChannelAPI})
						put(ref.Stream(), ss)
					}
				}
				put(domain.ProjectStream(org, project), evs)
			}
			for a := range 100 {
				id := fmt.Sprintf("%s-a%d", org, a)
				evs := []domain.Event{domain.ApprovalRequested{ApprovalID: id, Kind: domain.ApprovalSecrets, Org: org, Project: "p0", Env: "e0",
					Keys: []domain.BundleKey{{Name: "S1"}}, PublicKey: make([]byte, 32), UserCode: "ABCD-EFGH", Requester: "user:u1",
					ExpiresAt: now.Add(time.Minute), Approvals: 1}}
				switch a % 3 {
				case 0:
					evs = append(evs, domain.ApprovalGranted{By: "user:ada", Keys: []string{"S1"}}, domain.ApprovalDelivered{Keys: []domain.DeliveredKey{{Name: "S1", Version: 4}}})
				case 1:
					evs = append(evs, domain.ApprovalDenied{By: "user:ada", Reason: "no"})
				default:
					evs = append(evs, domain.ApprovalExpired{})
				}
				put(domain.ApprovalStream(id), evs)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return ok(e.store.Head(ctx)).Position
}

// Applied in small batches while the log is written, and rebuilt in large
// ones, every read model ends up the same on a synthetic log too.
func TestSyntheticRebuildEqualsIncremental(t *testing.T) {
	e := newEnv(t)
	e.proj = projections.New(projections.Config{Pool: e.pool, Store: e.store, Batch: 37}, projections.All()...)
	e.start(t)
	synthLog(t, e, 3)
	e.caughtUp(t)
	before := e.dump(t)
	for _, p := range e.proj.Projections() {
		if err := e.proj.Rebuild(ctx, p.Name()); err != nil {
			t.Fatalf("rebuild %s: %v", p.Name(), err)
		}
	}
	after := e.dump(t)
	for _, p := range []projections.Projection{projections.Directory{}, projections.AccessControl{}, projections.Keys{}, projections.Approvals{}} {
		for _, table := range p.Tables() {
			if len(before[table]) == 0 {
				t.Errorf("table %s is empty", table)
			}
		}
	}
	for table, rows := range before {
		if !slices.Equal(rows, after[table]) {
			t.Errorf("table %s differs after a rebuild: %d rows before, %d after", table, len(rows), len(after[table]))
		}
	}
}

// BenchmarkRebuildReadModels rebuilds each read model from a synthetic
// log of about 115 000 events and reports events per second, and how
// long the swap held the live tables (readers' longest wait).
func BenchmarkRebuildReadModels(b *testing.B) {
	e := newEnv(b)
	events := synthLog(b, e, 50)
	b.Logf("%d events", events)
	for _, p := range e.proj.Projections() {
		b.Run(p.Name(), func(b *testing.B) {
			var swap time.Duration
			for b.Loop() {
				res, err := e.proj.RebuildReport(ctx, p.Name())
				if err != nil {
					b.Fatal(err)
				}
				swap += res.Swap
			}
			b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(swap.Microseconds())/1000/float64(b.N), "swap-ms")
		})
	}
}
