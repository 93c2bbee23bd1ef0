package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5/middleware"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
	"stele.dev/stele/projections"
)

// Problem is an RFC 9457 problem document with a stable machine code.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Code      string `json:"code"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// problemTitles are the titles of the codes; a code's title never changes.
var problemTitles = map[string]string{
	"invalid_request":        "Invalid request",
	"invalid_json":           "Invalid JSON",
	"unsupported_media_type": "Unsupported media type",
	"not_acceptable":         "Not acceptable",
	"unauthenticated":        "Not signed in",
	"forbidden":              "Forbidden",
	"csrf_failed":            "Cross-site request refused",
	"approval_required":      "Approval required",
	"not_found":              "Not found",
	"method_not_allowed":     "Method not allowed",
	"already_exists":         "Already exists",
	"conflict":               "Conflict",
	"deleted":                "Deleted",
	"shown_once":             "Shown once",
	"destroyed":              "Destroyed",
	"expired":                "Expired",
	"version_mismatch":       "Version mismatch",
	"payload_too_large":      "Payload too large",
	"value_too_large":        "Value too large",
	"idempotency_key_reused": "Idempotency key reused",
	"rate_limited":           "Too many requests",
	"internal":               "Internal error",
	"ledger_unavailable":     "Ledger unavailable",
	"busy":                   "Busy",
	"not_yet":                "Not yet",
	"projection_halted":      "Read model halted",
	"not_ready":              "Not ready",
	"approval_denied":        "Approval denied",
	"already_delivered":      "Already delivered",
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, code, title, detail string) {
	writeProblemDoc(w, r, Problem{Status: status, Code: code, Title: title, Detail: detail})
}

func writeProblemDoc(w http.ResponseWriter, r *http.Request, p Problem) {
	if p.Title == "" {
		p.Title = problemTitles[p.Code]
	}
	p.Type = "https://stele.dev/problems/" + p.Code
	p.RequestID = middleware.GetReqID(r.Context())
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Del("X-Stele-Position")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// problem writes a problem with code's title.
func problem(w http.ResponseWriter, r *http.Request, status int, code, detail string) {
	writeProblemDoc(w, r, Problem{Status: status, Code: code, Detail: detail})
}

// retryAfter sets Retry-After in seconds.
func retryAfter(w http.ResponseWriter, seconds int) {
	w.Header().Set("Retry-After", strconv.Itoa(max(seconds, 1)))
}

// fail answers with the problem an error of the application, the domain
// or the read models stands for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeProblemDoc(w, r, s.problemOf(w, r, err))
}

// problemOf is the problem an error stands for; it sets the headers that
// go with it (Retry-After, WWW-Authenticate). Errors it does not know are
// logged and become 500 with no detail: their text may say more than a
// client should see.
func (s *Server) problemOf(w http.ResponseWriter, r *http.Request, err error) (p Problem) {
	var fe *domain.ForbiddenError
	var ve *domain.ValidationError
	switch {
	case errors.Is(err, app.ErrUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="stele"`)
		p = Problem{Status: http.StatusUnauthorized, Code: "unauthenticated", Detail: "sign in, or send a valid token"}
	case errors.As(err, &fe) && fe.Outsider:
		p = Problem{Status: http.StatusNotFound, Code: "not_found", Detail: "no such resource"}
	case errors.Is(err, domain.ErrApprovalRequired):
		p = Problem{Status: http.StatusForbidden, Code: "approval_required", Detail: err.Error()}
	case errors.Is(err, domain.ErrForbidden):
		p = Problem{Status: http.StatusForbidden, Code: "forbidden", Detail: err.Error()}
	case errors.As(err, &ve):
		p = Problem{Status: http.StatusBadRequest, Code: "invalid_request", Detail: err.Error(), Field: ve.Field}
	case errors.Is(err, domain.ErrInvalid):
		p = Problem{Status: http.StatusBadRequest, Code: "invalid_request", Detail: err.Error()}
	case errors.Is(err, domain.ErrVersionMismatch):
		p = Problem{Status: http.StatusPreconditionFailed, Code: "version_mismatch", Detail: err.Error()}
	case errors.Is(err, domain.ErrNotFound), errors.Is(err, projections.ErrNotFound):
		p = Problem{Status: http.StatusNotFound, Code: "not_found", Detail: err.Error()}
	case errors.Is(err, domain.ErrAlreadyExists):
		p = Problem{Status: http.StatusConflict, Code: "already_exists", Detail: err.Error()}
	case errors.Is(err, domain.ErrDeleted):
		p = Problem{Status: http.StatusConflict, Code: "deleted", Detail: err.Error()}
	case errors.Is(err, domain.ErrDestroyed):
		p = Problem{Status: http.StatusGone, Code: "destroyed", Detail: err.Error()}
	case errors.Is(err, domain.ErrExpired):
		p = Problem{Status: http.StatusGone, Code: "expired", Detail: err.Error()}
	case errors.Is(err, domain.ErrState):
		p = Problem{Status: http.StatusConflict, Code: "conflict", Detail: err.Error()}
	case errors.Is(err, app.ErrShownOnce):
		p = Problem{Status: http.StatusConflict, Code: "shown_once", Detail: err.Error()}
	case errors.Is(err, app.ErrValueTooLarge):
		p = Problem{Status: http.StatusRequestEntityTooLarge, Code: "value_too_large", Detail: err.Error()}
	case errors.Is(err, app.ErrIdempotencyKeyReused):
		p = Problem{Status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused", Detail: err.Error()}
	case errors.Is(err, app.ErrBusy):
		retryAfter(w, 1)
		p = Problem{Status: http.StatusServiceUnavailable, Code: "busy", Detail: "too many concurrent changes; try again"}
	case errors.Is(err, projections.ErrNotYet):
		retryAfter(w, 1)
		p = Problem{Status: http.StatusServiceUnavailable, Code: "not_yet", Detail: "the read models have not reached the requested position yet; try again"}
	case errors.Is(err, projections.ErrHalted):
		// The projector logged the halt at error level and the metric
		// stele_projection_halted alerts; each refused read is a warning.
		// The reason (positions, hashes) stays in the log.
		s.log.Warn("read refused: read model halted", "err", err, "request_id", middleware.GetReqID(r.Context()))
		model := "a read model"
		var he *projections.HaltedError
		if errors.As(err, &he) {
			w.Header().Set("X-Stele-Projection-Halted", he.Projection)
			model = "the " + he.Projection + " read model"
		}
		retryAfter(w, 60)
		p = Problem{Status: http.StatusServiceUnavailable, Code: "projection_halted",
			Detail: model + " stopped on an integrity failure of the log and serves nothing until an operator has checked the ledger and rebuilt it"}
	case errors.Is(err, app.ErrUnavailable):
		s.log.Error("ledger unavailable", "err", err, "request_id", middleware.GetReqID(r.Context()))
		retryAfter(w, 5)
		p = Problem{Status: http.StatusServiceUnavailable, Code: "ledger_unavailable", Detail: "the ledger cannot take or serve events right now; nothing was done"}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client left; nobody reads this answer.
		p = Problem{Status: 499, Code: "internal", Detail: "the request was canceled"}
	case errors.Is(err, context.DeadlineExceeded):
		retryAfter(w, 1)
		p = Problem{Status: http.StatusServiceUnavailable, Code: "ledger_unavailable", Detail: "the request timed out; nothing may have been done"}
	default:
		s.log.Error("request failed", "err", err, "method", r.Method, "route", routePattern(r), "request_id", middleware.GetReqID(r.Context()))
		p = Problem{Status: http.StatusInternalServerError, Code: "internal", Detail: "an internal error occurred; its details are in the server's log under this request id"}
	}
	return p
}
