package domain

import (
	"regexp"
	"slices"
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
)

// MaxApprovalLifetime is the longest an approval request may stay open.
const MaxApprovalLifetime = time.Hour

// MaxApprovers is the most approvals a policy may require.
const MaxApprovers = 5

var userCodeRE = regexp.MustCompile(`^[A-Z0-9]{4}(?:-?[A-Z0-9]{4}){0,3}$`)

// DeliveredKey is a secret handed over by a delivery, with its version.
type DeliveredKey struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
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
		Keys       []BundleKey  `json:"keys,omitempty"`
		// PublicKey is the requester's one-time X25519 public key.
		PublicKey  []byte    `json:"public_key"`
		UserCode   string    `json:"user_code"`
		Requester  string    `json:"requester"`
		ClientAddr string    `json:"client_addr,omitempty"`
		ExpiresAt  time.Time `json:"expires_at"`
		// Approvals is how many distinct people must approve.
		Approvals int `json:"approvals"`
		// SelfApproval allows the requester to approve their own request.
		SelfApproval bool `json:"self_approval,omitempty"`
	}
	ApprovalGranted struct {
		By   string   `json:"by"`
		Keys []string `json:"keys,omitempty"`
	}
	ApprovalDenied struct {
		By     string `json:"by"`
		Reason string `json:"reason,omitempty"`
	}
	ApprovalExpired   struct{}
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
		ApprovalID   string
		Kind         ApprovalKind
		Org          string
		Project      string
		Env          string
		Bundle       string
		Keys         []BundleKey // what is asked; from the bundle when Bundle is set
		PublicKey    []byte
		UserCode     string
		ClientAddr   string
		ExpiresAt    time.Time
		Approvals    int // 0 means 1
		SelfApproval bool
		Now          time.Time
	}
	// Approve: Keys are the keys the approver lets through (every required
	// key among them); none for a sign-in.
	Approve struct {
		Keys []string
		Now  time.Time
	}
	Deny struct {
		Reason string
		Now    time.Time
	}
	ExpireApproval struct{ Now time.Time }
	Deliver        struct {
		Keys []DeliveredKey
		Now  time.Time
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
	approvers []string
	granted   []string // keys every approver let through
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

func (a *Approval) Exists() bool               { return a.req.ApprovalID != "" }
func (a *Approval) Request() ApprovalRequested { return a.req }
func (a *Approval) Status() ApprovalStatus     { return a.status }
func (a *Approval) Version() uint64            { return a.version }
func (a *Approval) Approvers() []string        { return slices.Clone(a.approvers) }

// Granted returns the keys every approver let through.
func (a *Approval) Granted() []string { return slices.Clone(a.granted) }

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
		a.req, a.status = e, StatusPending
	case ApprovalGranted:
		if len(a.approvers) == 0 {
			a.granted = slices.Clone(e.Keys)
		} else {
			a.granted = slices.DeleteFunc(a.granted, func(k string) bool { return !slices.Contains(e.Keys, k) })
		}
		a.approvers = append(a.approvers, e.By)
		if len(a.approvers) >= a.req.Approvals {
			a.status = StatusApproved
		}
	case ApprovalDenied:
		a.status = StatusDenied
	case ApprovalExpired:
		a.status = StatusExpired
	case ApprovalDelivered:
		a.status = StatusDelivered
	}
}

// Handle decides an approval command. For RequestApproval, who is the
// requester (an anonymous actor for sign-in requests); for Approve and
// Deny, who holds the approver's role in the request's project and
// environment.
func (a *Approval) Handle(who Principal, cmd any) ([]Event, error) {
	if c, ok := cmd.(RequestApproval); ok {
		return a.request(who, c)
	}
	if !a.Exists() {
		return nil, stateErr(ErrNotFound, "no such request")
	}
	switch c := cmd.(type) {
	case Approve:
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
		if who.Actor.String() == a.req.Requester && !a.req.SelfApproval {
			return nil, &ForbiddenError{Actor: who.Actor, Permission: PermApprove, Reason: "the requester cannot approve their own request"}
		}
		if slices.Contains(a.approvers, who.Actor.String()) {
			return nil, stateErr(ErrState, "%s has already approved this request", who.Actor)
		}
		keys := slices.Clone(c.Keys)
		if a.req.Kind == ApprovalLogin {
			if len(keys) > 0 {
				return nil, invalid("keys", "a sign-in request carries no keys")
			}
		} else {
			if len(keys) == 0 {
				return nil, invalid("keys", "choose at least one key")
			}
			for _, k := range keys {
				if !slices.ContainsFunc(a.req.Keys, func(b BundleKey) bool { return b.Name == k }) {
					return nil, invalid("keys", "%s was not requested", k)
				}
			}
			for _, b := range a.req.Keys {
				if b.Required && !slices.Contains(keys, b.Name) {
					return nil, invalid("keys", "%s is required by the bundle", b.Name)
				}
			}
			slices.Sort(keys)
			keys = slices.Compact(keys)
		}
		return []Event{ApprovalGranted{By: who.Actor.String(), Keys: keys}}, nil
	case Deny:
		if err := a.open(c.Now); err != nil {
			return nil, err
		}
		if who.Actor.String() != a.req.Requester { // requesters may withdraw their own
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
		switch a.StatusAt(c.Now) {
		case StatusApproved:
		case StatusDelivered:
			return nil, stateErr(ErrState, "the request was already delivered; deliveries are single use")
		case StatusExpired:
			return nil, stateErr(ErrExpired, "the request expired at %s", a.req.ExpiresAt.Format(time.RFC3339))
		case StatusDenied:
			return nil, stateErr(ErrState, "the request was denied")
		default:
			return nil, stateErr(ErrState, "the request is not approved yet")
		}
		for _, k := range c.Keys {
			if !slices.Contains(a.granted, k.Name) {
				return nil, invalid("keys", "%s was not approved", k.Name)
			}
		}
		return []Event{ApprovalDelivered{Keys: slices.Clone(c.Keys)}}, nil
	}
	return nil, invalid("command", "%T is not an approval command", cmd)
}

// open fails unless the request still waits for decisions at now.
func (a *Approval) open(now time.Time) error {
	switch a.StatusAt(now) {
	case StatusPending:
		return nil
	case StatusExpired:
		return stateErr(ErrExpired, "the request expired at %s", a.req.ExpiresAt.Format(time.RFC3339))
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
	if len(c.PublicKey) != 32 {
		return nil, invalid("public key", "want a 32-byte X25519 key")
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
	ev := ApprovalRequested{ApprovalID: c.ApprovalID, Kind: c.Kind, PublicKey: slices.Clone(c.PublicKey), UserCode: c.UserCode,
		Requester: who.Actor.String(), ClientAddr: c.ClientAddr, ExpiresAt: c.ExpiresAt.UTC(), Approvals: n, SelfApproval: c.SelfApproval}
	switch c.Kind {
	case ApprovalLogin:
		if c.Org != "" || c.Env != "" || len(c.Keys) > 0 || c.Bundle != "" {
			return nil, invalid("kind", "a sign-in request names no organization, environment or keys")
		}
	case ApprovalSecrets:
		if who.Actor.IsZero() || who.Actor.Kind == ActorAnonymous {
			return nil, &ForbiddenError{Actor: who.Actor, Permission: PermRequest, Reason: "sign in first"}
		}
		if err := who.require(PermRequest); err != nil {
			return nil, err
		}
		for _, f := range [][2]string{{"organization", c.Org}, {"project", c.Project}, {"environment", c.Env}} {
			if err := checkSlug(f[0], f[1]); err != nil {
				return nil, err
			}
		}
		if c.Bundle != "" {
			if err := checkSlug("bundle", c.Bundle); err != nil {
				return nil, err
			}
		}
		if err := checkBundleKeys(c.Keys); err != nil {
			return nil, err
		}
		ev.Org, ev.Project, ev.Env, ev.Bundle, ev.Keys = c.Org, c.Project, c.Env, c.Bundle, slices.Clone(c.Keys)
	default:
		return nil, invalid("kind", "%q: want secrets or login", c.Kind)
	}
	return []Event{ev}, nil
}
