// Package domain holds Stele's aggregates, commands and events, and the
// rules that decide between them. It imports only the standard library and
// does no I/O: a command and the current state go in, events (or an error)
// come out. The application layer (package app) loads state from the
// ledger, calls the domain, and appends what it decided.
//
// Every event has a fixed wire name (EventType), listed in Types; renaming
// a Go type never changes what is stored. Events never carry a plaintext
// secret value: values arrive already sealed (ciphertext and key id).
//
// Aggregates and their streams:
//
//	Organization  org/<org id>                  the tenant: role grants, service tokens
//	Project       project/<project id>          environments and bundles
//	Secret        secret/<env id>/<NAME>        one secret's versions, views and lifecycle
//	Keyset        keyset/<env id>               one environment's data keys
//	Approval      approval/<approval id>        a request for secrets (or a sign-in) and its outcome
package domain
