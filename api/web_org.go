package api

import (
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/domain"
)

// mountOrgPages registers the pages of an organization.
func (s *Server) mountOrgPages(r chi.Router) {
	r.Get("/switch", s.switchOrg)
	s.mountDashboardPages(r) // web_dashboard.go: dashboard, audit, approvals
	s.mountPeoplePages(r)    // web_people.go: members, tokens
	s.mountProjectPages(r)   // web_projects.go: projects, environments, secrets, bundles, keys
}

// switchOrg follows the organization switcher.
func (s *Server) switchOrg(w http.ResponseWriter, r *http.Request) {
	org := r.URL.Query().Get("org")
	if !domain.ValidSlug(org) {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/orgs/"+url.PathEscape(org), http.StatusSeeOther)
}
