package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// saneRequestID is what the server accepts as a caller's request id.
var saneRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// requestID takes the caller's X-Request-Id when it is sane, or makes
// one, and echoes it.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !saneRequestID.MatchString(id) {
			var b [12]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), middleware.RequestIDKey, id)))
	})
}

// apiCSP is the policy of every response that is not a page: nothing may
// load, run or frame it. Pages set their own (see pageCSP).
const apiCSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// pageCSP is the policy of HTML pages: their own scripts, styles and
// images only, no inline script, no framing, forms post to the server.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

func (s *Server) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin") // browsers then send a real Origin on our own forms (not "null"), which the CSRF check requires
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Content-Security-Policy", apiCSP)
		if s.cfg.Secure {
			h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		}
		if s.cfg.DevSignIn {
			h.Set("X-Stele-Dev-Sign-In", "enabled: anyone can sign in as anyone; for development only")
		}
		next.ServeHTTP(w, r)
	})
}

// recoverer turns a panic into a 500 problem; the stack goes to the log,
// never to the client.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panicked", "panic", fmt.Sprint(v), "route", routePattern(r),
					"request_id", middleware.GetReqID(r.Context()), "stack", string(debug.Stack()))
				problem(w, r, http.StatusInternalServerError, "internal", "an internal error occurred; its details are in the server's log under this request id")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// logRequests logs one structured line per request: method, route
// pattern and path, status, size, duration, who and from where. Query
// strings, headers and bodies are never logged: they may carry
// credentials, sign-in codes or values.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		info := &requestInfo{}
		next.ServeHTTP(ww, r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info)))
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		attrs := []any{"method", r.Method, "route", routePattern(r), "path", r.URL.Path, "status", status,
			"bytes", ww.BytesWritten(), "duration_ms", float64(time.Since(start).Microseconds()) / 1000,
			"request_id", middleware.GetReqID(r.Context()), "client", s.clientAddr(r)}
		if info.actor != "" {
			attrs = append(attrs, "actor", info.actor)
		}
		level := slog.LevelDebug // probes
		switch {
		case status == http.StatusServiceUnavailable: // not yet, busy, or the ledger down (logged on its own)
			level = slog.LevelWarn
		case status >= 500:
			level = slog.LevelError
		case r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && r.URL.Path != "/metrics":
			level = slog.LevelInfo
		}
		s.log.Log(r.Context(), level, "request", attrs...)
	})
}

// requestInfo is filled in by inner handlers for the outer ones: the
// request log, and the pages that draw an error after the fact.
type requestInfo struct {
	actor  string
	caller *caller
}

type requestInfoKey struct{}

func noteActor(r *http.Request, actor string) {
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		info.actor = actor
	}
}

// limitBody bounds request bodies.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBodyBytes {
			problem(w, r, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("the request body is over %d bytes", s.cfg.MaxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// routePattern is the chi route of a request ("/v1/orgs/{org}"), or "-"
// before routing or for unknown paths.
func routePattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" {
			return p
		}
	}
	return "-"
}

// clientAddr is the caller's address: the connection's peer, or the
// first X-Forwarded-For hop behind a trusted proxy.
func (s *Server) clientAddr(r *http.Request) string {
	if s.cfg.TrustProxy {
		if f := r.Header.Get("X-Forwarded-For"); f != "" {
			first, _, _ := strings.Cut(f, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
