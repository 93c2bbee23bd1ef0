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
// or the read models stands for. Errors it does not know are logged and
// answered 500 with no detail: their text may say more than a client
// should see.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var fe *domain.ForbiddenError
	var ve *domain.ValidationError
	switch {
	case errors.Is(err, app.ErrUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="stele"`)
		problem(w, r, http.StatusUnauthorized, "unauthenticated", "sign in, or send a valid token")
	case errors.As(err, &fe) && fe.Outsider:
		problem(w, r, http.StatusNotFound, "not_found", "no such resource")
	case errors.Is(err, domain.ErrApprovalRequired):
		problem(w, r, http.StatusForbidden, "approval_required", err.Error())
	case errors.Is(err, domain.ErrForbidden):
		problem(w, r, http.StatusForbidden, "forbidden", err.Error())
	case errors.As(err, &ve):
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Detail: err.Error(), Field: ve.Field})
	case errors.Is(err, domain.ErrInvalid):
		problem(w, r, http.StatusBadRequest, "invalid_request", err.Error())
	case errors.Is(err, domain.ErrVersionMismatch):
		problem(w, r, http.StatusPreconditionFailed, "version_mismatch", err.Error())
	case errors.Is(err, domain.ErrNotFound), errors.Is(err, projections.ErrNotFound):
		problem(w, r, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, domain.ErrAlreadyExists):
		problem(w, r, http.StatusConflict, "already_exists", err.Error())
	case errors.Is(err, domain.ErrDeleted):
		problem(w, r, http.StatusConflict, "deleted", err.Error())
	case errors.Is(err, domain.ErrDestroyed):
		problem(w, r, http.StatusGone, "destroyed", err.Error())
	case errors.Is(err, domain.ErrExpired):
		problem(w, r, http.StatusGone, "expired", err.Error())
	case errors.Is(err, domain.ErrState):
		problem(w, r, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, app.ErrShownOnce):
		problem(w, r, http.StatusConflict, "shown_once", err.Error())
	case errors.Is(err, app.ErrValueTooLarge):
		problem(w, r, http.StatusRequestEntityTooLarge, "value_too_large", err.Error())
	case errors.Is(err, app.ErrIdempotencyKeyReused):
		problem(w, r, http.StatusUnprocessableEntity, "idempotency_key_reused", err.Error())
	case errors.Is(err, app.ErrBusy):
		retryAfter(w, 1)
		problem(w, r, http.StatusServiceUnavailable, "busy", "too many concurrent changes; try again")
	case errors.Is(err, projections.ErrNotYet):
		retryAfter(w, 1)
		problem(w, r, http.StatusServiceUnavailable, "not_yet", "the read models have not reached the requested position yet; try again")
	case errors.Is(err, projections.ErrHalted):
		s.log.Error("read model halted", "err", err, "request_id", middleware.GetReqID(r.Context()))
		problem(w, r, http.StatusServiceUnavailable, "projection_halted", "a read model stopped on an integrity failure of the log; an operator must look at it")
	case errors.Is(err, app.ErrUnavailable):
		s.log.Error("ledger unavailable", "err", err, "request_id", middleware.GetReqID(r.Context()))
		retryAfter(w, 5)
		problem(w, r, http.StatusServiceUnavailable, "ledger_unavailable", "the ledger cannot take or serve events right now; nothing was done")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client left; nobody reads this answer.
		problem(w, r, 499, "internal", "the request was canceled")
	case errors.Is(err, context.DeadlineExceeded):
		retryAfter(w, 1)
		problem(w, r, http.StatusServiceUnavailable, "ledger_unavailable", "the request timed out; nothing may have been done")
	default:
		s.log.Error("request failed", "err", err, "method", r.Method, "route", routePattern(r), "request_id", middleware.GetReqID(r.Context()))
		problem(w, r, http.StatusInternalServerError, "internal", "an internal error occurred; its details are in the server's log under this request id")
	}
}
