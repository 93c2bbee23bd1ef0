package app

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// Catalog is an in-memory index of environments and the key that seals
// each secret's current value, kept by following the log from the start.
// The resealer, the rotation schedule and the "is this key still in use"
// check read it. It is disposable: a new one rebuilds itself from the log.
type Catalog struct {
	mu      sync.RWMutex
	pos     uint64
	ready   bool // caught up with the head found when Run started
	envs    map[Env]*catalogEnv
	streams map[string]uint64 // stream → the last version seen
	open    map[string]openApproval
	changed chan struct{}
}

// openApproval is a request that is neither decided against nor
// delivered, expired or denied yet.
type openApproval struct {
	org       string
	expiresAt time.Time
}

type catalogEnv struct {
	settings  domain.EnvSettings
	hasKeyset bool
	secrets   map[string]*SecretSummary
}

// SecretSummary is what the catalog knows of one secret.
type SecretSummary struct {
	Name      string
	Current   uint64
	KeyID     uint32 // the key sealing the current version
	Destroyed bool   // the current version is destroyed
	Deleted   bool
}

// NewCatalog returns an empty catalog; Run fills it.
func NewCatalog() *Catalog {
	return &Catalog{envs: map[Env]*catalogEnv{}, streams: map[string]uint64{}, open: map[string]openApproval{}, changed: make(chan struct{})}
}

// follower is the part of a store the catalog reads.
type follower interface {
	eventstore.Follower
	Head(ctx context.Context) (eventstore.Head, error)
}

// Run follows the log and keeps the catalog current until ctx is done.
func (c *Catalog) Run(ctx context.Context, s follower) error {
	h, err := s.Head(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	from := c.pos + 1
	if c.pos >= h.Position {
		c.ready = true
	}
	c.mu.Unlock()
	return eventstore.Subscribe(ctx, s, from, 1000, func(recs []eventstore.Record) error {
		c.mu.Lock()
		for i := range recs {
			c.apply(&recs[i])
		}
		c.pos = recs[len(recs)-1].Position
		if c.pos >= h.Position {
			c.ready = true
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		return nil
	})
}

// StreamVersion returns the last version of stream the catalog has seen,
// and whether the catalog has caught up with the log at all (until then
// it knows too little to say).
func (c *Catalog) StreamVersion(stream string) (uint64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.streams[stream], c.ready
}

// Position returns the last log position the catalog has applied.
func (c *Catalog) Position() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.pos
}

// WaitFor blocks until the catalog has applied position pos.
func (c *Catalog) WaitFor(ctx context.Context, pos uint64) error {
	for {
		c.mu.RLock()
		p, ch := c.pos, c.changed
		c.mu.RUnlock()
		if p >= pos {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (c *Catalog) env(e Env) *catalogEnv {
	ce := c.envs[e]
	if ce == nil {
		ce = &catalogEnv{secrets: map[string]*SecretSummary{}}
		c.envs[e] = ce
	}
	return ce
}

func (c *Catalog) apply(r *eventstore.Record) {
	c.streams[r.StreamID] = r.StreamVersion
	parts := strings.Split(r.StreamID, "/")
	switch {
	case parts[0] == "project" && len(parts) == 3 && strings.HasPrefix(r.Type, "environment."):
		ev, err := domain.Decode(r.Type, r.Data)
		if err != nil {
			return
		}
		switch e := ev.(type) {
		case domain.EnvironmentCreated:
			c.env(Env{parts[1], parts[2], e.EnvID}).settings = e.EnvSettings
		case domain.EnvironmentUpdated:
			c.env(Env{parts[1], parts[2], e.EnvID}).settings = e.After
		}
	case parts[0] == "approval" && len(parts) == 2:
		switch r.Type {
		case "approval.requested":
			if ev, err := domain.Decode(r.Type, r.Data); err == nil {
				e := ev.(domain.ApprovalRequested)
				c.open[parts[1]] = openApproval{org: e.Org, expiresAt: e.ExpiresAt}
			}
		case "approval.denied", "approval.expired", "approval.delivered":
			delete(c.open, parts[1])
		}
	case parts[0] == "keyset" && len(parts) == 4 && r.Type == "keyset.created":
		c.env(Env{parts[1], parts[2], parts[3]}).hasKeyset = true
	case parts[0] == "secret" && len(parts) == 5 && r.Type != "secret.viewed":
		ev, err := domain.Decode(r.Type, r.Data)
		if err != nil {
			return
		}
		ce := c.env(Env{parts[1], parts[2], parts[3]})
		name := parts[4]
		s := ce.secrets[name]
		if s == nil {
			s = &SecretSummary{Name: name}
			ce.secrets[name] = s
		}
		switch e := ev.(type) {
		case domain.SecretCreated:
			s.Current, s.KeyID = e.Version, e.Value.KeyID
		case domain.SecretUpdated:
			s.Current, s.KeyID, s.Destroyed = e.Version, e.Value.KeyID, false
		case domain.SecretRolledBack:
			s.Current, s.KeyID, s.Destroyed = e.Version, e.Value.KeyID, false
		case domain.SecretResealed:
			if e.Version == s.Current {
				s.KeyID = e.Value.KeyID
			}
		case domain.SecretVersionDestroyed:
			if e.Version == s.Current {
				s.Destroyed = true
			}
		case domain.SecretDeleted:
			s.Deleted = true
		case domain.SecretRestored:
			s.Deleted = false
		}
	}
}

// Expired returns the open requests that expired by now: id → organization.
func (c *Catalog) Expired(now time.Time) map[string]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := map[string]string{}
	for id, a := range c.open {
		if !now.Before(a.expiresAt) {
			out[id] = a.org
		}
	}
	return out
}

// Envs returns every environment with a keyset, in order.
func (c *Catalog) Envs() []Env {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []Env
	for e, ce := range c.envs {
		if ce.hasKeyset {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Env) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// Settings returns an environment's settings.
func (c *Catalog) Settings(e Env) (domain.EnvSettings, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ce, ok := c.envs[e]
	if !ok {
		return domain.EnvSettings{}, false
	}
	return ce.settings, true
}

// Secrets returns the secrets of an environment, by name.
func (c *Catalog) Secrets(e Env) []SecretSummary {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ce := c.envs[e]
	if ce == nil {
		return nil
	}
	out := make([]SecretSummary, 0, len(ce.secrets))
	for _, s := range ce.secrets {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b SecretSummary) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// InUse counts the current values of an environment sealed by key id
// (destroyed current versions excepted: nothing reads them).
func (c *Catalog) InUse(e Env, id uint32) int {
	n := 0
	for _, s := range c.Secrets(e) {
		if s.KeyID == id && !s.Destroyed && s.Current > 0 {
			n++
		}
	}
	return n
}

// NotUnder counts the current values of an environment not sealed by key id.
func (c *Catalog) NotUnder(e Env, id uint32) int {
	n := 0
	for _, s := range c.Secrets(e) {
		if s.KeyID != id && !s.Destroyed && s.Current > 0 {
			n++
		}
	}
	return n
}
