// Package projections builds Stele's read models: PostgreSQL tables that
// are pure functions of the log. All reads come from them.
//
// A Projection names its tables, creates them and applies batches of
// events. The Projector feeds every projection from the log through a
// Watermill Router: a Watermill subscriber over the events table delivers
// one message per batch of consecutive events to each projection's
// handler, in order, waiting for the handler's ack. A handler applies the
// batch and records the projection's new position in one transaction,
// skipping what it already applied, so a redelivery or a crash at any
// point neither misses nor doubles an update. Before applying, it checks
// that each event's hash matches its content and that its previous hash
// matches the event before it; on a mismatch it halts the projection and
// raises an alert rather than serve a broken history.
//
// Projections are disposable (invariant 7): Rebuild builds a projection
// again from position 0 into shadow tables and swaps them in, in one
// short transaction, while the live tables keep serving.
package projections
