package domain_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	. "stele.dev/stele/domain"
)

var update = flag.Bool("update", false, "rewrite testdata/event_types.txt")

// scenario is one rule: given these events, when this command, then these
// events or an error matching err.
type scenario struct {
	name  string
	given []Event
	who   Principal
	when  any
	then  []Event
	err   error
}

func check(t *testing.T, sc scenario, got []Event, err error) {
	t.Helper()
	if sc.err != nil {
		if !errors.Is(err, sc.err) {
			t.Fatalf("%s: got %v (events %v), want an error matching %v", sc.name, err, got, sc.err)
		}
		if err.Error() == "" {
			t.Fatalf("%s: empty error message", sc.name)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", sc.name, err)
	}
	if !reflect.DeepEqual(got, sc.then) {
		t.Fatalf("%s:\n got  %#v\n want %#v", sc.name, got, sc.then)
	}
	// Whatever is decided must survive the codec unchanged.
	for _, e := range got {
		b, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(e.EventType(), b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(normalize(back), normalize(e)) {
			t.Fatalf("%s: %s does not round-trip:\n %#v\n %#v", sc.name, e.EventType(), back, e)
		}
	}
}

// normalize makes empty slices and nil comparable after JSON.
func normalize(e Event) string {
	b, _ := Encode(e)
	return string(b)
}

var (
	t0    = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	ada   = Actor{Kind: ActorUser, ID: "ada"}
	bob   = Actor{Kind: ActorUser, ID: "bob"}
	eve   = Actor{Kind: ActorUser, ID: "eve"}
	ci    = Actor{Kind: ActorToken, ID: "ci-1"}
	owner = Principal{Actor: ada, Role: RoleOwner}
	admin = Principal{Actor: bob, Role: RoleAdmin}
	dev   = Principal{Actor: bob, Role: RoleDeveloper}
	view  = Principal{Actor: eve, Role: RoleViewer}
	hash  = strings.Repeat("ab", 32)
)

func TestEventTypesAreFixed(t *testing.T) {
	got := strings.Join(Types(), "\n") + "\n"
	if *update {
		os.WriteFile("testdata/event_types.txt", []byte(got), 0o644)
	}
	want, err := os.ReadFile("testdata/event_types.txt")
	if err != nil {
		t.Fatal(err)
	}
	// Wire names may be added, never renamed or removed.
	for _, name := range strings.Fields(string(want)) {
		if !strings.Contains(got, name+"\n") {
			t.Errorf("event type %q disappeared: stored events of that type could no longer be read", name)
		}
	}
	if !bytes.Equal([]byte(got), want) {
		t.Errorf("event types changed; if only added, run go test ./domain -update:\n%s", got)
	}
	if _, err := Decode("no.such_type", []byte(`{}`)); err == nil {
		t.Error("an unknown type decoded")
	}
	if _, err := Decode("secret.updated", []byte(`{`)); err == nil {
		t.Error("malformed JSON decoded")
	}
}

func TestOrganization(t *testing.T) {
	created := []Event{OrganizationCreated{OrgID: "acme", Name: "Acme", Owner: "ada"}, RoleGranted{UserID: "ada", Role: RoleOwner}}
	withBob := append(append([]Event{}, created...), RoleGranted{UserID: "bob", Role: RoleAdmin})
	withToken := append(append([]Event{}, withBob...), TokenIssued{TokenID: "ci-1", Name: "CI", Role: RoleDeveloper, Project: "web",
		Environments: []string{"staging"}, ExpiresAt: t0.Add(24 * time.Hour), SecretHash: hash})
	type orgScenario struct {
		scenario
		actor Actor
		now   time.Time
	}
	cases := []orgScenario{
		{scenario: scenario{name: "a person creates an organization and owns it", when: CreateOrganization{ID: "acme", Name: "Acme"}, then: created}, actor: ada},
		{scenario: scenario{name: "a token cannot create an organization", when: CreateOrganization{ID: "acme", Name: "Acme"}, err: ErrForbidden}, actor: ci},
		{scenario: scenario{name: "a person cannot create an organization for someone else", when: CreateOrganization{ID: "acme", Name: "Acme", Owner: "bob"}, err: ErrInvalid}, actor: ada},
		{scenario: scenario{name: "Stele creates an organization with a person as owner", when: CreateOrganization{ID: "acme", Name: "Acme", Owner: "ada@example.com"},
			then: []Event{OrganizationCreated{OrgID: "acme", Name: "Acme", Owner: "ada@example.com"}, RoleGranted{UserID: "ada@example.com", Role: RoleOwner}}},
			actor: Actor{Kind: ActorSystem, ID: "bootstrap"}},
		{scenario: scenario{name: "Stele creates an organization no person owns yet", when: CreateOrganization{ID: "acme", Name: "Acme"},
			then: []Event{OrganizationCreated{OrgID: "acme", Name: "Acme"}}}, actor: Actor{Kind: ActorSystem, ID: "bootstrap"}},
		{scenario: scenario{name: "an owner named by Stele must be a user id", when: CreateOrganization{ID: "acme", Name: "Acme", Owner: "Ada Lovelace"}, err: ErrInvalid},
			actor: Actor{Kind: ActorSystem, ID: "bootstrap"}},
		{scenario: scenario{name: "people are known by e-mail address", given: created, when: GrantRole{UserID: "grace.hopper+ops@example.com", Role: RoleViewer},
			then: []Event{RoleGranted{UserID: "grace.hopper+ops@example.com", Role: RoleViewer}}}, actor: ada},
		{scenario: scenario{name: "user ids are lowercase addresses or identifiers", given: created, when: GrantRole{UserID: "Grace@Example.com", Role: RoleViewer}, err: ErrInvalid}, actor: ada},
		{scenario: scenario{name: "a user id has no colon", given: created, when: GrantRole{UserID: "a:b@example.com", Role: RoleViewer}, err: ErrInvalid}, actor: ada},
		{scenario: scenario{name: "an organization id is a slug", when: CreateOrganization{ID: "Acme Inc", Name: "Acme"}, err: ErrInvalid}, actor: ada},
		{scenario: scenario{name: "an organization exists once", given: created, when: CreateOrganization{ID: "acme", Name: "Acme"}, err: ErrAlreadyExists}, actor: ada},
		{scenario: scenario{name: "commands on a missing organization", when: RenameOrganization{Name: "x"}, err: ErrNotFound}, actor: ada},
		{scenario: scenario{name: "the owner grants admin", given: created, when: GrantRole{UserID: "bob", Role: RoleAdmin},
			then: []Event{RoleGranted{UserID: "bob", Role: RoleAdmin}}}, actor: ada},
		{scenario: scenario{name: "an admin cannot grant owner", given: withBob, when: GrantRole{UserID: "eve", Role: RoleOwner}, err: ErrForbidden}, actor: bob},
		{scenario: scenario{name: "an admin grants a project role", given: withBob, when: GrantRole{UserID: "eve", Role: RoleDeveloper, Project: "web"},
			then: []Event{RoleGranted{UserID: "eve", Role: RoleDeveloper, Project: "web"}}}, actor: bob},
		{scenario: scenario{name: "a stranger cannot grant", given: created, when: GrantRole{UserID: "eve", Role: RoleViewer}, err: ErrForbidden}, actor: eve},
		{scenario: scenario{name: "granting the same role changes nothing", given: withBob, when: GrantRole{UserID: "bob", Role: RoleAdmin}}, actor: ada},
		{scenario: scenario{name: "the last owner cannot be revoked", given: withBob, when: RevokeRole{UserID: "ada"}, err: ErrState}, actor: ada},
		{scenario: scenario{name: "an admin cannot revoke an owner", given: withBob, when: RevokeRole{UserID: "ada"}, err: ErrForbidden}, actor: bob},
		{scenario: scenario{name: "revoking a missing grant", given: withBob, when: RevokeRole{UserID: "eve"}, err: ErrNotFound}, actor: ada},
		{scenario: scenario{name: "the owner revokes an admin", given: withBob, when: RevokeRole{UserID: "bob"},
			then: []Event{RoleRevoked{UserID: "bob", Previous: RoleAdmin}}}, actor: ada},
		{scenario: scenario{name: "an admin issues a scoped token", given: withBob, when: IssueToken{TokenID: "ci-1", Name: "CI", Role: RoleDeveloper,
			Project: "web", Environments: []string{"staging"}, ExpiresAt: t0.Add(24 * time.Hour), SecretHash: hash},
			then: withToken[len(withBob):]}, actor: bob, now: t0},
		{scenario: scenario{name: "a token cannot outrank its issuer", given: withBob, when: IssueToken{TokenID: "ci-2", Name: "CI", Role: RoleOwner,
			ExpiresAt: t0.Add(time.Hour), SecretHash: hash}, err: ErrForbidden}, actor: bob, now: t0},
		{scenario: scenario{name: "a token must expire", given: withBob, when: IssueToken{TokenID: "ci-2", Name: "CI", Role: RoleViewer,
			ExpiresAt: t0.Add(400 * 24 * time.Hour), SecretHash: hash}, err: ErrInvalid}, actor: bob, now: t0},
		{scenario: scenario{name: "a token's hash is SHA-256", given: withBob, when: IssueToken{TokenID: "ci-2", Name: "CI", Role: RoleViewer,
			ExpiresAt: t0.Add(time.Hour), SecretHash: "secret"}, err: ErrInvalid}, actor: bob, now: t0},
		{scenario: scenario{name: "token ids are unique", given: withToken, when: IssueToken{TokenID: "ci-1", Name: "CI", Role: RoleViewer,
			ExpiresAt: t0.Add(time.Hour), SecretHash: hash}, err: ErrAlreadyExists}, actor: bob, now: t0},
		{scenario: scenario{name: "a developer cannot issue tokens", given: append(append([]Event{}, created...), RoleGranted{UserID: "eve", Role: RoleDeveloper}),
			when: IssueToken{TokenID: "x", Name: "x", Role: RoleViewer, ExpiresAt: t0.Add(time.Hour), SecretHash: hash}, err: ErrForbidden}, actor: eve, now: t0},
		{scenario: scenario{name: "a token revokes itself", given: withToken, when: RevokeToken{TokenID: "ci-1", Reason: "leaked"},
			then: []Event{TokenRevoked{TokenID: "ci-1", Reason: "leaked"}}}, actor: ci, now: t0},
		{scenario: scenario{name: "revoking twice", given: append(append([]Event{}, withToken...), TokenRevoked{TokenID: "ci-1"}),
			when: RevokeToken{TokenID: "ci-1"}, err: ErrState}, actor: ada, now: t0},
	}
	for _, c := range cases {
		o := ReplayOrganization(c.given)
		now := c.now
		if now.IsZero() {
			now = t0
		}
		got, err := o.Handle(c.actor, now, c.when)
		check(t, c.scenario, got, err)
	}
}

func TestOrganizationAccess(t *testing.T) {
	o := ReplayOrganization([]Event{
		OrganizationCreated{OrgID: "acme", Name: "Acme", Owner: "ada"},
		RoleGranted{UserID: "ada", Role: RoleOwner},
		RoleGranted{UserID: "eve", Role: RoleViewer},
		RoleGranted{UserID: "eve", Role: RoleDeveloper, Project: "web"},
		TokenIssued{TokenID: "ci-1", Name: "CI", Role: RoleDeveloper, Project: "web", Environments: []string{"staging"}, ExpiresAt: t0.Add(time.Hour), SecretHash: hash},
		TokenIssued{TokenID: "old", Name: "old", Role: RoleAdmin, ExpiresAt: t0.Add(time.Hour), SecretHash: hash},
		TokenRevoked{TokenID: "old"},
	})
	cases := []struct {
		actor        Actor
		project, env string
		now          time.Time
		role         Role
	}{
		{ada, "", "", t0, RoleOwner},
		{eve, "", "", t0, RoleViewer},
		{eve, "web", "prod", t0, RoleDeveloper}, // project grant lifts the org role
		{eve, "api", "", t0, RoleViewer},
		{bob, "", "", t0, RoleNone}, // not a member
		{ci, "web", "staging", t0, RoleDeveloper},
		{ci, "web", "production", t0, RoleNone},                    // outside its environments
		{ci, "api", "staging", t0, RoleNone},                       // outside its project
		{ci, "web", "staging", t0.Add(time.Hour), RoleNone},        // expired
		{Actor{Kind: ActorToken, ID: "old"}, "", "", t0, RoleNone}, // revoked
		{Actor{Kind: ActorToken, ID: "nope"}, "", "", t0, RoleNone},
		{Actor{Kind: ActorSystem, ID: "resealer"}, "web", "prod", t0, RoleOwner},
		{Actor{Kind: ActorAnonymous, ID: "x"}, "", "", t0, RoleNone},
	}
	for _, c := range cases {
		p, err := o.Access(c.actor, c.project, c.env, c.now)
		if c.role == RoleNone {
			var fe *ForbiddenError
			if !errors.As(err, &fe) || !fe.Outsider {
				t.Errorf("%s in %s/%s at %s: %v, want forbidden as an outsider", c.actor, c.project, c.env, c.now, err)
			}
			continue
		}
		if err != nil || p.Role != c.role {
			t.Errorf("%s in %s/%s: %v %v, want %s", c.actor, c.project, c.env, p.Role, err, c.role)
		}
	}
}

func TestProject(t *testing.T) {
	created := []Event{ProjectCreated{OrgID: "acme", ProjectID: "web", Name: "Web"}}
	withProd := append(append([]Event{}, created...), EnvironmentCreated{EnvID: "production", EnvSettings: EnvSettings{Name: "Production", Production: true, RotationSeconds: 86400}})
	withBundle := append(append([]Event{}, withProd...), BundleCreated{BundleID: "backend", Keys: []BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}})
	yes, hour := true, time.Hour
	cases := []scenario{
		{name: "an admin creates a project", who: admin, when: CreateProject{OrgID: "acme", ProjectID: "web", Name: "Web"}, then: created},
		{name: "a developer cannot create projects", who: dev, when: CreateProject{OrgID: "acme", ProjectID: "web", Name: "Web"}, err: ErrForbidden},
		{name: "a project exists once", given: created, who: admin, when: CreateProject{OrgID: "acme", ProjectID: "web", Name: "Web"}, err: ErrAlreadyExists},
		{name: "an environment with the default rotation", given: created, who: admin, when: CreateEnvironment{EnvID: "staging"},
			then: []Event{EnvironmentCreated{EnvID: "staging", EnvSettings: EnvSettings{Name: "staging", RotationSeconds: 86400}}}},
		{name: "environment ids are slugs", given: created, who: admin, when: CreateEnvironment{EnvID: "Prod!"}, err: ErrInvalid},
		{name: "environments are unique", given: withProd, who: admin, when: CreateEnvironment{EnvID: "production"}, err: ErrAlreadyExists},
		{name: "rotation at least hourly", given: created, who: admin, when: CreateEnvironment{EnvID: "x", Rotation: time.Minute}, err: ErrInvalid},
		{name: "update an environment records before and after", given: withProd, who: admin, when: UpdateEnvironment{EnvID: "production", Rotation: &hour},
			then: []Event{EnvironmentUpdated{EnvID: "production", Before: EnvSettings{Name: "Production", Production: true, RotationSeconds: 86400},
				After: EnvSettings{Name: "Production", Production: true, RotationSeconds: 3600}}}},
		{name: "an update that changes nothing", given: withProd, who: admin, when: UpdateEnvironment{EnvID: "production", Production: &yes}},
		{name: "production values need two approvals to be read", given: withProd, who: admin,
			when: UpdateEnvironment{EnvID: "production", Approval: &ApprovalPolicy{Reveal: true, Change: true, Approvers: 2}},
			then: []Event{EnvironmentUpdated{EnvID: "production", Before: EnvSettings{Name: "Production", Production: true, RotationSeconds: 86400},
				After: EnvSettings{Name: "Production", Production: true, RotationSeconds: 86400, Approval: ApprovalPolicy{Reveal: true, Change: true, Approvers: 2}}}}},
		{name: "at most five approvers", given: withProd, who: admin,
			when: UpdateEnvironment{EnvID: "production", Approval: &ApprovalPolicy{Reveal: true, Approvers: 6}}, err: ErrInvalid},
		{name: "a bundle of keys", given: withProd, who: admin, when: CreateBundle{BundleID: "backend", Keys: []BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}},
			then: withBundle[len(withProd):]},
		{name: "bundle keys are environment variable names", given: withProd, who: admin, when: CreateBundle{BundleID: "b", Keys: []BundleKey{{Name: "db-url"}}}, err: ErrInvalid},
		{name: "bundle keys are distinct", given: withProd, who: admin, when: CreateBundle{BundleID: "b", Keys: []BundleKey{{Name: "A"}, {Name: "A"}}}, err: ErrInvalid},
		{name: "update a bundle", given: withBundle, who: admin, when: UpdateBundle{BundleID: "backend", Keys: []BundleKey{{Name: "DB_URL"}}},
			then: []Event{BundleUpdated{BundleID: "backend", Before: []BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}, After: []BundleKey{{Name: "DB_URL"}}}}},
		{name: "delete a bundle", given: withBundle, who: admin, when: DeleteBundle{BundleID: "backend"},
			then: []Event{BundleDeleted{BundleID: "backend", Keys: []BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}}}},
		{name: "delete a missing bundle", given: withProd, who: admin, when: DeleteBundle{BundleID: "backend"}, err: ErrNotFound},
		{name: "a viewer cannot change a project", given: withProd, who: view, when: CreateEnvironment{EnvID: "dev"}, err: ErrForbidden},
	}
	for _, c := range cases {
		got, err := ReplayProject(c.given).Handle(c.who, c.when)
		check(t, c, got, err)
	}
}

var (
	ref    = SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB_URL"}
	sealed = func(key uint32, b string) Sealed { return Sealed{KeyID: key, Ciphertext: []byte(b)} }
)

func TestSecret(t *testing.T) {
	created := []Event{SecretCreated{SecretRef: ref, Version: 1, Value: sealed(7, "c1"), Metadata: SecretMetadata{Description: "primary database"}}}
	v2 := append(append([]Event{}, created...), SecretUpdated{Version: 2, Previous: 1, Value: sealed(7, "c2")})
	destroyed1 := append(append([]Event{}, v2...), SecretVersionDestroyed{Version: 1})
	deleted := append(append([]Event{}, v2...), SecretDeleted{Version: 2})
	cases := []scenario{
		{name: "a developer creates a secret", who: dev, when: CreateSecret{Ref: ref, Value: sealed(7, "c1"), Metadata: SecretMetadata{Description: "primary database"}}, then: created},
		{name: "a viewer cannot create", who: view, when: CreateSecret{Ref: ref, Value: sealed(7, "c1")}, err: ErrForbidden},
		{name: "names follow environment variable grammar", who: dev, when: CreateSecret{Ref: SecretRef{Org: "acme", Project: "web", Env: "production", Name: "DB-URL"}, Value: sealed(7, "c")}, err: ErrInvalid},
		{name: "a name cannot start with a digit", who: dev, when: CreateSecret{Ref: SecretRef{Org: "acme", Project: "web", Env: "production", Name: "1X"}, Value: sealed(7, "c")}, err: ErrInvalid},
		{name: "an empty value is refused", who: dev, when: CreateSecret{Ref: ref}, err: ErrInvalid},
		{name: "an oversize value is refused", who: dev, when: CreateSecret{Ref: ref, Value: Sealed{KeyID: 7, Ciphertext: make([]byte, MaxCiphertext+1)}}, err: ErrInvalid},
		{name: "a secret exists once", given: created, who: dev, when: CreateSecret{Ref: ref, Value: sealed(7, "c")}, err: ErrAlreadyExists},
		{name: "a deleted secret is restored, not recreated", given: deleted, who: dev, when: CreateSecret{Ref: ref, Value: sealed(7, "c")}, err: ErrAlreadyExists},
		{name: "update makes a new version", given: created, who: dev, when: UpdateSecret{Value: sealed(7, "c2")}, then: v2[1:]},
		{name: "a viewer cannot update", given: created, who: view, when: UpdateSecret{Value: sealed(7, "c2")}, err: ErrForbidden},
		{name: "check-and-set passes", given: created, who: dev, when: UpdateSecret{Value: sealed(7, "c2"), IfVersion: 1}, then: v2[1:]},
		{name: "check-and-set fails on another version", given: v2, who: dev, when: UpdateSecret{Value: sealed(7, "c3"), IfVersion: 1}, err: ErrVersionMismatch},
		{name: "updating a missing secret", who: dev, when: UpdateSecret{Value: sealed(7, "c")}, err: ErrNotFound},
		{name: "a deleted secret cannot be updated", given: deleted, who: dev, when: UpdateSecret{Value: sealed(7, "c")}, err: ErrDeleted},
		{name: "delete", given: v2, who: dev, when: DeleteSecret{}, then: []Event{SecretDeleted{Version: 2}}},
		{name: "restore", given: deleted, who: dev, when: RestoreSecret{}, then: []Event{SecretRestored{Version: 2}}},
		{name: "restore what is not deleted", given: v2, who: dev, when: RestoreSecret{}, err: ErrState},
		{name: "a developer cannot destroy versions", given: v2, who: dev, when: DestroySecretVersion{Version: 1}, err: ErrForbidden},
		{name: "an admin destroys a version", given: v2, who: admin, when: DestroySecretVersion{Version: 1}, then: []Event{SecretVersionDestroyed{Version: 1}}},
		{name: "a version is destroyed once", given: destroyed1, who: admin, when: DestroySecretVersion{Version: 1}, err: ErrDestroyed},
		{name: "a destroyed version cannot be read", given: destroyed1, who: dev, when: ViewSecret{Version: 1, Channel: ChannelAPI}, err: ErrDestroyed},
		{name: "a destroyed version cannot be rolled back to", given: destroyed1, who: dev, when: RollbackSecret{To: 1, Value: sealed(7, "c3")}, err: ErrDestroyed},
		{name: "roll back to version 1", given: v2, who: dev, when: RollbackSecret{To: 1, Value: sealed(7, "c1b")},
			then: []Event{SecretRolledBack{Version: 3, Previous: 2, From: 1, Value: sealed(7, "c1b")}}},
		{name: "roll back to the current version", given: v2, who: dev, when: RollbackSecret{To: 2, Value: sealed(7, "x")}, err: ErrState},
		{name: "roll back to a missing version", given: v2, who: dev, when: RollbackSecret{To: 9, Value: sealed(7, "x")}, err: ErrNotFound},
		{name: "reading records the view", given: v2, who: dev, when: ViewSecret{Reason: "deploy", Channel: ChannelRun},
			then: []Event{SecretViewed{Version: 2, Reason: "deploy", Channel: ChannelRun}}},
		{name: "reading an old version", given: v2, who: dev, when: ViewSecret{Version: 1, Channel: ChannelAPI}, then: []Event{SecretViewed{Version: 1, Channel: ChannelAPI}}},
		{name: "a viewer cannot read values", given: v2, who: view, when: ViewSecret{Channel: ChannelAPI}, err: ErrForbidden},
		{name: "a deleted secret cannot be read", given: deleted, who: dev, when: ViewSecret{Channel: ChannelAPI}, err: ErrDeleted},
		{name: "a value whose key is destroyed cannot be read", given: v2, who: dev, when: ViewSecret{Channel: ChannelAPI, DestroyedKeys: []uint32{7}}, err: ErrDestroyed},
		{name: "reads name a channel", given: v2, who: dev, when: ViewSecret{Channel: "carrier-pigeon"}, err: ErrInvalid},
		{name: "reseal the current version", given: v2, who: System("resealer"), when: ResealSecret{Version: 2, FromKeyID: 7, Value: sealed(8, "c2'")},
			then: []Event{SecretResealed{Version: 2, FromKeyID: 7, Value: sealed(8, "c2'")}}},
		{name: "reseal only the current version", given: v2, who: System("resealer"), when: ResealSecret{Version: 1, FromKeyID: 7, Value: sealed(8, "x")}, err: ErrState},
		{name: "reseal what another resealer already did", given: append(append([]Event{}, v2...), SecretResealed{Version: 2, FromKeyID: 7, Value: sealed(8, "c2'")}),
			who: System("resealer"), when: ResealSecret{Version: 2, FromKeyID: 7, Value: sealed(8, "x")}, err: ErrState},
		{name: "a developer cannot reseal", given: v2, who: dev, when: ResealSecret{Version: 2, FromKeyID: 7, Value: sealed(8, "x")}, err: ErrForbidden},
		{name: "metadata before and after", given: v2, who: dev, when: UpdateSecretMetadata{Metadata: SecretMetadata{Description: "db", Tags: []string{"pci"}, RotationSeconds: 3600}},
			then: []Event{SecretMetadataUpdated{Before: SecretMetadata{Description: "primary database"}, After: SecretMetadata{Description: "db", Tags: []string{"pci"}, RotationSeconds: 3600}}}},
		{name: "unchanged metadata", given: v2, who: dev, when: UpdateSecretMetadata{Metadata: SecretMetadata{Description: "primary database"}}},
	}
	for _, c := range cases {
		got, err := ReplaySecret(c.given).Handle(c.who, c.when)
		check(t, c, got, err)
	}
	// State after history.
	s := ReplaySecret(append(append([]Event{}, destroyed1...), SecretRolledBack{Version: 3, Previous: 2, From: 2, Value: sealed(8, "c2b")}, SecretViewed{Version: 3}))
	if s.Current() != 3 || len(s.Versions()) != 3 || s.Views() != 1 || s.StreamVersion() != 5 {
		t.Fatalf("state %d %d %d %d", s.Current(), len(s.Versions()), s.Views(), s.StreamVersion())
	}
	if v, _ := s.Version(1); !v.Destroyed || v.Value.Ciphertext != nil {
		t.Fatalf("destroyed version keeps %v", v)
	}
	if v, _ := s.Version(0); v.From != 2 || v.Value.KeyID != 8 {
		t.Fatalf("current version %+v", v)
	}
}

func TestKeyset(t *testing.T) {
	m := func(v uint64) Material { return Material{Version: v, Hash: hash} }
	created := []Event{KeysetCreated{Org: "acme", Project: "web", Env: "production", KEK: "local:///k", KeyID: 7, At: t0, Material: m(1)}}
	rotated := append(append([]Event{}, created...), KeysetRotated{KeyID: 8, Previous: 7, Reason: "scheduled", At: t0.Add(24 * time.Hour), Material: m(2)})
	disabled := append(append([]Event{}, rotated...), KeyDisabled{KeyID: 7, Material: m(3)})
	cases := []scenario{
		{name: "a keyset on first write", who: dev, when: CreateKeyset{Org: "acme", Project: "web", Env: "production", KEK: "local:///k", KeyID: 7, Material: m(1), Now: t0}, then: created},
		{name: "material starts at version 1", who: dev, when: CreateKeyset{Org: "acme", Project: "web", Env: "production", KEK: "local:///k", KeyID: 7, Material: m(2), Now: t0}, err: ErrInvalid},
		{name: "rotation adds a primary", given: created, who: admin, when: RotateKeyset{KeyID: 8, Reason: "scheduled", Material: m(2), Now: t0.Add(24 * time.Hour)}, then: rotated[1:]},
		{name: "a developer cannot rotate", given: created, who: dev, when: RotateKeyset{KeyID: 8, Material: m(2), Now: t0}, err: ErrForbidden},
		{name: "material versions follow each other", given: created, who: admin, when: RotateKeyset{KeyID: 8, Material: m(5), Now: t0}, err: ErrInvalid},
		{name: "the primary cannot be disabled", given: rotated, who: admin, when: DisableKey{KeyID: 8, Material: m(3)}, err: ErrState},
		{name: "a key in use cannot be disabled", given: rotated, who: admin, when: DisableKey{KeyID: 7, InUse: 4, Material: m(3)}, err: ErrState},
		{name: "a resealed key is disabled", given: rotated, who: admin, when: DisableKey{KeyID: 7, Material: m(3)}, then: disabled[2:]},
		{name: "destroy needs disable first", given: rotated, who: System("x"), when: DestroyKey{KeyID: 7, Material: m(3)}, err: ErrState},
		{name: "an admin cannot destroy keys", given: disabled, who: admin, when: DestroyKey{KeyID: 7, Material: m(4)}, err: ErrForbidden},
		{name: "the owner destroys a disabled key", given: disabled, who: owner, when: DestroyKey{KeyID: 7, Material: m(4)}, then: []Event{KeyDestroyed{KeyID: 7, Material: m(4)}}},
		{name: "re-enable a disabled key", given: disabled, who: admin, when: EnableKey{KeyID: 7, Material: m(4)}, then: []Event{KeyEnabled{KeyID: 7, Material: m(4)}}},
		{name: "rewrap under a new KEK", given: created, who: admin, when: RewrapKeyset{To: "aws-kms://arn:x", Material: m(2)},
			then: []Event{KeysetRewrapped{From: "local:///k", To: "aws-kms://arn:x", Material: m(2)}}},
		{name: "rewrap to the same KEK", given: created, who: admin, when: RewrapKeyset{To: "local:///k", Material: m(2)}, err: ErrInvalid},
		{name: "reseal completes for the primary", given: rotated, who: System("resealer"), when: CompleteReseal{KeyID: 8, Values: 12}, then: []Event{KeysetResealed{KeyID: 8, Values: 12}}},
		{name: "reseal completes only for the primary", given: rotated, who: System("resealer"), when: CompleteReseal{KeyID: 7}, err: ErrState},
	}
	for _, c := range cases {
		got, err := ReplayKeyset(c.given).Handle(c.who, c.when)
		check(t, c, got, err)
	}
	k := ReplayKeyset(append(append([]Event{}, disabled...), KeyDestroyed{KeyID: 7, Material: m(4)}))
	if k.Primary() != 8 || k.Material().Version != 4 || len(k.Destroyed()) != 1 || k.ResealComplete() {
		t.Fatalf("keyset state: primary %d material %d destroyed %v", k.Primary(), k.Material().Version, k.Destroyed())
	}
	if !k.RotationDue(24*time.Hour, t0.Add(48*time.Hour)) || k.RotationDue(24*time.Hour, t0.Add(30*time.Hour)) {
		t.Fatal("rotation due")
	}
}

func TestApproval(t *testing.T) {
	pub := bytes.Repeat([]byte{1}, 32)
	exp := t0.Add(5 * time.Minute)
	keys := []BundleKey{{Name: "DB_URL", Required: true}, {Name: "API_KEY"}}
	requested := []Event{ApprovalRequested{ApprovalID: "r1", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production", Bundle: "backend",
		Keys: keys, PublicKey: pub, UserCode: "ABCD-EFGH", Requester: "user:eve", ClientAddr: "192.0.2.1", ExpiresAt: exp, Approvals: 1}}
	approved := append(append([]Event{}, requested...), ApprovalGranted{By: "user:bob", Keys: []string{"API_KEY", "DB_URL"}})
	delivered := append(append([]Event{}, approved...), ApprovalDelivered{Keys: []DeliveredKey{{Name: "DB_URL", Version: 3}}})
	requester := Principal{Actor: eve, Role: RoleDeveloper}
	twoApprovers := []Event{ApprovalRequested{ApprovalID: "r2", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
		Keys: keys, PublicKey: pub, UserCode: "ABCD", Requester: "user:eve", ExpiresAt: exp, Approvals: 2}}
	cases := []scenario{
		{name: "request a bundle", who: requester, when: RequestApproval{ApprovalID: "r1", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
			Bundle: "backend", Keys: keys, PublicKey: pub, UserCode: "ABCD-EFGH", ClientAddr: "192.0.2.1", ExpiresAt: exp, Now: t0}, then: requested},
		{name: "a request carries a 32-byte public key", who: requester, when: RequestApproval{ApprovalID: "r1", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
			Keys: keys, PublicKey: pub[:16], UserCode: "ABCD", ExpiresAt: exp, Now: t0}, err: ErrInvalid},
		{name: "a request expires within the hour", who: requester, when: RequestApproval{ApprovalID: "r1", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production",
			Keys: keys, PublicKey: pub, UserCode: "ABCD", ExpiresAt: t0.Add(2 * time.Hour), Now: t0}, err: ErrInvalid},
		{name: "an anonymous client asks for a sign-in", who: Principal{Actor: Actor{Kind: ActorAnonymous, ID: "192.0.2.1"}},
			when: RequestApproval{ApprovalID: "l1", Kind: ApprovalLogin, PublicKey: pub, UserCode: "WXYZ", ExpiresAt: exp, Now: t0},
			then: []Event{ApprovalRequested{ApprovalID: "l1", Kind: ApprovalLogin, PublicKey: pub, UserCode: "WXYZ", Requester: "anonymous:192.0.2.1", ExpiresAt: exp, Approvals: 1}}},
		{name: "an anonymous client cannot ask for secrets", who: Principal{Actor: Actor{Kind: ActorAnonymous, ID: "x"}},
			when: RequestApproval{ApprovalID: "r1", Kind: ApprovalSecrets, Org: "acme", Project: "web", Env: "production", Keys: keys, PublicKey: pub, UserCode: "ABCD", ExpiresAt: exp, Now: t0}, err: ErrForbidden},
		{name: "a colleague approves", given: requested, who: dev, when: Approve{Keys: []string{"DB_URL", "API_KEY"}, Now: t0.Add(time.Minute)}, then: approved[1:]},
		{name: "the requester cannot approve their own request", given: requested, who: requester, when: Approve{Keys: []string{"DB_URL"}, Now: t0}, err: ErrForbidden},
		{name: "unless the policy allows it", given: []Event{func() Event { r := requested[0].(ApprovalRequested); r.SelfApproval = true; return r }()},
			who: requester, when: Approve{Keys: []string{"DB_URL"}, Now: t0}, then: []Event{ApprovalGranted{By: "user:eve", Keys: []string{"DB_URL"}}}},
		{name: "a viewer cannot approve", given: requested, who: view, when: Approve{Keys: []string{"DB_URL"}, Now: t0}, err: ErrForbidden},
		{name: "a person approves a CLI sign-in", given: []Event{ApprovalRequested{ApprovalID: "l1", Kind: ApprovalLogin, PublicKey: pub, UserCode: "WXYZ", Requester: "anonymous:192.0.2.1", ExpiresAt: exp, Approvals: 1}},
			who: Principal{Actor: ada}, when: Approve{Now: t0}, then: []Event{ApprovalGranted{By: "user:ada"}}},
		{name: "a token cannot approve a sign-in", given: []Event{ApprovalRequested{ApprovalID: "l1", Kind: ApprovalLogin, PublicKey: pub, UserCode: "WXYZ", Requester: "anonymous:192.0.2.1", ExpiresAt: exp, Approvals: 1}},
			who: Principal{Actor: ci, Role: RoleOwner}, when: Approve{Now: t0}, err: ErrForbidden},
		{name: "an expired request cannot be approved", given: requested, who: dev, when: Approve{Keys: []string{"DB_URL"}, Now: exp}, err: ErrExpired},
		{name: "required keys stay in", given: requested, who: dev, when: Approve{Keys: []string{"API_KEY"}, Now: t0}, err: ErrInvalid},
		{name: "only requested keys", given: requested, who: dev, when: Approve{Keys: []string{"DB_URL", "OTHER"}, Now: t0}, err: ErrInvalid},
		{name: "approving twice", given: approved, who: dev, when: Approve{Keys: []string{"DB_URL"}, Now: t0}, err: ErrState},
		{name: "deny", given: requested, who: dev, when: Deny{Reason: "not now", Now: t0}, then: []Event{ApprovalDenied{By: "user:bob", Reason: "not now"}}},
		{name: "the requester withdraws", given: requested, who: requester, when: Deny{Now: t0}, then: []Event{ApprovalDenied{By: "user:eve"}}},
		{name: "a denied request is not delivered", given: append(append([]Event{}, requested...), ApprovalDenied{By: "user:bob"}), when: Deliver{Now: t0}, err: ErrState},
		{name: "a pending request is not delivered", given: requested, when: Deliver{Now: t0}, err: ErrState},
		{name: "deliver an approved request", given: approved, when: Deliver{Keys: []DeliveredKey{{Name: "DB_URL", Version: 3}}, Now: t0}, then: delivered[2:]},
		{name: "a delivered approval cannot be delivered twice", given: delivered, when: Deliver{Keys: []DeliveredKey{{Name: "DB_URL", Version: 3}}, Now: t0}, err: ErrState},
		{name: "an approved request past its expiry is not delivered", given: approved, when: Deliver{Now: exp}, err: ErrExpired},
		{name: "deliver only approved keys", given: append(append([]Event{}, requested...), ApprovalGranted{By: "user:bob", Keys: []string{"DB_URL"}}),
			when: Deliver{Keys: []DeliveredKey{{Name: "API_KEY", Version: 1}}, Now: t0}, err: ErrInvalid},
		{name: "expire after the deadline", given: requested, when: ExpireApproval{Now: exp}, then: []Event{ApprovalExpired{}}},
		{name: "not before", given: requested, when: ExpireApproval{Now: t0}, err: ErrState},
		{name: "two approvals needed: one is not enough", given: append(append([]Event{}, twoApprovers...), ApprovalGranted{By: "user:bob", Keys: []string{"API_KEY", "DB_URL"}}),
			when: Deliver{Now: t0}, err: ErrState},
		{name: "two approvals needed: the same person twice", given: append(append([]Event{}, twoApprovers...), ApprovalGranted{By: "user:bob", Keys: []string{"DB_URL"}}),
			who: dev, when: Approve{Keys: []string{"DB_URL"}, Now: t0}, err: ErrState},
	}
	for _, c := range cases {
		got, err := ReplayApproval(c.given).Handle(c.who, c.when)
		check(t, c, got, err)
	}
	a := ReplayApproval(append(append([]Event{}, twoApprovers...),
		ApprovalGranted{By: "user:bob", Keys: []string{"API_KEY", "DB_URL"}}, ApprovalGranted{By: "user:ada", Keys: []string{"DB_URL"}}))
	if a.Status() != StatusApproved || !reflect.DeepEqual(a.Granted(), []string{"DB_URL"}) {
		t.Fatalf("two approvals: %s %v, want approved with the keys both let through", a.Status(), a.Granted())
	}
	if ReplayApproval(requested).StatusAt(exp) != StatusExpired {
		t.Fatal("a pending request past its expiry reads as expired")
	}
}

func TestNamesAndActors(t *testing.T) {
	for _, n := range []string{"A", "_X", "DB_URL", "a1_b2", strings.Repeat("A", MaxSecretNameLen)} {
		if !ValidSecretName(n) {
			t.Errorf("%q rejected", n)
		}
	}
	for _, n := range []string{"", "1A", "A-B", "A B", "É", "A.B", strings.Repeat("A", MaxSecretNameLen+1)} {
		if ValidSecretName(n) {
			t.Errorf("%q accepted", n)
		}
	}
	for _, s := range []string{"user:ada", "token:ci-1", "system:resealer"} {
		a, err := ParseActor(s)
		if err != nil || a.String() != s {
			t.Errorf("ParseActor(%q) = %v %v", s, a, err)
		}
	}
	for _, s := range []string{"ada", "robot:x", "user:"} {
		if _, err := ParseActor(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseActor(%q) = %v", s, err)
		}
	}
	if !RoleOwner.Can(PermDestroyKey) || RoleAdmin.Can(PermDestroyKey) || !RoleDeveloper.Can(PermRevealValue) || RoleViewer.Can(PermRevealValue) || RoleViewer.Can(PermWriteSecret) {
		t.Error("permission table")
	}
}

func TestSession(t *testing.T) {
	start := StartSession{SessionID: "s1", User: "ada@example.com", Method: SessionOIDC, Issuer: "https://id.example.com",
		ExpiresAt: t0.Add(12 * time.Hour), SecretHash: hash, Now: t0}
	started := SessionStarted{SessionID: "s1", User: "ada@example.com", Method: SessionOIDC, Issuer: "https://id.example.com",
		ExpiresAt: t0.Add(12 * time.Hour), SecretHash: hash}
	person := Actor{Kind: ActorUser, ID: "ada@example.com"}
	system := Actor{Kind: ActorSystem, ID: "signin"}
	with := func(c func(*StartSession)) StartSession { s := start; c(&s); return s }
	cases := []struct {
		scenario
		actor Actor
	}{
		{scenario{name: "a person signs in", when: start, then: []Event{started}}, person},
		{scenario{name: "Stele signs a person in", when: start, then: []Event{started}}, system},
		{scenario{name: "nobody signs in for someone else", when: start, err: ErrForbidden}, Actor{Kind: ActorUser, ID: "eve@example.com"}},
		{scenario{name: "a token cannot start a session", when: start, err: ErrForbidden}, ci},
		{scenario{name: "a session id is used once", given: []Event{started}, when: start, err: ErrAlreadyExists}, person},
		{scenario{name: "an OpenID session names its issuer", when: with(func(s *StartSession) { s.Issuer = "" }), err: ErrInvalid}, person},
		{scenario{name: "a CLI session names its approval", when: with(func(s *StartSession) { s.Method, s.Issuer = SessionCLI, "" }), err: ErrInvalid}, person},
		{scenario{name: "an unknown method", when: with(func(s *StartSession) { s.Method = "password" }), err: ErrInvalid}, person},
		{scenario{name: "a session must expire", when: with(func(s *StartSession) { s.ExpiresAt = t0.Add(100 * 24 * time.Hour) }), err: ErrInvalid}, person},
		{scenario{name: "a session stores a hash", when: with(func(s *StartSession) { s.SecretHash = "secret" }), err: ErrInvalid}, person},
		{scenario{name: "a person signs out", given: []Event{started}, when: EndSession{Reason: "signed out"},
			then: []Event{SessionEnded{By: "user:ada@example.com", Reason: "signed out"}}}, person},
		{scenario{name: "signing out twice changes nothing", given: []Event{started, SessionEnded{By: "user:ada@example.com"}}, when: EndSession{}}, person},
		{scenario{name: "nobody else ends a session", given: []Event{started}, when: EndSession{}, err: ErrForbidden}, Actor{Kind: ActorUser, ID: "eve@example.com"}},
		{scenario{name: "ending a missing session", when: EndSession{}, err: ErrNotFound}, person},
	}
	for _, c := range cases {
		s := NewSession()
		for _, e := range c.given {
			s.Apply(e)
		}
		got, err := s.Handle(c.actor, c.when)
		check(t, c.scenario, got, err)
	}

	s := NewSession()
	s.Apply(started)
	if err := s.Check(hash, t0); err != nil {
		t.Fatalf("a valid session: %v", err)
	}
	if err := s.Check(strings.Repeat("cd", 32), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a wrong secret: %v", err)
	}
	if err := s.Check(hash, t0.Add(12*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("an expired session: %v", err)
	}
	s.Apply(SessionEnded{By: "user:ada@example.com"})
	if err := s.Check(hash, t0); !errors.Is(err, ErrExpired) {
		t.Fatalf("an ended session: %v", err)
	}
	if err := NewSession().Check(hash, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing session: %v", err)
	}
}
