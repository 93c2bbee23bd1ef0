// Package api serves Stele over HTTP with chi: health and readiness now,
// the versioned /v1 API as it grows. Handlers depend on small interfaces
// declared here; cmd/stele wires the concrete adapters.
package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// LedgerStatus is what readiness reports about the ledger.
type LedgerStatus struct {
	Head           uint64 `json:"head"`
	HeadHash       string `json:"head_hash"`
	LastCheckpoint uint64 `json:"last_checkpoint"`
}

// Readiness reports whether the server can serve: its database answers
// and its ledger is open.
type Readiness interface {
	Ready(ctx context.Context) (LedgerStatus, error)
}

// Config holds what the router needs.
type Config struct {
	Ready  Readiness
	Logger *slog.Logger
}

// NewRouter returns the server's HTTP handler.
func NewRouter(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := chi.NewRouter()
	r.Use(middleware.RequestID)
	r.Use(requestIDHeader)
	r.Use(middleware.Recoverer)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		st, err := cfg.Ready.Ready(ctx)
		if err != nil {
			cfg.Logger.Warn("not ready", "err", err)
			writeProblem(w, req, http.StatusServiceUnavailable, "not_ready", "Not ready", "the ledger database is not reachable")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "ledger": st})
	})
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		writeProblem(w, req, http.StatusNotFound, "not_found", "Not found", "no such endpoint: "+req.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		writeProblem(w, req, http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed", req.Method+" is not allowed on "+req.URL.Path)
	})
	return r
}

// requestIDHeader echoes the request id to the client.
func requestIDHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := middleware.GetReqID(r.Context()); id != "" {
			w.Header().Set("X-Request-Id", id)
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Problem is an RFC 9457 problem document with a stable machine code.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, code, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Problem{
		Type:      "https://stele.dev/problems/" + code,
		Title:     title,
		Status:    status,
		Detail:    detail,
		Code:      code,
		RequestID: middleware.GetReqID(r.Context()),
	})
}
