package api

import (
	"net/http"
	"net/url"
	"slices"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/domain"
)

// approvalPage is what the approval page shows: seed 003's page, where the
// person in front of a CLI's request tells it is the right one (by the
// code the CLI prints) and lets through the keys they choose.
type approvalPage struct {
	V app.ApprovalView
	// Open: the request can still be approved or denied.
	Open bool
	// Mine: the signed-in person asked for it (and may only withdraw it).
	Mine bool
	// Approved: the signed-in person has approved it already.
	Approved bool
	// Who says what kind of requester asks.
	Who      string
	Chosen   []string
	Problem  string
	Requires string
}

func (s *Server) approvePage(w http.ResponseWriter, r *http.Request) {
	s.drawApproval(w, r, http.StatusOK, "", nil)
}

// drawApproval draws the page, with a problem of the last form if any.
func (s *Server) drawApproval(w http.ResponseWriter, r *http.Request, status int, problemText string, chosen []string) {
	id, ok := s.pageIdentity(w, r)
	if !ok {
		return
	}
	rid := chi.URLParam(r, "id")
	if !domain.ValidID(rid) {
		problem(w, r, http.StatusNotFound, "not_found", "no such request")
		return
	}
	v, err := s.cfg.App.Approval(r.Context(), id.Actor, rid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p := approvalPage{V: v, Open: v.Status == domain.StatusPending, Mine: v.Requester == id.Actor,
		Approved: slices.Contains(v.ApprovedBy, id.Actor.String()), Problem: problemText, Chosen: chosen}
	switch v.Requester.Kind {
	case domain.ActorUser:
		p.Who = "a person"
	case domain.ActorToken:
		p.Who = "a service token"
	default:
		p.Who = "a client that is not signed in"
	}
	if p.Chosen == nil {
		for _, k := range v.Keys { // every key is offered; required ones must stay
			p.Chosen = append(p.Chosen, k.Name)
		}
	}
	title := "Approve a request"
	if v.Kind == domain.ApprovalLogin {
		title = "Sign in a command-line client"
	}
	s.render(w, r, status, "approve", pageData{Title: title, Org: v.Org, Section: "approvals", Content: p})
}

// approveForm approves (with the keys chosen) or denies.
func (s *Server) approveForm(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.pageIdentity(w, r); !ok {
		return
	}
	rid := chi.URLParam(r, "id")
	if err := r.ParseForm(); err != nil || !domain.ValidID(rid) {
		problem(w, r, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return
	}
	req := s.request(r)
	back := "/approve/" + url.PathEscape(rid)
	switch r.PostForm.Get("action") {
	case "approve":
		keys := r.PostForm["keys"]
		v, err := s.cfg.App.Approval(r.Context(), req.Actor, rid)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if v.Kind == domain.ApprovalSecrets && len(keys) == 0 {
			s.drawApproval(w, r, http.StatusBadRequest, flashes["nothing-chosen"], []string{})
			return
		}
		if _, err := s.cfg.App.ApproveRequest(r.Context(), req, rid, keys); err != nil {
			s.approvalFormProblem(w, r, err, keys)
			return
		}
		backTo(w, r, back, "approved")
	case "deny":
		if _, err := s.cfg.App.Deny(r.Context(), req, rid, r.PostForm.Get("reason")); err != nil {
			s.approvalFormProblem(w, r, err, nil)
			return
		}
		backTo(w, r, back, "denied")
	default:
		problem(w, r, http.StatusBadRequest, "invalid_request", "action: want approve or deny")
	}
}

// approvalFormProblem shows what the domain refused on the page itself,
// when it is about the choice made (a required key left out, a reason too
// long); anything else is an error page.
func (s *Server) approvalFormProblem(w http.ResponseWriter, r *http.Request, err error, keys []string) {
	p := s.problemOf(w, r, err)
	switch p.Status {
	case http.StatusBadRequest, http.StatusConflict, http.StatusGone, http.StatusForbidden:
		s.drawApproval(w, r, p.Status, p.Detail, keys)
	default:
		writeProblemDoc(w, r, p)
	}
}

// backTo is back for handlers that shadow it.
func backTo(w http.ResponseWriter, r *http.Request, path, done string) { back(w, r, path, done) }
