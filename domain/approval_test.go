package domain_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	. "stele.dev/stele/domain"
)

// Rules of anonymous requests, bundles resolved by the first approval,
// the environments' approval policy, and change requests.
func TestApprovalRequests(t *testing.T) {
	pub := bytes.Repeat([]byte{2}, 32)
	exp := t0.Add(5 * time.Minute)
	pollHash := strings.Repeat("cd", 32)
	anon := Principal{Actor: Actor{Kind: ActorAnonymous, ID: strings.Repeat("0f", 16)}}
	bundle := []BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}
	anonAsks := RequestApproval{ApprovalID: "a1", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production", Bundle: "backend",
		PublicKey: pub, PollTokenHash: pollHash, UserCode: "ABCD-EFGH", ClientAddr: "192.0.2.9", ExpiresAt: exp, Now: t0}
	anonRequested := ApprovalRequested{ApprovalID: "a1", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production", Bundle: "backend",
		PublicKey: pub, PollTokenHash: pollHash, UserCode: "ABCD-EFGH", Requester: anon.Actor.String(), ClientAddr: "192.0.2.9", ExpiresAt: exp, Approvals: 1}
	with := func(c RequestApproval, f func(*RequestApproval)) RequestApproval { f(&c); return c }
	eveAsks := ApprovalRequested{ApprovalID: "r1", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
		Keys: bundle, PublicKey: pub, UserCode: "ABCD", Requester: "user:eve", ExpiresAt: exp, Approvals: 1, SelfApproval: true}
	granted := ApprovalGranted{By: "user:bob", Keys: []string{"DB_URL"}}
	sealed := Sealed{KeyID: 7, Ciphertext: []byte("sealed bytes")}
	change := RequestApproval{ApprovalID: "c1", Kind: ApprovalChange, Org: "acme", Project: "web", Env: "production",
		Changes: []SecretChange{{Name: "DB_URL", Op: ChangeSet, BaseVersion: 3, Value: sealed}}, PollTokenHash: pollHash, UserCode: "WXYZ", ExpiresAt: exp, Now: t0}
	changeRequested := ApprovalRequested{ApprovalID: "c1", Kind: ApprovalChange, Org: "acme", Project: "web", Env: "production",
		Keys: []BundleKey{{Name: "DB_URL"}}, Changes: change.Changes, PollTokenHash: pollHash, UserCode: "WXYZ", Requester: "user:bob", ExpiresAt: exp, Approvals: 1}
	withChanges := func(ch ...SecretChange) RequestApproval { c := change; c.Changes = ch; return c }
	login := ApprovalRequested{ApprovalID: "l1", Kind: ApprovalLogin, PublicKey: pub, UserCode: "WXYZ", Requester: anon.Actor.String(), ExpiresAt: exp, Approvals: 1}

	cases := []scenario{
		// Anonymous requests for secrets.
		{name: "a client that is not signed in asks for a bundle", who: anon, when: anonAsks, then: []Event{anonRequested}},
		{name: "an anonymous request is bound to a poll token", who: anon, when: with(anonAsks, func(c *RequestApproval) { c.PollTokenHash = "" }), err: ErrForbidden},
		{name: "an anonymous requester is known by its poll token", who: Principal{Actor: Actor{Kind: ActorAnonymous, ID: "192.0.2.9"}}, when: anonAsks, err: ErrForbidden},
		{name: "a bundle or keys, not both", who: anon, when: with(anonAsks, func(c *RequestApproval) { c.Keys = []BundleKey{{Name: "DB_URL"}} }), err: ErrInvalid},
		{name: "anonymous keys cannot be required", who: anon,
			when: with(anonAsks, func(c *RequestApproval) { c.Bundle, c.Keys = "", []BundleKey{{Name: "DB_URL", Required: true}} }), err: ErrInvalid},
		{name: "nothing asked", who: anon, when: with(anonAsks, func(c *RequestApproval) { c.Bundle = "" }), err: ErrInvalid},
		{name: "no self-approval for anonymous requests", who: anon, when: with(anonAsks, func(c *RequestApproval) { c.SelfApproval = true }), err: ErrInvalid},
		{name: "names are still checked", who: anon, when: with(anonAsks, func(c *RequestApproval) { c.Org = "Acme!" }), err: ErrInvalid},
		{name: "a poll token hash is SHA-256", who: anon, when: with(anonAsks, func(c *RequestApproval) { c.PollTokenHash = "abc" }), err: ErrInvalid},

		// The first approval resolves the bundle.
		{name: "the first approval resolves the bundle", given: []Event{anonRequested}, who: dev, when: Approve{Keys: []string{"DB_URL"}, BundleKeys: bundle, Now: t0},
			then: []Event{ApprovalGranted{By: "user:bob", Keys: []string{"DB_URL"}, BundleKeys: bundle}}},
		{name: "an unresolved bundle needs its keys", given: []Event{anonRequested}, who: dev, when: Approve{Keys: []string{"DB_URL"}, Now: t0}, err: ErrInvalid},
		{name: "the resolved bundle's required keys stay in", given: []Event{anonRequested}, who: dev,
			when: Approve{Keys: []string{"API_KEY"}, BundleKeys: bundle, Now: t0}, err: ErrInvalid},
		{name: "a resolved bundle is not resolved again", given: []Event{anonRequested, ApprovalGranted{By: "user:bob", Keys: []string{"DB_URL"}, BundleKeys: bundle, Required: 2}},
			who: owner, when: Approve{Keys: []string{"OTHER"}, BundleKeys: []BundleKey{{Name: "OTHER"}}, Required: 2, Now: t0}, err: ErrInvalid},

		// The environment's policy.
		{name: "under a policy an anonymous requester could be the approver", given: []Event{anonRequested}, who: dev,
			when: Approve{Keys: []string{"DB_URL"}, BundleKeys: bundle, Required: 1, NoSelfApproval: true, Now: t0}, err: ErrForbidden},
		{name: "the policy raises the approvals needed", given: []Event{eveAsks}, who: dev, when: Approve{Keys: []string{"DB_URL"}, Required: 2, NoSelfApproval: true, Now: t0},
			then: []Event{ApprovalGranted{By: "user:bob", Keys: []string{"DB_URL"}, Required: 2}}},
		{name: "the policy forbids self-approval", given: []Event{eveAsks}, who: Principal{Actor: eve, Role: RoleDeveloper},
			when: Approve{Keys: []string{"DB_URL"}, Required: 1, NoSelfApproval: true, Now: t0}, err: ErrForbidden},
		{name: "a delivery under a policy asking for more approvers", given: []Event{eveAsks, granted}, when: Deliver{Required: 2, Now: t0}, err: ErrApprovalRequired},
		{name: "a self-approval does not count for the policy", given: []Event{eveAsks, ApprovalGranted{By: "user:eve", Keys: []string{"DB_URL"}}},
			when: Deliver{Required: 1, Now: t0}, err: ErrApprovalRequired},
		{name: "enough approvers for the policy", given: []Event{eveAsks, granted, ApprovalGranted{By: "user:ada", Keys: []string{"DB_URL"}}},
			when: Deliver{Keys: []DeliveredKey{{Name: "DB_URL", Version: 1}}, Required: 2, Now: t0}, then: []Event{ApprovalDelivered{Keys: []DeliveredKey{{Name: "DB_URL", Version: 1}}}}},

		// Distinct errors for what a client tells apart.
		{name: "a second delivery", given: []Event{eveAsks, granted, ApprovalDelivered{}}, when: Deliver{Now: t0}, err: ErrAlreadyDelivered},
		{name: "a denied request", given: []Event{eveAsks, ApprovalDenied{By: "user:bob"}}, when: Deliver{Now: t0}, err: ErrApprovalDenied},
		{name: "approving a denied request", given: []Event{eveAsks, ApprovalDenied{By: "user:bob"}}, who: owner, when: Approve{Keys: []string{"DB_URL"}, Now: t0}, err: ErrApprovalDenied},

		// Sign-ins.
		{name: "a sign-in has one approver", who: anon, when: RequestApproval{ApprovalID: "l1", Kind: ApprovalLogin, PublicKey: pub, UserCode: "WXYZ", ExpiresAt: exp, Approvals: 2, Now: t0}, err: ErrInvalid},
		{name: "a person turns a sign-in away", given: []Event{login}, who: Principal{Actor: eve}, when: Deny{Reason: "not me", Now: t0},
			then: []Event{ApprovalDenied{By: "user:eve", Reason: "not me"}}},
		{name: "a token cannot deny a sign-in", given: []Event{login}, who: Principal{Actor: ci, Role: RoleOwner}, when: Deny{Now: t0}, err: ErrForbidden},
		{name: "a sign-in delivers no keys", given: []Event{login, ApprovalGranted{By: "user:ada"}}, when: Deliver{Keys: []DeliveredKey{{Name: "X", Version: 1}}, Now: t0}, err: ErrInvalid},

		// Change requests.
		{name: "a developer asks for a change", who: dev, when: change, then: []Event{changeRequested}},
		{name: "a change is asked for by someone signed in", who: anon, when: change, err: ErrForbidden},
		{name: "a viewer cannot ask for a change", who: view, when: change, err: ErrForbidden},
		{name: "destroying a version is for admins", who: dev, when: withChanges(SecretChange{Name: "DB_URL", Op: ChangeDestroy, BaseVersion: 3, Version: 1}), err: ErrForbidden},
		{name: "an admin may ask to destroy a version", who: admin, when: withChanges(SecretChange{Name: "DB_URL", Op: ChangeDestroy, BaseVersion: 3, Version: 1}),
			then: []Event{func() Event {
				e := changeRequested
				e.Changes = []SecretChange{{Name: "DB_URL", Op: ChangeDestroy, BaseVersion: 3, Version: 1}}
				return e
			}()}},
		{name: "a change request delivers nothing to a key", who: dev, when: func() RequestApproval { c := change; c.PublicKey = pub; return c }(), err: ErrInvalid},
		{name: "a set carries a sealed value", who: dev, when: withChanges(SecretChange{Name: "DB_URL", Op: ChangeSet, BaseVersion: 3}), err: ErrInvalid},
		{name: "only a set carries a value", who: dev, when: withChanges(SecretChange{Name: "DB_URL", Op: ChangeDelete, BaseVersion: 3, Value: sealed}), err: ErrInvalid},
		{name: "a rollback names its version", who: dev, when: withChanges(SecretChange{Name: "DB_URL", Op: ChangeRollback, BaseVersion: 3}), err: ErrInvalid},
		{name: "a delete is based on a version", who: dev, when: withChanges(SecretChange{Name: "DB_URL", Op: ChangeDelete}), err: ErrInvalid},
		{name: "one change per secret", who: dev, when: withChanges(change.Changes[0], change.Changes[0]), err: ErrInvalid},
		{name: "an unknown change", who: dev, when: withChanges(SecretChange{Name: "DB_URL", Op: "rename", BaseVersion: 3}), err: ErrInvalid},
		{name: "no changes", who: dev, when: withChanges(), err: ErrInvalid},
		{name: "a change request names no keys", who: dev, when: func() RequestApproval { c := change; c.Bundle = "backend"; return c }(), err: ErrInvalid},
		{name: "a change is approved whole", given: []Event{changeRequested}, who: owner, when: Approve{Keys: []string{"DB_URL"}, Now: t0}, err: ErrInvalid},
		{name: "approve a change", given: []Event{changeRequested}, who: owner, when: Approve{Required: 1, NoSelfApproval: true, Now: t0},
			then: []Event{ApprovalGranted{By: "user:ada"}}},
		{name: "the requester cannot approve their change", given: []Event{changeRequested}, who: dev, when: Approve{Now: t0}, err: ErrForbidden},
		{name: "a change delivers only its secrets", given: []Event{changeRequested, ApprovalGranted{By: "user:ada"}},
			when: Deliver{Keys: []DeliveredKey{{Name: "OTHER", Version: 1}}, Now: t0}, err: ErrInvalid},
		{name: "a change is made once", given: []Event{changeRequested, ApprovalGranted{By: "user:ada"}},
			when: Deliver{Keys: []DeliveredKey{{Name: "DB_URL", Version: 4}}, Required: 1, Now: t0}, then: []Event{ApprovalDelivered{Keys: []DeliveredKey{{Name: "DB_URL", Version: 4}}}}},
	}
	for _, c := range cases {
		got, err := ReplayApproval(c.given).Handle(c.who, c.when)
		check(t, c, got, err)
	}

	// State after the events above.
	a := ReplayApproval([]Event{anonRequested, ApprovalGranted{By: "user:bob", Keys: []string{"DB_URL"}, BundleKeys: bundle, Required: 2}})
	if a.Status() != StatusPending || a.Required() != 2 || len(a.Request().Keys) != 2 || !a.AnonymousRequester() {
		t.Fatalf("after a resolving approval that raised the count: %s, %d required, keys %v", a.Status(), a.Required(), a.Request().Keys)
	}
	a.Apply(ApprovalGranted{By: "user:ada", Keys: []string{"DB_URL", "API_KEY"}})
	if a.Status() != StatusApproved || a.CheckDeliver(2, t0) != nil {
		t.Fatalf("after two approvals: %s, %v", a.Status(), a.CheckDeliver(2, t0))
	}
	if err := a.CheckDeliver(0, exp); !errors.Is(err, ErrExpired) {
		t.Fatalf("delivering after the expiry: %v", err)
	}
	if err := ReplayApproval([]Event{eveAsks}).CheckDeliver(0, t0); !errors.Is(err, ErrState) || errors.Is(err, ErrApprovalDenied) || errors.Is(err, ErrAlreadyDelivered) {
		t.Fatalf("delivering a pending request: %v", err)
	}
	if !ReplayApproval([]Event{changeRequested}).WouldComplete(1) || ReplayApproval([]Event{changeRequested}).WouldComplete(2) {
		t.Fatal("WouldComplete counts the next approval against the policy")
	}
}

func TestApprovalPolicy(t *testing.T) {
	reveal := ApprovalPolicy{Reveal: true}
	change := ApprovalPolicy{Change: true, Approvers: 3}
	if reveal.ApproversNeeded() != 1 || change.ApproversNeeded() != 3 {
		t.Fatalf("approvers needed: %d, %d", reveal.ApproversNeeded(), change.ApproversNeeded())
	}
	err := reveal.CheckReveal(dev)
	if !errors.Is(err, ErrApprovalRequired) || !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "1 person") {
		t.Fatalf("a reveal under the policy: %v", err)
	}
	if err := change.CheckChange(owner); !errors.Is(err, ErrApprovalRequired) || !strings.Contains(err.Error(), "3 people") {
		t.Fatalf("a change under the policy: %v", err)
	}
	for _, who := range []Principal{System("resealer"), System("rotation")} {
		if reveal.CheckReveal(who) != nil || change.CheckChange(who) != nil {
			t.Fatalf("%s is bound by the policy", who.Actor)
		}
	}
	if reveal.CheckChange(dev) != nil || change.CheckReveal(dev) != nil || (ApprovalPolicy{}).CheckReveal(dev) != nil {
		t.Fatal("a policy refuses what it does not cover")
	}
}
