package api

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// The web UI: server-rendered pages (html/template) over the same
// application layer and read models as the API, with their assets
// embedded. Pages are plain HTML forms: a form that changes anything
// carries the CSRF token (the double-submit cookie's value) and posts to
// a page route, which redirects back (post, redirect, get). No script is
// inline, nothing is fetched from elsewhere (see pageCSP).
//
// Page handlers reuse the API's helpers: whatever problem they would
// answer is turned into an HTML page by webPages (401 becomes a redirect
// to the sign-in page).

//go:embed web/templates/*.html web/static/*
var webFiles embed.FS

// webTemplates are the pages, each parsed with the layout.
var webTemplates = sync.OnceValues(func() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(webFuncs).ParseFS(webFiles, "web/templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(webFiles, "web/templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		name := path.Base(n)
		if name == "layout.html" {
			continue
		}
		t, err := base.Clone()
		if err != nil {
			return nil, err
		}
		if t, err = t.ParseFS(webFiles, n); err != nil {
			return nil, err
		}
		out[strings.TrimSuffix(name, ".html")] = t
	}
	return out, nil
})

var webFuncs = template.FuncMap{
	// when shows a time as UTC to the minute.
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	// iso is a time for a datetime attribute.
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	// ago says how long ago, roughly.
	"ago":  func(t time.Time) string { return ago(time.Since(t)) },
	"join": strings.Join,
	// path joins escaped path segments after a prefix.
	"seg": url.PathEscape,
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
	"add": func(a, b int) int { return a + b },
	// dict builds a map for sub-templates.
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[fmt.Sprint(kv[i])] = kv[i+1]
		}
		return m
	},
	"contains": func(list []string, s string) bool { return slices.Contains(list, s) },
}

// ago renders a duration the way people say it.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "in the future"
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

// pageData is what every page gets; Content is the page's own.
type pageData struct {
	Title string
	// Section marks the current item of the navigation.
	Section string
	// User is the person (or token) signed in; Orgs the organizations
	// they belong to (the switcher); Org the current one.
	User  string
	Orgs  []string
	Org   string
	CSRF  string
	Dev   bool
	Flash string
	// Problem is set on error pages.
	Problem   *Problem
	RequestID string
	Content   any
}

// flashes are the messages a redirect after a form may show (by key, so
// that no text of the request is reflected).
var flashes = map[string]string{
	"approved":       "Approved. The requester can collect what you let through.",
	"denied":         "Denied. The requester has been told.",
	"revealed":       "The value was revealed; the read is in the audit trail.",
	"rotated":        "A new primary key was made; the values are being resealed under it.",
	"rolled-back":    "Rolled back: a new version carries the earlier value.",
	"created":        "Created.",
	"updated":        "Saved.",
	"deleted":        "Deleted.",
	"granted":        "Role granted.",
	"revoked":        "Revoked.",
	"token-issued":   "Token issued. Copy it now: it is shown only this once.",
	"signed-out":     "Signed out.",
	"nothing-chosen": "Choose at least one key to approve.",
}

// render writes page name with d under the page policy.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) {
	ts, err := webTemplates()
	if err != nil {
		s.log.Error("web templates", "err", err)
		http.Error(w, "the pages are broken; see the server's log", http.StatusInternalServerError)
		return
	}
	t := ts[name]
	if t == nil {
		s.log.Error("no such page template", "page", name)
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	s.fillPage(r, &d)
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", d); err != nil {
		s.log.Error("page failed", "page", name, "err", err, "request_id", middleware.GetReqID(r.Context()))
		http.Error(w, "the page could not be drawn; see the server's log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", pageCSP)
	h.Del("X-Stele-Position")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fillPage adds who is signed in, their organizations and the CSRF
// token.
func (s *Server) fillPage(r *http.Request, d *pageData) {
	d.Dev = s.cfg.DevSignIn
	d.CSRF = s.csrfOf(r)
	d.RequestID = middleware.GetReqID(r.Context())
	if d.Flash == "" {
		d.Flash = flashes[r.URL.Query().Get("done")]
	}
	id, ok := identity(r)
	if !ok {
		return
	}
	d.User = id.Actor.ID
	switch id.Actor.Kind {
	case domain.ActorUser:
		if ms, err := s.cfg.Reader.MembershipsOf(r.Context(), id.Actor.ID); err == nil {
			for _, m := range ms {
				if !slices.Contains(d.Orgs, m.Org) {
					d.Orgs = append(d.Orgs, m.Org)
				}
			}
		}
	case domain.ActorToken:
		d.User = "token " + id.Actor.ID
		d.Orgs = []string{id.Org}
	}
	if d.Org == "" {
		d.Org = chi.URLParam(r, "org")
	}
}

// webPages turns what a page handler answers as a problem into an HTML
// page: a redirect to the sign-in page when nobody is signed in, an error
// page otherwise.
func (s *Server) webPages(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pw := &pageWriter{ResponseWriter: w}
		next.ServeHTTP(pw, r)
		if !pw.problem {
			return
		}
		var p Problem
		if err := json.Unmarshal(pw.buf.Bytes(), &p); err != nil || p.Status == 0 {
			p = Problem{Status: pw.status, Code: "internal", Title: "Internal error"}
		}
		if p.Status == http.StatusUnauthorized {
			w.Header().Del("WWW-Authenticate")
			http.Redirect(w, r, "/signin?return_to="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		s.render(w, r, p.Status, "error", pageData{Title: p.Title, Problem: &p})
	})
}

// pageWriter holds back a problem document so that webPages can draw it.
type pageWriter struct {
	http.ResponseWriter
	problem bool
	status  int
	buf     bytes.Buffer
}

func (p *pageWriter) WriteHeader(code int) {
	if strings.HasPrefix(p.Header().Get("Content-Type"), "application/problem+json") {
		p.problem, p.status = true, code
		p.Header().Del("Content-Type")
		return
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *pageWriter) Write(b []byte) (int, error) {
	if p.problem {
		return p.buf.Write(b)
	}
	return p.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (p *pageWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// pageIdentity is who is signed in; nobody → a redirect to sign in.
func (s *Server) pageIdentity(w http.ResponseWriter, r *http.Request) (app.Identity, bool) {
	id, ok := identity(r)
	if !ok {
		http.Redirect(w, r, "/signin?return_to="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
	}
	return id, ok
}

// back redirects after a form to path, with a flash message key.
func back(w http.ResponseWriter, r *http.Request, path, done string) {
	if done != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "done=" + url.QueryEscape(done)
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// serveStatic serves the embedded assets.
func serveStatic() http.Handler {
	sub, _ := fs.Sub(webFiles, "web/static")
	files := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
}

// mountWeb registers the pages.
func (s *Server) mountWeb(r chi.Router) {
	r.Handle("/static/*", http.StripPrefix("/static/", serveStatic()))
	r.Group(func(r chi.Router) {
		r.Use(s.webPages, s.limitBody, s.authenticate, s.rateLimit)
		r.Get("/", s.homePage)
		r.Get("/signin", s.signInPage)
		r.Post("/signout", s.signOutPage)
		r.Get("/approve/{id}", s.approvePage)
		r.Post("/approve/{id}", s.approveForm)
		s.mountOrgPages(r)
	})
}

// homePage sends a person to their first organization, or to sign in.
func (s *Server) homePage(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.pageIdentity(w, r); !ok {
		return
	}
	var d pageData
	s.fillPage(r, &d)
	if len(d.Orgs) > 0 {
		http.Redirect(w, r, "/orgs/"+url.PathEscape(d.Orgs[0]), http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "home", pageData{Title: "No organization yet"})
}

// signInPage offers the sign-in methods of this server.
func (s *Server) signInPage(w http.ResponseWriter, r *http.Request) {
	returnTo, ok := safeReturnTo(r.URL.Query().Get("return_to"))
	if !ok {
		returnTo = "/"
	}
	type method struct{ Name, URL, Note string }
	var ms []method
	if s.oidc != nil {
		ms = append(ms, method{"Sign in with " + s.cfg.OIDC.Issuer, "/v1/auth/login?return_to=" + url.QueryEscape(returnTo), "OpenID Connect"})
	}
	if s.cfg.DevSignIn {
		ms = append(ms, method{"Development sign-in", "/v1/auth/dev?return_to=" + url.QueryEscape(returnTo), "anyone can sign in as anyone"})
	}
	s.render(w, r, http.StatusOK, "signin", pageData{Title: "Sign in", Content: ms})
}

// signOutPage ends the browser's session.
func (s *Server) signOutPage(w http.ResponseWriter, r *http.Request) {
	if id, ok := identity(r); ok && id.SessionID != "" {
		if _, err := s.cfg.App.EndSession(r.Context(), s.request(r), id.SessionID, "signed out"); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	s.clearSessionCookies(w)
	back(w, r, "/signin", "signed-out")
}
