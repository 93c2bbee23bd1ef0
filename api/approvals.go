package api

import "github.com/go-chi/chi/v5"

// mountPublicApprovals: the endpoints a CLI uses before anyone vouches
// for it (open a request, collect its delivery).
func (s *Server) mountPublicApprovals(r chi.Router) {}

// mountApprovals: the endpoints of signed-in approvers.
func (s *Server) mountApprovals(r chi.Router) {}
