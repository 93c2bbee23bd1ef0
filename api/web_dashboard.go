package api

import "github.com/go-chi/chi/v5"

func (s *Server) mountDashboardPages(r chi.Router) {}
