package api_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// secDev is the environment the secrets tests work in.
const secDev = "/v1/orgs/acme/projects/web/envs/dev"

// secSetup starts a server with project web and its environment dev in
// acme, made by Ada (an owner).
func secSetup(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	ada := secAda()
	must(h.App.CreateProject(ctx, ada, "acme", "web", "Web"))
	must(h.App.CreateEnvironment(ctx, ada, app.Env{Org: "acme", Project: "web", Env: "dev"}, app.EnvSpec{Name: "Development"}))
	return h
}

func secAda() app.Request {
	return app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "ada@example.com"}, RequestID: "secrets-test"}
}

// secAt adds min_position to a path.
func secAt(path, position string) string {
	if strings.Contains(path, "?") {
		return path + "&min_position=" + position
	}
	return path + "?min_position=" + position
}

func secWrite(t *testing.T, r response) api.SecretWrite {
	t.Helper()
	var w api.SecretWrite
	r.decode(t, &w)
	if w.Position == 0 || strconv.FormatUint(w.Position, 10) != r.position(t) {
		t.Fatalf("a write answered position %d and header %q", w.Position, r.header.Get("X-Stele-Position"))
	}
	return w
}

func secMeta(t *testing.T, h *harness, name, position string) (api.SecretMeta, response) {
	t.Helper()
	r := h.get(secAt(secDev+"/secrets/"+name, position), h.Eve).expect(t, 200)
	var m api.SecretMeta
	r.decode(t, &m)
	return m, r
}

// secReveal reveals a value as Bob and returns its text.
func secReveal(t *testing.T, h *harness, name string, body any) (api.SecretRevealed, response) {
	t.Helper()
	r := h.post(secDev+"/secrets/"+name+"/reveal", h.Bob, body).expect(t, 200)
	var v api.SecretRevealed
	r.decode(t, &v)
	if r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("a value answered with Cache-Control %q", r.header.Get("Cache-Control"))
	}
	if strconv.FormatUint(v.Position, 10) != r.position(t) {
		t.Fatalf("reveal position %d, header %s", v.Position, r.position(t))
	}
	return v, r
}

// secReads returns the recorded reads of a secret once the read models
// include position.
func secReads(t *testing.T, h *harness, name string, position uint64) []projections.SecretRead {
	t.Helper()
	if err := projections.WaitFor(ctx, h.Pool, position, 10*time.Second, "access"); err != nil {
		t.Fatal(err)
	}
	return must(h.Reader.Reads(ctx, "acme", "web", "dev", name, time.Time{}, time.Time{}))
}

// secNoLeak fails if any of values appears, in any common encoding, in the
// server's log lines or in any table of the ledger and the read models.
func secNoLeak(t *testing.T, h *harness, values ...string) {
	t.Helper()
	if err := projections.WaitFor(ctx, h.Pool, must(h.App.Head(ctx)), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var forms []string
	for _, v := range values {
		if len(v) < 8 {
			t.Fatalf("%q is too short to look for", v)
		}
		b := []byte(v)
		j, _ := json.Marshal(v)
		forms = append(forms, v, strings.Trim(string(j), `"`), base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
			base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b), hex.EncodeToString(b))
	}
	tables := must(pgx.CollectRows(must(h.Pool.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND (table_name LIKE 'proj%' OR table_name LIKE 'ledger%') ORDER BY 1`)), pgx.RowTo[string]))
	rows, sawLedger := 0, false
	for _, table := range tables {
		lines := must(pgx.CollectRows(must(h.Pool.Query(ctx, `SELECT t::text FROM `+pgx.Identifier{table}.Sanitize()+` t`)), pgx.RowTo[string]))
		for _, line := range lines {
			sawLedger = sawLedger || (table == "ledger_events" && strings.Contains(line, "secret.created"))
			for _, f := range forms {
				if strings.Contains(line, f) {
					t.Fatalf("table %s holds a value (as %q)", table, f)
				}
			}
		}
		rows += len(lines)
	}
	if !sawLedger || rows < 20 {
		t.Fatalf("the scan saw %d rows of %v and no secret.created event: it proves nothing", rows, tables)
	}
	logs := h.Logs.String()
	if !strings.Contains(logs, `"msg":"request"`) {
		t.Fatal("the server's log captured no request: the scan proves nothing")
	}
	for _, f := range forms {
		if strings.Contains(logs, f) {
			t.Fatalf("the server's log holds a value (as %q)", f)
		}
	}
}

// The round trip: set, read the metadata, update, reveal (each reveal an
// event), binary values.
func TestSecretSetGetReveal(t *testing.T) {
	h := secSetup(t)
	const v1, v2 = "postgres://app:hunter2-v1@db:5432/app", "postgres://app:hunter2-v2@db:5432/app"
	binary := []byte{0x00, 0xff, 0xfe, 'b', 'i', 'n', 0x80, 0x81, 0x7f, 0x01}

	r := h.put(secDev+"/secrets/DB_URL", h.Bob, map[string]any{"value": v1, "description": "the main database", "tags": []string{"db", "prod"}, "owner": "team-db"}).expect(t, 201)
	w := secWrite(t, r)
	if w.Name != "DB_URL" || w.Version != 1 || r.header.Get("ETag") != `"1"` {
		t.Fatalf("create answered %+v, ETag %s", w, r.header.Get("ETag"))
	}
	m, mr := secMeta(t, h, "DB_URL", r.position(t))
	if m.Version != 1 || m.Description != "the main database" || strings.Join(m.Tags, ",") != "db,prod" || m.Owner != "team-db" ||
		m.Deleted || m.Destroyed || m.CreatedBy != "user:bob@example.com" || m.UpdatedBy != "user:bob@example.com" || mr.header.Get("ETag") != `"1"` {
		t.Fatalf("metadata %+v, ETag %s", m, mr.header.Get("ETag"))
	}
	if strings.Contains(string(mr.body), "hunter2") {
		t.Fatalf("the metadata carries the value: %s", mr.body)
	}

	r = h.put(secDev+"/secrets/DB_URL", h.Bob, map[string]any{"value": v2}).expect(t, 200)
	if w = secWrite(t, r); w.Version != 2 || r.header.Get("ETag") != `"2"` {
		t.Fatalf("update answered %+v", w)
	}
	r = h.put(secDev+"/secrets/BLOB", h.Owner, map[string]any{"value_base64": base64.StdEncoding.EncodeToString(binary)}).expect(t, 201)
	var list struct{ Items []api.SecretMeta }
	h.get(secAt(secDev+"/secrets", r.position(t)), h.Eve).expect(t, 200).decode(t, &list)
	if len(list.Items) != 2 || list.Items[0].Name != "BLOB" || list.Items[1].Name != "DB_URL" || list.Items[1].Version != 2 {
		t.Fatalf("list %+v", list.Items)
	}

	cur, _ := secReveal(t, h, "DB_URL", map[string]any{"reason": "debugging a migration"})
	if cur.Value == nil || *cur.Value != v2 || cur.Version != 2 || cur.ValueBase64 != nil {
		t.Fatalf("the current value: %+v", cur)
	}
	old, _ := secReveal(t, h, "DB_URL", map[string]any{"version": 1})
	if old.Value == nil || *old.Value != v1 || old.Version != 1 {
		t.Fatalf("version 1: %+v", old)
	}
	bin, _ := secReveal(t, h, "BLOB", nil) // no body: the current version
	if bin.Value != nil || bin.ValueBase64 == nil || *bin.ValueBase64 != base64.StdEncoding.EncodeToString(binary) {
		t.Fatalf("a binary value: %+v", bin)
	}
	h.post(secDev+"/secrets/DB_URL/reveal", h.Bob, map[string]any{"version": 9}).expectProblem(t, 404, "not_found")
	h.post(secDev+"/secrets/NOPE/reveal", h.Bob, nil).expectProblem(t, 404, "not_found")

	// Each reveal is a read on record: who, which version, why, how.
	reads := secReads(t, h, "DB_URL", old.Position)
	if len(reads) != 2 {
		t.Fatalf("%d reads recorded, want 2: %+v", len(reads), reads)
	}
	if r := reads[1]; r.Version != 2 || r.Actor != "user:bob@example.com" || r.Channel != "api" || r.Reason != "debugging a migration" || r.Position != cur.Position {
		t.Fatalf("the first read: %+v", r)
	}
	if r := reads[0]; r.Version != 1 || r.Position != old.Position {
		t.Fatalf("the second read: %+v", r)
	}
	secNoLeak(t, h, v1, v2, string(binary))
}

// Check-and-set with If-Match and If-None-Match; a failed precondition
// changes nothing.
func TestSecretPreconditions(t *testing.T) {
	h := secSetup(t)
	path := secDev + "/secrets/API_KEY"
	put := func(header map[string]string, value string) response {
		return h.do(call{method: "PUT", path: path, cred: h.Bob, body: map[string]any{"value": value}, header: header})
	}
	put(map[string]string{"If-Match": `"1"`}, "sk-none-yet").expectProblem(t, 412, "version_mismatch")
	put(map[string]string{"If-None-Match": "*"}, "sk-first-value").expect(t, 201)
	put(map[string]string{"If-None-Match": "*"}, "sk-second-create").expectProblem(t, 412, "already_exists")
	put(nil, "sk-second-value").expect(t, 200)
	head := must(h.App.Head(ctx))
	r := put(map[string]string{"If-Match": `"1"`}, "sk-stale-write")
	r.expectProblem(t, 412, "version_mismatch")
	if r.header.Get("X-Stele-Position") != "" || must(h.App.Head(ctx)) != head {
		t.Fatal("a failed check-and-set appended something")
	}
	r = put(map[string]string{"If-Match": `"2"`}, "sk-third-value").expect(t, 200)
	if w := secWrite(t, r); w.Version != 3 || r.header.Get("ETag") != `"3"` {
		t.Fatalf("check-and-set answered %+v", w)
	}
	v, _ := secReveal(t, h, "API_KEY", nil)
	if *v.Value != "sk-third-value" {
		t.Fatalf("the value is %q", *v.Value)
	}
	for _, bad := range []map[string]string{{"If-Match": "2"}, {"If-Match": `W/"2"`}, {"If-None-Match": `"2"`}, {"If-Match": `"3"`, "If-None-Match": "*"}} {
		h.do(call{method: "PUT", path: path, cred: h.Bob, body: map[string]any{"value": "sk-bad-header"}, header: bad, invalid: true}).expectProblem(t, 400, "invalid_request")
	}
	if must(h.App.Head(ctx)) != v.Position {
		t.Fatal("a refused request appended something")
	}
}

// Who may do what: viewers read metadata only, developers reveal and
// write, admins destroy versions; another tenant sees nothing at all.
func TestSecretAccess(t *testing.T) {
	h := secSetup(t)
	path := secDev + "/secrets/TOKEN"
	r := h.put(path, h.Bob, map[string]any{"value": "tok-live-0123456789"}).expect(t, 201)
	pos := r.position(t)

	// A viewer reads metadata, nothing more.
	h.get(secAt(path, pos), h.Eve).expect(t, 200)
	h.get(secAt(path+"/versions", pos), h.Eve).expect(t, 200)
	h.post(path+"/reveal", h.Eve, nil).expectProblem(t, 403, "forbidden")
	h.post(secDev+"/reveal", h.Eve, map[string]any{"names": []string{"TOKEN"}}).expectProblem(t, 403, "forbidden")
	h.post(secDev+"/export", h.Eve, map[string]any{"format": "dotenv"}).expectProblem(t, 403, "forbidden")
	h.put(path, h.Eve, map[string]any{"value": "tok-by-a-viewer"}).expectProblem(t, 403, "forbidden")
	h.patch(path, h.Eve, map[string]any{"owner": "eve"}).expectProblem(t, 403, "forbidden")
	h.del(path, h.Eve).expectProblem(t, 403, "forbidden")
	h.post(path+"/rollback", h.Eve, map[string]any{"version": 1}).expectProblem(t, 403, "forbidden")
	// A developer may not destroy a version.
	h.del(path+"/versions/1", h.Bob).expectProblem(t, 403, "forbidden")

	// Another organization's owner learns nothing, not even existence.
	for _, c := range []call{
		{method: "GET", path: secDev + "/secrets"},
		{method: "GET", path: path},
		{method: "GET", path: path + "/versions"},
		{method: "PUT", path: path, body: map[string]any{"value": "tok-from-globex"}},
		{method: "PATCH", path: path, body: map[string]any{"owner": "olga"}},
		{method: "DELETE", path: path},
		{method: "POST", path: path + "/restore"},
		{method: "DELETE", path: path + "/versions/1"},
		{method: "POST", path: path + "/rollback", body: map[string]any{"version": 1}},
		{method: "POST", path: path + "/reveal"},
		{method: "POST", path: secDev + "/reveal", body: map[string]any{"names": []string{"TOKEN"}}},
		{method: "POST", path: secDev + "/export", body: map[string]any{"format": "json"}},
		{method: "POST", path: secDev + "/import", body: "A=1\n", contentType: "text/plain"},
	} {
		c.cred = h.Olga
		r := h.do(c)
		r.expectProblem(t, 404, "not_found")
		if strings.Contains(string(r.body), "TOKEN") || strings.Contains(string(r.body), "tok-live") {
			t.Fatalf("%s %s told an outsider: %s", c.method, c.path, r.body)
		}
	}
	// An environment that does not exist, and an anonymous caller.
	h.get("/v1/orgs/acme/projects/web/envs/nowhere/secrets", h.Eve).expectProblem(t, 404, "not_found")
	h.put("/v1/orgs/acme/projects/web/envs/nowhere/secrets/TOKEN", h.Bob, map[string]any{"value": "x"}).expectProblem(t, 404, "not_found")
	h.get(path, "").expectProblem(t, 401, "unauthenticated")
	h.post(path+"/reveal", "", nil).expectProblem(t, 401, "unauthenticated")
	secNoLeak(t, h, "tok-live-0123456789")
}

// Bad input is refused with a clear problem and changes nothing.
func TestSecretBadInput(t *testing.T) {
	h := secSetup(t)
	path := secDev + "/secrets/GOOD"
	r := h.put(path, h.Bob, map[string]any{"value": "good-value-1234"}).expect(t, 201)
	head := must(h.App.Head(ctx))
	for _, c := range []struct {
		call
		status int
		code   string
	}{
		{call{method: "PUT", path: path, body: map[string]any{"value": "a", "value_base64": "YQ=="}}, 400, "invalid_request"},
		{call{method: "PUT", path: path, body: map[string]any{"description": "no value"}}, 400, "invalid_request"},
		{call{method: "PUT", path: path, body: map[string]any{"value_base64": "not base64!"}}, 400, "invalid_request"},
		{call{method: "PUT", path: path, body: map[string]any{"value": "x", "colour": "red"}}, 400, "invalid_json"},
		{call{method: "PUT", path: path, body: `{"value": "x"} {}`, contentType: "application/json"}, 400, "invalid_json"},
		{call{method: "PUT", path: path, body: "value=x", contentType: "text/plain"}, 415, "unsupported_media_type"},
		{call{method: "PUT", path: secDev + "/secrets/9LIVES", body: map[string]any{"value": "x"}}, 400, "invalid_request"},
		{call{method: "PUT", path: secDev + "/secrets/BAD-NAME", body: map[string]any{"value": "x"}}, 400, "invalid_request"},
		{call{method: "PUT", path: path, body: map[string]any{"value": strings.Repeat("x", 64<<10+1)}}, 413, "value_too_large"},
		{call{method: "PUT", path: path, body: map[string]any{"value": "new-value-1234", "tags": []string{""}}}, 400, "invalid_request"},
		{call{method: "PUT", path: path, body: map[string]any{"value": "new-value-1234", "description": strings.Repeat("d", 1001)}}, 400, "invalid_request"},
		{call{method: "PUT", path: path, body: map[string]any{"value": "new-value-1234", "rotation_seconds": -1}}, 400, "invalid_request"},
		{call{method: "PATCH", path: path, body: map[string]any{"tags": make([]string, 21)}}, 400, "invalid_request"},
		{call{method: "PATCH", path: path, body: map[string]any{"owner": strings.Repeat("o", 101)}}, 400, "invalid_request"},
		{call{method: "POST", path: path + "/rollback", body: map[string]any{}}, 400, "invalid_request"},
		{call{method: "POST", path: path + "/rollback", body: map[string]any{"version": 0}}, 400, "invalid_request"},
		{call{method: "POST", path: path + "/reveal", body: map[string]any{"version": 0}}, 400, "invalid_request"},
		{call{method: "POST", path: path + "/reveal", body: map[string]any{"reason": strings.Repeat("r", 501)}}, 400, "invalid_request"},
		{call{method: "DELETE", path: path + "/versions/zero"}, 400, "invalid_request"},
		{call{method: "GET", path: secDev + "/secrets?include_deleted=perhaps"}, 400, "invalid_request"},
		{call{method: "GET", path: secDev + "/secrets?min_position=soon"}, 400, "invalid_request"},
	} {
		c.cred, c.invalid = h.Bob, true
		got := h.do(c.call)
		got.expectProblem(t, c.status, c.code)
		if strings.Contains(string(got.body), "good-value") || strings.Contains(string(got.body), "new-value") {
			t.Fatalf("%s %s: the problem repeats a value: %s", c.method, c.path, got.body)
		}
	}
	if must(h.App.Head(ctx)) != head {
		t.Fatal("refused requests appended events")
	}
	m, _ := secMeta(t, h, "GOOD", r.position(t))
	if m.Version != 1 || len(m.Tags) != 0 || m.Description != "" {
		t.Fatalf("a refused request changed the secret: %+v", m)
	}
	secNoLeak(t, h, "good-value-1234", "new-value-1234")
}

// Metadata, soft delete and restore, versions, rollback and destroy.
func TestSecretLifecycle(t *testing.T) {
	h := secSetup(t)
	path := secDev + "/secrets/SMTP_PASSWORD"
	values := []string{"smtp-pass-one", "smtp-pass-two", "smtp-pass-three"}
	for i, v := range values {
		want := http.StatusOK
		if i == 0 {
			want = http.StatusCreated
		}
		h.put(path, h.Bob, map[string]any{"value": v}).expect(t, want)
	}
	// Metadata: a patch changes the fields it names; the same patch again
	// changes nothing; a set may carry metadata too.
	r := h.patch(path, h.Bob, map[string]any{"description": "outgoing mail", "rotation_seconds": 86400}).expect(t, 200)
	secWrite(t, r)
	r = h.patch(path, h.Bob, map[string]any{"description": "outgoing mail"}).expect(t, 200)
	var w api.SecretWrite
	if r.decode(t, &w); !w.Unchanged {
		t.Fatalf("a patch that changes nothing: %+v", w)
	}
	r = h.put(path, h.Bob, map[string]any{"value": "smtp-pass-four", "tags": []string{"mail"}}).expect(t, 200)
	m, _ := secMeta(t, h, "SMTP_PASSWORD", r.position(t))
	if m.Version != 4 || m.Description != "outgoing mail" || m.RotationSeconds != 86400 || strings.Join(m.Tags, ",") != "mail" || m.RotationDue {
		t.Fatalf("metadata %+v", m)
	}
	values = append(values, "smtp-pass-four")

	// Soft delete: hidden from the list, no reveal, no set; restore.
	r = h.del(path, h.Bob).expect(t, 200)
	var list struct{ Items []api.SecretMeta }
	h.get(secAt(secDev+"/secrets", r.position(t)), h.Eve).expect(t, 200).decode(t, &list)
	if len(list.Items) != 0 {
		t.Fatalf("a deleted secret is listed: %+v", list.Items)
	}
	h.get(secAt(secDev+"/secrets?include_deleted=true", r.position(t)), h.Eve).expect(t, 200).decode(t, &list)
	if len(list.Items) != 1 || !list.Items[0].Deleted {
		t.Fatalf("include_deleted: %+v", list.Items)
	}
	h.post(path+"/reveal", h.Bob, nil).expectProblem(t, 409, "deleted")
	h.put(path, h.Bob, map[string]any{"value": "smtp-pass-deleted"}).expectProblem(t, 409, "deleted")
	h.del(path, h.Bob).expectProblem(t, 409, "deleted")
	h.post(path+"/restore", h.Bob, nil).expect(t, 200)
	h.post(path+"/restore", h.Bob, nil).expectProblem(t, 409, "conflict")

	// Rollback makes a new version with an old value.
	r = h.post(path+"/rollback", h.Bob, map[string]any{"version": 2}).expect(t, 200)
	if w := secWrite(t, r); w.Version != 5 || r.header.Get("ETag") != `"5"` {
		t.Fatalf("rollback answered %+v", w)
	}
	if v, _ := secReveal(t, h, "SMTP_PASSWORD", nil); *v.Value != "smtp-pass-two" || v.Version != 5 {
		t.Fatalf("after the rollback: %+v", v)
	}
	h.post(path+"/rollback", h.Bob, map[string]any{"version": 5}).expectProblem(t, 409, "conflict")
	h.post(path+"/rollback", h.Bob, map[string]any{"version": 42}).expectProblem(t, 404, "not_found")

	// Destroying a version (admin) makes it unreadable for good.
	r = h.del(path+"/versions/1", h.Ada).expect(t, 200)
	secWrite(t, r)
	h.post(path+"/reveal", h.Bob, map[string]any{"version": 1}).expectProblem(t, 410, "destroyed")
	h.post(path+"/rollback", h.Bob, map[string]any{"version": 1}).expectProblem(t, 410, "destroyed")
	h.del(path+"/versions/1", h.Ada).expectProblem(t, 410, "destroyed")
	h.del(path+"/versions/99", h.Ada).expectProblem(t, 404, "not_found")

	var versions struct{ Items []api.SecretVersionInfo }
	vr := h.get(secAt(path+"/versions", r.position(t)), h.Eve).expect(t, 200)
	vr.decode(t, &versions)
	if len(versions.Items) != 5 || vr.header.Get("ETag") != `"5"` {
		t.Fatalf("versions %+v", versions.Items)
	}
	for i, v := range versions.Items {
		want := api.SecretVersionInfo{Version: int64(i + 1), Current: i == 4, Destroyed: i == 0, CreatedBy: "user:bob@example.com"}
		if i == 4 {
			want.RolledBackFrom = 2
		}
		if v.Version != want.Version || v.Current != want.Current || v.Destroyed != want.Destroyed || v.RolledBackFrom != want.RolledBackFrom ||
			v.CreatedBy != want.CreatedBy || v.CreatedAt.IsZero() || v.CreatedAt.Location() != time.UTC {
			t.Errorf("version %d: %+v", i+1, v)
		}
	}
	h.get(secDev+"/secrets/NOPE/versions", h.Eve).expectProblem(t, 404, "not_found")
	h.get(secDev+"/secrets/NOPE", h.Eve).expectProblem(t, 404, "not_found")
	secNoLeak(t, h, values...)
}

// A retried write with the same Idempotency-Key appends nothing new.
func TestSecretIdempotency(t *testing.T) {
	h := secSetup(t)
	path := secDev + "/secrets/WEBHOOK_SECRET"
	put := func(key, value string) response {
		return h.do(call{method: "PUT", path: path, cred: h.Bob, body: map[string]any{"value": value}, header: map[string]string{"Idempotency-Key": key}})
	}
	first := secWrite(t, put("deploy-1", "whsec-first-0001").expect(t, 201))
	again := secWrite(t, put("deploy-1", "whsec-first-0001").expect(t, 201))
	if !again.Replayed || again.Version != first.Version || again.Position != first.Position {
		t.Fatalf("the retry answered %+v after %+v", again, first)
	}
	second := secWrite(t, put("deploy-2", "whsec-second-0002").expect(t, 200))
	if second.Version != 2 || second.Replayed {
		t.Fatalf("a new key: %+v", second)
	}
	// A key reused for another command is refused.
	h.do(call{method: "DELETE", path: path, cred: h.Bob, header: map[string]string{"Idempotency-Key": "deploy-2"}}).expectProblem(t, 422, "idempotency_key_reused")
	// Reveals are reads of their own: a key does not make them replay.
	for range 2 {
		h.do(call{method: "POST", path: path + "/reveal", cred: h.Bob, header: map[string]string{"Idempotency-Key": "read-1"}}).expect(t, 200)
	}
	var versions struct{ Items []api.SecretVersionInfo }
	h.get(secAt(path+"/versions", fmt.Sprint(second.Position)), h.Eve).expect(t, 200).decode(t, &versions)
	if len(versions.Items) != 2 {
		t.Fatalf("%d versions after a retried write", len(versions.Items))
	}
	if reads := secReads(t, h, "WEBHOOK_SECRET", must(h.App.Head(ctx))); len(reads) != 2 {
		t.Fatalf("%d reads recorded for two reveals", len(reads))
	}
}

// Several values at once: by names or by bundle; all or nothing.
func TestSecretBulkReveal(t *testing.T) {
	h := secSetup(t)
	values := map[string]string{"DB_URL": "postgres://bulk-db-value", "API_KEY": "bulk-api-key-value", "CACHE_URL": "redis://bulk-cache-value"}
	for n, v := range values {
		h.put(secDev+"/secrets/"+n, h.Bob, map[string]any{"value": v}).expect(t, 201)
	}
	ada := secAda()
	must(h.App.CreateBundle(ctx, ada, "acme", "web", "backend", []domain.BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}, {Name: "OPTIONAL_FLAG"}}))
	must(h.App.CreateBundle(ctx, ada, "acme", "web", "strict", []domain.BundleKey{{Name: "DB_URL"}, {Name: "MISSING_KEY", Required: true}}))

	var got api.SecretsRevealed
	r := h.post(secDev+"/reveal", h.Bob, map[string]any{"names": []string{"CACHE_URL", "DB_URL"}, "reason": "bulk"}).expect(t, 200)
	r.decode(t, &got)
	if len(got.Items) != 2 || got.Items[0].Name != "CACHE_URL" || *got.Items[0].Value != values["CACHE_URL"] ||
		got.Items[1].Name != "DB_URL" || *got.Items[1].Value != values["DB_URL"] || strconv.FormatUint(got.Position, 10) != r.position(t) ||
		r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("by names: %s", r.body)
	}
	for n := range map[string]bool{"CACHE_URL": true, "DB_URL": true} {
		reads := secReads(t, h, n, got.Position)
		if len(reads) != 1 || reads[0].Reason != "bulk" || reads[0].Actor != "user:bob@example.com" {
			t.Fatalf("reads of %s: %+v", n, reads)
		}
	}
	r = h.post(secDev+"/reveal", h.Bob, map[string]any{"bundle": "backend"}).expect(t, 200)
	r.decode(t, &got)
	if len(got.Items) != 2 || got.Items[0].Name != "DB_URL" || got.Items[1].Name != "API_KEY" || *got.Items[1].Value != values["API_KEY"] ||
		len(got.Missing) != 1 || got.Missing[0] != "OPTIONAL_FLAG" {
		t.Fatalf("by bundle: %s", r.body)
	}

	// Anything missing that was asked for fails the whole request, before
	// anything is read.
	head := must(h.App.Head(ctx))
	for _, c := range []struct {
		body   map[string]any
		status int
		code   string
	}{
		{map[string]any{"names": []string{"DB_URL", "NOPE"}}, 404, "not_found"},
		{map[string]any{"bundle": "strict"}, 404, "not_found"},
		{map[string]any{"bundle": "no-such-bundle"}, 404, "not_found"},
	} {
		r := h.post(secDev+"/reveal", h.Bob, c.body)
		r.expectProblem(t, c.status, c.code)
		if strings.Contains(string(r.body), "bulk-") || strings.Contains(string(r.body), "postgres://") {
			t.Fatalf("a refused bulk reveal answered values: %s", r.body)
		}
	}
	for _, body := range []map[string]any{{}, {"names": []string{}}, {"names": []string{"DB_URL", "DB_URL"}}, {"names": []string{"DB_URL"}, "bundle": "backend"}, {"names": []string{"no-dash"}}} {
		h.do(call{method: "POST", path: secDev + "/reveal", cred: h.Bob, body: body, invalid: true}).expectProblem(t, 400, "invalid_request")
	}
	if must(h.App.Head(ctx)) != head {
		t.Fatal("a refused bulk reveal recorded reads")
	}
	// A deleted secret named: 409, nothing read.
	h.del(secDev+"/secrets/API_KEY", h.Bob).expect(t, 200)
	head = must(h.App.Head(ctx))
	h.post(secDev+"/reveal", h.Bob, map[string]any{"names": []string{"DB_URL", "API_KEY"}}).expectProblem(t, 409, "deleted")
	if must(h.App.Head(ctx)) != head {
		t.Fatal("a refused bulk reveal recorded reads")
	}

	// Fail closed: when the ledger refuses events, no value leaves.
	if _, err := h.Pool.Exec(ctx, `CREATE FUNCTION sec_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'refused (test)'; END $$;
		CREATE TRIGGER sec_refuse BEFORE INSERT ON ledger_events FOR EACH STATEMENT EXECUTE FUNCTION sec_refuse()`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []call{
		{method: "POST", path: secDev + "/reveal", body: map[string]any{"names": []string{"DB_URL", "CACHE_URL"}}},
		{method: "POST", path: secDev + "/export", body: map[string]any{"format": "dotenv"}},
	} {
		c.cred = h.Bob
		r := h.do(c)
		r.expectProblem(t, 503, "ledger_unavailable")
		for _, v := range values {
			if strings.Contains(string(r.body), v) {
				t.Fatalf("%s answered a value while the ledger refused events: %s", c.path, r.body)
			}
		}
	}
	if _, err := h.Pool.Exec(ctx, `DROP TRIGGER sec_refuse ON ledger_events`); err != nil {
		t.Fatal(err)
	}
	vals := make([]string, 0, len(values))
	for _, v := range values {
		vals = append(vals, v)
	}
	secNoLeak(t, h, vals...)
}

// A reveal records how the value left: the API by default, a CLI
// session, or a browser session (cookie).
func TestSecretRevealChannels(t *testing.T) {
	h := secSetup(t)
	path := secDev + "/secrets/CHANNEL"
	h.put(path, h.Bob, map[string]any{"value": "channel-value-77"}).expect(t, 201)

	bob := app.Request{Actor: domain.Actor{Kind: domain.ActorUser, ID: "bob@example.com"}, RequestID: "secrets-test"}
	cli, _, err := h.App.StartSession(ctx, bob, app.SessionSpec{User: "bob@example.com", Method: domain.SessionCLI, ApprovalID: "cli-approval-1", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h.post(path+"/reveal", h.Bob, nil).expect(t, 200)
	h.post(path+"/reveal", cli.Credential, nil).expect(t, 200)

	jar := newJar()
	u := must(url.Parse(h.URL))
	const csrf = "csrf-token-0123456789"
	jar.SetCookies(u, []*http.Cookie{{Name: "__Host-stele_session", Value: h.Bob, Path: "/", Secure: true}, {Name: "__Host-stele_csrf", Value: csrf, Path: "/", Secure: true}})
	browser := h.newClient(jar)
	h.do(call{method: "POST", path: path + "/reveal", client: browser}).expectProblem(t, 403, "csrf_failed")
	r := h.do(call{method: "POST", path: path + "/reveal", client: browser, header: map[string]string{"X-CSRF-Token": csrf}}).expect(t, 200)

	var channels []string
	for _, rd := range secReads(t, h, "CHANNEL", must(strconv.ParseUint(r.position(t), 10, 64))) {
		channels = append(channels, rd.Channel)
	}
	if strings.Join(channels, ",") != "ui,cli,api" {
		t.Fatalf("channels recorded, newest first: %v", channels)
	}
}

// An environment whose policy asks for approvals refuses the direct
// endpoints, the bulk ones and the create-only set included.
func TestSecretApprovalPolicy(t *testing.T) {
	h := secSetup(t)
	h.put(secDev+"/secrets/GUARDED", h.Bob, map[string]any{"value": "guarded-value-1"}).expect(t, 201)
	must(h.App.UpdateEnvironment(ctx, secAda(), secDevEnv, app.EnvUpdate{Approval: &domain.ApprovalPolicy{Reveal: true, Change: true}}))
	head := must(h.App.Head(ctx))
	for _, c := range []call{
		{method: "POST", path: secDev + "/secrets/GUARDED/reveal"},
		{method: "POST", path: secDev + "/reveal", body: map[string]any{"names": []string{"GUARDED"}}},
		{method: "POST", path: secDev + "/export", body: map[string]any{"format": "json"}},
		{method: "PUT", path: secDev + "/secrets/GUARDED", body: map[string]any{"value": "guarded-value-2"}},
		{method: "PUT", path: secDev + "/secrets/FRESH", body: map[string]any{"value": "fresh-value-001"}, header: map[string]string{"If-None-Match": "*"}},
		{method: "POST", path: secDev + "/import", body: "FRESH=fresh-value-001\nGUARDED=guarded-value-3\n", contentType: "text/plain"},
	} {
		c.cred = h.Bob
		r := h.do(c)
		r.expectProblem(t, 403, "approval_required")
		if strings.Contains(string(r.body), "-value-") {
			t.Fatalf("%s %s: %s", c.method, c.path, r.body)
		}
	}
	if must(h.App.Head(ctx)) != head {
		t.Fatal("refused requests appended events")
	}
	secNoLeak(t, h, "guarded-value-1", "guarded-value-2", "guarded-value-3", "fresh-value-001")
}
