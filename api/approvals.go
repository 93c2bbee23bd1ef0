package api

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// Approval requests: a client (typically the CLI, signed in or not) asks
// for secrets, a sign-in, or a change of values; signed-in people who may
// approve in the environment see the request and approve or deny it; the
// client collects what was approved, once, sealed to its one-time key.

// mountPublicApprovals: the endpoints a CLI uses before anyone vouches
// for it (open a request, collect its delivery, withdraw it).
func (s *Server) mountPublicApprovals(r chi.Router) {
	r.Post("/approvals", s.createApproval)
	r.Post("/approvals/{id}/collect", s.collectApproval)
	r.Post("/approvals/{id}/deny", s.denyApproval)
}

// mountApprovals: the endpoints of signed-in approvers.
func (s *Server) mountApprovals(r chi.Router) {
	r.Get("/approvals/{id}", s.getApproval)
	r.Post("/approvals/{id}/approve", s.approveApproval)
	r.Get("/orgs/{org}/approvals", s.listApprovals)
}

// ApprovalCreate is the body of POST /v1/approvals.
type ApprovalCreate struct {
	Kind string `json:"kind"`
	// PublicKey is the client's one-time X25519 public key, base64.
	PublicKey  string         `json:"public_key,omitempty"`
	Org        string         `json:"org,omitempty"`
	Project    string         `json:"project,omitempty"`
	Env        string         `json:"env,omitempty"`
	Bundle     string         `json:"bundle,omitempty"`
	Keys       []string       `json:"keys,omitempty"`
	Changes    []ChangeCreate `json:"changes,omitempty"`
	TTLSeconds int            `json:"ttl_seconds,omitempty"`
}

// ChangeCreate is one change a change request asks for; value (UTF-8)
// or value_base64 carries the new value of a set.
type ChangeCreate struct {
	Name        string  `json:"name"`
	Op          string  `json:"op"`
	BaseVersion *uint64 `json:"base_version"`
	Version     uint64  `json:"version,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
}

// ApprovalCreated answers POST /v1/approvals.
type ApprovalCreated struct {
	Written
	ID              string    `json:"id"`
	Kind            string    `json:"kind"`
	Status          string    `json:"status"`
	VerificationURL string    `json:"verification_url"`
	UserCode        string    `json:"user_code"`
	ExpiresAt       time.Time `json:"expires_at"`
	ExpiresIn       int       `json:"expires_in"`
	PollToken       string    `json:"poll_token"`
	// ApprovalsRequired as known now; for an anonymous request the
	// environment's policy may raise it when approvers act.
	ApprovalsRequired int `json:"approvals_required"`
}

// defaultApprovalTTL is how long a request stays open unless asked.
const defaultApprovalTTL = 5 * time.Minute

func decodeKey(s string) ([]byte, bool) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, len(b) == 32
		}
	}
	return nil, false
}

func (s *Server) createApproval(w http.ResponseWriter, r *http.Request) {
	var in ApprovalCreate
	if !decodeJSON(w, r, &in) {
		return
	}
	bad := func(field, detail string) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field, Detail: field + ": " + detail})
	}
	spec := app.ApprovalSpec{Kind: domain.ApprovalKind(in.Kind), Org: in.Org, Project: in.Project, Env: in.Env, Bundle: in.Bundle, Keys: in.Keys,
		TTL: defaultApprovalTTL}
	switch spec.Kind {
	case domain.ApprovalSecrets, domain.ApprovalLogin:
		key, ok := decodeKey(in.PublicKey)
		if !ok {
			bad("public_key", "want a 32-byte X25519 public key in base64")
			return
		}
		spec.PublicKey = key
		if len(in.Changes) > 0 {
			bad("changes", "only a change request carries changes")
			return
		}
		if spec.Kind == domain.ApprovalSecrets && in.Bundle == "" && len(in.Keys) == 0 {
			bad("keys", "name a bundle or keys")
			return
		}
	case domain.ApprovalChange:
		if in.PublicKey != "" {
			bad("public_key", "a change request delivers nothing to the client; send no key")
			return
		}
		if _, ok := identity(r); !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="stele"`)
			problem(w, r, http.StatusUnauthorized, "unauthenticated", "sign in to request a change: it is made as you")
			return
		}
		for _, c := range in.Changes {
			ch := app.ChangeSpec{Name: c.Name, Op: domain.ChangeOp(c.Op), Version: c.Version}
			if c.BaseVersion == nil {
				bad("changes", c.Name+": base_version is required (0 to create a secret)")
				return
			}
			ch.BaseVersion = *c.BaseVersion
			switch {
			case c.Value != nil && c.ValueBase64 != nil:
				bad("changes", c.Name+": send value or value_base64, not both")
				return
			case c.Value != nil:
				ch.Value = []byte(*c.Value)
			case c.ValueBase64 != nil:
				v, err := base64.StdEncoding.DecodeString(*c.ValueBase64)
				if err != nil {
					bad("changes", c.Name+": value_base64 is not base64")
					return
				}
				ch.Value = v
			}
			if ch.Op == domain.ChangeSet && ch.Value == nil {
				bad("changes", c.Name+": a set carries value or value_base64")
				return
			}
			spec.Changes = append(spec.Changes, ch)
		}
	default:
		bad("kind", "want secrets, login or change")
		return
	}
	if in.TTLSeconds != 0 {
		if in.TTLSeconds < 10 || time.Duration(in.TTLSeconds)*time.Second > domain.MaxApprovalLifetime {
			bad("ttl_seconds", "want 10 to 3600")
			return
		}
		spec.TTL = time.Duration(in.TTLSeconds) * time.Second
	}
	t, res, err := s.cfg.App.RequestApproval(r.Context(), s.request(r), spec)
	for _, c := range spec.Changes {
		clear(c.Value)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wrote(w, http.StatusCreated, res, ApprovalCreated{Written: written(res), ID: t.ID, Kind: in.Kind, Status: string(domain.StatusPending),
		VerificationURL: s.publicURL(r) + "/approve/" + t.ID, UserCode: t.UserCode, ExpiresAt: t.ExpiresAt,
		ExpiresIn: int(t.ExpiresAt.Sub(s.now()).Round(time.Second) / time.Second), PollToken: t.PollToken, ApprovalsRequired: t.Approvals})
}

// failApproval answers an error of an approval request: the states a
// client tells apart have codes of their own.
func (s *Server) failApproval(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, domain.ErrAlreadyDelivered):
		problem(w, r, http.StatusGone, "already_delivered", err.Error())
	case errors.Is(err, domain.ErrApprovalDenied):
		problem(w, r, http.StatusConflict, "approval_denied", err.Error())
	default:
		s.fail(w, r, err)
	}
}

// approvalID reads and checks the {id} path parameter; an id that
// cannot be one is simply not found.
func (s *Server) approvalID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := chi.URLParam(r, "id")
	if !domain.ValidID(id) {
		problem(w, r, http.StatusNotFound, "not_found", "no such request")
		return "", false
	}
	return id, true
}

// ApprovalCollect is the body of POST /v1/approvals/{id}/collect.
type ApprovalCollect struct {
	PollToken   string `json:"poll_token,omitempty"`
	WaitSeconds int    `json:"wait_seconds,omitempty"`
}

// ApprovalDelivery answers a collection that delivered.
type ApprovalDelivery struct {
	Written
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Status string `json:"status"`
	// SealedBox is the NaCl sealed box (base64) of the values, or of the
	// session of a sign-in; absent for a change request.
	SealedBox string                `json:"sealed_box,omitempty"`
	Keys      []domain.DeliveredKey `json:"keys"`
	// User and SessionExpiresAt describe the session of a sign-in.
	User             string     `json:"user,omitempty"`
	SessionExpiresAt *time.Time `json:"session_expires_at,omitempty"`
}

// ApprovalWaiting answers a collection whose wait ended undecided.
type ApprovalWaiting struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) collectApproval(w http.ResponseWriter, r *http.Request) {
	id, ok := s.approvalID(w, r)
	if !ok {
		return
	}
	var in ApprovalCollect
	if !decodeJSON(w, r, &in) {
		return
	}
	maxWait := int(s.cfg.LongPollMax / time.Second)
	if in.WaitSeconds < 0 || in.WaitSeconds > maxWait {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "wait_seconds",
			Detail: "wait_seconds: want 0 to " + strconv.Itoa(maxWait)})
		return
	}
	if _, signed := identity(r); !signed && in.PollToken == "" {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "poll_token",
			Detail: "poll_token: send the request's poll token, or sign in as its requester"})
		return
	}
	req := s.request(r)
	status, expires, err := s.cfg.App.WaitApproval(r.Context(), req, id, in.PollToken, time.Duration(in.WaitSeconds)*time.Second)
	if err != nil {
		s.failApproval(w, r, err)
		return
	}
	if status == domain.StatusPending {
		writeJSON(w, http.StatusAccepted, ApprovalWaiting{ID: id, Status: string(status), ExpiresAt: expires})
		return
	}
	var d app.Delivery
	if in.PollToken != "" {
		d, err = s.cfg.App.CollectWithToken(r.Context(), req, id, in.PollToken)
	} else {
		d, err = s.cfg.App.Collect(r.Context(), req, id)
	}
	if err != nil {
		s.failApproval(w, r, err)
		return
	}
	out := ApprovalDelivery{Written: Written{Position: d.Position}, ID: id, Kind: string(d.Kind), Status: string(domain.StatusDelivered), Keys: d.Keys, User: d.User}
	if out.Keys == nil {
		out.Keys = []domain.DeliveredKey{}
	}
	if len(d.Sealed) > 0 {
		out.SealedBox = base64.StdEncoding.EncodeToString(d.Sealed)
	}
	if !d.ExpiresAt.IsZero() {
		out.SessionExpiresAt = &d.ExpiresAt
	}
	if d.Position == 0 { // a change request reported again: nothing was appended
		writeJSON(w, http.StatusOK, out)
		return
	}
	wrote(w, http.StatusOK, app.Result{Position: d.Position}, out)
}

// ApprovalDeny is the body of POST /v1/approvals/{id}/deny.
type ApprovalDeny struct {
	Reason    string `json:"reason,omitempty"`
	PollToken string `json:"poll_token,omitempty"`
}

// ApprovalDecided answers an approval or a denial.
type ApprovalDecided struct {
	Written
	ID     string `json:"id"`
	Status string `json:"status"`
	// Applied are the secrets a change request changed, with their
	// versions after the change.
	Applied []domain.DeliveredKey `json:"applied,omitempty"`
}

func (s *Server) denyApproval(w http.ResponseWriter, r *http.Request) {
	id, ok := s.approvalID(w, r)
	if !ok {
		return
	}
	var in ApprovalDeny
	if !decodeJSON(w, r, &in) {
		return
	}
	if !utf8.ValidString(in.Reason) || len(in.Reason) > domain.MaxReasonLen {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "reason", Detail: "reason: at most 500 bytes of UTF-8"})
		return
	}
	var res app.Result
	var err error
	switch _, signed := identity(r); {
	case in.PollToken != "":
		res, err = s.cfg.App.Withdraw(r.Context(), s.request(r), id, in.PollToken, in.Reason)
	case signed:
		res, err = s.cfg.App.Deny(r.Context(), s.request(r), id, in.Reason)
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="stele"`)
		problem(w, r, http.StatusUnauthorized, "unauthenticated", "sign in, or send the request's poll token to withdraw it")
		return
	}
	if err != nil {
		s.failApproval(w, r, err)
		return
	}
	wrote(w, http.StatusOK, res, ApprovalDecided{Written: written(res), ID: id, Status: string(domain.StatusDenied)})
}

// ApprovalApprove is the body of POST /v1/approvals/{id}/approve.
type ApprovalApprove struct {
	Keys []string `json:"keys"`
}

func (s *Server) approveApproval(w http.ResponseWriter, r *http.Request) {
	id, ok := s.approvalID(w, r)
	if !ok {
		return
	}
	var in ApprovalApprove
	if !decodeJSON(w, r, &in) {
		return
	}
	d, err := s.cfg.App.ApproveRequest(r.Context(), s.request(r), id, in.Keys)
	if err != nil {
		s.failApproval(w, r, err)
		return
	}
	wrote(w, http.StatusOK, d.Result, ApprovalDecided{Written: written(d.Result), ID: id, Status: string(d.Status), Applied: d.Applied})
}

// ApprovalContext is what an approver sees of a request: never a value.
type ApprovalContext struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Status string `json:"status"`
	// Requester is who asks; RequesterKind says whether a person, a
	// token, or a client that is not signed in.
	Requester     string `json:"requester"`
	RequesterKind string `json:"requester_kind"`
	ClientAddr    string `json:"client_addr,omitempty"`
	Org           string `json:"org,omitempty"`
	Project       string `json:"project,omitempty"`
	Env           string `json:"env,omitempty"`
	Bundle        string `json:"bundle,omitempty"`
	// Keys are the keys asked for (a change request's: the secrets it
	// changes). KeysFromBundle: an anonymous request named a bundle that
	// no approval has resolved yet; these are its keys as they stand.
	Keys              []ApprovalKey         `json:"keys"`
	KeysFromBundle    bool                  `json:"keys_from_bundle,omitempty"`
	Changes           []ApprovalChange      `json:"changes,omitempty"`
	UserCode          string                `json:"user_code"`
	ExpiresAt         time.Time             `json:"expires_at"`
	ApprovalsRequired int                   `json:"approvals_required"`
	ApprovedBy        []string              `json:"approved_by"`
	GrantedKeys       []string              `json:"granted_keys"`
	DeniedBy          string                `json:"denied_by,omitempty"`
	DenyReason        string                `json:"deny_reason,omitempty"`
	Delivered         []domain.DeliveredKey `json:"delivered,omitempty"`
}

// ApprovalKey is a key asked for.
type ApprovalKey struct {
	Name     string `json:"name"`
	Required bool   `json:"required"`
}

// ApprovalChange is one change of a change request, without its value.
type ApprovalChange struct {
	Name        string `json:"name"`
	Op          string `json:"op"`
	BaseVersion uint64 `json:"base_version"`
	Version     uint64 `json:"version,omitempty"`
}

func (s *Server) getApproval(w http.ResponseWriter, r *http.Request) {
	id, ok := s.approvalID(w, r)
	if !ok {
		return
	}
	caller, _ := identity(r)
	v, err := s.cfg.App.Approval(r.Context(), caller.Actor, id)
	if err != nil {
		s.failApproval(w, r, err)
		return
	}
	out := ApprovalContext{ID: v.ID, Kind: string(v.Kind), Status: string(v.Status), Requester: v.Requester.String(), RequesterKind: string(v.Requester.Kind),
		ClientAddr: v.ClientAddr, Org: v.Org, Project: v.Project, Env: v.Env, Bundle: v.Bundle, Keys: []ApprovalKey{}, KeysFromBundle: v.KeysFromBundle,
		UserCode: v.UserCode, ExpiresAt: v.ExpiresAt, ApprovalsRequired: v.Required, ApprovedBy: nonNil(v.ApprovedBy), GrantedKeys: nonNil(v.Granted),
		DeniedBy: v.DeniedBy, DenyReason: v.DenyReason, Delivered: v.Delivered}
	for _, k := range v.Keys {
		out.Keys = append(out.Keys, ApprovalKey{Name: k.Name, Required: k.Required})
	}
	for _, c := range v.Changes {
		out.Changes = append(out.Changes, ApprovalChange{Name: c.Name, Op: string(c.Op), BaseVersion: c.BaseVersion, Version: c.Version})
	}
	writeJSON(w, http.StatusOK, out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ApprovalSummary is a request in an organization's list.
type ApprovalSummary struct {
	ID                string                `json:"id"`
	Kind              string                `json:"kind"`
	Status            string                `json:"status"`
	Requester         string                `json:"requester"`
	RequesterKind     string                `json:"requester_kind"`
	ClientAddr        string                `json:"client_addr,omitempty"`
	Project           string                `json:"project"`
	Env               string                `json:"env"`
	Bundle            string                `json:"bundle,omitempty"`
	Keys              []ApprovalKey         `json:"keys"`
	UserCode          string                `json:"user_code"`
	ApprovalsRequired int32                 `json:"approvals_required"`
	ApprovedBy        []string              `json:"approved_by"`
	GrantedKeys       []string              `json:"granted_keys"`
	DeliveredKeys     []domain.DeliveredKey `json:"delivered_keys"`
	RequestedAt       time.Time             `json:"requested_at"`
	ExpiresAt         time.Time             `json:"expires_at"`
	DecidedAt         *time.Time            `json:"decided_at,omitempty"`
	DecidedBy         string                `json:"decided_by,omitempty"`
	DenyReason        string                `json:"deny_reason,omitempty"`
	DeliveredAt       *time.Time            `json:"delivered_at,omitempty"`
}

var approvalStatuses = []string{"pending", "approved", "denied", "expired", "delivered"}

// listApprovals lists an organization's requests from the approvals
// read model: those in environments where the caller may approve.
func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	status := r.URL.Query().Get("status")
	if status != "" && !slices.Contains(approvalStatuses, status) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "status",
			Detail: "status: want one of " + strings.Join(approvalStatuses, ", ")})
		return
	}
	caller, _ := identity(r)
	// The caller must be able to approve somewhere in the organization:
	// organization-wide, or in one of its projects.
	_, orgErr := s.cfg.App.Authorize(r.Context(), caller.Actor, org, "", "", domain.PermApprove)
	if orgErr != nil && !errors.Is(orgErr, domain.ErrForbidden) {
		s.fail(w, r, orgErr)
		return
	}
	if !s.awaitPosition(w, r, "approvals", "directory") {
		return
	}
	if orgErr != nil {
		projects, err := s.cfg.Reader.Projects(r.Context(), org)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		denial := orgErr
		for _, p := range projects {
			_, err := s.cfg.App.Authorize(r.Context(), caller.Actor, org, p.ID, "", domain.PermApprove)
			if err == nil {
				denial = nil
				break
			}
			var fe *domain.ForbiddenError
			if errors.As(err, &fe) && !fe.Outsider {
				denial = err // a member without the role: forbidden, not hidden
			} else if !errors.Is(err, domain.ErrForbidden) {
				s.fail(w, r, err)
				return
			}
		}
		if denial != nil {
			s.fail(w, r, denial)
			return
		}
	}
	rows, err := s.cfg.Reader.Approvals(r.Context(), org, status, s.now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	type scope struct{ project, env string }
	allowed := map[scope]bool{}
	items := []ApprovalSummary{}
	for _, a := range rows {
		sc := scope{a.Project, a.Env}
		ok, seen := allowed[sc]
		if !seen {
			_, err := s.cfg.App.Authorize(r.Context(), caller.Actor, org, a.Project, a.Env, domain.PermApprove)
			if err != nil && !errors.Is(err, domain.ErrForbidden) {
				s.fail(w, r, err)
				return
			}
			ok = err == nil
			allowed[sc] = ok
		}
		if ok {
			items = append(items, approvalSummary(a))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

func approvalSummary(a projections.ApprovalInfo) ApprovalSummary {
	kind := ""
	if actor, err := domain.ParseActor(a.Requester); err == nil {
		kind = string(actor.Kind)
	}
	out := ApprovalSummary{ID: a.ID, Kind: a.Kind, Status: a.Status, Requester: a.Requester, RequesterKind: kind, ClientAddr: a.ClientAddr,
		Project: a.Project, Env: a.Env, Bundle: a.Bundle, Keys: []ApprovalKey{}, UserCode: a.UserCode, ApprovalsRequired: a.ApprovalsRequired,
		ApprovedBy: nonNil(a.ApprovedBy), GrantedKeys: nonNil(a.GrantedKeys), DeliveredKeys: a.DeliveredKeys, RequestedAt: a.RequestedAt,
		ExpiresAt: a.ExpiresAt, DecidedAt: a.DecidedAt, DecidedBy: a.DecidedBy, DenyReason: a.DenyReason, DeliveredAt: a.DeliveredAt}
	for _, k := range a.Keys {
		out.Keys = append(out.Keys, ApprovalKey{Name: k.Name, Required: k.Required})
	}
	if out.DeliveredKeys == nil {
		out.DeliveredKeys = []domain.DeliveredKey{}
	}
	return out
}
