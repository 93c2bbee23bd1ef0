package domain

import (
	"slices"
	"time"
)

// SecretStream is the stream of one secret.
func SecretStream(org, project, env, name string) string {
	return "secret/" + org + "/" + project + "/" + env + "/" + name
}

// SecretRef says where a secret lives.
type SecretRef struct {
	Org     string `json:"org"`
	Project string `json:"project"`
	Env     string `json:"env"`
	Name    string `json:"name"`
}

// Stream returns the secret's stream.
func (r SecretRef) Stream() string { return SecretStream(r.Org, r.Project, r.Env, r.Name) }

func (r SecretRef) check() error {
	if err := checkSlug("organization", r.Org); err != nil {
		return err
	}
	if err := checkSlug("project", r.Project); err != nil {
		return err
	}
	if err := checkSlug("environment", r.Env); err != nil {
		return err
	}
	return checkSecretName("name", r.Name)
}

// Sealed is a value encrypted under the environment's keyset, with the id
// of the key that sealed it. The domain never sees a plaintext value.
type Sealed struct {
	KeyID      uint32 `json:"key_id"`
	Ciphertext []byte `json:"ciphertext,omitempty"`
}

func (s Sealed) check() error {
	if len(s.Ciphertext) == 0 || len(s.Ciphertext) > MaxCiphertext {
		return invalid("value", "sealed value of %d bytes; want 1 to %d", len(s.Ciphertext), MaxCiphertext)
	}
	return nil
}

// SecretMetadata describes a secret; none of it is secret.
type SecretMetadata struct {
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	Owner       string   `json:"owner,omitempty"`
	// RotationSeconds is how often the value should be changed (0: no
	// policy); dashboards report secrets past it.
	RotationSeconds int64 `json:"rotation_seconds,omitempty"`
}

func (m SecretMetadata) check() error {
	if err := checkText("description", m.Description, MaxDescription); err != nil {
		return err
	}
	if len(m.Tags) > MaxTags {
		return invalid("tags", "at most %d", MaxTags)
	}
	for _, t := range m.Tags {
		if t == "" || len(t) > MaxTagLen {
			return invalid("tags", "each tag is 1 to %d bytes", MaxTagLen)
		}
		if err := checkText("tags", t, MaxTagLen); err != nil {
			return err
		}
	}
	if err := checkText("owner", m.Owner, MaxNameLen); err != nil {
		return err
	}
	if m.RotationSeconds < 0 {
		return invalid("rotation interval", "negative")
	}
	return nil
}

func (m SecretMetadata) equal(o SecretMetadata) bool {
	return m.Description == o.Description && slices.Equal(m.Tags, o.Tags) && m.Owner == o.Owner && m.RotationSeconds == o.RotationSeconds
}

// Channel says how a value left the server.
type Channel string

const (
	ChannelAPI      Channel = "api"
	ChannelCLI      Channel = "cli"
	ChannelRun      Channel = "cli-run"
	ChannelExport   Channel = "export"
	ChannelApproval Channel = "approval-delivery"
	ChannelUI       Channel = "ui"
)

func (c Channel) valid() bool {
	switch c {
	case ChannelAPI, ChannelCLI, ChannelRun, ChannelExport, ChannelApproval, ChannelUI:
		return true
	}
	return false
}

// Secret events. Version is the value version (1, 2, …), which is not the
// stream version: views and metadata changes add events but no version.
type (
	SecretCreated struct {
		SecretRef
		Version  uint64         `json:"version"`
		Value    Sealed         `json:"value"`
		Metadata SecretMetadata `json:"metadata"`
	}
	SecretUpdated struct {
		Version  uint64 `json:"version"`
		Previous uint64 `json:"previous"`
		Value    Sealed `json:"value"`
	}
	SecretMetadataUpdated struct {
		Before SecretMetadata `json:"before"`
		After  SecretMetadata `json:"after"`
	}
	// SecretDeleted hides a secret (soft delete); it can be restored.
	SecretDeleted struct {
		Version uint64 `json:"version"`
	}
	SecretRestored struct {
		Version uint64 `json:"version"`
	}
	// SecretVersionDestroyed makes one version unreadable for good (its
	// ciphertext stays in the log; destroying the key that sealed it
	// erases it).
	SecretVersionDestroyed struct {
		Version uint64 `json:"version"`
	}
	// SecretRolledBack makes a new version carrying an earlier version's
	// value, sealed afresh for the new version.
	SecretRolledBack struct {
		Version  uint64 `json:"version"`
		Previous uint64 `json:"previous"`
		From     uint64 `json:"from"`
		Value    Sealed `json:"value"`
	}
	// SecretResealed re-encrypts a version under the keyset's new primary key.
	SecretResealed struct {
		Version   uint64 `json:"version"`
		FromKeyID uint32 `json:"from_key_id"`
		Value     Sealed `json:"value"`
	}
	// SecretViewed records that a value left the server: who (metadata
	// actor), which version, why and through what.
	SecretViewed struct {
		Version uint64  `json:"version"`
		Reason  string  `json:"reason,omitempty"`
		Channel Channel `json:"channel"`
	}
)

func (SecretCreated) EventType() string          { return "secret.created" }
func (SecretUpdated) EventType() string          { return "secret.updated" }
func (SecretMetadataUpdated) EventType() string  { return "secret.metadata_updated" }
func (SecretDeleted) EventType() string          { return "secret.deleted" }
func (SecretRestored) EventType() string         { return "secret.restored" }
func (SecretVersionDestroyed) EventType() string { return "secret.version_destroyed" }
func (SecretRolledBack) EventType() string       { return "secret.rolled_back" }
func (SecretResealed) EventType() string         { return "secret.resealed" }
func (SecretViewed) EventType() string           { return "secret.viewed" }

func init() {
	register[SecretCreated]()
	register[SecretUpdated]()
	register[SecretMetadataUpdated]()
	register[SecretDeleted]()
	register[SecretRestored]()
	register[SecretVersionDestroyed]()
	register[SecretRolledBack]()
	register[SecretResealed]()
	register[SecretViewed]()
}

// Secret commands.
type (
	CreateSecret struct {
		Ref      SecretRef
		Value    Sealed
		Metadata SecretMetadata
	}
	// UpdateSecret seals a new version. IfVersion, when not 0, is a
	// check-and-set: the update fails unless the current version is it.
	UpdateSecret struct {
		Value     Sealed
		IfVersion uint64
	}
	UpdateSecretMetadata struct{ Metadata SecretMetadata }
	DeleteSecret         struct{}
	RestoreSecret        struct{}
	DestroySecretVersion struct{ Version uint64 }
	// RollbackSecret: Value is the value of version To, sealed for the new
	// version (current + 1).
	RollbackSecret struct {
		To    uint64
		Value Sealed
	}
	// ResealSecret replaces the current version's ciphertext, sealed by
	// key FromKeyID, with Value sealed by the new primary key.
	ResealSecret struct {
		Version   uint64
		FromKeyID uint32
		Value     Sealed
	}
	// ViewSecret asks for a value (Version 0: the current one).
	// DestroyedKeys lists the environment's destroyed key ids.
	ViewSecret struct {
		Version       uint64
		Reason        string
		Channel       Channel
		DestroyedKeys []uint32
	}
)

// SecretVersion is one version of a secret's value.
type SecretVersion struct {
	Version   uint64
	Value     Sealed
	Destroyed bool
	// From is the version a rollback copied, or 0.
	From uint64
}

// Secret is the aggregate of one secret.
type Secret struct {
	ref      SecretRef
	version  uint64 // events applied
	current  uint64
	deleted  bool
	meta     SecretMetadata
	versions map[uint64]*SecretVersion
	views    uint64
}

// NewSecret returns the state of a secret with no history.
func NewSecret() *Secret { return &Secret{versions: map[uint64]*SecretVersion{}} }

// ReplaySecret rebuilds a secret from its events.
func ReplaySecret(events []Event) *Secret {
	s := NewSecret()
	for _, e := range events {
		s.Apply(e)
	}
	return s
}

func (s *Secret) Exists() bool             { return s.current > 0 }
func (s *Secret) Ref() SecretRef           { return s.ref }
func (s *Secret) StreamVersion() uint64    { return s.version }
func (s *Secret) Current() uint64          { return s.current }
func (s *Secret) Deleted() bool            { return s.deleted }
func (s *Secret) Metadata() SecretMetadata { return s.meta }
func (s *Secret) Views() uint64            { return s.views }

// Version returns one version (0: the current one).
func (s *Secret) Version(v uint64) (SecretVersion, bool) {
	if v == 0 {
		v = s.current
	}
	sv, ok := s.versions[v]
	if !ok {
		return SecretVersion{}, false
	}
	return *sv, true
}

// Versions returns every version, oldest first.
func (s *Secret) Versions() []SecretVersion {
	out := make([]SecretVersion, 0, len(s.versions))
	for v := uint64(1); v <= s.current; v++ {
		if sv, ok := s.versions[v]; ok {
			out = append(out, *sv)
		}
	}
	return out
}

// Apply folds one event into the state.
func (s *Secret) Apply(e Event) {
	s.version++
	switch e := e.(type) {
	case SecretCreated:
		s.ref, s.meta, s.current = e.SecretRef, e.Metadata, e.Version
		s.versions[e.Version] = &SecretVersion{Version: e.Version, Value: e.Value}
	case SecretUpdated:
		s.current = e.Version
		s.versions[e.Version] = &SecretVersion{Version: e.Version, Value: e.Value}
	case SecretRolledBack:
		s.current = e.Version
		s.versions[e.Version] = &SecretVersion{Version: e.Version, Value: e.Value, From: e.From}
	case SecretMetadataUpdated:
		s.meta = e.After
	case SecretDeleted:
		s.deleted = true
	case SecretRestored:
		s.deleted = false
	case SecretVersionDestroyed:
		if v := s.versions[e.Version]; v != nil {
			v.Destroyed = true
			v.Value = Sealed{}
		}
	case SecretResealed:
		if v := s.versions[e.Version]; v != nil {
			v.Value = e.Value
		}
	case SecretViewed:
		s.views++
	}
}

// Handle decides a secret command. who holds the principal's role in the
// secret's project and environment (Organization.Access).
func (s *Secret) Handle(who Principal, cmd any) ([]Event, error) {
	if c, ok := cmd.(CreateSecret); ok {
		return s.create(who, c)
	}
	if !s.Exists() {
		return nil, stateErr(ErrNotFound, "no such secret")
	}
	switch c := cmd.(type) {
	case UpdateSecret:
		if err := s.writable(who); err != nil {
			return nil, err
		}
		if c.IfVersion != 0 && c.IfVersion != s.current {
			return nil, &VersionMismatchError{Expected: c.IfVersion, Actual: s.current}
		}
		if err := c.Value.check(); err != nil {
			return nil, err
		}
		return []Event{SecretUpdated{Version: s.current + 1, Previous: s.current, Value: c.Value}}, nil
	case UpdateSecretMetadata:
		if err := s.writable(who); err != nil {
			return nil, err
		}
		if err := c.Metadata.check(); err != nil {
			return nil, err
		}
		if c.Metadata.equal(s.meta) {
			return nil, nil
		}
		return []Event{SecretMetadataUpdated{Before: s.meta, After: c.Metadata}}, nil
	case DeleteSecret:
		if err := s.writable(who); err != nil {
			return nil, err
		}
		return []Event{SecretDeleted{Version: s.current}}, nil
	case RestoreSecret:
		if err := who.require(PermWriteSecret); err != nil {
			return nil, err
		}
		if !s.deleted {
			return nil, stateErr(ErrState, "secret %s is not deleted", s.ref.Name)
		}
		return []Event{SecretRestored{Version: s.current}}, nil
	case DestroySecretVersion:
		if err := who.require(PermDestroyVersion); err != nil {
			return nil, err
		}
		v, ok := s.versions[c.Version]
		if !ok {
			return nil, stateErr(ErrNotFound, "secret %s has no version %d", s.ref.Name, c.Version)
		}
		if v.Destroyed {
			return nil, stateErr(ErrDestroyed, "version %d of %s is already destroyed", c.Version, s.ref.Name)
		}
		return []Event{SecretVersionDestroyed{Version: c.Version}}, nil
	case RollbackSecret:
		if err := s.CheckRollback(who, c.To); err != nil {
			return nil, err
		}
		if err := c.Value.check(); err != nil {
			return nil, err
		}
		return []Event{SecretRolledBack{Version: s.current + 1, Previous: s.current, From: c.To, Value: c.Value}}, nil
	case ResealSecret:
		if err := who.require(PermRotateKeys); err != nil {
			return nil, err
		}
		v, ok := s.versions[c.Version]
		switch {
		case !ok:
			return nil, stateErr(ErrNotFound, "secret %s has no version %d", s.ref.Name, c.Version)
		case c.Version != s.current:
			return nil, stateErr(ErrState, "version %d of %s is no longer current", c.Version, s.ref.Name)
		case v.Destroyed:
			return nil, stateErr(ErrDestroyed, "version %d of %s is destroyed", c.Version, s.ref.Name)
		case v.Value.KeyID != c.FromKeyID:
			return nil, stateErr(ErrState, "version %d of %s is sealed by key %d, not %d", c.Version, s.ref.Name, v.Value.KeyID, c.FromKeyID)
		}
		if err := c.Value.check(); err != nil {
			return nil, err
		}
		return []Event{SecretResealed{Version: c.Version, FromKeyID: c.FromKeyID, Value: c.Value}}, nil
	case ViewSecret:
		if err := who.require(PermRevealValue); err != nil {
			return nil, err
		}
		if s.deleted {
			return nil, stateErr(ErrDeleted, "secret %s is deleted", s.ref.Name)
		}
		ver := c.Version
		if ver == 0 {
			ver = s.current
		}
		v, ok := s.versions[ver]
		switch {
		case !ok:
			return nil, stateErr(ErrNotFound, "secret %s has no version %d", s.ref.Name, ver)
		case v.Destroyed:
			return nil, stateErr(ErrDestroyed, "version %d of %s is destroyed", ver, s.ref.Name)
		case slices.Contains(c.DestroyedKeys, v.Value.KeyID):
			return nil, stateErr(ErrDestroyed, "version %d of %s was sealed by key %d, which is destroyed", ver, s.ref.Name, v.Value.KeyID)
		}
		if !c.Channel.valid() {
			return nil, invalid("channel", "%q is not a known channel", c.Channel)
		}
		if err := checkText("reason", c.Reason, MaxReasonLen); err != nil {
			return nil, err
		}
		return []Event{SecretViewed{Version: ver, Reason: c.Reason, Channel: c.Channel}}, nil
	}
	return nil, invalid("command", "%T is not a secret command", cmd)
}

// CheckRollback reports whether who may roll the secret back to version
// to, before the caller goes to the trouble of resealing that version's
// value. Handle checks the same.
func (s *Secret) CheckRollback(who Principal, to uint64) error {
	if !s.Exists() {
		return stateErr(ErrNotFound, "no such secret")
	}
	if err := s.writable(who); err != nil {
		return err
	}
	v, ok := s.versions[to]
	switch {
	case !ok:
		return stateErr(ErrNotFound, "secret %s has no version %d", s.ref.Name, to)
	case v.Destroyed:
		return stateErr(ErrDestroyed, "version %d of %s is destroyed; it cannot be rolled back to", to, s.ref.Name)
	case to == s.current:
		return stateErr(ErrState, "version %d is already the current version of %s", to, s.ref.Name)
	}
	return nil
}

func (s *Secret) create(who Principal, c CreateSecret) ([]Event, error) {
	if err := who.require(PermWriteSecret); err != nil {
		return nil, err
	}
	if s.Exists() {
		if s.deleted {
			return nil, stateErr(ErrAlreadyExists, "secret %s exists and is deleted; restore it", s.ref.Name)
		}
		return nil, stateErr(ErrAlreadyExists, "secret %s already exists", s.ref.Name)
	}
	if err := c.Ref.check(); err != nil {
		return nil, err
	}
	if err := c.Value.check(); err != nil {
		return nil, err
	}
	if err := c.Metadata.check(); err != nil {
		return nil, err
	}
	return []Event{SecretCreated{SecretRef: c.Ref, Version: 1, Value: c.Value, Metadata: c.Metadata}}, nil
}

func (s *Secret) writable(who Principal) error {
	if err := who.require(PermWriteSecret); err != nil {
		return err
	}
	if s.deleted {
		return stateErr(ErrDeleted, "secret %s is deleted; restore it first", s.ref.Name)
	}
	return nil
}

// RotationDue reports whether the secret's value is older than its
// rotation policy at now, given when the current version was made.
func (s *Secret) RotationDue(currentSince, now time.Time) bool {
	return s.meta.RotationSeconds > 0 && now.Sub(currentSince) > time.Duration(s.meta.RotationSeconds)*time.Second
}
