package api_test

import (
	"encoding/base64"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"

	"stele.dev/stele/api"
	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/internal/envfile"
)

// secHostileDotenv is a dotenv file as people write them, with values
// that break naive parsers, and what each value is.
const secHostileDotenv = `# Hostile values, the way people write them
export PLAIN=simple value   # a comment after the value
DOLLAR=pa$HOME
DOLLAR_BRACES="${HOME} and $(whoami) stay"
BACKTICKS='` + "`rm -rf /`" + `'
BACKTICK_QUOTED=` + "`it's \"mixed\" $USER`" + `
DOUBLE_ESCAPES="tab\there \"quoted\" back\\slash \$NOT_EXPANDED"
PEM="-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASC
-----END PRIVATE KEY-----
"
MULTILINE_SINGLE='first line
# not a comment
last line'
EMPTY=
EMPTY_QUOTED=""
HASH=value#not-a-comment
HASH_QUOTED="# not a comment either"
EQUALS=a=b=c==
DASHES=--no-preserve-root
UNICODE=ünïcödé ✓ 日本語 🎉
SPACES='  padded  '
WINDOWS_PATH=C:\Users\app\secret.txt
  INDENTED = indented value
QUOTES_INSIDE=it's a "quote"
`

var secHostileValues = map[string]string{
	"PLAIN":            "simple value",
	"DOLLAR":           "pa$HOME",
	"DOLLAR_BRACES":    "${HOME} and $(whoami) stay",
	"BACKTICKS":        "`rm -rf /`",
	"BACKTICK_QUOTED":  `it's "mixed" $USER`,
	"DOUBLE_ESCAPES":   "tab\there \"quoted\" back\\slash $NOT_EXPANDED",
	"PEM":              "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
	"MULTILINE_SINGLE": "first line\n# not a comment\nlast line",
	"EMPTY":            "",
	"EMPTY_QUOTED":     "",
	"HASH":             "value#not-a-comment",
	"HASH_QUOTED":      "# not a comment either",
	"EQUALS":           "a=b=c==",
	"DASHES":           "--no-preserve-root",
	"UNICODE":          "ünïcödé ✓ 日本語 🎉",
	"SPACES":           "  padded  ",
	"WINDOWS_PATH":     `C:\Users\app\secret.txt`,
	"INDENTED":         "indented value",
	"QUOTES_INSIDE":    `it's a "quote"`,
}

// secLongValues are the hostile values long enough to look for in the
// database and the logs.
func secLongValues() []string {
	var out []string
	for _, v := range secHostileValues {
		if len(v) >= 10 {
			out = append(out, v)
		}
	}
	return out
}

func secImport(t *testing.T, h *harness, env, query, contentType, body string, header map[string]string) (api.ImportResult, response) {
	t.Helper()
	r := h.do(call{method: "POST", path: "/v1/orgs/acme/projects/web/envs/" + env + "/import" + query, cred: h.Bob, body: body, contentType: contentType, header: header}).expect(t, 200)
	var out api.ImportResult
	r.decode(t, &out)
	return out, r
}

// secExport exports an environment as Bob and parses the file.
func secExport(t *testing.T, h *harness, env, format string, names []string) (map[string]string, response) {
	t.Helper()
	body := map[string]any{"format": format, "reason": "test export"}
	if names != nil {
		body["names"] = names
	}
	r := h.post("/v1/orgs/acme/projects/web/envs/"+env+"/export", h.Bob, body).expect(t, 200)
	if r.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(r.header.Get("Content-Disposition"), "attachment;") {
		t.Fatalf("export headers: %v", r.header)
	}
	f := must(envfile.ParseFormat(format))
	if ct := r.header.Get("Content-Type"); ct != f.ContentType() {
		t.Fatalf("%s export served as %s", format, ct)
	}
	entries, err := envfile.Parse(f, r.body)
	if err != nil {
		t.Fatalf("the %s export does not parse: %v\n%s", format, err, r.body)
	}
	out := map[string]string{}
	for _, e := range entries {
		out[e.Name] = e.Value
	}
	return out, r
}

func secSameValues(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: %s is extra", what, k)
			}
		}
		t.FailNow()
	}
}

// A hostile dotenv file imports value for value, and every export format
// gives the same values back; an export imported elsewhere round-trips.
func TestImportExportHostileDotenv(t *testing.T) {
	h := secSetup(t)
	must(h.App.CreateEnvironment(ctx, secAda(), app.Env{Org: "acme", Project: "web", Env: "staging"}, app.EnvSpec{}))
	must(h.App.CreateEnvironment(ctx, secAda(), app.Env{Org: "acme", Project: "web", Env: "windows"}, app.EnvSpec{}))

	res, r := secImport(t, h, "dev", "", "text/plain", secHostileDotenv, nil)
	if res.DryRun || res.Created != len(secHostileValues) || res.Updated != 0 || res.Unchanged != 0 || len(res.Items) != len(secHostileValues) {
		t.Fatalf("import: %+v", res)
	}
	if res.Items[0].Name != "PLAIN" || res.Items[0].Line != 2 || res.Items[0].Version != 1 || res.Items[0].Action != "created" || fmt.Sprint(res.Position) != r.position(t) {
		t.Fatalf("first item %+v, position %d", res.Items[0], res.Position)
	}
	// Each value as stored, byte for byte.
	for _, name := range []string{"DOLLAR", "PEM", "DOUBLE_ESCAPES", "BACKTICKS", "WINDOWS_PATH"} {
		v, _ := secReveal(t, h, name, nil)
		if *v.Value != secHostileValues[name] {
			t.Fatalf("%s was stored as %q, want %q", name, *v.Value, secHostileValues[name])
		}
	}
	for _, format := range []string{"dotenv", "json", "yaml"} {
		got, _ := secExport(t, h, "dev", format, nil)
		secSameValues(t, format+" export", got, secHostileValues)
	}
	// Every exported value was a read on record, through the export channel.
	reads := secReads(t, h, "PEM", must(h.App.Head(ctx)))
	exports := 0
	for _, rd := range reads {
		if rd.Channel == "export" && rd.Reason == "test export" && rd.Actor == "user:bob@example.com" {
			exports++
		}
	}
	if exports != 3 {
		t.Fatalf("%d export reads of PEM recorded, want 3: %+v", exports, reads)
	}

	// What one export writes, another environment imports to the same values.
	for _, format := range []string{"dotenv", "json", "yaml"} {
		_, r := secExport(t, h, "dev", format, nil)
		ct := must(envfile.ParseFormat(format)).ContentType()
		res, _ := secImport(t, h, "staging", "", ct, string(r.body), nil)
		if res.Created+res.Updated != len(secHostileValues) {
			t.Fatalf("re-import of the %s export: %+v", format, res)
		}
		got, _ := secExport(t, h, "staging", format, nil)
		secSameValues(t, format+" round trip", got, secHostileValues)
	}
	// The same file with Windows line ends.
	secImport(t, h, "windows", "", "text/plain; charset=utf-8", strings.ReplaceAll(secHostileDotenv, "\n", "\r\n"), nil)
	got, _ := secExport(t, h, "windows", "json", nil)
	secSameValues(t, "CRLF file", got, secHostileValues)

	// Some names only, in the order given.
	got, r = secExport(t, h, "dev", "dotenv", []string{"UNICODE", "DOLLAR"})
	if len(got) != 2 || !strings.HasPrefix(string(r.body), "UNICODE=") {
		t.Fatalf("named export: %s", r.body)
	}
	secNoLeak(t, h, secLongValues()...)
}

// A dry run reports and writes nothing; existing=skip leaves existing
// secrets alone; JSON and YAML bodies import too.
func TestImportDryRunAndFormats(t *testing.T) {
	h := secSetup(t)
	h.put(secDev+"/secrets/EXISTING", h.Bob, map[string]any{"value": "existing-value-1"}).expect(t, 201)
	head := must(h.App.Head(ctx))
	file := "EXISTING=existing-value-2\nNEW_ONE=new-value-0001\n"
	res, r := secImport(t, h, "dev", "?dry_run=true", "text/plain", file, nil)
	if !res.DryRun || res.Created != 1 || res.Updated != 1 || res.Position != 0 || r.header.Get("X-Stele-Position") != "" ||
		res.Items[0].Action != "updated" || res.Items[1].Action != "created" {
		t.Fatalf("dry run: %+v", res)
	}
	if must(h.App.Head(ctx)) != head {
		t.Fatal("a dry run appended events")
	}
	res, _ = secImport(t, h, "dev", "?dry_run=1&existing=skip", "text/plain", file, nil)
	if res.Created != 1 || res.Unchanged != 1 || res.Items[0].Action != "unchanged" || res.Items[0].Version != 1 {
		t.Fatalf("dry run, skip: %+v", res)
	}
	res, _ = secImport(t, h, "dev", "?existing=skip", "text/plain", file, nil)
	if res.DryRun || res.Created != 1 || res.Unchanged != 1 || res.Items[1].Version != 1 {
		t.Fatalf("skip: %+v", res)
	}
	if v, _ := secReveal(t, h, "EXISTING", nil); *v.Value != "existing-value-1" {
		t.Fatal("existing=skip changed an existing secret")
	}
	// Numbers and booleans are taken as written; null is empty.
	res, _ = secImport(t, h, "dev", "", "application/json", `{"PORT": 8080, "DEBUG": false, "RATIO": 1.50, "NOTHING": null, "EXISTING": "existing-value-3"}`, nil)
	if res.Created != 4 || res.Updated != 1 || res.Items[4].Version != 2 {
		t.Fatalf("JSON import: %+v", res)
	}
	res, _ = secImport(t, h, "dev", "", "application/yaml", "PORT: 9090\nCERT: |\n  line 1\n  line 2\nQUOTED: \"0123\"\n", nil)
	if res.Created != 2 || res.Updated != 1 {
		t.Fatalf("YAML import: %+v", res)
	}
	got, _ := secExport(t, h, "dev", "json", []string{"PORT", "DEBUG", "RATIO", "NOTHING", "CERT", "QUOTED", "EXISTING"})
	secSameValues(t, "formats", got, map[string]string{"PORT": "9090", "DEBUG": "false", "RATIO": "1.50", "NOTHING": "", "CERT": "line 1\nline 2\n",
		"QUOTED": "0123", "EXISTING": "existing-value-3"})
	secNoLeak(t, h, "existing-value-1", "existing-value-2", "existing-value-3", "new-value-0001")
}

// Bad input is refused as a whole, with the line at fault, and changes
// nothing; problems never repeat a value.
func TestImportBadInput(t *testing.T) {
	h := secSetup(t)
	h.put(secDev+"/secrets/GONE", h.Bob, map[string]any{"value": "gone-value-123"}).expect(t, 201)
	h.del(secDev+"/secrets/GONE", h.Bob).expect(t, 200)
	head := must(h.App.Head(ctx))
	const secret = "leaky-value-9876"
	for _, c := range []struct {
		ct, body     string
		query        string
		status       int
		code, detail string
	}{
		{"text/plain", "A=" + secret + "\nB='" + secret + "\nC=3\n", "", 400, "invalid_request", "line 2"},
		{"text/plain", "A=" + secret + "\n" + secret + "\n", "", 400, "invalid_request", "line 2"},
		{"text/plain", "A=1\nB=2\nA=" + secret + "\n", "", 400, "invalid_request", "A is defined twice"},
		{"text/plain", "A=1\n" + strings.Repeat("N", 129) + "=" + secret + "\n", "", 400, "invalid_request", "line 2"},
		{"text/plain", "A=1\nBIG=" + strings.Repeat("x", 64<<10+1) + "\n", "", 413, "value_too_large", "BIG"},
		{"text/plain", "# only comments\n\n", "", 400, "invalid_request", "no variables"},
		{"text/plain", "A=1\nGONE=" + secret + "\n", "", 409, "deleted", "GONE is deleted"},
		{"text/plain", "A=" + secret + "\xff\n", "", 400, "invalid_request", "UTF-8"},
		{"application/json", `{"A": "` + secret + `", "bad-name": "x"}`, "", 400, "invalid_request", "not an environment variable name"},
		{"application/json", `{"A": {"nested": "` + secret + `"}}`, "", 400, "invalid_request", "object or array"},
		{"application/json", `{"A": "` + secret + `"`, "", 400, "invalid_request", "ends too early"},
		{"application/yaml", "A: " + secret + "\nB:\n  - x\n", "", 400, "invalid_request", "line 3"},
		{"application/xml", "<A>" + secret + "</A>", "", 415, "unsupported_media_type", "text/plain"},
		{"text/plain", "A=" + secret, "?existing=merge", 400, "invalid_request", "existing"},
		{"text/plain", "A=" + secret, "?dry_run=maybe", 400, "invalid_request", "dry_run"},
	} {
		r := h.do(call{method: "POST", path: secDev + "/import" + c.query, cred: h.Bob, body: c.body, contentType: c.ct, invalid: true})
		r.expectProblem(t, c.status, c.code)
		var p api.Problem
		r.decode(t, &p)
		if !strings.Contains(p.Detail, c.detail) {
			t.Errorf("%q: detail %q does not say %q", c.body[:min(len(c.body), 40)], p.Detail, c.detail)
		}
		if strings.Contains(string(r.body), "leaky-value") {
			t.Fatalf("the problem repeats a value: %s", r.body)
		}
	}
	// A viewer may not import, not even dry.
	h.do(call{method: "POST", path: secDev + "/import?dry_run=true", cred: h.Eve, body: "A=1\n", contentType: "text/plain"}).expectProblem(t, 403, "forbidden")
	h.do(call{method: "POST", path: "/v1/orgs/acme/projects/web/envs/nowhere/import", cred: h.Bob, body: "A=1\n", contentType: "text/plain"}).expectProblem(t, 404, "not_found")
	if must(h.App.Head(ctx)) != head {
		t.Fatal("refused imports appended events")
	}
	var list struct{ Items []api.SecretMeta }
	h.get(secAt(secDev+"/secrets?include_deleted=true", fmt.Sprint(head)), h.Eve).expect(t, 200).decode(t, &list)
	if len(list.Items) != 1 {
		t.Fatalf("refused imports left secrets: %+v", list.Items)
	}
	secNoLeak(t, h, secret, "gone-value-123")
}

// An import that fails part-way says what it wrote; retrying with the same
// Idempotency-Key writes the rest and repeats nothing.
func TestImportPartialFailureAndRetry(t *testing.T) {
	h := secSetup(t)
	file := "FIRST=first-value-111\nSECOND=second-value-222\nTHIRD=third-value-333\n"
	key := map[string]string{"Idempotency-Key": "import-42"}
	// The ledger refuses events of the third secret only.
	if _, err := h.Pool.Exec(ctx, `CREATE FUNCTION sec_refuse_third() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'refused (test)'; END $$;
		CREATE TRIGGER sec_refuse_third BEFORE INSERT ON ledger_events FOR EACH ROW
			WHEN (NEW.stream_id LIKE '%/THIRD') EXECUTE FUNCTION sec_refuse_third()`); err != nil {
		t.Fatal(err)
	}
	r := h.do(call{method: "POST", path: secDev + "/import", cred: h.Bob, body: file, contentType: "text/plain", header: key})
	r.expectProblem(t, 503, "ledger_unavailable")
	var p api.Problem
	r.decode(t, &p)
	if !strings.Contains(p.Detail, "2 of 3 variables were written") || !strings.Contains(p.Detail, "FIRST, SECOND") || strings.Contains(string(r.body), "value-") {
		t.Fatalf("the partial failure says %q", p.Detail)
	}
	if _, err := h.Pool.Exec(ctx, `DROP TRIGGER sec_refuse_third ON ledger_events`); err != nil {
		t.Fatal(err)
	}
	res, _ := secImport(t, h, "dev", "", "text/plain", file, key)
	if len(res.Items) != 3 || !res.Items[0].Replayed || !res.Items[1].Replayed || res.Items[2].Replayed ||
		res.Items[0].Version != 1 || res.Items[1].Version != 1 || res.Items[2].Version != 1 || res.Items[2].Action != "created" {
		t.Fatalf("the retry: %+v", res.Items)
	}
	// Once more: everything is replayed, nothing new is written.
	head := must(h.App.Head(ctx))
	res, _ = secImport(t, h, "dev", "", "text/plain", file, key)
	for _, it := range res.Items {
		if !it.Replayed || it.Version != 1 {
			t.Fatalf("a second retry: %+v", res.Items)
		}
	}
	if must(h.App.Head(ctx)) != head {
		t.Fatal("a replayed import appended events")
	}
	got, _ := secExport(t, h, "dev", "dotenv", nil)
	secSameValues(t, "after the retry", got, map[string]string{"FIRST": "first-value-111", "SECOND": "second-value-222", "THIRD": "third-value-333"})
	secNoLeak(t, h, "first-value-111", "second-value-222", "third-value-333")
}

// Exports refuse what an env file cannot hold, and bad requests.
func TestExportRefusals(t *testing.T) {
	h := secSetup(t)
	h.put(secDev+"/secrets/TEXT", h.Bob, map[string]any{"value": "text-value-5555"}).expect(t, 201)
	h.put(secDev+"/secrets/BINARY", h.Bob, map[string]any{"value_base64": base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe, 0x00, 0x01})}).expect(t, 201)
	r := h.post(secDev+"/export", h.Bob, map[string]any{"format": "dotenv"})
	r.expectProblem(t, 409, "conflict")
	if strings.Contains(string(r.body), "text-value") {
		t.Fatalf("a refused export carries a value: %s", r.body)
	}
	got, _ := secExport(t, h, "dev", "yaml", []string{"TEXT"})
	secSameValues(t, "named", got, map[string]string{"TEXT": "text-value-5555"})
	h.post(secDev+"/export", h.Bob, map[string]any{"format": "dotenv", "names": []string{"TEXT", "NOPE"}}).expectProblem(t, 404, "not_found")
	for _, body := range []map[string]any{{"format": "toml"}, {}, {"format": "json", "names": []string{"TEXT", "TEXT"}}, {"format": "json", "names": []string{"no-dash"}}} {
		h.do(call{method: "POST", path: secDev + "/export", cred: h.Bob, body: body, invalid: true}).expectProblem(t, 400, "invalid_request")
	}
	// A secret whose current version is destroyed has no value: named, it
	// fails the request; otherwise it is left out, as deleted ones are.
	h.put(secDev+"/secrets/WIPED", h.Bob, map[string]any{"value": "wiped-value-4444"}).expect(t, 201)
	h.del(secDev+"/secrets/WIPED/versions/1", h.Ada).expect(t, 200)
	head := must(h.App.Head(ctx))
	h.post(secDev+"/export", h.Bob, map[string]any{"format": "json", "names": []string{"TEXT", "WIPED"}}).expectProblem(t, 410, "destroyed")
	h.post(secDev+"/reveal", h.Bob, map[string]any{"names": []string{"TEXT", "WIPED"}}).expectProblem(t, 410, "destroyed")
	if must(h.App.Head(ctx)) != head {
		t.Fatal("a refused export recorded reads")
	}
	h.del(secDev+"/secrets/BINARY", h.Bob).expect(t, 200)
	got, _ = secExport(t, h, "dev", "json", nil)
	secSameValues(t, "everything with a value", got, map[string]string{"TEXT": "text-value-5555"})

	// An empty environment exports an empty file.
	must(h.App.CreateEnvironment(ctx, secAda(), app.Env{Org: "acme", Project: "web", Env: "empty"}, app.EnvSpec{}))
	for _, format := range []string{"dotenv", "json", "yaml"} {
		got, r := secExport(t, h, "empty", format, nil)
		if len(got) != 0 || r.header.Get("X-Stele-Position") != "" {
			t.Fatalf("%s export of nothing: %q", format, r.body)
		}
	}
	secNoLeak(t, h, "text-value-5555", "wiped-value-4444")
}

// An export of a bundle's keys, resolved as a bulk reveal resolves them,
// and an export for `stele run`, recorded with the cli-run channel.
func TestExportBundleAndChannel(t *testing.T) {
	h := secSetup(t)
	values := map[string]string{"DB_URL": "postgres://bundle-db-value", "API_KEY": "bundle-api-key-value", "OTHER": "bundle-other-value"}
	for n, v := range values {
		h.put(secDev+"/secrets/"+n, h.Bob, map[string]any{"value": v}).expect(t, 201)
	}
	ada := secAda()
	must(h.App.CreateBundle(ctx, ada, "acme", "web", "backend", []domain.BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}, {Name: "OPTIONAL_FLAG"}}))
	must(h.App.CreateBundle(ctx, ada, "acme", "web", "strict", []domain.BundleKey{{Name: "DB_URL"}, {Name: "MISSING_KEY", Required: true}}))

	r := h.post(secDev+"/export", h.Bob, map[string]any{"format": "json", "bundle": "backend", "channel": "cli-run", "reason": "stele run"}).expect(t, 200)
	var got map[string]string
	r.decode(t, &got)
	secSameValues(t, "bundle export", got, map[string]string{"DB_URL": values["DB_URL"], "API_KEY": values["API_KEY"]})
	if r.header.Get("X-Stele-Skipped") != "OPTIONAL_FLAG" {
		t.Fatalf("skipped: %q", r.header.Get("X-Stele-Skipped"))
	}
	head := must(strconv.ParseUint(r.position(t), 10, 64))
	for _, n := range []string{"DB_URL", "API_KEY"} {
		reads := secReads(t, h, n, head)
		if len(reads) != 1 || reads[0].Channel != "cli-run" || reads[0].Reason != "stele run" || reads[0].Actor != "user:bob@example.com" {
			t.Fatalf("reads of %s: %+v", n, reads)
		}
	}
	if reads := secReads(t, h, "OTHER", head); len(reads) != 0 {
		t.Fatalf("a secret outside the bundle was read: %+v", reads)
	}
	// The cli-run channel with names, or everything; without it, export.
	r = h.post(secDev+"/export", h.Bob, map[string]any{"format": "dotenv", "names": []string{"OTHER"}, "channel": "cli-run"}).expect(t, 200)
	if reads := secReads(t, h, "OTHER", must(strconv.ParseUint(r.position(t), 10, 64))); len(reads) != 1 || reads[0].Channel != "cli-run" {
		t.Fatalf("reads of OTHER: %+v", reads)
	}
	r = h.post(secDev+"/export", h.Bob, map[string]any{"format": "dotenv", "channel": "cli-run"}).expect(t, 200)
	if reads := secReads(t, h, "API_KEY", must(strconv.ParseUint(r.position(t), 10, 64))); len(reads) != 2 || reads[0].Channel != "cli-run" {
		t.Fatalf("reads of API_KEY: %+v", reads)
	}
	r = h.post(secDev+"/export", h.Bob, map[string]any{"format": "yaml", "bundle": "backend"}).expect(t, 200)
	if reads := secReads(t, h, "DB_URL", must(strconv.ParseUint(r.position(t), 10, 64))); len(reads) != 3 || reads[0].Channel != "export" {
		t.Fatalf("reads of DB_URL: %+v", reads)
	}

	// A required key without a value fails as a bulk reveal does, before
	// anything is read; bad requests name their field.
	before := must(h.App.Head(ctx))
	h.post(secDev+"/export", h.Bob, map[string]any{"format": "json", "bundle": "strict"}).expectProblem(t, 404, "not_found")
	h.post(secDev+"/reveal", h.Bob, map[string]any{"bundle": "strict"}).expectProblem(t, 404, "not_found")
	h.post(secDev+"/export", h.Bob, map[string]any{"format": "json", "bundle": "no-such-bundle"}).expectProblem(t, 404, "not_found")
	if must(h.App.Head(ctx)) != before {
		t.Fatal("refused exports recorded reads")
	}
	h.del(secDev+"/secrets/DB_URL", h.Bob).expect(t, 200)
	before = must(h.App.Head(ctx))
	h.post(secDev+"/export", h.Bob, map[string]any{"format": "json", "bundle": "backend", "channel": "cli-run"}).expectProblem(t, 409, "deleted")
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"format": "json", "names": []string{"API_KEY"}, "bundle": "backend"}, "names"},
		{map[string]any{"format": "json", "channel": "export"}, "channel"},
		{map[string]any{"format": "json", "channel": "api"}, "channel"},
		{map[string]any{"format": "json", "bundle": "backend", "channel": "CLI-RUN"}, "channel"},
	} {
		r := h.do(call{method: "POST", path: secDev + "/export", cred: h.Bob, body: c.body, invalid: true})
		r.expectProblem(t, 400, "invalid_request")
		var p api.Problem
		r.decode(t, &p)
		if p.Field != c.field {
			t.Errorf("%v: field %q, want %q", c.body, p.Field, c.field)
		}
		if strings.Contains(string(r.body), "bundle-") {
			t.Fatalf("a refused export answered a value: %s", r.body)
		}
	}
	if must(h.App.Head(ctx)) != before {
		t.Fatal("refused exports recorded reads")
	}
	// A viewer may not.
	h.post(secDev+"/export", h.Eve, map[string]any{"format": "json", "bundle": "backend", "channel": "cli-run"}).expectProblem(t, 403, "forbidden")
	vals := make([]string, 0, len(values))
	for _, v := range values {
		vals = append(vals, v)
	}
	secNoLeak(t, h, vals...)
}
