// Package storetest is the conformance suite for eventstore.Store. Every
// backend runs it from a test of its own:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) eventstore.Store { return newEmptyStore(t) })
//	}
//
// newStore must return an empty store that no other test uses.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

// Run runs every conformance test against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) eventstore.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, eventstore.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"ReadStream", testReadStream},
		{"ReadAll", testReadAll},
		{"Conflict", testConflict},
		{"OneWinnerPerVersion", testOneWinner},
		{"ConcurrentWritersAndCatchUpReader", testConcurrentCatchUp},
		{"IdempotentRetry", testIdempotentRetry},
		{"Cancellation", testCancellation},
		{"WaitWakesUp", testWaitWakesUp},
		{"Follow", testFollow},
		{"BadInput", testBadInput},
		{"MerkleTree", testMerkleTree},
		{"Checkpoints", testCheckpoints},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Ev makes a test event of the given type and data with a fresh ID.
func Ev(typ, data string) eventstore.Event {
	return eventstore.Event{ID: eventstore.NewID(), Type: typ, Data: []byte(data)}
}

func mustAppend(t *testing.T, s eventstore.Store, stream string, exp eventstore.ExpectedVersion, evs ...eventstore.Event) eventstore.Appended {
	t.Helper()
	res, err := s.Append(ctxT(t), stream, exp, evs...)
	if err != nil {
		t.Fatalf("Append(%s, %s): %v", stream, exp, err)
	}
	return res
}

func head(t *testing.T, s eventstore.Store) eventstore.Head {
	t.Helper()
	h, err := s.Head(ctxT(t))
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return h
}

func readAll(t *testing.T, s eventstore.Store) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	from := uint64(1)
	for {
		recs, err := s.ReadAll(ctxT(t), from, 1000)
		if err != nil {
			t.Fatalf("ReadAll(%d): %v", from, err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Position + 1
	}
}

// CheckChain fails t unless recs are positions 1..n, each hash matches its
// content, each links to the one before, and recorded times never go back.
func CheckChain(t *testing.T, recs []eventstore.Record) {
	t.Helper()
	var prev eventstore.Record
	for i, r := range recs {
		if r.Position != uint64(i)+1 {
			t.Fatalf("record %d has position %d", i, r.Position)
		}
		if r.PrevHash != prev.Hash {
			t.Fatalf("position %d: prev hash %s, want %s", r.Position, r.PrevHash, prev.Hash)
		}
		if got := eventstore.ComputeHash(&r); got != r.Hash {
			t.Fatalf("position %d: stored hash %s, computed %s", r.Position, r.Hash, got)
		}
		if i > 0 && r.RecordedAt.Before(prev.RecordedAt) {
			t.Fatalf("position %d: recorded at %s, before position %d at %s", r.Position, r.RecordedAt, prev.Position, prev.RecordedAt)
		}
		prev = r
	}
}

func testRoundTrip(t *testing.T, s eventstore.Store) {
	if h := head(t, s); h.Position != 0 || !h.Hash.IsZero() {
		t.Fatalf("empty store head = %+v", h)
	}
	meta := eventstore.Metadata{
		Actor: "user:ada", Tenant: "org-1", RequestID: "req-1", ClientAddr: "192.0.2.7:5123",
		CausationID: "cmd-1", CorrelationID: "corr-ü-1",
	}
	in := []eventstore.Event{
		{ID: eventstore.NewID(), Type: "secret.created", Data: []byte(`{"name":"DB_URL"}`), Metadata: meta},
		{ID: eventstore.NewID(), Type: "secret.updated", Data: []byte{0, 1, 2, 0xff, '\n'}, Metadata: meta},
		{ID: eventstore.NewID(), Type: "secret.viewed", Data: nil},
	}
	before := time.Now().Add(-time.Second)
	res := mustAppend(t, s, "secret-1", eventstore.NoStream, in...)
	want := eventstore.Appended{StreamID: "secret-1", FirstVersion: 1, LastVersion: 3, FirstPosition: 1, LastPosition: 3, LastHash: res.LastHash}
	if res != want {
		t.Fatalf("Append result = %+v, want %+v", res, want)
	}
	res2 := mustAppend(t, s, "org/one:x_y-z.w", eventstore.NoStream, Ev("org.created", `{}`))
	if res2.FirstPosition != 4 || res2.LastVersion != 1 {
		t.Fatalf("second append = %+v, want position 4 version 1", res2)
	}

	recs, err := s.ReadStream(ctxT(t), "secret-1", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("ReadStream returned %d records, want 3", len(recs))
	}
	for i, r := range recs {
		e := in[i]
		if r.ID != e.ID || r.Type != e.Type || !bytes.Equal(r.Data, e.Data) || r.Metadata != e.Metadata {
			t.Errorf("record %d = %+v, want event %+v", i, r, e)
		}
		if r.Data == nil {
			t.Errorf("record %d: Data is nil, want an empty slice", i)
		}
		if r.StreamID != "secret-1" || r.StreamVersion != uint64(i)+1 || r.Position != uint64(i)+1 {
			t.Errorf("record %d: stream %q v%d at %d", i, r.StreamID, r.StreamVersion, r.Position)
		}
		if r.RecordedAt.Location() != time.UTC || !r.RecordedAt.Equal(r.RecordedAt.Truncate(time.Microsecond)) {
			t.Errorf("record %d: recorded at %v, want UTC whole microseconds", i, r.RecordedAt)
		}
		if r.RecordedAt.Before(before) || r.RecordedAt.After(time.Now().Add(time.Minute)) {
			t.Errorf("record %d: recorded at %v, not around now", i, r.RecordedAt)
		}
	}
	all := readAll(t, s)
	if len(all) != 4 {
		t.Fatalf("ReadAll returned %d records, want 4", len(all))
	}
	CheckChain(t, all)
	if all[2].Hash != res.LastHash {
		t.Fatalf("Append's LastHash %s differs from the stored hash %s", res.LastHash, all[2].Hash)
	}
	h := head(t, s)
	if h.Position != 4 || h.Hash != all[3].Hash || !h.RecordedAt.Equal(all[3].RecordedAt) {
		t.Fatalf("Head = %+v, want position 4 hash %s", h, all[3].Hash)
	}
}

func testReadStream(t *testing.T, s eventstore.Store) {
	for i := range 5 {
		mustAppend(t, s, "s", eventstore.Exactly(uint64(i)), Ev("thing.happened", fmt.Sprint(i)))
		mustAppend(t, s, "other", eventstore.Any, Ev("thing.happened", "x"))
	}
	recs, err := s.ReadStream(ctxT(t), "s", 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].StreamVersion != 3 || recs[1].StreamVersion != 4 || string(recs[0].Data) != "2" {
		t.Fatalf("ReadStream(s, 3, 2) = %v", summary(recs))
	}
	if recs[0].Position != 5 || recs[1].Position != 7 {
		t.Fatalf("positions %d, %d, want 5, 7", recs[0].Position, recs[1].Position)
	}
	fourth := recs[1]
	recs, err = s.ReadStream(ctxT(t), "s", 6, 0)
	if err != nil || len(recs) != 0 {
		t.Fatalf("ReadStream past the end = %v, %v; want no records", summary(recs), err)
	}
	if _, err := s.ReadStream(ctxT(t), "nope", 1, 0); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("ReadStream of a missing stream: %v, want ErrStreamNotFound", err)
	}
	r, err := s.ReadByID(ctxT(t), fourth.ID)
	if err != nil || r.Position != 7 || r.StreamVersion != 4 || r.Hash != fourth.Hash {
		t.Fatalf("ReadByID = %+v, %v; want position 7", r, err)
	}
	if _, err := s.ReadByID(ctxT(t), eventstore.NewID()); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("ReadByID of an unknown id: %v, want ErrNotFound", err)
	}
}

func testReadAll(t *testing.T, s eventstore.Store) {
	for i := range 10 {
		mustAppend(t, s, fmt.Sprintf("s-%d", i%3), eventstore.Any, Ev("thing.happened", fmt.Sprint(i)))
	}
	recs, err := s.ReadAll(ctxT(t), 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].Position != 4 || recs[2].Position != 6 {
		t.Fatalf("ReadAll(4, 3) = %v", summary(recs))
	}
	recs, err = s.ReadAll(ctxT(t), 11, 10)
	if err != nil || len(recs) != 0 {
		t.Fatalf("ReadAll past the head = %v, %v; want none", summary(recs), err)
	}
	recs, err = s.ReadAll(ctxT(t), 0, 0)
	if err != nil || len(recs) != 10 || recs[0].Position != 1 {
		t.Fatalf("ReadAll(0, 0) = %v, %v; want positions 1-10", summary(recs), err)
	}
}

func testConflict(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "s", eventstore.NoStream, Ev("thing.happened", "1"), Ev("thing.happened", "2"))
	h0 := head(t, s)
	cases := []struct {
		stream string
		exp    eventstore.ExpectedVersion
		actual uint64
	}{
		{"s", eventstore.NoStream, 2},
		{"s", eventstore.Exactly(1), 2},
		{"s", eventstore.Exactly(3), 2},
		{"missing", eventstore.StreamExists, 0},
		{"missing", eventstore.Exactly(1), 0},
	}
	for _, c := range cases {
		_, err := s.Append(ctxT(t), c.stream, c.exp, Ev("thing.happened", "x"))
		var ce *eventstore.ConflictError
		if !errors.Is(err, eventstore.ErrConflict) || !errors.As(err, &ce) {
			t.Fatalf("Append(%s, %s) = %v, want a *ConflictError", c.stream, c.exp, err)
		}
		if ce.StreamID != c.stream || ce.Expected != c.exp || ce.Actual != c.actual {
			t.Fatalf("conflict = %+v, want stream %s expected %s actual %d", ce, c.stream, c.exp, c.actual)
		}
		if !strings.Contains(err.Error(), c.stream) {
			t.Fatalf("conflict message %q does not name the stream", err)
		}
	}
	if h := head(t, s); h != h0 {
		t.Fatalf("failed appends moved the head from %+v to %+v", h0, h)
	}
	mustAppend(t, s, "s", eventstore.Exactly(2), Ev("thing.happened", "3"))
	mustAppend(t, s, "s", eventstore.StreamExists, Ev("thing.happened", "4"))
	res := mustAppend(t, s, "s", eventstore.Any, Ev("thing.happened", "5"))
	if res.LastVersion != 5 || res.LastPosition != 5 {
		t.Fatalf("after conflicts: %+v, want version 5 at position 5", res)
	}
}

func testOneWinner(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "contested", eventstore.NoStream, Ev("thing.happened", "0"))
	const n = 16
	var wins, conflicts atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := s.Append(context.Background(), "contested", eventstore.Exactly(1), Ev("thing.happened", fmt.Sprint(i)), Ev("thing.happened", "b"))
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, eventstore.ErrConflict):
				conflicts.Add(1)
			default:
				t.Errorf("append %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != n-1 {
		t.Fatalf("%d winners and %d conflicts, want 1 and %d", wins.Load(), conflicts.Load(), n-1)
	}
	recs, err := s.ReadStream(ctxT(t), "contested", 1, 0)
	if err != nil || len(recs) != 3 {
		t.Fatalf("stream holds %d records (%v), want 3", len(recs), err)
	}
	CheckChain(t, readAll(t, s))
}

func testConcurrentCatchUp(t *testing.T, s eventstore.Store) {
	const writers, perWriter = 32, 40
	const total = writers * perWriter
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	seen := make([]eventstore.Record, 0, total)
	readerDone := make(chan error, 1)
	go func() {
		readerDone <- eventstore.Subscribe(ctx, s, 1, 7, func(recs []eventstore.Record) error {
			seen = append(seen, recs...)
			if len(seen) >= total {
				return errDone
			}
			return nil
		})
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("writer-%d", w)
			for i := range perWriter {
				evs := []eventstore.Event{Ev("thing.happened", fmt.Sprintf("%d/%d", w, i))}
				if i%5 == 0 { // some multi-event appends
					evs = append(evs, Ev("thing.happened", "extra"))
				}
				if _, err := s.Append(ctx, stream, eventstore.Any, evs...); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Every writer appended perWriter events plus one extra per five.
	extra := writers * ((perWriter + 4) / 5)
	want := total + extra
	h := head(t, s)
	if h.Position != uint64(want) {
		t.Fatalf("head %d after %d events", h.Position, want)
	}
	if err := <-readerDone; !errors.Is(err, errDone) {
		t.Fatalf("reader: %v", err)
	}
	// The reader stopped at total; read the rest the same way.
	rest, err := s.ReadAll(ctx, seen[len(seen)-1].Position+1, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen = append(seen, rest...)
	for len(seen) < want {
		more, err := s.ReadAll(ctx, seen[len(seen)-1].Position+1, 0)
		if err != nil || len(more) == 0 {
			t.Fatalf("reading the tail: %v", err)
		}
		seen = append(seen, more...)
	}
	if len(seen) != want {
		t.Fatalf("reader saw %d records, want %d", len(seen), want)
	}
	CheckChain(t, seen) // positions 1..want exactly once, in order, linked
	perStream := map[string]uint64{}
	for _, r := range seen {
		perStream[r.StreamID]++
		if r.StreamVersion != perStream[r.StreamID] {
			t.Fatalf("position %d: stream %s version %d, want %d", r.Position, r.StreamID, r.StreamVersion, perStream[r.StreamID])
		}
	}
}

var errDone = errors.New("done")

func testIdempotentRetry(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "before", eventstore.Any, Ev("thing.happened", "x"))
	evs := []eventstore.Event{Ev("thing.happened", "a"), Ev("thing.happened", "b")}
	orig := mustAppend(t, s, "s", eventstore.NoStream, evs...)
	mustAppend(t, s, "after", eventstore.Any, Ev("thing.happened", "y"))
	h := head(t, s)

	// A retry, even with an expected version that no longer holds, returns
	// the original result and writes nothing.
	again, err := s.Append(ctxT(t), "s", eventstore.NoStream, evs...)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	want := orig
	want.Replayed = true
	if again != want {
		t.Fatalf("retry = %+v, want %+v", again, want)
	}
	if h2 := head(t, s); h2 != h {
		t.Fatalf("retry moved the head from %d to %d", h.Position, h2.Position)
	}

	changed := []eventstore.Event{evs[0], {ID: evs[1].ID, Type: evs[1].Type, Data: []byte("other")}}
	part := []eventstore.Event{evs[0], Ev("thing.happened", "new")}
	swapped := []eventstore.Event{evs[1], evs[0]}
	for name, in := range map[string][]eventstore.Event{"changed data": changed, "partial": part, "reordered": swapped} {
		if _, err := s.Append(ctxT(t), "s", eventstore.Any, in...); !errors.Is(err, eventstore.ErrDuplicateEvent) {
			t.Errorf("%s: %v, want ErrDuplicateEvent", name, err)
		}
	}
	if _, err := s.Append(ctxT(t), "elsewhere", eventstore.Any, evs...); !errors.Is(err, eventstore.ErrDuplicateEvent) {
		t.Errorf("same ids in another stream: %v, want ErrDuplicateEvent", err)
	}
	if h2 := head(t, s); h2 != h {
		t.Fatalf("refused retries moved the head from %d to %d", h.Position, h2.Position)
	}
}

func testCancellation(t *testing.T, s eventstore.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Append(ctx, "s", eventstore.Any, Ev("thing.happened", "x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v", err)
	}
	if h := head(t, s); h.Position != 0 {
		t.Fatalf("a cancelled append wrote: head %d", h.Position)
	}
	if _, err := s.ReadAll(ctx, 1, 10); err == nil {
		t.Fatal("ReadAll with a cancelled context succeeded")
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := s.Wait(ctx2, 1); done <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel2()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after its context was cancelled")
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer dcancel()
	if _, err := s.Wait(dctx, 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its deadline: %v", err)
	}
}

func testWaitWakesUp(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "s", eventstore.Any, Ev("thing.happened", "1"))
	if h, err := s.Wait(ctxT(t), 1); err != nil || h.Position != 1 {
		t.Fatalf("Wait for a position already there = %+v, %v", h, err)
	}
	got := make(chan eventstore.Head, 1)
	errs := make(chan error, 1)
	go func() {
		h, err := s.Wait(ctxT(t), 3)
		if err != nil {
			errs <- err
			return
		}
		got <- h
	}()
	time.Sleep(20 * time.Millisecond)
	mustAppend(t, s, "s", eventstore.Any, Ev("thing.happened", "2"))
	select {
	case h := <-got:
		t.Fatalf("Wait(3) returned at head %d", h.Position)
	case <-time.After(50 * time.Millisecond):
	}
	mustAppend(t, s, "s", eventstore.Any, Ev("thing.happened", "3"))
	select {
	case h := <-got:
		if h.Position < 3 {
			t.Fatalf("Wait(3) returned head %d", h.Position)
		}
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not wake up after the append")
	}
}

func testFollow(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "s", eventstore.Any, Ev("thing.happened", "1"), Ev("thing.happened", "2"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		time.Sleep(20 * time.Millisecond)
		if _, err := s.Append(ctx, "s", eventstore.Any, Ev("thing.happened", "3")); err != nil {
			t.Error(err)
		}
	}()
	var got []string
	for r, err := range eventstore.Follow(ctx, s, 2) {
		if err != nil {
			t.Fatalf("Follow: %v after %v", err, got)
		}
		got = append(got, string(r.Data))
		if len(got) == 2 {
			break
		}
	}
	if strings.Join(got, ",") != "2,3" {
		t.Fatalf("Follow from 2 gave %v, want [2 3]", got)
	}
	cancel()
	for _, err := range eventstore.Follow(ctx, s, 1) {
		if errors.Is(err, context.Canceled) {
			return
		}
		if err != nil {
			t.Fatalf("Follow with a cancelled context: %v", err)
		}
	}
	t.Fatal("Follow with a cancelled context ended without its error")
}

func testBadInput(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "s", eventstore.Any, Ev("thing.happened", "1"))
	h := head(t, s)
	dupID := eventstore.NewID()
	cases := map[string]struct {
		stream string
		exp    eventstore.ExpectedVersion
		evs    []eventstore.Event
	}{
		"empty stream id":       {"", eventstore.Any, []eventstore.Event{Ev("thing.happened", "")}},
		"stream id with space":  {"a b", eventstore.Any, []eventstore.Event{Ev("thing.happened", "")}},
		"stream id too long":    {strings.Repeat("a", eventstore.MaxStreamIDLen+1), eventstore.Any, []eventstore.Event{Ev("thing.happened", "")}},
		"stream id leading dot": {".s", eventstore.Any, []eventstore.Event{Ev("thing.happened", "")}},
		"bad expected version":  {"s", eventstore.ExpectedVersion(-3), []eventstore.Event{Ev("thing.happened", "")}},
		"no events":             {"s", eventstore.Any, nil},
		"type without dot":      {"s", eventstore.Any, []eventstore.Event{Ev("happened", "")}},
		"type uppercase":        {"s", eventstore.Any, []eventstore.Event{Ev("Secret.Created", "")}},
		"empty type":            {"s", eventstore.Any, []eventstore.Event{Ev("", "")}},
		"zero id":               {"s", eventstore.Any, []eventstore.Event{{Type: "thing.happened"}}},
		"repeated id":           {"s", eventstore.Any, []eventstore.Event{{ID: dupID, Type: "thing.happened"}, {ID: dupID, Type: "thing.happened"}}},
		"oversize data":         {"s", eventstore.Any, []eventstore.Event{Ev("thing.happened", strings.Repeat("x", eventstore.MaxDataSize+1))}},
		"too many events":       {"s", eventstore.Any, many(eventstore.MaxAppendEvents + 1)},
		"bad utf-8 metadata": {"s", eventstore.Any, []eventstore.Event{{ID: eventstore.NewID(), Type: "thing.happened",
			Metadata: eventstore.Metadata{Actor: "\xff"}}}},
		"oversize metadata": {"s", eventstore.Any, []eventstore.Event{{ID: eventstore.NewID(), Type: "thing.happened",
			Metadata: eventstore.Metadata{RequestID: strings.Repeat("r", eventstore.MaxMetadataLen+1)}}}},
		// A valid first event must not be written when a later one is bad.
		"bad second event": {"s", eventstore.Any, []eventstore.Event{Ev("thing.happened", "ok"), Ev("BAD", "")}},
	}
	for name, c := range cases {
		_, err := s.Append(ctxT(t), c.stream, c.exp, c.evs...)
		var ie *eventstore.InvalidError
		if !errors.Is(err, eventstore.ErrInvalid) || !errors.As(err, &ie) || ie.Reason == "" {
			t.Errorf("%s: %v, want an *InvalidError", name, err)
		}
	}
	if h2 := head(t, s); h2 != h {
		t.Fatalf("bad input moved the head from %d to %d", h.Position, h2.Position)
	}
	// The limits themselves are allowed.
	mustAppend(t, s, strings.Repeat("a", eventstore.MaxStreamIDLen), eventstore.Any, Ev("thing.happened", strings.Repeat("x", eventstore.MaxDataSize)))
}

func many(n int) []eventstore.Event {
	evs := make([]eventstore.Event, n)
	for i := range evs {
		evs[i] = Ev("thing.happened", "")
	}
	return evs
}

func testMerkleTree(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	var f merkle.Frontier
	sizes := []int{1, 2, 5, 1, 8, 13, 3}
	roots := map[uint64]eventstore.Hash{0: merkle.EmptyRoot}
	var want []eventstore.TreeEntry
	for i, n := range sizes {
		mustAppend(t, s, fmt.Sprintf("s-%d", i%2), eventstore.Any, many(n)...)
	}
	all := readAll(t, s)
	for _, r := range all {
		want = append(want, eventstore.TreeEntry{Position: r.Position, Hashes: f.Append(nil, r.Hash)})
		roots[f.Size()] = f.Root()
	}
	got, err := s.ReadTree(ctx, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("ReadTree returned %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Position != want[i].Position || fmt.Sprint(got[i].Hashes) != fmt.Sprint(want[i].Hashes) {
			t.Fatalf("tree entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	part, err := s.ReadTree(ctx, 7, 3)
	if err != nil || len(part) != 3 || part[0].Position != 7 {
		t.Fatalf("ReadTree(7, 3) = %+v, %v", part, err)
	}
	n := uint64(len(all))
	for size := uint64(0); size <= n; size++ {
		root, err := merkle.Root(ctx, s, size)
		if err != nil {
			t.Fatalf("Root(%d): %v", size, err)
		}
		if root != roots[size] {
			t.Fatalf("Root(%d) = %s, want %s", size, root, roots[size])
		}
	}
	for i, r := range all {
		proof, err := merkle.InclusionProof(ctx, s, n, uint64(i))
		if err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", n, i, err)
		}
		if err := merkle.VerifyInclusion(proof, n, roots[n], uint64(i), r.Hash); err != nil {
			t.Fatalf("inclusion of %d: %v", i, err)
		}
		if err := merkle.VerifyInclusion(proof, n, roots[n], uint64(i), all[(i+1)%len(all)].Hash); err == nil {
			t.Fatalf("inclusion proof of %d accepted another event", i)
		}
	}
	for old := uint64(0); old <= n; old += 3 {
		proof, err := merkle.ConsistencyProof(ctx, s, n, old)
		if err != nil {
			t.Fatalf("ConsistencyProof(%d, %d): %v", n, old, err)
		}
		if err := merkle.VerifyConsistency(proof, n, roots[n], old, roots[old]); err != nil {
			t.Fatalf("consistency %d→%d: %v", old, n, err)
		}
	}
	lf, err := merkle.LoadFrontier(ctx, s, n)
	if err != nil {
		t.Fatal(err)
	}
	if lf.Root() != roots[n] {
		t.Fatalf("LoadFrontier root %s, want %s", lf.Root(), roots[n])
	}
}

func testCheckpoints(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	if _, err := s.LatestCheckpoint(ctx); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("LatestCheckpoint on an empty store: %v, want ErrNotFound", err)
	}
	mk := func(size uint64, note string) eventstore.Checkpoint {
		return eventstore.Checkpoint{Size: size, Root: eventstore.Hash{byte(size)}, Note: []byte(note), CreatedAt: time.Now()}
	}
	for _, cp := range []eventstore.Checkpoint{mk(5, "five"), mk(2, "two"), mk(9, "nine")} {
		if err := s.AddCheckpoint(ctx, cp); err != nil {
			t.Fatalf("AddCheckpoint(%d): %v", cp.Size, err)
		}
	}
	if err := s.AddCheckpoint(ctx, mk(5, "five")); err != nil {
		t.Fatalf("adding the same checkpoint again: %v", err)
	}
	if err := s.AddCheckpoint(ctx, mk(5, "FIVE")); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("another checkpoint of the same size: %v, want ErrConflict", err)
	}
	cps, err := s.Checkpoints(ctx, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != 2 || cps[0].Size != 5 || string(cps[0].Note) != "five" || cps[1].Size != 9 || cps[0].Root != (eventstore.Hash{5}) {
		t.Fatalf("Checkpoints(3) = %+v", cps)
	}
	latest, err := s.LatestCheckpoint(ctx)
	if err != nil || latest.Size != 9 || string(latest.Note) != "nine" {
		t.Fatalf("LatestCheckpoint = %+v, %v", latest, err)
	}
}

func summary(recs []eventstore.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "[%d %s v%d %q] ", r.Position, r.StreamID, r.StreamVersion, r.Data)
	}
	return b.String()
}
