package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// SecretMeta is what may be known of a secret without its value.
type SecretMeta struct {
	Name string `json:"name"`
	// Version is the current version, sealed by key KeyID.
	Version int64 `json:"version"`
	KeyID   int64 `json:"key_id"`
	Deleted bool  `json:"deleted"`
	// Destroyed: the current version was destroyed.
	Destroyed       bool     `json:"destroyed"`
	Description     string   `json:"description"`
	Tags            []string `json:"tags"`
	Owner           string   `json:"owner"`
	RotationSeconds int64    `json:"rotation_seconds"`
	// RotationDue: the value is older than its rotation interval.
	RotationDue    bool      `json:"rotation_due"`
	ValueUpdatedAt time.Time `json:"value_updated_at"`
	CreatedAt      time.Time `json:"created_at"`
	CreatedBy      string    `json:"created_by"`
	UpdatedAt      time.Time `json:"updated_at"`
	UpdatedBy      string    `json:"updated_by"`
}

// SecretWrite answers a write to a secret.
type SecretWrite struct {
	Name string `json:"name"`
	// Version is the version the write made (set, roll back).
	Version uint64 `json:"version,omitempty"`
	Written
}

// SecretVersionInfo is one version of a secret, without its value.
type SecretVersionInfo struct {
	Version   int64 `json:"version"`
	KeyID     int64 `json:"key_id"`
	Current   bool  `json:"current"`
	Destroyed bool  `json:"destroyed"`
	// RolledBackFrom is the version whose value a rollback copied.
	RolledBackFrom int64     `json:"rolled_back_from,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	CreatedBy      string    `json:"created_by"`
}

// SecretValue is a revealed value: Value when its bytes are UTF-8 text,
// otherwise ValueBase64.
type SecretValue struct {
	Name        string  `json:"name"`
	Version     uint64  `json:"version"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
}

// SecretRevealed answers a reveal of one value.
type SecretRevealed struct {
	SecretValue
	Written
}

func (s *Server) mountSecrets(r chi.Router) {
	const env = "/orgs/{org}/projects/{project}/envs/{env}"
	const sec = env + "/secrets/{name}"
	r.Get(env+"/secrets", s.listSecrets)
	r.Get(sec, s.getSecret)
	r.Put(sec, s.putSecret)
	r.Patch(sec, s.patchSecret)
	r.Delete(sec, s.deleteSecret)
	r.Post(sec+"/restore", s.restoreSecret)
	r.Get(sec+"/versions", s.listSecretVersions)
	r.Delete(sec+"/versions/{version}", s.destroySecretVersion)
	r.Post(sec+"/rollback", s.rollbackSecret)
	r.Post(sec+"/reveal", s.revealSecret)
	r.Post(env+"/reveal", s.revealSecrets)
	r.Post(env+"/import", s.importSecrets)
	r.Post(env+"/export", s.exportSecrets)
	r.Get(env+"/changes", s.watchChanges)
}

// secEnv is the environment a request's path names.
func secEnv(r *http.Request) app.Env {
	return app.Env{Org: chi.URLParam(r, "org"), Project: chi.URLParam(r, "project"), Env: chi.URLParam(r, "env")}
}

// secRef is the secret a request's path names; a malformed name is
// answered 400.
func secRef(w http.ResponseWriter, r *http.Request) (domain.SecretRef, bool) {
	e := secEnv(r)
	ref := domain.SecretRef{Org: e.Org, Project: e.Project, Env: e.Env, Name: chi.URLParam(r, "name")}
	if !domain.ValidSecretName(ref.Name) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "name",
			Detail: fmt.Sprintf("name: want an environment variable name (a letter or _, then letters, digits or _), at most %d bytes", domain.MaxSecretNameLen)})
		return ref, false
	}
	return ref, true
}

// secEnvExists answers 404 unless the read models know the environment.
func (s *Server) secEnvExists(w http.ResponseWriter, r *http.Request, e app.Env) bool {
	envs, err := s.cfg.Reader.Environments(r.Context(), e.Org, e.Project)
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	for _, x := range envs {
		if x.ID == e.Env {
			return true
		}
	}
	problem(w, r, http.StatusNotFound, "not_found", "no environment "+e.Env+" in project "+e.Project)
	return false
}

func secMeta(x projections.SecretInfo, now time.Time) SecretMeta {
	tags := x.Tags
	if tags == nil {
		tags = []string{}
	}
	return SecretMeta{Name: x.Name, Version: x.Version, KeyID: x.KeyID, Deleted: x.Deleted, Destroyed: x.Destroyed,
		Description: x.Description, Tags: tags, Owner: x.Owner, RotationSeconds: x.RotationSeconds,
		RotationDue:    x.RotationSeconds > 0 && !x.Deleted && now.Sub(x.ValueUpdatedAt) > time.Duration(x.RotationSeconds)*time.Second,
		ValueUpdatedAt: x.ValueUpdatedAt.UTC(), CreatedAt: x.CreatedAt.UTC(), CreatedBy: x.CreatedBy, UpdatedAt: x.UpdatedAt.UTC(), UpdatedBy: x.UpdatedBy}
}

// secETag is the entity tag of a secret's version.
func secETag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) {
	e := secEnv(r)
	if _, ok := s.authorize(w, r, e.Org, e.Project, e.Env, domain.PermReadMetadata); !ok {
		return
	}
	includeDeleted, ok := secQueryBool(w, r, "include_deleted")
	if !ok || !s.awaitPosition(w, r, "secrets", "directory") || !s.secEnvExists(w, r, e) {
		return
	}
	list, err := s.cfg.Reader.Secrets(r.Context(), e.Org, e.Project, e.Env)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.now()
	items := make([]SecretMeta, 0, len(list))
	for _, x := range list {
		if x.Deleted && !includeDeleted {
			continue
		}
		items = append(items, secMeta(x, now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

// secQueryBool reads an optional boolean query parameter (default false).
func secQueryBool(w http.ResponseWriter, r *http.Request, name string) (bool, bool) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false", "0":
		return false, true
	case "true", "1":
		return true, true
	}
	writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: name, Detail: name + ": want true or false"})
	return false, false
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	if _, ok := s.authorize(w, r, ref.Org, ref.Project, ref.Env, domain.PermReadMetadata); !ok {
		return
	}
	if !s.awaitPosition(w, r, "secrets") {
		return
	}
	x, err := s.cfg.Reader.Secret(r.Context(), ref.Org, ref.Project, ref.Env, ref.Name)
	if errors.Is(err, projections.ErrNotFound) {
		problem(w, r, http.StatusNotFound, "not_found", "no secret "+ref.Name+" in "+ref.Project+"/"+ref.Env)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", secETag(uint64(x.Version)))
	writeJSON(w, http.StatusOK, secMeta(x, s.now()))
}

// secMetaFields are a secret's metadata fields in a request body; absent
// ones stay as they are.
type secMetaFields struct {
	Description     *string   `json:"description"`
	Tags            *[]string `json:"tags"`
	Owner           *string   `json:"owner"`
	RotationSeconds *int64    `json:"rotation_seconds"`
}

func (f secMetaFields) any() bool {
	return f.Description != nil || f.Tags != nil || f.Owner != nil || f.RotationSeconds != nil
}

// apply returns m with the fields that f sets.
func (f secMetaFields) apply(m domain.SecretMetadata) domain.SecretMetadata {
	if f.Description != nil {
		m.Description = *f.Description
	}
	if f.Tags != nil {
		m.Tags = append([]string(nil), (*f.Tags)...)
	}
	if f.Owner != nil {
		m.Owner = *f.Owner
	}
	if f.RotationSeconds != nil {
		m.RotationSeconds = *f.RotationSeconds
	}
	return m
}

// check answers 400 unless every field fits the domain's limits; a write
// that also sets a value checks them before setting it, so that bad
// metadata changes nothing.
func (f secMetaFields) check(w http.ResponseWriter, r *http.Request) bool {
	bad := func(field, detail string) bool {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Detail: field + ": " + detail})
		return false
	}
	if f.Description != nil && len(*f.Description) > domain.MaxDescription {
		return bad("description", fmt.Sprintf("at most %d bytes", domain.MaxDescription))
	}
	if f.Tags != nil {
		if len(*f.Tags) > domain.MaxTags {
			return bad("tags", fmt.Sprintf("at most %d tags", domain.MaxTags))
		}
		for _, t := range *f.Tags {
			if t == "" || len(t) > domain.MaxTagLen {
				return bad("tags", fmt.Sprintf("each tag is 1 to %d bytes", domain.MaxTagLen))
			}
		}
	}
	if f.Owner != nil && len(*f.Owner) > domain.MaxNameLen {
		return bad("owner", fmt.Sprintf("at most %d bytes", domain.MaxNameLen))
	}
	if f.RotationSeconds != nil && *f.RotationSeconds < 0 {
		return bad("rotation_seconds", "not negative")
	}
	return true
}

// secretPutBody sets a value: Value (UTF-8 text) or ValueBase64 (any
// bytes), and optionally metadata.
type secretPutBody struct {
	Value       *string `json:"value"`
	ValueBase64 *string `json:"value_base64"`
	secMetaFields
}

// secPreconditions reads If-Match ("<version>": a check-and-set) and
// If-None-Match (*: create only).
func secPreconditions(w http.ResponseWriter, r *http.Request) (ifVersion uint64, createOnly, ok bool) {
	im, inm := strings.TrimSpace(r.Header.Get("If-Match")), strings.TrimSpace(r.Header.Get("If-None-Match"))
	bad := func(field, detail string) (uint64, bool, bool) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Detail: detail})
		return 0, false, false
	}
	switch {
	case im != "" && inm != "":
		return bad("If-Match", "send If-Match or If-None-Match, not both")
	case im != "":
		v, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(im, `"`), `"`), 10, 64)
		if err != nil || v == 0 || len(im) < 3 || im[0] != '"' || im[len(im)-1] != '"' {
			return bad("If-Match", `If-Match: want the current version as an entity tag ("3")`)
		}
		return v, false, true
	case inm != "":
		if inm != "*" {
			return bad("If-None-Match", "If-None-Match: only * (create only) is supported")
		}
		return 0, true, true
	}
	return 0, false, true
}

func (s *Server) putSecret(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	ifVersion, createOnly, ok := secPreconditions(w, r)
	if !ok {
		return
	}
	var body secretPutBody
	if !decodeJSON(w, r, &body) || !body.check(w, r) {
		return
	}
	var value []byte
	switch {
	case body.Value != nil && body.ValueBase64 != nil:
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "value", Detail: "send value or value_base64, not both"})
		return
	case body.Value != nil:
		value = []byte(*body.Value)
	case body.ValueBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*body.ValueBase64)
		if err != nil {
			writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "value_base64", Detail: "value_base64: not standard base64"})
			return
		}
		value = b
	default:
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "value", Detail: "send the value as value (text) or value_base64 (bytes)"})
		return
	}
	defer clear(value)
	req := s.request(r)
	in := app.SetSecret{Value: value, IfVersion: ifVersion, CreateOnly: createOnly, Metadata: body.apply(domain.SecretMetadata{})}
	res, err := s.cfg.App.SetSecret(r.Context(), req, ref, in)
	if createOnly && errors.Is(err, domain.ErrAlreadyExists) {
		problem(w, r, http.StatusPreconditionFailed, "already_exists", err.Error()+" (If-None-Match: *)")
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	created := res.Version == 1
	if !created && body.any() {
		// An update records the value first, then the metadata given with
		// it, as a second event.
		info, err := s.cfg.App.Secret(r.Context(), req.Actor, ref)
		if err == nil {
			mreq := req
			if mreq.IdempotencyKey != "" {
				mreq.IdempotencyKey += "/metadata"
			}
			var mres app.Result
			if mres, err = s.cfg.App.UpdateSecretMetadata(r.Context(), mreq, ref, body.apply(info.Metadata)); err == nil && !mres.Unchanged {
				res.Position = max(res.Position, mres.Position)
			}
		}
		if err != nil {
			s.log.Warn("a value was set but its metadata was not", "secret", ref.Stream(), "version", res.Version, "err", err)
			s.fail(w, r, err)
			return
		}
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	w.Header().Set("ETag", secETag(res.Version))
	wrote(w, status, res, SecretWrite{Name: ref.Name, Version: res.Version, Written: written(res)})
}

func (s *Server) patchSecret(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	var body secMetaFields
	if !decodeJSON(w, r, &body) || !body.check(w, r) {
		return
	}
	req := s.request(r)
	info, err := s.cfg.App.Secret(r.Context(), req.Actor, ref)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.cfg.App.UpdateSecretMetadata(r.Context(), req, ref, body.apply(info.Metadata))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wrote(w, http.StatusOK, res, SecretWrite{Name: ref.Name, Written: written(res)})
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) {
	s.secretCommand(w, r, s.cfg.App.DeleteSecret)
}

func (s *Server) restoreSecret(w http.ResponseWriter, r *http.Request) {
	s.secretCommand(w, r, s.cfg.App.RestoreSecret)
}

// secretCommand runs a secret command that takes no input.
func (s *Server) secretCommand(w http.ResponseWriter, r *http.Request, cmd func(context.Context, app.Request, domain.SecretRef) (app.Result, error)) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	res, err := cmd(r.Context(), s.request(r), ref)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wrote(w, http.StatusOK, res, SecretWrite{Name: ref.Name, Written: written(res)})
}

func (s *Server) listSecretVersions(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	if _, ok := s.authorize(w, r, ref.Org, ref.Project, ref.Env, domain.PermReadMetadata); !ok {
		return
	}
	if !s.awaitPosition(w, r, "secrets") {
		return
	}
	x, err := s.cfg.Reader.Secret(r.Context(), ref.Org, ref.Project, ref.Env, ref.Name)
	if errors.Is(err, projections.ErrNotFound) {
		problem(w, r, http.StatusNotFound, "not_found", "no secret "+ref.Name+" in "+ref.Project+"/"+ref.Env)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	vs, err := s.cfg.Reader.SecretVersions(r.Context(), ref.Org, ref.Project, ref.Env, ref.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	items := make([]SecretVersionInfo, 0, len(vs))
	for _, v := range vs {
		items = append(items, SecretVersionInfo{Version: v.Version, KeyID: v.KeyID, Current: v.Version == x.Version, Destroyed: v.Destroyed,
			RolledBackFrom: v.From, CreatedAt: v.CreatedAt.UTC(), CreatedBy: v.CreatedBy})
	}
	w.Header().Set("ETag", secETag(uint64(x.Version)))
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

// secVersionParam reads a version from the path or a body: 1 or more.
func secVersionParam(w http.ResponseWriter, r *http.Request, field, v string) (uint64, bool) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Detail: field + ": want a version (1 or more)"})
		return 0, false
	}
	return n, true
}

func (s *Server) destroySecretVersion(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	v, ok := secVersionParam(w, r, "version", chi.URLParam(r, "version"))
	if !ok {
		return
	}
	res, err := s.cfg.App.DestroySecretVersion(r.Context(), s.request(r), ref, v)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wrote(w, http.StatusOK, res, SecretWrite{Name: ref.Name, Written: written(res)})
}

func (s *Server) rollbackSecret(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	var body struct {
		Version *uint64 `json:"version"`
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	if body.Version == nil {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "version", Detail: "version: the version to roll back to is required"})
		return
	}
	to, ok := secVersionParam(w, r, "version", strconv.FormatUint(*body.Version, 10))
	if !ok {
		return
	}
	res, err := s.cfg.App.RollbackSecret(r.Context(), s.request(r), ref, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", secETag(res.Version))
	wrote(w, http.StatusOK, res, SecretWrite{Name: ref.Name, Version: res.Version, Written: written(res)})
}

// secChannel is how a revealed value leaves: to a browser session, a
// CLI session, or any other API client.
func secChannel(r *http.Request) domain.Channel {
	if c, ok := r.Context().Value(callerKey{}).(caller); ok {
		switch {
		case c.cookie:
			return domain.ChannelUI
		case c.id.Method == domain.SessionCLI:
			return domain.ChannelCLI
		}
	}
	return domain.ChannelAPI
}

// secRevealRequest is the request of a reveal: every reveal is a read of
// its own, recorded as such, so an Idempotency-Key does not apply.
func (s *Server) secRevealRequest(r *http.Request) app.Request {
	req := s.request(r)
	req.IdempotencyKey = ""
	return req
}

// secValue presents a revealed value: as text when it is UTF-8.
func secValue(name string, version uint64, value []byte) SecretValue {
	out := SecretValue{Name: name, Version: version}
	if utf8.Valid(value) {
		v := string(value)
		out.Value = &v
	} else {
		v := base64.StdEncoding.EncodeToString(value)
		out.ValueBase64 = &v
	}
	return out
}

// secOptionalJSON decodes a body that may be empty (then v stays as it is).
func secOptionalJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem(w, r, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("the request body is over %d bytes", tooBig.Limit))
			return false
		}
		problem(w, r, http.StatusBadRequest, "invalid_json", "the body could not be read")
		return false
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return true
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return decodeJSON(w, r, v)
}

func (s *Server) revealSecret(w http.ResponseWriter, r *http.Request) {
	ref, ok := secRef(w, r)
	if !ok {
		return
	}
	var body struct {
		Version *uint64 `json:"version"`
		Reason  string  `json:"reason"`
	}
	if !secOptionalJSON(w, r, &body) {
		return
	}
	var version uint64
	if body.Version != nil {
		if version, ok = secVersionParam(w, r, "version", strconv.FormatUint(*body.Version, 10)); !ok {
			return
		}
	}
	rv, err := s.cfg.App.RevealSecret(r.Context(), s.secRevealRequest(r), ref, version, body.Reason, secChannel(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := SecretRevealed{SecretValue: secValue(ref.Name, rv.Version, rv.Value), Written: Written{Position: rv.Position}}
	clear(rv.Value)
	wrote(w, http.StatusOK, app.Result{Position: rv.Position}, out)
}
