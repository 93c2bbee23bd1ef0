package domain

import (
	"encoding/hex"

	"time"
)

// KeysetStream is the stream of one environment's keyset.
func KeysetStream(org, project, env string) string {
	return "keyset/" + org + "/" + project + "/" + env
}

// KeyState is a data key's state.
type KeyState string

const (
	KeyStateEnabled   KeyState = "enabled"
	KeyStateDisabled  KeyState = "disabled"
	KeyStateDestroyed KeyState = "destroyed"
)

// Material names one stored version of the wrapped keyset: its number and
// the SHA-256 (hex) of the wrapped bytes. The bytes themselves are kept
// outside the log so that a destroyed key can be erased.
type Material struct {
	Version uint64 `json:"material_version"`
	Hash    string `json:"material_hash"`
}

func (m Material) check(want uint64) error {
	if m.Version != want {
		return invalid("material version", "%d; the next is %d", m.Version, want)
	}
	if b, err := hex.DecodeString(m.Hash); err != nil || len(b) != 32 {
		return invalid("material hash", "want 64 hex digits (SHA-256)")
	}
	return nil
}

// Keyset events.
type (
	KeysetCreated struct {
		Org     string    `json:"org"`
		Project string    `json:"project"`
		Env     string    `json:"env"`
		KEK     string    `json:"kek"`
		KeyID   uint32    `json:"key_id"`
		At      time.Time `json:"at"`
		Material
	}
	// KeysetRotated adds a key and makes it the primary: new values are
	// sealed with it; values sealed before are resealed in the background.
	KeysetRotated struct {
		KeyID    uint32    `json:"key_id"`
		Previous uint32    `json:"previous"`
		Reason   string    `json:"reason"`
		At       time.Time `json:"at"`
		Material
	}
	KeyDisabled struct {
		KeyID uint32 `json:"key_id"`
		Material
	}
	KeyEnabled struct {
		KeyID uint32 `json:"key_id"`
		Material
	}
	// KeyDestroyed erases a key: what only it sealed can never be read
	// again (crypto-shredding), while the log still verifies.
	KeyDestroyed struct {
		KeyID uint32 `json:"key_id"`
		Material
	}
	KeysetRewrapped struct {
		From string `json:"from"`
		To   string `json:"to"`
		Material
	}
	// KeysetResealed records that every current value is sealed by the
	// primary key KeyID (Values of them were resealed to get there).
	KeysetResealed struct {
		KeyID  uint32 `json:"key_id"`
		Values int    `json:"values"`
	}
)

func (KeysetCreated) EventType() string   { return "keyset.created" }
func (KeysetRotated) EventType() string   { return "keyset.rotated" }
func (KeyDisabled) EventType() string     { return "keyset.key_disabled" }
func (KeyEnabled) EventType() string      { return "keyset.key_enabled" }
func (KeyDestroyed) EventType() string    { return "keyset.key_destroyed" }
func (KeysetRewrapped) EventType() string { return "keyset.rewrapped" }
func (KeysetResealed) EventType() string  { return "keyset.resealed" }

func init() {
	register[KeysetCreated]()
	register[KeysetRotated]()
	register[KeyDisabled]()
	register[KeyEnabled]()
	register[KeyDestroyed]()
	register[KeysetRewrapped]()
	register[KeysetResealed]()
}

// Keyset commands. The application layer performs the cryptography and
// names the material version it stored; the domain decides whether the
// change is allowed.
type (
	CreateKeyset struct {
		Org, Project, Env string
		KEK               string
		KeyID             uint32
		Material          Material
		Now               time.Time
	}
	RotateKeyset struct {
		KeyID    uint32
		Reason   string // "scheduled", "manual", …
		Material Material
		Now      time.Time
	}
	// DisableKey: InUse is how many current values the key still seals
	// (the resealer's count); a key in use cannot be disabled.
	DisableKey struct {
		KeyID    uint32
		InUse    int
		Material Material
	}
	EnableKey struct {
		KeyID    uint32
		Material Material
	}
	DestroyKey struct {
		KeyID    uint32
		Material Material
	}
	RewrapKeyset struct {
		To       string
		Material Material
	}
	CompleteReseal struct {
		KeyID  uint32
		Values int
	}
)

// KeysetKey is one data key's state.
type KeysetKey struct {
	ID      uint32
	State   KeyState
	Primary bool
	AddedAt time.Time
}

// Keyset is the aggregate of one environment's data keys.
type Keyset struct {
	org, project, env string
	kek               string
	version           uint64
	material          Material
	keys              []*KeysetKey
	primary           uint32
	primarySince      time.Time
	resealed          uint32 // the primary key whose reseal completed
}

// NewKeyset returns the state of a keyset with no history.
func NewKeyset() *Keyset { return &Keyset{} }

// ReplayKeyset rebuilds a keyset from its events.
func ReplayKeyset(events []Event) *Keyset {
	k := NewKeyset()
	for _, e := range events {
		k.Apply(e)
	}
	return k
}

func (k *Keyset) Exists() bool                    { return k.material.Version > 0 }
func (k *Keyset) Version() uint64                 { return k.version }
func (k *Keyset) KEK() string                     { return k.kek }
func (k *Keyset) Material() Material              { return k.material }
func (k *Keyset) Primary() uint32                 { return k.primary }
func (k *Keyset) PrimarySince() time.Time         { return k.primarySince }
func (k *Keyset) Env() (org, project, env string) { return k.org, k.project, k.env }

// ResealComplete reports whether every current value is known to be
// sealed by the primary key.
func (k *Keyset) ResealComplete() bool { return k.resealed == k.primary }

// Keys returns the keys, oldest first.
func (k *Keyset) Keys() []KeysetKey {
	out := make([]KeysetKey, len(k.keys))
	for i, key := range k.keys {
		out[i] = *key
	}
	return out
}

// Key returns one key's state.
func (k *Keyset) Key(id uint32) (KeysetKey, bool) {
	if key := k.key(id); key != nil {
		return *key, true
	}
	return KeysetKey{}, false
}

// Destroyed returns the ids of destroyed keys.
func (k *Keyset) Destroyed() []uint32 {
	var out []uint32
	for _, key := range k.keys {
		if key.State == KeyStateDestroyed {
			out = append(out, key.ID)
		}
	}
	return out
}

// RotationDue reports whether the primary key is older than interval at now.
func (k *Keyset) RotationDue(interval time.Duration, now time.Time) bool {
	return k.Exists() && interval > 0 && now.Sub(k.primarySince) >= interval
}

func (k *Keyset) key(id uint32) *KeysetKey {
	for _, key := range k.keys {
		if key.ID == id {
			return key
		}
	}
	return nil
}

// Apply folds one event into the state.
func (k *Keyset) Apply(e Event) {
	k.version++
	switch e := e.(type) {
	case KeysetCreated:
		k.org, k.project, k.env, k.kek, k.material = e.Org, e.Project, e.Env, e.KEK, e.Material
		k.keys = []*KeysetKey{{ID: e.KeyID, State: KeyStateEnabled, Primary: true, AddedAt: e.At}}
		k.primary, k.primarySince, k.resealed = e.KeyID, e.At, e.KeyID
	case KeysetRotated:
		k.material = e.Material
		for _, key := range k.keys {
			key.Primary = false
		}
		k.keys = append(k.keys, &KeysetKey{ID: e.KeyID, State: KeyStateEnabled, Primary: true, AddedAt: e.At})
		k.primary, k.primarySince = e.KeyID, e.At
	case KeyDisabled:
		k.material = e.Material
		if key := k.key(e.KeyID); key != nil {
			key.State = KeyStateDisabled
		}
	case KeyEnabled:
		k.material = e.Material
		if key := k.key(e.KeyID); key != nil {
			key.State = KeyStateEnabled
		}
	case KeyDestroyed:
		k.material = e.Material
		if key := k.key(e.KeyID); key != nil {
			key.State = KeyStateDestroyed
		}
	case KeysetRewrapped:
		k.material, k.kek = e.Material, e.To
	case KeysetResealed:
		k.resealed = e.KeyID
	}
}

// Handle decides a keyset command. who holds the principal's role in the
// keyset's project and environment.
func (k *Keyset) Handle(who Principal, cmd any) ([]Event, error) {
	if c, ok := cmd.(CreateKeyset); ok {
		if k.Exists() {
			return nil, stateErr(ErrAlreadyExists, "the environment already has a keyset")
		}
		if err := who.require(PermWriteSecret); err != nil { // made on first write, by whoever writes
			return nil, err
		}
		for _, f := range [][2]string{{"organization", c.Org}, {"project", c.Project}, {"environment", c.Env}} {
			if err := checkSlug(f[0], f[1]); err != nil {
				return nil, err
			}
		}
		if c.KEK == "" {
			return nil, invalid("kek", "empty")
		}
		if err := c.Material.check(1); err != nil {
			return nil, err
		}
		return []Event{KeysetCreated{Org: c.Org, Project: c.Project, Env: c.Env, KEK: c.KEK, KeyID: c.KeyID, At: c.Now.UTC(), Material: c.Material}}, nil
	}
	if !k.Exists() {
		return nil, stateErr(ErrNotFound, "the environment has no keyset yet")
	}
	next := k.material.Version + 1
	switch c := cmd.(type) {
	case RotateKeyset:
		if err := who.require(PermRotateKeys); err != nil {
			return nil, err
		}
		if k.key(c.KeyID) != nil {
			return nil, invalid("key id", "%d is already in the keyset", c.KeyID)
		}
		if err := c.Material.check(next); err != nil {
			return nil, err
		}
		if err := checkText("reason", c.Reason, MaxReasonLen); err != nil {
			return nil, err
		}
		return []Event{KeysetRotated{KeyID: c.KeyID, Previous: k.primary, Reason: c.Reason, At: c.Now.UTC(), Material: c.Material}}, nil
	case DisableKey:
		if err := who.require(PermRotateKeys); err != nil {
			return nil, err
		}
		key, err := k.changeable(c.KeyID)
		if err != nil {
			return nil, err
		}
		if key.State != KeyStateEnabled {
			return nil, stateErr(ErrState, "key %d is %s", c.KeyID, key.State)
		}
		if c.InUse > 0 {
			return nil, stateErr(ErrState, "key %d still seals %d current values; wait for resealing", c.KeyID, c.InUse)
		}
		if err := c.Material.check(next); err != nil {
			return nil, err
		}
		return []Event{KeyDisabled{KeyID: c.KeyID, Material: c.Material}}, nil
	case EnableKey:
		if err := who.require(PermRotateKeys); err != nil {
			return nil, err
		}
		key, err := k.changeable(c.KeyID)
		if err != nil {
			return nil, err
		}
		if key.State != KeyStateDisabled {
			return nil, stateErr(ErrState, "key %d is %s", c.KeyID, key.State)
		}
		if err := c.Material.check(next); err != nil {
			return nil, err
		}
		return []Event{KeyEnabled{KeyID: c.KeyID, Material: c.Material}}, nil
	case DestroyKey:
		if err := who.require(PermDestroyKey); err != nil {
			return nil, err
		}
		key, err := k.changeable(c.KeyID)
		if err != nil {
			return nil, err
		}
		if key.State != KeyStateDisabled {
			return nil, stateErr(ErrState, "key %d is %s; disable it before destroying it", c.KeyID, key.State)
		}
		if err := c.Material.check(next); err != nil {
			return nil, err
		}
		return []Event{KeyDestroyed{KeyID: c.KeyID, Material: c.Material}}, nil
	case RewrapKeyset:
		if err := who.require(PermRotateKeys); err != nil {
			return nil, err
		}
		if c.To == "" || c.To == k.kek {
			return nil, invalid("kek", "the keyset is already wrapped by %q", k.kek)
		}
		if err := c.Material.check(next); err != nil {
			return nil, err
		}
		return []Event{KeysetRewrapped{From: k.kek, To: c.To, Material: c.Material}}, nil
	case CompleteReseal:
		if err := who.require(PermRotateKeys); err != nil {
			return nil, err
		}
		if c.KeyID != k.primary {
			return nil, stateErr(ErrState, "key %d is not the primary (%d)", c.KeyID, k.primary)
		}
		if k.resealed == k.primary {
			return nil, nil
		}
		return []Event{KeysetResealed{KeyID: c.KeyID, Values: c.Values}}, nil
	}
	return nil, invalid("command", "%T is not a keyset command", cmd)
}

// changeable returns a key that may change state: it exists, is not the
// primary, and is not destroyed.
func (k *Keyset) changeable(id uint32) (*KeysetKey, error) {
	key := k.key(id)
	switch {
	case key == nil:
		return nil, stateErr(ErrNotFound, "no key %d in the keyset", id)
	case key.Primary:
		return nil, stateErr(ErrState, "key %d is the primary key; rotate first", id)
	case key.State == KeyStateDestroyed:
		return nil, stateErr(ErrDestroyed, "key %d is destroyed", id)
	}
	return key, nil
}
