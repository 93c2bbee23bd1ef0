package api

import (
	"context"

	"github.com/go-chi/chi/v5"
)

// OIDCConfig configures sign-in with an OpenID Connect provider.
type OIDCConfig struct {
	Issuer       string
	ClientID     string
	ClientSecret string
}

type oidcProvider struct{}

func newOIDCProvider(ctx context.Context, cfg OIDCConfig) (*oidcProvider, error) {
	return &oidcProvider{}, nil
}

// mountAuth: sign-in and sign-out.
func (s *Server) mountAuth(r chi.Router) {}
