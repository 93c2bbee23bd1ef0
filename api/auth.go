package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// caller is who a request comes from.
type caller struct {
	id app.Identity
	// cookie: authenticated by the session cookie (so writes need the
	// CSRF header).
	cookie bool
}

type callerKey struct{}

// identity returns who is calling, if anyone authenticated (also to the
// middleware outside authenticate, once it has run).
func identity(r *http.Request) (app.Identity, bool) {
	if c, ok := r.Context().Value(callerKey{}).(caller); ok {
		return c.id, true
	}
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok && info.caller != nil {
		return info.caller.id, true
	}
	return app.Identity{}, false
}

// sessionCookieName and csrfCookieName: over TLS the __Host- prefix binds
// the cookies to this exact origin (Secure, Path=/, no Domain).
func (s *Server) sessionCookieName() string {
	if s.cfg.Secure {
		return "__Host-stele_session"
	}
	return "stele_session"
}

func (s *Server) csrfCookieName() string {
	if s.cfg.Secure {
		return "__Host-stele_csrf"
	}
	return "stele_csrf"
}

// safeMethod: methods that change nothing and need no CSRF check.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// authenticate works out who calls: a bearer credential (a service token
// or a CLI session), or else the browser's session cookie. A bad bearer
// credential is refused outright; a stale cookie just leaves the caller
// anonymous. Writes authenticated by the cookie must carry the CSRF
// header (double submit) and, when the browser sends one, a same-origin
// Origin.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.App == nil {
			next.ServeHTTP(w, r)
			return
		}
		var c caller
		found := false
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, cred, ok := strings.Cut(h, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="stele"`)
				problem(w, r, http.StatusUnauthorized, "unauthenticated", "send Authorization: Bearer <token>")
				return
			}
			id, err := s.cfg.App.Authenticate(r.Context(), strings.TrimSpace(cred))
			if err != nil {
				if errors.Is(err, app.ErrUnauthenticated) {
					s.log.Info("credential refused", "reason", err.Error(), "request_id", middleware.GetReqID(r.Context()), "client", s.clientAddr(r))
				}
				s.fail(w, r, err)
				return
			}
			c, found = caller{id: id}, true
		} else if ck, err := r.Cookie(s.sessionCookieName()); err == nil && ck.Value != "" {
			id, err := s.cfg.App.Authenticate(r.Context(), ck.Value)
			switch {
			case err == nil:
				c, found = caller{id: id, cookie: true}, true
			case !errors.Is(err, app.ErrUnauthenticated):
				s.fail(w, r, err)
				return
			}
		}
		if found && c.cookie && !safeMethod(r.Method) {
			if err := s.checkCSRF(r); err != nil {
				if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
					info.caller = &c // the error page says who is signed in
				}
				problem(w, r, http.StatusForbidden, "csrf_failed", err.Error())
				return
			}
		}
		if found {
			noteActor(r, c.id.Actor.String())
			if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
				info.caller = &c
			}
			r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
		}
		next.ServeHTTP(w, r)
	})
}

var (
	errCSRFToken  = errors.New("a request signed in by cookie that changes anything must send X-CSRF-Token with the value of the CSRF cookie")
	errCSRFOrigin = errors.New("the request comes from another origin")
)

func (s *Server) checkCSRF(r *http.Request) error {
	// An opaque origin ("null": sandboxed frames, some redirects) is
	// another origin too.
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if o == "null" || err != nil || !strings.EqualFold(u.Host, s.publicHost(r)) {
			return errCSRFOrigin
		}
	}
	ck, err := r.Cookie(s.csrfCookieName())
	if err != nil || len(ck.Value) < 16 {
		return errCSRFToken
	}
	sent := r.Header.Get("X-CSRF-Token")
	if sent == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		sent = r.PostFormValue("csrf_token")
	}
	if subtle.ConstantTimeCompare([]byte(sent), []byte(ck.Value)) != 1 {
		return errCSRFToken
	}
	return nil
}

// publicHost is the host people reach the server by.
func (s *Server) publicHost(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil {
			return u.Host
		}
	}
	return r.Host
}

// publicURL is the server's base URL, with no trailing slash.
func (s *Server) publicURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimRight(s.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil || s.cfg.Secure {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// requireIdentity refuses anonymous callers.
func (s *Server) requireIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := identity(r); !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="stele"`)
			problem(w, r, http.StatusUnauthorized, "unauthenticated", "sign in, or send a valid token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// request is the application-layer request of an HTTP request: who, the
// request id, the client's address, and the idempotency key of a write.
func (s *Server) request(r *http.Request) app.Request {
	req := app.Request{RequestID: middleware.GetReqID(r.Context()), ClientAddr: s.clientAddr(r)}
	if id, ok := identity(r); ok {
		req.Actor = id.Actor
	}
	if !safeMethod(r.Method) {
		req.IdempotencyKey = r.Header.Get("Idempotency-Key")
	}
	return req
}

// setSessionCookies signs a browser in: the session cookie (HttpOnly,
// Secure, SameSite=Lax) and the CSRF cookie, which pages read to echo in
// X-CSRF-Token (SameSite=Strict, not HttpOnly).
func (s *Server) setSessionCookies(w http.ResponseWriter, credential string, expires time.Time) error {
	csrf, err := randomToken()
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: s.sessionCookieName(), Value: credential, Path: "/", Expires: expires,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
	http.SetCookie(w, &http.Cookie{Name: s.csrfCookieName(), Value: csrf, Path: "/", Expires: expires,
		Secure: true, SameSite: http.SameSiteStrictMode})
	return nil
}

// clearSessionCookies signs a browser out.
func (s *Server) clearSessionCookies(w http.ResponseWriter) {
	for _, n := range []string{s.sessionCookieName(), s.csrfCookieName()} {
		http.SetCookie(w, &http.Cookie{Name: n, Value: "", Path: "/", MaxAge: -1, HttpOnly: n == s.sessionCookieName(), Secure: true, SameSite: http.SameSiteLaxMode})
	}
}

// authorize checks that the caller may do perm in org (and a project and
// environment of it); on refusal it answers and returns false.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, org, project, env string, perm domain.Permission) (domain.Principal, bool) {
	id, ok := identity(r)
	if !ok {
		s.fail(w, r, app.ErrUnauthenticated)
		return domain.Principal{}, false
	}
	p, err := s.cfg.App.Authorize(r.Context(), id.Actor, org, project, env, perm)
	if err != nil {
		s.fail(w, r, err)
		return p, false
	}
	return p, true
}
