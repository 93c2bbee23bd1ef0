package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
)

func newSecretAgg() aggregate { return domain.NewSecret() }

func envOf(ref domain.SecretRef) Env { return Env{Org: ref.Org, Project: ref.Project, Env: ref.Env} }

func valueAD(ref domain.SecretRef, version uint64) []byte {
	return crypto.ValueAD(ref.Org, ref.Project, ref.Env, ref.Name, version)
}

// seal encrypts a value for one version of a secret under the keyset's
// primary key.
func seal(ks *crypto.Keyset, ref domain.SecretRef, version uint64, value []byte) (domain.Sealed, error) {
	ct, id, err := ks.Encrypt(value, valueAD(ref, version))
	if err != nil {
		return domain.Sealed{}, err
	}
	return domain.Sealed{KeyID: uint32(id), Ciphertext: ct}, nil
}

// SetSecret says how to set a secret's value.
type SetSecret struct {
	Value []byte
	// IfVersion, when not 0, is a check-and-set: the secret must be at
	// that version.
	IfVersion uint64
	// CreateOnly refuses to write a secret that exists (HTTP's
	// If-None-Match: *); it goes with IfVersion 0.
	CreateOnly bool
	// Metadata is recorded when the secret is created.
	Metadata domain.SecretMetadata
}

// SetSecret creates a secret or seals a new version of it. The value is
// encrypted under the environment's keyset, bound to the secret's place
// and version; only the ciphertext reaches the log.
func (s *Service) SetSecret(ctx context.Context, req Request, ref domain.SecretRef, in SetSecret) (Result, error) {
	if in.CreateOnly && in.IfVersion != 0 {
		return Result{}, &domain.ValidationError{Field: "if version", Reason: "a creation has no version to check"}
	}
	if len(in.Value) > crypto.MaxValueSize {
		return Result{}, fmt.Errorf("%w: %d bytes; the limit is %d", ErrValueTooLarge, len(in.Value), crypto.MaxValueSize)
	}
	env := envOf(ref)
	who, err := s.access(ctx, req.Actor, ref.Org, ref.Project, ref.Env)
	if err != nil {
		return Result{}, err
	}
	if _, err := s.environment(ctx, env); err != nil {
		return Result{}, err
	}
	if !who.Role.Can(domain.PermWriteSecret) { // refuse before touching keys
		return Result{}, &domain.ForbiddenError{Actor: req.Actor, Permission: domain.PermWriteSecret, Reason: "role " + string(who.Role)}
	}
	if err := s.checkChange(ctx, who, ref, domain.PermWriteSecret); err != nil { // the environment's approval policy
		return Result{}, err
	}
	res, evs, err := s.execute(ctx, req, command{
		stream: ref.Stream(), tenant: ref.Org, name: setName(in), target: ref.Stream(), params: setParams(in), secret: in.Value, mk: newSecretAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			sec := a.(*domain.Secret)
			if in.CreateOnly && sec.Exists() {
				// The domain refuses, and says whether the secret is deleted.
				return sec.Handle(who, domain.CreateSecret{Ref: ref, Metadata: in.Metadata})
			}
			// Read the keyset on every attempt: a rotation may have made a
			// new primary since the last one.
			_, ks, err := s.keyset(ctx, req, who, env, true)
			if err != nil {
				return nil, err
			}
			if !sec.Exists() {
				if in.IfVersion != 0 {
					return nil, &domain.VersionMismatchError{Expected: in.IfVersion, Actual: 0}
				}
				v, err := seal(ks, ref, 1, in.Value)
				if err != nil {
					return nil, err
				}
				return sec.Handle(who, domain.CreateSecret{Ref: ref, Value: v, Metadata: in.Metadata})
			}
			v, err := seal(ks, ref, sec.Current()+1, in.Value)
			if err != nil {
				return nil, err
			}
			return sec.Handle(who, domain.UpdateSecret{Value: v, IfVersion: in.IfVersion})
		},
	})
	res.Version = versionOf(evs)
	if err == nil && !res.Replayed {
		s.heal(ctx, req, who, ref, evs, in.Value)
	}
	return res, err
}

// setName names a write for idempotency: a retry must repeat its kind.
func setName(in SetSecret) string {
	if in.CreateOnly {
		return "create secret"
	}
	return "set secret " + strconv.FormatUint(in.IfVersion, 10)
}

// setParams are the parts of a set other than the value that a retry
// with the same idempotency key must repeat.
func setParams(in SetSecret) []byte {
	b, _ := json.Marshal(in.Metadata)
	return b
}

// heal reseals a value just written if the key that sealed it stopped
// being the primary while the write was in flight (a rotation raced it),
// from the plaintext still at hand, so that no current value lingers
// under a key that is about to be disabled. Failures are logged: the
// resealer catches the value on its next pass.
func (s *Service) heal(ctx context.Context, req Request, who domain.Principal, ref domain.SecretRef, evs []domain.Event, value []byte) {
	var version uint64
	var used uint32
	for _, e := range evs {
		switch e := e.(type) {
		case domain.SecretCreated:
			version, used = e.Version, e.Value.KeyID
		case domain.SecretUpdated:
			version, used = e.Version, e.Value.KeyID
		case domain.SecretRolledBack:
			version, used = e.Version, e.Value.KeyID
		}
	}
	if version == 0 {
		return
	}
	info, ks, err := s.keyset(ctx, req, who, envOf(ref), false)
	if err != nil || info.primary == used {
		return
	}
	_, _, err = s.execute(ctx, systemRequest("resealer"), command{stream: ref.Stream(), tenant: ref.Org, mk: newSecretAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			sec := a.(*domain.Secret)
			cur, ok := sec.Version(0)
			if !ok || cur.Version != version || cur.Value.KeyID != used {
				return nil, nil // changed since: nothing of ours to heal
			}
			v, err := seal(ks, ref, version, value)
			if err != nil {
				return nil, err
			}
			return sec.Handle(domain.System("resealer"), domain.ResealSecret{Version: version, FromKeyID: used, Value: v})
		}})
	if err != nil {
		s.log.Warn("could not reseal a value written during a rotation; the resealer will", "secret", ref.Stream(), "version", version, "err", err)
	}
}

// versionOf returns the value version an event list made.
func versionOf(evs []domain.Event) uint64 {
	for _, e := range evs {
		switch e := e.(type) {
		case domain.SecretCreated:
			return e.Version
		case domain.SecretUpdated:
			return e.Version
		case domain.SecretRolledBack:
			return e.Version
		}
	}
	return 0
}

// Revealed is a secret value that left the server, and where its
// SecretViewed event is.
type Revealed struct {
	Value    []byte
	Version  uint64
	Position uint64
}

// RevealSecret returns a secret's value (version 0: the current one). The
// SecretViewed event, with reason and channel, is appended before the
// value is decrypted: if it cannot be, the value is not returned.
func (s *Service) RevealSecret(ctx context.Context, req Request, ref domain.SecretRef, version uint64, reason string, channel domain.Channel) (Revealed, error) {
	who, err := s.access(ctx, req.Actor, ref.Org, ref.Project, ref.Env)
	if err != nil {
		return Revealed{}, err
	}
	return s.reveal(ctx, req, who, ref, version, reason, channel)
}

func (s *Service) reveal(ctx context.Context, req Request, who domain.Principal, ref domain.SecretRef, version uint64, reason string, channel domain.Channel) (Revealed, error) {
	if err := s.checkReveal(ctx, who, ref); err != nil { // the environment's approval policy
		return Revealed{}, err
	}
	env := envOf(ref)
	var sealed domain.SecretVersion
	res, _, err := s.execute(ctx, req, command{
		stream: ref.Stream(), tenant: ref.Org, name: "reveal secret " + strconv.FormatUint(version, 10), target: ref.Stream(), mk: newSecretAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			sec := a.(*domain.Secret)
			if !sec.Exists() {
				return nil, &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no secret " + ref.Name + " in " + env.String()}
			}
			info, _, err := s.keyset(ctx, req, who, env, false)
			if err != nil {
				return nil, err
			}
			evs, err := sec.Handle(who, domain.ViewSecret{Version: version, Reason: reason, Channel: channel, DestroyedKeys: info.destroyed})
			if err == nil {
				sealed, _ = sec.Version(version)
			}
			return evs, err
		},
	})
	if err != nil {
		return Revealed{}, err
	}
	if res.Replayed {
		return Revealed{}, fmt.Errorf("%w: a reveal is not repeated", ErrIdempotencyKeyReused)
	}
	value, err := s.open(ctx, req, who, ref, sealed)
	if err != nil {
		return Revealed{}, err
	}
	return Revealed{Value: value, Version: sealed.Version, Position: res.Position}, nil
}

// open decrypts one version of a secret.
func (s *Service) open(ctx context.Context, req Request, who domain.Principal, ref domain.SecretRef, v domain.SecretVersion) ([]byte, error) {
	env := envOf(ref)
	for attempt := 0; ; attempt++ {
		info, ks, err := s.keyset(ctx, req, who, env, false)
		if err != nil {
			return nil, err
		}
		value, err := ks.Decrypt(v.Value.Ciphertext, valueAD(ref, v.Version))
		switch {
		case err == nil:
			return value, nil
		case errors.Is(err, crypto.ErrKeyNotFound) && attempt == 0:
			// Sealed by a key newer than the keyset we hold: read again.
			s.keys.cache.drop(env.materialID())
			continue
		case errors.Is(err, crypto.ErrKeyNotFound):
			for _, d := range info.destroyed {
				if d == v.Value.KeyID {
					return nil, &domain.StateError{Sentinel: domain.ErrDestroyed, Reason: fmt.Sprintf("version %d of %s was sealed by key %d, which is destroyed", v.Version, ref.Name, d)}
				}
			}
			return nil, fmt.Errorf("app: version %d of %s: %w", v.Version, ref.Name, err)
		case errors.Is(err, crypto.ErrKeyDisabled):
			return nil, &domain.StateError{Sentinel: domain.ErrState, Reason: fmt.Sprintf("version %d of %s was sealed by key %d, which is disabled", v.Version, ref.Name, v.Value.KeyID)}
		default:
			return nil, fmt.Errorf("app: version %d of %s: %w", v.Version, ref.Name, err)
		}
	}
}

// secretCommand runs a secret command that needs no sealing.
func (s *Service) secretCommand(ctx context.Context, req Request, ref domain.SecretRef, name string, cmd any) (Result, error) {
	who, err := s.access(ctx, req.Actor, ref.Org, ref.Project, ref.Env)
	if err != nil {
		return Result{}, err
	}
	if err := s.checkChangeCommand(ctx, who, ref, cmd); err != nil { // the environment's approval policy
		return Result{}, err
	}
	res, _, err := s.execute(ctx, req, command{
		stream: ref.Stream(), tenant: ref.Org, name: name, target: ref.Stream(), mk: newSecretAgg,
		decide: func(a aggregate) ([]domain.Event, error) { return a.(*domain.Secret).Handle(who, cmd) },
	})
	return res, err
}

// DeleteSecret hides a secret (soft delete).
func (s *Service) DeleteSecret(ctx context.Context, req Request, ref domain.SecretRef) (Result, error) {
	return s.secretCommand(ctx, req, ref, "delete secret", domain.DeleteSecret{})
}

// RestoreSecret undoes DeleteSecret.
func (s *Service) RestoreSecret(ctx context.Context, req Request, ref domain.SecretRef) (Result, error) {
	return s.secretCommand(ctx, req, ref, "restore secret", domain.RestoreSecret{})
}

// DestroySecretVersion makes one version unreadable for good.
func (s *Service) DestroySecretVersion(ctx context.Context, req Request, ref domain.SecretRef, version uint64) (Result, error) {
	return s.secretCommand(ctx, req, ref, "destroy version "+strconv.FormatUint(version, 10), domain.DestroySecretVersion{Version: version})
}

// UpdateSecretMetadata replaces a secret's metadata.
func (s *Service) UpdateSecretMetadata(ctx context.Context, req Request, ref domain.SecretRef, m domain.SecretMetadata) (Result, error) {
	return s.secretCommand(ctx, req, ref, "update secret metadata", domain.UpdateSecretMetadata{Metadata: m})
}

// RollbackSecret makes a new version carrying version to's value.
func (s *Service) RollbackSecret(ctx context.Context, req Request, ref domain.SecretRef, to uint64) (Result, error) {
	env := envOf(ref)
	who, err := s.access(ctx, req.Actor, ref.Org, ref.Project, ref.Env)
	if err != nil {
		return Result{}, err
	}
	if err := s.checkChange(ctx, who, ref, domain.PermWriteSecret); err != nil { // the environment's approval policy
		return Result{}, err
	}
	var plain []byte
	res, evs, err := s.execute(ctx, req, command{
		stream: ref.Stream(), tenant: ref.Org, name: "roll back to " + strconv.FormatUint(to, 10), target: ref.Stream(), mk: newSecretAgg,
		decide: func(a aggregate) ([]domain.Event, error) {
			sec := a.(*domain.Secret)
			if err := sec.CheckRollback(who, to); err != nil {
				return nil, err
			}
			old, _ := sec.Version(to)
			value, err := s.open(ctx, req, who, ref, old)
			if err != nil {
				return nil, err
			}
			_, ks, err := s.keyset(ctx, req, who, env, false)
			if err != nil {
				return nil, err
			}
			v, err := seal(ks, ref, sec.Current()+1, value)
			if err != nil {
				clear(value)
				return nil, err
			}
			plain = value
			return sec.Handle(who, domain.RollbackSecret{To: to, Value: v})
		},
	})
	res.Version = versionOf(evs)
	if err == nil && !res.Replayed && plain != nil {
		s.heal(ctx, req, who, ref, evs, plain)
	}
	clear(plain)
	return res, err
}

// SecretInfo is what may be known about a secret without reading its value.
type SecretInfo struct {
	Ref      domain.SecretRef
	Current  uint64
	Deleted  bool
	Metadata domain.SecretMetadata
	Versions []VersionInfo
}

// VersionInfo describes one version.
type VersionInfo struct {
	Version   uint64
	KeyID     uint32
	Destroyed bool
	From      uint64
}

// Secret returns a secret's metadata and versions (no values).
func (s *Service) Secret(ctx context.Context, actor domain.Actor, ref domain.SecretRef) (SecretInfo, error) {
	who, err := s.access(ctx, actor, ref.Org, ref.Project, ref.Env)
	if err != nil {
		return SecretInfo{}, err
	}
	if !who.Role.Can(domain.PermReadMetadata) {
		return SecretInfo{}, &domain.ForbiddenError{Actor: actor, Permission: domain.PermReadMetadata}
	}
	var out SecretInfo
	err = s.view(ctx, ref.Stream(), newSecretAgg, func(a aggregate) error {
		sec := a.(*domain.Secret)
		if !sec.Exists() {
			return &domain.StateError{Sentinel: domain.ErrNotFound, Reason: "no secret " + ref.Name}
		}
		out = SecretInfo{Ref: ref, Current: sec.Current(), Deleted: sec.Deleted(), Metadata: sec.Metadata()}
		for _, v := range sec.Versions() {
			out.Versions = append(out.Versions, VersionInfo{Version: v.Version, KeyID: v.Value.KeyID, Destroyed: v.Destroyed, From: v.From})
		}
		return nil
	})
	return out, err
}
