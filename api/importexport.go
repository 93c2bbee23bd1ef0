package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"stele.dev/stele/app"
	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
	"stele.dev/stele/internal/envfile"
)

// Limits of the bulk endpoints.
const (
	// secMaxNames bounds the names of one bulk reveal or export.
	secMaxNames = domain.MaxBundleKeys
	// secMaxImport bounds the variables of one import.
	secMaxImport = 1000
)

// SecretsRevealed answers a bulk reveal.
type SecretsRevealed struct {
	Items []SecretValue `json:"items"`
	// Missing are the bundle's optional keys that have no value here.
	Missing []string `json:"missing"`
	Written
}

// ImportItem says what an import did (or, dry, would do) with one
// variable.
type ImportItem struct {
	Name string `json:"name"`
	// Line is where the variable starts in the file.
	Line int `json:"line"`
	// Action is created, updated or unchanged (an existing secret left as
	// it is by existing=skip).
	Action  string `json:"action"`
	Version uint64 `json:"version,omitempty"`
	// Replayed: an Idempotency-Key matched an earlier attempt, which wrote it.
	Replayed bool `json:"replayed,omitempty"`
}

// ImportResult answers an import.
type ImportResult struct {
	DryRun    bool         `json:"dry_run"`
	Items     []ImportItem `json:"items"`
	Created   int          `json:"created"`
	Updated   int          `json:"updated"`
	Unchanged int          `json:"unchanged"`
	// Position is where the last write is in the log (absent when
	// nothing was written).
	Position uint64 `json:"position,omitempty"`
}

// secPick is a secret a bulk read asks for.
type secPick struct {
	name     string
	required bool
}

// secNames checks a list of names from a request body.
func secNames(w http.ResponseWriter, r *http.Request, names []string) ([]secPick, bool) {
	bad := func(detail string) ([]secPick, bool) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "names", Detail: "names: " + detail})
		return nil, false
	}
	if len(names) > secMaxNames {
		return bad(fmt.Sprintf("at most %d", secMaxNames))
	}
	seen := map[string]bool{}
	picks := make([]secPick, 0, len(names))
	for _, n := range names {
		if !domain.ValidSecretName(n) {
			return bad("each is a secret name (a letter or _, then letters, digits or _)")
		}
		if seen[n] {
			return bad(n + " is named twice")
		}
		seen[n] = true
		picks = append(picks, secPick{name: n, required: true})
	}
	return picks, true
}

// secResolve checks, from the ledger's state, that every required pick
// has a readable current value, and sets aside the optional ones that do
// not. It answers (and returns false) when a required one has none, so
// that no value is revealed unless all of them can be.
func (s *Server) secResolve(w http.ResponseWriter, r *http.Request, e app.Env, picks []secPick) (names, missing []string, ok bool) {
	id, _ := identity(r)
	missing = []string{}
	for _, p := range picks {
		ref := domain.SecretRef{Org: e.Org, Project: e.Project, Env: e.Env, Name: p.name}
		info, err := s.cfg.App.Secret(r.Context(), id.Actor, ref)
		var why error
		switch {
		case errors.Is(err, domain.ErrNotFound):
			why = &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no secret " + p.name + " in " + e.String()}
		case err != nil:
			s.fail(w, r, err)
			return nil, nil, false
		case info.Deleted:
			why = &domain.StateError{Sentinel: domain.ErrDeleted, Reason: "secret " + p.name + " is deleted"}
		default:
			for _, v := range info.Versions {
				if v.Version == info.Current && v.Destroyed {
					why = &domain.StateError{Sentinel: domain.ErrDestroyed, Reason: fmt.Sprintf("the current version (%d) of %s is destroyed", v.Version, p.name)}
				}
			}
		}
		if why != nil {
			if p.required {
				s.fail(w, r, fmt.Errorf("%w; nothing was revealed", why))
				return nil, nil, false
			}
			missing = append(missing, p.name)
			continue
		}
		names = append(names, p.name)
	}
	return names, missing, true
}

// secRevealOne reveals one current value, as a SecretViewed of its own.
func (s *Server) secRevealOne(r *http.Request, req app.Request, e app.Env, name, reason string, ch domain.Channel) (app.Revealed, error) {
	ref := domain.SecretRef{Org: e.Org, Project: e.Project, Env: e.Env, Name: name}
	rv, err := s.cfg.App.RevealSecret(r.Context(), req, ref, 0, reason, ch)
	if err != nil {
		return rv, fmt.Errorf("revealing %s: %w", name, err)
	}
	return rv, nil
}

// revealConcurrency bounds the reveals of one request that run at once.
const revealConcurrency = 16

// revealResult is the outcome of one reveal of secRevealMany.
type revealResult struct {
	rv  app.Revealed
	err error
}

// secRevealMany reveals the current values of names, each as a
// SecretViewed of its own, and returns the outcomes in the order of
// names. The reveals run concurrently, so that their events share the
// ledger's commits (one fsync for many reads) instead of queueing one
// commit each.
func (s *Server) secRevealMany(r *http.Request, req app.Request, e app.Env, names []string, reason string, ch domain.Channel) []revealResult {
	out := make([]revealResult, len(names))
	sem := make(chan struct{}, revealConcurrency)
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i].rv, out[i].err = s.secRevealOne(r, req, e, n, reason, ch)
		}()
	}
	wg.Wait()
	return out
}

// forget clears the values of results not used.
func forget(results []revealResult) {
	for _, x := range results {
		clear(x.rv.Value)
	}
}

func (s *Server) revealSecrets(w http.ResponseWriter, r *http.Request) {
	e := secEnv(r)
	if _, ok := s.authorize(w, r, e.Org, e.Project, e.Env, domain.PermRevealValue); !ok {
		return
	}
	var body struct {
		Names  []string `json:"names"`
		Bundle string   `json:"bundle"`
		Reason string   `json:"reason"`
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	var picks []secPick
	switch {
	case body.Names != nil && body.Bundle != "":
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "names", Detail: "send names or bundle, not both"})
		return
	case body.Bundle != "":
		var ok bool
		if picks, ok = s.secBundlePicks(w, r, e, body.Bundle); !ok {
			return
		}
	case len(body.Names) > 0:
		var ok bool
		if picks, ok = secNames(w, r, body.Names); !ok {
			return
		}
	default:
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "names", Detail: "send the names to reveal, or a bundle"})
		return
	}
	names, missing, ok := s.secResolve(w, r, e, picks)
	if !ok {
		return
	}
	req, ch := s.secRevealRequest(r), secChannel(r)
	out := SecretsRevealed{Items: make([]SecretValue, 0, len(names)), Missing: missing}
	results := s.secRevealMany(r, req, e, names, body.Reason, ch)
	defer forget(results)
	for i, n := range names {
		rv, err := results[i].rv, results[i].err
		if err != nil {
			s.fail(w, r, err) // and none of the values
			return
		}
		out.Items = append(out.Items, secValue(n, rv.Version, rv.Value))
		out.Position = max(out.Position, rv.Position)
	}
	if out.Position == 0 {
		writeJSON(w, http.StatusOK, out)
		return
	}
	wrote(w, http.StatusOK, app.Result{Position: out.Position}, out)
}

// secBundlePicks are the keys of a bundle of env's project, as picks.
func (s *Server) secBundlePicks(w http.ResponseWriter, r *http.Request, e app.Env, bundle string) ([]secPick, bool) {
	id, _ := identity(r)
	keys, err := s.cfg.App.BundleKeys(r.Context(), id.Actor, e, bundle)
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	picks := make([]secPick, 0, len(keys))
	for _, k := range keys {
		picks = append(picks, secPick{name: k.Name, required: k.Required})
	}
	return picks, true
}

func (s *Server) exportSecrets(w http.ResponseWriter, r *http.Request) {
	e := secEnv(r)
	if _, ok := s.authorize(w, r, e.Org, e.Project, e.Env, domain.PermRevealValue); !ok {
		return
	}
	var body struct {
		Format string   `json:"format"`
		Names  []string `json:"names"`
		Bundle string   `json:"bundle"`
		Reason string   `json:"reason"`
		// Channel says how the values leave: "cli-run" when the CLI runs
		// a program with them (stele run), else an export.
		Channel string `json:"channel"`
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	format, err := envfile.ParseFormat(body.Format)
	if err != nil {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "format", Detail: "format: want dotenv, json or yaml"})
		return
	}
	ch := domain.ChannelExport
	switch body.Channel {
	case "":
	case string(domain.ChannelRun):
		ch = domain.ChannelRun
	default:
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "channel", Detail: "channel: want cli-run, or none"})
		return
	}
	if body.Names != nil && body.Bundle != "" {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "names", Detail: "send names or bundle, not both"})
		return
	}
	id, _ := identity(r)
	all := body.Names == nil && body.Bundle == ""
	var names []string
	skipped := []string{}
	switch {
	case all:
		if names, err = s.cfg.App.SecretNames(r.Context(), id.Actor, e); err != nil {
			s.fail(w, r, err)
			return
		}
	default:
		var picks []secPick
		var ok bool
		if body.Bundle != "" {
			picks, ok = s.secBundlePicks(w, r, e, body.Bundle)
		} else {
			picks, ok = secNames(w, r, body.Names)
		}
		if !ok {
			return
		}
		// A bundle's optional keys without a value are left out, and
		// named in X-Stele-Skipped.
		if names, skipped, ok = s.secResolve(w, r, e, picks); !ok {
			return
		}
	}
	req := s.secRevealRequest(r)
	entries := make([]envfile.Entry, 0, len(names))
	var pos uint64
	results := s.secRevealMany(r, req, e, names, body.Reason, ch)
	defer forget(results)
	for i, n := range names {
		rv, err := results[i].rv, results[i].err
		if all && (errors.Is(err, domain.ErrDestroyed) || errors.Is(err, domain.ErrDeleted) || errors.Is(err, domain.ErrNotFound)) {
			// Changed since it was listed, or sealed by a destroyed key:
			// it has no value to export.
			skipped = append(skipped, n)
			continue
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		pos = max(pos, rv.Position)
		if !utf8.Valid(rv.Value) {
			problem(w, r, http.StatusConflict, "conflict", "the value of "+n+" is not UTF-8 text, which an env file cannot hold; reveal it alone to get it in base64")
			return
		}
		entries = append(entries, envfile.Entry{Name: n, Value: string(rv.Value)})
	}
	out, err := format.Format(entries)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	h := w.Header()
	ext := map[envfile.Format]string{envfile.Dotenv: "env", envfile.JSON: "json", envfile.YAML: "yaml"}[format]
	h.Set("Content-Type", format.ContentType())
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.%s"`, e.Project, e.Env, ext))
	h.Set("Cache-Control", "no-store")
	if len(skipped) > 0 {
		h.Set("X-Stele-Skipped", strings.Join(skipped, ","))
	}
	if pos > 0 {
		h.Set("X-Stele-Position", fmt.Sprint(pos))
	}
	w.WriteHeader(http.StatusOK)
	w.Write(out)
	clear(out)
}

// secImportFormat is the format of an import's body, by its media type.
func secImportFormat(ct string) (envfile.Format, bool) {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", false
	}
	switch mt {
	case "text/plain":
		return envfile.Dotenv, true
	case "application/json":
		return envfile.JSON, true
	case "application/yaml", "application/x-yaml":
		return envfile.YAML, true
	}
	return "", false
}

func (s *Server) importSecrets(w http.ResponseWriter, r *http.Request) {
	e := secEnv(r)
	if _, ok := s.authorize(w, r, e.Org, e.Project, e.Env, domain.PermWriteSecret); !ok {
		return
	}
	dryRun, ok := secQueryBool(w, r, "dry_run")
	if !ok {
		return
	}
	skip := false
	switch r.URL.Query().Get("existing") {
	case "", "overwrite":
	case "skip":
		skip = true
	default:
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "existing", Detail: "existing: want overwrite or skip"})
		return
	}
	format, ok := secImportFormat(r.Header.Get("Content-Type"))
	if !ok {
		problem(w, r, http.StatusUnsupportedMediaType, "unsupported_media_type", "send a dotenv file as text/plain, a JSON object as application/json or a YAML mapping as application/yaml")
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem(w, r, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("the request body is over %d bytes", tooBig.Limit))
			return
		}
		problem(w, r, http.StatusBadRequest, "invalid_request", "the body could not be read")
		return
	}
	entries, err := envfile.Parse(format, data)
	clear(data)
	if err != nil {
		// The parser's errors name lines and names, never values.
		problem(w, r, http.StatusBadRequest, "invalid_request", err.Error()+"; nothing was imported")
		return
	}
	bad := func(status int, code, detail string) {
		problem(w, r, status, code, detail+"; nothing was imported")
	}
	switch {
	case len(entries) == 0:
		bad(http.StatusBadRequest, "invalid_request", "the file holds no variables")
		return
	case len(entries) > secMaxImport:
		bad(http.StatusBadRequest, "invalid_request", fmt.Sprintf("the file holds %d variables; at most %d are imported at once", len(entries), secMaxImport))
		return
	}
	for _, en := range entries {
		if !domain.ValidSecretName(en.Name) {
			bad(http.StatusBadRequest, "invalid_request", fmt.Sprintf("line %d: a name is longer than %d bytes", en.Line, domain.MaxSecretNameLen))
			return
		}
		if len(en.Value) > crypto.MaxValueSize {
			bad(http.StatusRequestEntityTooLarge, "value_too_large", fmt.Sprintf("line %d: the value of %s has %d bytes; the limit is %d", en.Line, en.Name, len(en.Value), crypto.MaxValueSize))
			return
		}
	}
	id, _ := identity(r)
	if err := s.cfg.App.CheckEnvironment(r.Context(), id.Actor, e); err != nil {
		s.fail(w, r, err)
		return
	}
	// Sort every variable out before writing any.
	out := ImportResult{DryRun: dryRun, Items: make([]ImportItem, len(entries))}
	for i, en := range entries {
		ref := domain.SecretRef{Org: e.Org, Project: e.Project, Env: e.Env, Name: en.Name}
		item := ImportItem{Name: en.Name, Line: en.Line, Action: "created"}
		info, err := s.cfg.App.Secret(r.Context(), id.Actor, ref)
		switch {
		case errors.Is(err, domain.ErrNotFound):
		case err != nil:
			s.fail(w, r, err)
			return
		case info.Deleted:
			bad(http.StatusConflict, "deleted", fmt.Sprintf("line %d: secret %s is deleted; restore it first", en.Line, en.Name))
			return
		case skip:
			item.Action, item.Version = "unchanged", info.Current
		default:
			item.Action = "updated"
		}
		out.Items[i] = item
	}
	if !dryRun {
		req := s.request(r)
		key := req.IdempotencyKey
		var done []string
		for i, en := range entries {
			item := &out.Items[i]
			if item.Action == "unchanged" {
				continue
			}
			if key != "" {
				// One key per variable, so that a retry repeats none of
				// the writes the first attempt made.
				req.IdempotencyKey = key + "/import/" + en.Name
			}
			ref := domain.SecretRef{Org: e.Org, Project: e.Project, Env: e.Env, Name: en.Name}
			value := []byte(en.Value)
			res, err := s.cfg.App.SetSecret(r.Context(), req, ref, app.SetSecret{Value: value})
			clear(value)
			if err != nil {
				s.secImportFailed(w, r, err, done, len(entries))
				return
			}
			item.Version, item.Replayed = res.Version, res.Replayed
			if res.Version == 1 {
				item.Action = "created"
			} else {
				item.Action = "updated"
			}
			out.Position = max(out.Position, res.Position)
			done = append(done, en.Name)
		}
	}
	for _, it := range out.Items {
		switch it.Action {
		case "created":
			out.Created++
		case "updated":
			out.Updated++
		default:
			out.Unchanged++
		}
	}
	if out.Position > 0 {
		wrote(w, http.StatusOK, app.Result{Position: out.Position}, out)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// secCapture holds a response written in memory.
type secCapture struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *secCapture) Header() http.Header         { return c.header }
func (c *secCapture) WriteHeader(status int)      { c.status = status }
func (c *secCapture) Write(b []byte) (int, error) { return c.body.Write(b) }

// secImportFailed answers an import that failed after validation: the
// problem the error stands for, saying which variables were written
// before the failure (each is its own event, and stays written).
func (s *Server) secImportFailed(w http.ResponseWriter, r *http.Request, err error, done []string, total int) {
	c := &secCapture{header: http.Header{}}
	s.fail(c, r, err)
	var p Problem
	if json.Unmarshal(c.body.Bytes(), &p) != nil {
		p = Problem{Status: http.StatusInternalServerError, Code: "internal"}
	}
	if len(done) == 0 {
		p.Detail += "; nothing was imported"
	} else {
		p.Detail += fmt.Sprintf("; %d of %d variables were written before this failure and stay written (%s); "+
			"retrying with the same Idempotency-Key writes the rest without repeating them", len(done), total, strings.Join(done, ", "))
	}
	for _, k := range []string{"Retry-After", "Www-Authenticate"} {
		if v := c.header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	writeProblemDoc(w, r, p)
}
