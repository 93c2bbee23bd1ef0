package api

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"stele.dev/stele/domain"
)

// The development sign-in trusts the name typed in. It exists only when
// Config.DevSignIn is set; every response then carries
// X-Stele-Dev-Sign-In and every page says so.

// devSessionTTL is how long a development session lasts.
const devSessionTTL = 12 * time.Hour

// DevSession is the answer to a development sign-in made with JSON.
type DevSession struct {
	Written
	User      string    `json:"user"`
	Method    string    `json:"method"`
	ExpiresAt time.Time `json:"expires_at"`
}

// devSignInPage serves the form.
func (s *Server) devSignInPage(w http.ResponseWriter, r *http.Request) {
	returnTo, ok := safeReturnTo(r.URL.Query().Get("return_to"))
	if !ok {
		s.authProblem(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "return_to",
			Detail: "return_to: want a path of this server, such as /orgs"})
		return
	}
	s.page(w, r, http.StatusOK, authPage{Title: "Development sign-in", Form: true, ReturnTo: returnTo, CSRF: s.csrfOf(r),
		Message: "Type the e-mail address of the person to sign in as. No password is asked."})
}

// csrfOf is the request's CSRF cookie, if it looks like one.
func (s *Server) csrfOf(r *http.Request) string {
	if ck, err := r.Cookie(s.csrfCookieName()); err == nil && len(ck.Value) >= 16 && len(ck.Value) <= 100 {
		return ck.Value
	}
	return ""
}

// sameOrigin refuses a sign-in posted from another site (login CSRF): a
// browser says where a request comes from in Origin ("null" from
// sandboxed or privacy-sensitive contexts) and Sec-Fetch-Site. Clients
// that are not browsers send neither.
func (s *Server) sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if o == "null" || err != nil || !strings.EqualFold(u.Host, s.publicHost(r)) {
			return false
		}
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	return false
}

// devSignIn starts a development session: from the form (it answers
// with a redirect to return_to) or from JSON {"email": …} (it answers
// with the session's person and expiry). Either way the session lives in
// the cookies; the credential is never in a body.
func (s *Server) devSignIn(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		s.authProblem(w, r, Problem{Status: http.StatusForbidden, Code: "csrf_failed", Detail: "the sign-in was posted from another origin"})
		return
	}
	var email, returnTo string
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	form := mt == "application/x-www-form-urlencoded"
	if form {
		if err := r.ParseForm(); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				problem(w, r, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("the request body is over %d bytes", tooBig.Limit))
				return
			}
			s.authProblem(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Detail: "the form does not parse"})
			return
		}
		for k, v := range r.PostForm {
			if (k != "email" && k != "return_to" && k != "csrf_token") || len(v) != 1 {
				s.authProblem(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: k,
					Detail: k + ": the form takes one email, return_to and csrf_token"})
				return
			}
		}
		email = r.PostForm.Get("email")
		var ok bool
		if returnTo, ok = safeReturnTo(r.PostForm.Get("return_to")); !ok {
			s.authProblem(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "return_to",
				Detail: "return_to: want a path of this server, such as /orgs"})
			return
		}
	} else {
		var body struct {
			Email string `json:"email"`
		}
		if !decodeJSON(w, r, &body) {
			return
		}
		email = body.Email
	}
	user := strings.ToLower(strings.TrimSpace(email))
	if !domain.ValidUserID(user) {
		detail := "email: want an e-mail address (lowercase letters, digits and the usual punctuation) or an identifier"
		if form && wantsHTML(r) {
			s.page(w, r, http.StatusBadRequest, authPage{Title: "Development sign-in", Form: true, ReturnTo: returnTo,
				CSRF: s.csrfOf(r), Email: email, Error: detail})
			return
		}
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "email", Detail: detail})
		return
	}
	sess, res, ok := s.startBrowserSession(w, r, user, domain.SessionDev, "", devSessionTTL)
	if !ok {
		return
	}
	if form {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, returnTo, http.StatusSeeOther)
		return
	}
	wrote(w, http.StatusCreated, res, DevSession{Written: written(res), User: user, Method: string(domain.SessionDev), ExpiresAt: sess.ExpiresAt})
}
