package domain

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ApprovalStream is the stream of one approval request.
func ApprovalStream(id string) string { return "approval/" + id }

// ApprovalKind says what a request asks for.
type ApprovalKind string

const (
	// ApprovalSecrets asks for secret values, sealed to the requester's key.
	ApprovalSecrets ApprovalKind = "secrets"
	// ApprovalLogin asks for a sign-in token for a CLI, sealed likewise.
	ApprovalLogin ApprovalKind = "login"
	// ApprovalChange asks to change secret values in an environment whose
	// policy lets values change only through approved requests. The new
	// values travel sealed under the environment's keyset, bound to the
	// request; the change is made, as the requester, once approved.
	ApprovalChange ApprovalKind = "change"
)

// MaxApprovalLifetime is the longest an approval request may stay open.
const MaxApprovalLifetime = time.Hour

// MaxApprovers is the most approvals a policy may require.
const MaxApprovers = 5

// MaxChanges is the most secret changes one change request may carry.
const MaxChanges = 100

var (
	userCodeRE = regexp.MustCompile(`^[A-Z0-9]{4}(?:-?[A-Z0-9]{4}){0,3}$`)
	// pollActorRE is the id of an anonymous requester of secrets: the
	// first 32 hex digits of the SHA-256 of the request's poll token.
	pollActorRE = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// Errors of approval requests that clients tell apart. Both also match
// ErrState.
var (
	// ErrApprovalDenied: the request was denied (or withdrawn).
	ErrApprovalDenied = errors.New("approval denied")
	// ErrAlreadyDelivered: the request's single delivery was made.
	ErrAlreadyDelivered = errors.New("already delivered")
)

// approvalStateError is a StateError of an approval that also matches a
// sentinel of its own.
type approvalStateError struct {
	kind   error
	reason string
}

func (e *approvalStateError) Error() string { return e.reason }

// Is matches ErrState and the error's own sentinel.
func (e *approvalStateError) Is(t error) bool { return t == ErrState || t == e.kind }

// ApprovalRequiredError says that an environment's policy lets an action
// happen only through an approved request. It matches ErrApprovalRequired
// and ErrForbidden.
type ApprovalRequiredError struct {
	Actor Actor
	// Action is what was refused ("reveal values", "change values").
	Action string
	// Approvers is how many people other than the requester must approve.
	Approvers int
}

func (e *ApprovalRequiredError) Error() string {
	return fmt.Sprintf("%s may not %s directly here: the environment's policy requires a request approved by %d %s other than the requester",
		e.Actor, e.Action, e.Approvers, plural(e.Approvers, "person", "people"))
}

// Is matches ErrApprovalRequired and ErrForbidden.
func (e *ApprovalRequiredError) Is(t error) bool {
	return t == ErrApprovalRequired || t == ErrForbidden
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// ApproversNeeded is how many distinct people other than the requester
// must approve a request the policy applies to.
func (p ApprovalPolicy) ApproversNeeded() int { return max(p.Approvers, 1) }

// CheckReveal fails with an *ApprovalRequiredError when the policy keeps
// who from revealing values directly. Stele's own jobs are not bound by
// it. Callers check who's role first, so that a caller without the role
// learns that, not the policy.
func (p ApprovalPolicy) CheckReveal(who Principal) error {
	if !p.Reveal || who.Actor.Kind == ActorSystem {
		return nil
	}
	return &ApprovalRequiredError{Actor: who.Actor, Action: "reveal values", Approvers: p.ApproversNeeded()}
}

// CheckChange fails with an *ApprovalRequiredError when the policy keeps
// who from changing values directly (set, roll back, delete, restore,
// destroy a version). Stele's own jobs (resealing, rotation) are not
// bound by it.
func (p ApprovalPolicy) CheckChange(who Principal) error {
	if !p.Change || who.Actor.Kind == ActorSystem {
		return nil
	}
	return &ApprovalRequiredError{Actor: who.Actor, Action: "change values", Approvers: p.ApproversNeeded()}
}

// DeliveredKey is a secret handed over by a delivery, with its version.
// For a change request it is a secret the change touched, with its
// version after the change.
type DeliveredKey struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
}

// ChangeOp is what a change request does to one secret.
type ChangeOp string

const (
	ChangeSet      ChangeOp = "set"      // create the secret or add a version carrying Value
	ChangeDelete   ChangeOp = "delete"   // hide the secret (soft delete)
	ChangeRestore  ChangeOp = "restore"  // undo a delete
	ChangeRollback ChangeOp = "rollback" // a new version carrying version Version's value
	ChangeDestroy  ChangeOp = "destroy"  // make version Version unreadable for good
)

// SecretChange is one change a change request asks for.
type SecretChange struct {
	Name string   `json:"name"`
	Op   ChangeOp `json:"op"`
	// BaseVersion is the secret's current version the change is based on
	// (0: the secret does not exist yet, for a set that creates it). The
	// change is made only if the secret is still at that version.
	BaseVersion uint64 `json:"base_version"`
	// Version is the version to roll back to, or to destroy.
	Version uint64 `json:"version,omitempty"`
	// Value is the new value of a set, sealed under the environment's
	// keyset with associated data that binds it to the request and the
	// secret's name (never a plaintext).
	Value Sealed `json:"value,omitzero"`
}

func checkChanges(who Principal, changes []SecretChange) error {
	if len(changes) == 0 || len(changes) > MaxChanges {
		return invalid("changes", "a change request carries 1 to %d changes", MaxChanges)
	}
	seen := map[string]bool{}
	for _, c := range changes {
		if err := checkSecretName("changes", c.Name); err != nil {
			return err
		}
		if seen[c.Name] {
			return invalid("changes", "%s is changed twice; one change per secret", c.Name)
		}
		seen[c.Name] = true
		hasValue := len(c.Value.Ciphertext) > 0
		switch c.Op {
		case ChangeSet:
			if err := c.Value.check(); err != nil {
				return err
			}
			if c.Version != 0 {
				return invalid("changes", "%s: a set names no version", c.Name)
			}
		case ChangeRollback, ChangeDestroy:
			if c.Version == 0 {
				return invalid("changes", "%s: a %s names the version", c.Name, c.Op)
			}
			if c.BaseVersion == 0 {
				return invalid("changes", "%s: a %s needs the version it is based on", c.Name, c.Op)
			}
		case ChangeDelete, ChangeRestore:
			if c.Version != 0 {
				return invalid("changes", "%s: a %s names no version", c.Name, c.Op)
			}
			if c.BaseVersion == 0 {
				return invalid("changes", "%s: a %s needs the version it is based on", c.Name, c.Op)
			}
		default:
			return invalid("changes", "%s: %q: want set, delete, restore, rollback or destroy", c.Name, c.Op)
		}
		if c.Op != ChangeSet && hasValue {
			return invalid("changes", "%s: only a set carries a value", c.Name)
		}
		perm := PermWriteSecret
		if c.Op == ChangeDestroy {
			perm = PermDestroyVersion
		}
		if err := who.require(perm); err != nil {
			return err
		}
	}
	return nil
}

// Approval events.
type (
	ApprovalRequested struct {
		ApprovalID string       `json:"approval_id"`
		Kind       ApprovalKind `json:"kind"`
		Org        string       `json:"org,omitempty"`
		Project    string       `json:"project,omitempty"`
		Env        string       `json:"env,omitempty"`
		Bundle     string       `json:"bundle,omitempty"`
		// Keys are the keys asked for (for a change request, the secrets
		// it changes). An anonymous request that names a bundle has none
		// until the first approval resolves the bundle.
		Keys []BundleKey `json:"keys,omitempty"`
		// Changes are what a change request does.
		Changes []SecretChange `json:"changes,omitempty"`
		// PublicKey is the requester's one-time X25519 public key.
		PublicKey []byte `json:"public_key,omitempty"`
		// PollTokenHash is the hex SHA-256 of the one-time token the
		// requester's client presents to collect the delivery.
		PollTokenHash string    `json:"poll_token_hash,omitempty"`
		UserCode      string    `json:"user_code"`
		Requester     string    `json:"requester"`
		ClientAddr    string    `json:"client_addr,omitempty"`
		ExpiresAt     time.Time `json:"expires_at"`
		// Approvals is how many distinct people must approve.
		Approvals int `json:"approvals"`
		// SelfApproval allows the requester to approve their own request.
		SelfApproval bool `json:"self_approval,omitempty"`
	}
	ApprovalGranted struct {
		By   string   `json:"by"`
		Keys []string `json:"keys,omitempty"`
		// BundleKeys are the keys of the request's bundle, resolved by the
		// first approval of a request that named the bundle without them.
		BundleKeys []BundleKey `json:"bundle_keys,omitempty"`
		// Required raises the approvals needed to what the environment's
		// policy asked for when this approval was given.
		Required int `json:"required,omitempty"`
	}
	ApprovalDenied struct {
		By     string `json:"by"`
		Reason string `json:"reason,omitempty"`
	}
	ApprovalExpired struct{}
	// ApprovalDelivered records the single delivery: the values handed
	// over, the session started for a sign-in, or the changes made.
	ApprovalDelivered struct {
		Keys []DeliveredKey `json:"keys,omitempty"`
	}
)

func (ApprovalRequested) EventType() string { return "approval.requested" }
func (ApprovalGranted) EventType() string   { return "approval.approved" }
func (ApprovalDenied) EventType() string    { return "approval.denied" }
func (ApprovalExpired) EventType() string   { return "approval.expired" }
func (ApprovalDelivered) EventType() string { return "approval.delivered" }

func init() {
	register[ApprovalRequested]()
	register[ApprovalGranted]()
	register[ApprovalDenied]()
	register[ApprovalExpired]()
	register[ApprovalDelivered]()
}

// Approval commands.
type (
	RequestApproval struct {
		ApprovalID string
		Kind       ApprovalKind
		Org        string
		Project    string
		Env        string
		Bundle     string
		Keys       []BundleKey // what is asked; from the bundle when Bundle is set
		Changes    []SecretChange
		PublicKey  []byte
		// PollTokenHash is the hex SHA-256 of the request's poll token.
		PollTokenHash string
		UserCode      string
		ClientAddr    string
		ExpiresAt     time.Time
		Approvals     int // 0 means 1
		SelfApproval  bool
		Now           time.Time
	}
	// Approve: Keys are the keys the approver lets through (every required
	// key among them); none for a sign-in or a change. BundleKeys are the
	// keys of the request's bundle as the approver sees it, for a request
	// that named a bundle without resolving it. Required is how many
	// approvals the environment's policy asks for (0: none), and
	// NoSelfApproval says the policy forbids self-approval.
	Approve struct {
		Keys           []string
		BundleKeys     []BundleKey
		Required       int
		NoSelfApproval bool
		Now            time.Time
	}
	Deny struct {
		Reason string
		Now    time.Time
	}
	ExpireApproval struct{ Now time.Time }
	// Deliver claims the single delivery. Required is how many approvals
	// the environment's policy asks for now (0: none).
	Deliver struct {
		Keys     []DeliveredKey
		Required int
		Now      time.Time
	}
)

// ApprovalStatus is where a request stands.
type ApprovalStatus string

const (
	StatusPending   ApprovalStatus = "pending"
	StatusApproved  ApprovalStatus = "approved"
	StatusDenied    ApprovalStatus = "denied"
	StatusExpired   ApprovalStatus = "expired"
	StatusDelivered ApprovalStatus = "delivered"
)

// Approval is the aggregate of one request.
type Approval struct {
	req       ApprovalRequested
	version   uint64
	status    ApprovalStatus
	required  int
	approvers []string
	granted   []string // keys every approver let through
	denied    ApprovalDenied
	delivered []DeliveredKey
}

// NewApproval returns the state of a request with no history.
func NewApproval() *Approval { return &Approval{} }

// ReplayApproval rebuilds a request from its events.
func ReplayApproval(events []Event) *Approval {
	a := NewApproval()
	for _, e := range events {
		a.Apply(e)
	}
	return a
}

func (a *Approval) Exists() bool           { return a.req.ApprovalID != "" }
func (a *Approval) Status() ApprovalStatus { return a.status }
func (a *Approval) Version() uint64        { return a.version }
func (a *Approval) Approvers() []string    { return slices.Clone(a.approvers) }

// Request returns the request as asked, with its bundle's keys once an
// approval resolved them.
func (a *Approval) Request() ApprovalRequested {
	r := a.req
	r.Keys = slices.Clone(r.Keys)
	r.Changes = slices.Clone(r.Changes)
	r.PublicKey = slices.Clone(r.PublicKey)
	return r
}

// Required is how many distinct people must approve: the request's own
// count, raised by the environment's policy when an approval was given.
func (a *Approval) Required() int { return a.required }

// Granted returns the keys every approver let through.
func (a *Approval) Granted() []string { return slices.Clone(a.granted) }

// Denial returns who denied the request and why.
func (a *Approval) Denial() ApprovalDenied { return a.denied }

// Delivered returns what the delivery handed over.
func (a *Approval) Delivered() []DeliveredKey { return slices.Clone(a.delivered) }

// AnonymousRequester reports whether the requester was not signed in.
func (a *Approval) AnonymousRequester() bool {
	k, _, _ := cutActor(a.req.Requester)
	return k == ActorAnonymous
}

func cutActor(s string) (ActorKind, string, bool) {
	a, err := ParseActor(s)
	if err != nil {
		return "", "", false
	}
	return a.Kind, a.ID, true
}

// StatusAt is the status as seen at now: a pending or approved request
// past its expiry reads as expired even before ExpireApproval records it.
func (a *Approval) StatusAt(now time.Time) ApprovalStatus {
	if (a.status == StatusPending || a.status == StatusApproved) && !now.Before(a.req.ExpiresAt) {
		return StatusExpired
	}
	return a.status
}

// Apply folds one event into the state.
func (a *Approval) Apply(e Event) {
	a.version++
	switch e := e.(type) {
	case ApprovalRequested:
		a.req, a.status, a.required = e, StatusPending, max(e.Approvals, 1)
	case ApprovalGranted:
		if len(a.req.Keys) == 0 && len(e.BundleKeys) > 0 {
			a.req.Keys = slices.Clone(e.BundleKeys)
		}
		a.required = max(a.required, e.Required)
		if len(a.approvers) == 0 {
			a.granted = slices.Clone(e.Keys)
		} else {
			a.granted = slices.DeleteFunc(a.granted, func(k string) bool { return !slices.Contains(e.Keys, k) })
		}
		a.approvers = append(a.approvers, e.By)
		if len(a.approvers) >= a.required {
			a.status = StatusApproved
		}
	case ApprovalDenied:
		a.status, a.denied = StatusDenied, e
	case ApprovalExpired:
		a.status = StatusExpired
	case ApprovalDelivered:
		a.status, a.delivered = StatusDelivered, slices.Clone(e.Keys)
	}
}

// Handle decides an approval command. For RequestApproval, who is the
// requester (an anonymous actor for requests of clients not signed in);
// for Approve and Deny, who holds the approver's role in the request's
// project and environment.
func (a *Approval) Handle(who Principal, cmd any) ([]Event, error) {
	if c, ok := cmd.(RequestApproval); ok {
		return a.request(who, c)
	}
	if !a.Exists() {
		return nil, stateErr(ErrNotFound, "no such request")
	}
	switch c := cmd.(type) {
	case Approve:
		return a.approve(who, c)
	case Deny:
		if err := a.open(c.Now); err != nil {
			return nil, err
		}
		switch {
		case who.Actor.String() == a.req.Requester: // requesters may withdraw their own
		case a.req.Kind == ApprovalLogin:
			// Any signed-in person may turn a sign-in away, as any may
			// approve it for themselves.
			if who.Actor.Kind != ActorUser {
				return nil, &ForbiddenError{Actor: who.Actor, Permission: PermApprove, Reason: "only a signed-in person can deny a sign-in"}
			}
		default:
			if err := who.require(PermApprove); err != nil {
				return nil, err
			}
		}
		if err := checkText("reason", c.Reason, MaxReasonLen); err != nil {
			return nil, err
		}
		return []Event{ApprovalDenied{By: who.Actor.String(), Reason: c.Reason}}, nil
	case ExpireApproval:
		if a.status != StatusPending && a.status != StatusApproved {
			return nil, stateErr(ErrState, "the request is %s", a.status)
		}
		if c.Now.Before(a.req.ExpiresAt) {
			return nil, stateErr(ErrState, "the request expires at %s", a.req.ExpiresAt.Format(time.RFC3339))
		}
		return []Event{ApprovalExpired{}}, nil
	case Deliver:
		if err := a.CheckDeliver(c.Required, c.Now); err != nil {
			return nil, err
		}
		for _, k := range c.Keys {
			switch a.req.Kind {
			case ApprovalLogin:
				return nil, invalid("keys", "a sign-in delivers no keys")
			case ApprovalChange:
				if !slices.ContainsFunc(a.req.Changes, func(ch SecretChange) bool { return ch.Name == k.Name }) {
					return nil, invalid("keys", "%s is not changed by the request", k.Name)
				}
			default:
				if !slices.Contains(a.granted, k.Name) {
					return nil, invalid("keys", "%s was not approved", k.Name)
				}
			}
		}
		return []Event{ApprovalDelivered{Keys: slices.Clone(c.Keys)}}, nil
	}
	return nil, invalid("command", "%T is not an approval command", cmd)
}

// CheckDeliver reports whether the request can be delivered at now when
// the environment's policy asks for required approvals (0: none): it must
// be approved, by enough people, and not expired, denied or delivered.
func (a *Approval) CheckDeliver(required int, now time.Time) error {
	if !a.Exists() {
		return stateErr(ErrNotFound, "no such request")
	}
	switch a.StatusAt(now) {
	case StatusApproved:
	case StatusDelivered:
		return &approvalStateError{ErrAlreadyDelivered, "the request was already delivered; deliveries are single use"}
	case StatusExpired:
		return stateErr(ErrExpired, "the request expired at %s", a.req.ExpiresAt.Format(time.RFC3339))
	case StatusDenied:
		return &approvalStateError{ErrApprovalDenied, "the request was denied"}
	default:
		return stateErr(ErrState, "the request is not approved yet")
	}
	if n := a.independentApprovals(); n < required {
		who, _ := ParseActor(a.req.Requester)
		return &ApprovalRequiredError{Actor: who, Action: "receive this delivery with " + fmt.Sprint(n) + " approvals", Approvers: required}
	}
	return nil
}

// independentApprovals counts the approvers other than the requester.
func (a *Approval) independentApprovals() int {
	n := 0
	for _, by := range a.approvers {
		if by != a.req.Requester {
			n++
		}
	}
	return n
}

func (a *Approval) approve(who Principal, c Approve) ([]Event, error) {
	if err := a.open(c.Now); err != nil {
		return nil, err
	}
	if a.req.Kind == ApprovalLogin {
		// Signing a CLI in needs a signed-in person, who becomes its user.
		if who.Actor.Kind != ActorUser {
			return nil, &ForbiddenError{Actor: who.Actor, Permission: PermApprove, Reason: "only a signed-in person can approve a sign-in"}
		}
	} else if err := who.require(PermApprove); err != nil {
		return nil, err
	}
	if who.Actor.String() == a.req.Requester && (!a.req.SelfApproval || c.NoSelfApproval) {
		return nil, &ForbiddenError{Actor: who.Actor, Permission: PermApprove, Reason: "the requester cannot approve their own request"}
	}
	// Where the policy forbids approving one's own request, the requester
	// must be known: an anonymous requester could be the approver.
	if c.NoSelfApproval && strings.HasPrefix(a.req.Requester, string(ActorAnonymous)+":") {
		return nil, &ForbiddenError{Actor: who.Actor, Permission: PermApprove,
			Reason: "the environment's approval policy needs requests from signed-in requesters; ask the requester to sign in (stele login) and request again"}
	}
	if slices.Contains(a.approvers, who.Actor.String()) {
		return nil, stateErr(ErrState, "%s has already approved this request", who.Actor)
	}
	if c.Required < 0 || c.Required > MaxApprovers {
		return nil, invalid("required", "want 0 to %d", MaxApprovers)
	}
	ev := ApprovalGranted{By: who.Actor.String()}
	if c.Required > a.required {
		ev.Required = c.Required
	}
	keys := slices.Clone(c.Keys)
	switch a.req.Kind {
	case ApprovalLogin, ApprovalChange:
		if len(keys) > 0 {
			return nil, invalid("keys", "a %s request is approved as a whole; it takes no keys", a.req.Kind)
		}
		keys = nil
	default:
		asked := a.req.Keys
		if len(asked) == 0 && a.req.Bundle != "" {
			// An anonymous request named a bundle: its keys are those the
			// bundle has as this first approver sees it.
			if err := checkBundleKeys(c.BundleKeys); err != nil {
				return nil, err
			}
			asked = slices.Clone(c.BundleKeys)
			ev.BundleKeys = asked
		}
		if len(keys) == 0 {
			return nil, invalid("keys", "choose at least one key")
		}
		for _, k := range keys {
			if !slices.ContainsFunc(asked, func(b BundleKey) bool { return b.Name == k }) {
				return nil, invalid("keys", "%s was not requested", k)
			}
		}
		for _, b := range asked {
			if b.Required && !slices.Contains(keys, b.Name) {
				return nil, invalid("keys", "%s is required by the bundle", b.Name)
			}
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
	}
	ev.Keys = keys
	return []Event{ev}, nil
}

// WouldComplete reports whether one more approval, under a policy asking
// for required approvals, would make the request approved.
func (a *Approval) WouldComplete(required int) bool {
	return len(a.approvers)+1 >= max(a.required, required)
}

// open fails unless the request still waits for decisions at now.
func (a *Approval) open(now time.Time) error {
	switch a.StatusAt(now) {
	case StatusPending:
		return nil
	case StatusExpired:
		return stateErr(ErrExpired, "the request expired at %s", a.req.ExpiresAt.Format(time.RFC3339))
	case StatusDenied:
		return &approvalStateError{ErrApprovalDenied, "the request was already denied"}
	case StatusDelivered:
		return &approvalStateError{ErrAlreadyDelivered, "the request was already delivered"}
	default:
		return stateErr(ErrState, "the request is already %s", a.status)
	}
}

func (a *Approval) request(who Principal, c RequestApproval) ([]Event, error) {
	if a.Exists() {
		return nil, stateErr(ErrAlreadyExists, "request %s already exists", a.req.ApprovalID)
	}
	if err := checkID("approval id", c.ApprovalID); err != nil {
		return nil, err
	}
	if c.Kind == ApprovalChange {
		if len(c.PublicKey) != 0 {
			return nil, invalid("public key", "a change request delivers nothing to the client; send no key")
		}
	} else if len(c.PublicKey) != 32 {
		return nil, invalid("public key", "want a 32-byte X25519 key")
	}
	if c.PollTokenHash != "" && !hexSHA256RE.MatchString(c.PollTokenHash) {
		return nil, invalid("poll token hash", "want 64 lowercase hex digits (SHA-256)")
	}
	if !userCodeRE.MatchString(c.UserCode) {
		return nil, invalid("user code", "want groups of 4 uppercase letters or digits")
	}
	if !c.ExpiresAt.After(c.Now) || c.ExpiresAt.Sub(c.Now) > MaxApprovalLifetime {
		return nil, invalid("expires at", "must be in the future and within %s", MaxApprovalLifetime)
	}
	if err := checkText("client address", c.ClientAddr, 200); err != nil {
		return nil, err
	}
	n := c.Approvals
	if n == 0 {
		n = 1
	}
	if n < 1 || n > MaxApprovers {
		return nil, invalid("approvals", "want 1 to %d", MaxApprovers)
	}
	anonymous := who.Actor.IsZero() || who.Actor.Kind == ActorAnonymous
	if anonymous && c.SelfApproval {
		return nil, invalid("self approval", "an anonymous requester is nobody who could approve")
	}
	ev := ApprovalRequested{ApprovalID: c.ApprovalID, Kind: c.Kind, PublicKey: slices.Clone(c.PublicKey), PollTokenHash: c.PollTokenHash,
		UserCode: c.UserCode, Requester: who.Actor.String(), ClientAddr: c.ClientAddr, ExpiresAt: c.ExpiresAt.UTC(), Approvals: n, SelfApproval: c.SelfApproval}
	switch c.Kind {
	case ApprovalLogin:
		if c.Org != "" || c.Env != "" || len(c.Keys) > 0 || c.Bundle != "" || len(c.Changes) > 0 {
			return nil, invalid("kind", "a sign-in request names no organization, environment or keys")
		}
		if n != 1 || c.SelfApproval {
			return nil, invalid("approvals", "a sign-in is approved by the one person it signs in")
		}
	case ApprovalSecrets, ApprovalChange:
		if err := checkScope(c.Org, c.Project, c.Env); err != nil {
			return nil, err
		}
		if c.Bundle != "" {
			if err := checkSlug("bundle", c.Bundle); err != nil {
				return nil, err
			}
		}
		if c.Kind == ApprovalChange {
			// A change is made as the requester: only someone who may make
			// it asks for it.
			if anonymous {
				return nil, &ForbiddenError{Actor: who.Actor, Permission: PermWriteSecret, Reason: "sign in to request a change"}
			}
			if c.Bundle != "" || len(c.Keys) > 0 {
				return nil, invalid("changes", "a change request names its changes, not keys or a bundle")
			}
			if err := checkChanges(who, c.Changes); err != nil {
				return nil, err
			}
			ev.Changes = slices.Clone(c.Changes)
			for _, ch := range c.Changes {
				ev.Keys = append(ev.Keys, BundleKey{Name: ch.Name})
			}
			ev.Org, ev.Project, ev.Env = c.Org, c.Project, c.Env
			break
		}
		if len(c.Changes) > 0 {
			return nil, invalid("changes", "a request for secrets carries no changes")
		}
		if anonymous {
			// A client that is not signed in may ask, but learns nothing
			// of what exists: the scope and bundle are checked when a
			// signed-in approver acts. It is known only by its poll
			// token, so that no one else can collect what it asked for.
			if who.Actor.Kind != ActorAnonymous || !pollActorRE.MatchString(who.Actor.ID) || c.PollTokenHash == "" {
				return nil, &ForbiddenError{Actor: who.Actor, Permission: PermRequest, Reason: "an anonymous request for secrets must be bound to a poll token"}
			}
			if c.Bundle != "" && len(c.Keys) > 0 {
				return nil, invalid("keys", "name a bundle or keys, not both")
			}
			if c.Bundle == "" {
				if err := checkBundleKeys(c.Keys); err != nil {
					return nil, err
				}
				if slices.ContainsFunc(c.Keys, func(k BundleKey) bool { return k.Required }) {
					return nil, invalid("keys", "only a bundle marks keys as required")
				}
			}
		} else {
			if err := who.require(PermRequest); err != nil {
				return nil, err
			}
			if err := checkBundleKeys(c.Keys); err != nil {
				return nil, err
			}
		}
		ev.Org, ev.Project, ev.Env, ev.Bundle, ev.Keys = c.Org, c.Project, c.Env, c.Bundle, slices.Clone(c.Keys)
	default:
		return nil, invalid("kind", "%q: want secrets, login or change", c.Kind)
	}
	return []Event{ev}, nil
}

var hexSHA256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func checkScope(org, project, env string) error {
	for _, f := range [][2]string{{"organization", org}, {"project", project}, {"environment", env}} {
		if err := checkSlug(f[0], f[1]); err != nil {
			return err
		}
	}
	return nil
}
