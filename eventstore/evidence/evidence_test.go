package evidence_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	tdproof "github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/evidence"
	"stele.dev/stele/eventstore/merkle"
)

var update = flag.Bool("update", false, "rewrite testdata/example.evidence from the code")

// testLog is an in-memory log whose records the test chooses (times,
// tenants, streams), with the Merkle tree's stored hashes: an
// evidence.Source.
type testLog struct {
	recs     []eventstore.Record
	stored   []eventstore.Hash
	frontier merkle.Frontier
	versions map[string]uint64
	cps      []eventstore.Checkpoint
	clock    time.Time
}

func newTestLog() *testLog {
	return &testLog{versions: map[string]uint64{}, clock: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)}
}

// add appends an event recorded a little after the previous one.
func (l *testLog) add(stream, tenant, actor, typ, data string) *eventstore.Record {
	l.clock = l.clock.Add(1500 * time.Millisecond)
	l.versions[stream]++
	r := eventstore.Record{Position: uint64(len(l.recs) + 1), StreamID: stream, StreamVersion: l.versions[stream], ID: eventstore.NewID(),
		Type: typ, Data: []byte(data), RecordedAt: eventstore.TruncateTime(l.clock),
		Metadata: eventstore.Metadata{Actor: actor, Tenant: tenant, RequestID: "req-" + fmt.Sprint(len(l.recs)+1)}}
	return l.append(r)
}

func (l *testLog) append(r eventstore.Record) *eventstore.Record {
	if n := len(l.recs); n > 0 {
		r.PrevHash = l.recs[n-1].Hash
	}
	r.Hash = eventstore.ComputeHash(&r)
	l.stored = l.frontier.Append(l.stored, r.Hash)
	l.recs = append(l.recs, r)
	return &l.recs[len(l.recs)-1]
}

// sign signs a checkpoint of the whole log and keeps it.
func (l *testLog) sign(t testing.TB, s *checkpoint.Signer) eventstore.Checkpoint {
	t.Helper()
	root := l.frontier.Root()
	n, err := s.Sign(uint64(len(l.recs)), root)
	if err != nil {
		t.Fatal(err)
	}
	cp := eventstore.Checkpoint{Size: uint64(len(l.recs)), Root: root, Note: n, CreatedAt: l.clock}
	l.cps = append(l.cps, cp)
	return cp
}

func (l *testLog) Head(context.Context) (eventstore.Head, error) {
	if len(l.recs) == 0 {
		return eventstore.Head{}, nil
	}
	r := l.recs[len(l.recs)-1]
	return eventstore.Head{Position: r.Position, Hash: r.Hash, RecordedAt: r.RecordedAt}, nil
}

func (l *testLog) ReadAll(_ context.Context, from uint64, limit int) ([]eventstore.Record, error) {
	if from == 0 || from > uint64(len(l.recs)) {
		return nil, nil
	}
	if limit <= 0 {
		limit = 100
	}
	end := min(uint64(len(l.recs)), from-1+uint64(limit))
	return append([]eventstore.Record(nil), l.recs[from-1:end]...), nil
}

func (l *testLog) TreeHashes(_ context.Context, idx []int64) ([]eventstore.Hash, error) {
	out := make([]eventstore.Hash, len(idx))
	for i, ix := range idx {
		if ix < 0 || ix >= int64(len(l.stored)) {
			return nil, fmt.Errorf("tree index %d beyond %d", ix, len(l.stored))
		}
		out[i] = l.stored[ix]
	}
	return out, nil
}

func (l *testLog) LatestCheckpoint(context.Context) (eventstore.Checkpoint, error) {
	if len(l.cps) == 0 {
		return eventstore.Checkpoint{}, eventstore.ErrNotFound
	}
	return l.cps[len(l.cps)-1], nil
}

func newSigner(t testing.TB, origin string) *checkpoint.Signer {
	t.Helper()
	skey, _, err := checkpoint.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// export writes the evidence of req from src.
func export(t testing.TB, src evidence.Source, req evidence.Request) []byte {
	t.Helper()
	x, err := evidence.Prepare(context.Background(), src, req)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sum, err := x.WriteTo(context.Background(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Bytes != int64(buf.Len()) {
		t.Fatalf("summary says %d bytes, wrote %d", sum.Bytes, buf.Len())
	}
	return buf.Bytes()
}

// twoTenants is a log where acme and globex interleave (secrets, reads,
// grants), with events of no tenant (sign-ins) among them.
func twoTenants(t testing.TB) (*testLog, *checkpoint.Signer) {
	l := newTestLog()
	s := newSigner(t, "stele.test/evidence")
	l.add("org/acme", "acme", "user:ada@example.com", "organization.created", `{"name":"Acme"}`)
	l.add("org/globex", "globex", "user:olga@example.com", "organization.created", `{"name":"Globex Corporation"}`)
	l.add("session/s1", "", "user:ada@example.com", "session.started", `{"user":"ada@example.com"}`)
	for i := range 40 {
		l.add("secret/acme/web/production/DB_URL", "acme", "user:ada@example.com", "secret.updated", fmt.Sprintf(`{"version":%d,"ciphertext":"QUNNRS0%d"}`, i+1, i))
		l.add("secret/globex/shop/production/GLOBEX_STRIPE_KEY", "globex", "user:olga@example.com", "secret.updated", fmt.Sprintf(`{"version":%d,"ciphertext":"R0xPQkVY%d"}`, i+1, i))
		l.add("secret/globex/shop/production/GLOBEX_STRIPE_KEY", "globex", "token:globex-ci", "secret.viewed", fmt.Sprintf(`{"version":%d,"channel":"cli-run"}`, i+1))
		if i%3 == 0 {
			l.add("secret/acme/web/production/DB_URL", "acme", "token:acme-ci", "secret.viewed", fmt.Sprintf(`{"version":%d}`, i+1))
			l.add("org/globex", "globex", "user:olga@example.com", "organization.role_granted", fmt.Sprintf(`{"user":"globex-dev-%d@globex.example","role":"developer"}`, i))
		}
		if i == 20 {
			l.sign(t, s)
		}
	}
	l.add("org/acme", "acme", "user:ada@example.com", "organization.role_granted", `{"user":"bob@example.com","role":"developer"}`)
	l.sign(t, s)
	return l, s
}

func verifyFile(file []byte, s *checkpoint.Signer) (evidence.Report, error) {
	return evidence.Verify(bytes.NewReader(file), s.Verifier())
}

func TestExportVerifies(t *testing.T) {
	l, s := twoTenants(t)
	file := export(t, l, evidence.Request{Org: "acme"})
	rep, err := verifyFile(file, s)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, r := range l.recs {
		if r.Metadata.Tenant == "acme" {
			want++
		}
	}
	if rep.Events != uint64(want) || rep.Org != "acme" || rep.TreeSize != uint64(len(l.recs)) || rep.Streams != 2 {
		t.Fatalf("report %+v, want %d events of acme", rep, want)
	}
	if rep.FirstPosition != 1 || rep.LastPosition != uint64(len(l.recs)) {
		t.Fatalf("positions %d..%d", rep.FirstPosition, rep.LastPosition)
	}
	if rep.Actors["user:ada@example.com"] != 42 || rep.Types["secret.viewed"] != 14 || rep.Types["secret.updated"] != 40 {
		t.Fatalf("counts: %v %v", rep.Actors, rep.Types)
	}
	// globex's export holds globex's events only.
	gfile := export(t, l, evidence.Request{Org: "globex"})
	grep, err := verifyFile(gfile, s)
	if err != nil || grep.Events != 1+40+40+14 {
		t.Fatalf("globex: %+v %v", grep, err)
	}
	// A tenant with no events: a file with the checkpoint and no event.
	empty := export(t, l, evidence.Request{Org: "initech"})
	if rep, err := verifyFile(empty, s); err != nil || rep.Events != 0 {
		t.Fatalf("empty: %+v %v", rep, err)
	}
}

// Stele's proofs and checkpoint are checked with implementations it does
// not use to prove: transparency-dev/merkle's RFC 6962 verifier and
// transparency-dev/formats' checkpoint parser.
func TestIndependentImplementations(t *testing.T) {
	l, s := twoTenants(t)
	file := export(t, l, evidence.Request{Org: "acme"})
	rd, err := evidence.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	nv, err := note.NewVerifier(s.Verifier().String())
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _, err := log.ParseCheckpoint(rd.Header().Note, s.Origin(), nv)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != uint64(len(l.recs)) {
		t.Fatalf("checkpoint size %d", cp.Size)
	}
	h := rfc6962.DefaultHasher
	n := 0
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		// The event hash is SHA-256 of the record; the leaf hashes it.
		sum := sha256.Sum256(e.Record)
		if !bytes.Equal(sum[:], e.Hash[:]) {
			t.Fatalf("line %d: hash", e.Line)
		}
		proof := make([][]byte, len(e.Proof))
		for i := range e.Proof {
			proof[i] = e.Proof[i].Bytes()
		}
		if err := tdproof.VerifyInclusion(h, e.Position-1, cp.Size, h.HashLeaf(e.Hash[:]), proof, cp.Hash); err != nil {
			t.Fatalf("line %d (position %d): %v", e.Line, e.Position, err)
		}
		n++
	}
	if n < 50 {
		t.Fatalf("only %d events", n)
	}
}

// An organization's evidence holds no byte of another tenant's events:
// not their content, stream names, ids, data, actors, nor the hex or
// base64 of any of them; only Merkle hashes the proofs need (and, inside
// the organization's own records, the previous event's hash).
func TestNoByteOfOtherTenants(t *testing.T) {
	l, _ := twoTenants(t)
	file := export(t, l, evidence.Request{Org: "acme"})
	// The decoded records, to search the bytes inside them too.
	var decoded []byte
	rd, err := evidence.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	for {
		e, err := rd.Next()
		if err != nil {
			break
		}
		decoded = append(decoded, e.Record...)
	}
	for _, r := range l.recs {
		if r.Metadata.Tenant == "acme" {
			continue
		}
		canon := eventstore.AppendCanonical(nil, &r)
		needles := map[string][]byte{
			"stream":           []byte(r.StreamID),
			"event id":         []byte(r.ID.String()),
			"event id hex":     []byte(hex.EncodeToString(r.ID[:])),
			"event id bytes":   r.ID[:],
			"data":             r.Data,
			"data base64":      []byte(base64.StdEncoding.EncodeToString(r.Data)),
			"event hash hex":   []byte(r.Hash.String()),
			"record base64":    []byte(base64.StdEncoding.EncodeToString(canon)),
			"record bytes":     canon,
			"record hex":       []byte(hex.EncodeToString(canon)),
			"record (tail)":    canon[87:],
			"request id field": append(binary.BigEndian.AppendUint32(nil, uint32(len(r.Metadata.RequestID))), r.Metadata.RequestID+"\x00\x00\x00\x00"...),
		}
		if r.Metadata.Tenant != "" {
			needles["tenant"] = []byte(r.Metadata.Tenant)
		}
		if r.Metadata.Actor != "user:ada@example.com" {
			needles["actor"] = []byte(r.Metadata.Actor)
		}
		for what, b := range needles {
			if len(b) < 6 {
				continue
			}
			if bytes.Contains(file, b) || bytes.Contains(decoded, b) {
				t.Fatalf("acme's evidence holds the %s of event %d (tenant %q)", what, r.Position, r.Metadata.Tenant)
			}
		}
	}
	for _, s := range []string{"globex", "GLOBEX", "olga", "R0xPQkVY", "session/"} {
		if bytes.Contains(file, []byte(s)) || bytes.Contains(decoded, []byte(s)) {
			t.Fatalf("acme's evidence mentions %q", s)
		}
	}
}

func TestTimeRange(t *testing.T) {
	l, s := twoTenants(t)
	times := []time.Time{{}, l.recs[0].RecordedAt, l.recs[10].RecordedAt, l.recs[10].RecordedAt.Add(time.Microsecond),
		l.recs[57].RecordedAt.Add(-time.Millisecond), l.recs[len(l.recs)-1].RecordedAt, l.recs[len(l.recs)-1].RecordedAt.Add(time.Hour)}
	for _, from := range times {
		for _, to := range times {
			if !from.IsZero() && !to.IsZero() && !from.Before(to) {
				continue
			}
			file := export(t, l, evidence.Request{Org: "acme", From: from, To: to})
			rep, err := verifyFile(file, s)
			if err != nil {
				t.Fatalf("[%v, %v): %v", from, to, err)
			}
			var want, first, last uint64
			for _, r := range l.recs {
				if r.Metadata.Tenant == "acme" && (from.IsZero() || !r.RecordedAt.Before(from)) && (to.IsZero() || r.RecordedAt.Before(to)) {
					want++
					if first == 0 {
						first = r.Position
					}
					last = r.Position
				}
			}
			if rep.Events != want || rep.FirstPosition != first || rep.LastPosition != last {
				t.Fatalf("[%v, %v): %d events %d..%d, want %d %d..%d", from, to, rep.Events, rep.FirstPosition, rep.LastPosition, want, first, last)
			}
		}
	}
	// Bounds finer than the log's microseconds round up: an event at
	// 10.000000 is before 10.0000005, and one at 10.000001 is not. (The
	// events at positions 21 and 22 are globex's.)
	at := l.recs[20].RecordedAt
	for _, c := range []struct {
		from, to    time.Time
		first, last uint64
	}{{at.Add(-500), time.Time{}, 21, 0}, {at.Add(500), time.Time{}, 22, 0}, {time.Time{}, at.Add(500), 0, 21}, {time.Time{}, at.Add(-500), 0, 19}} {
		rep, err := verifyFile(export(t, l, evidence.Request{Org: "globex", From: c.from, To: c.to}), s)
		if err != nil {
			t.Fatal(err)
		}
		if c.first > 0 && rep.FirstPosition != c.first || c.last > 0 && rep.LastPosition != c.last {
			t.Fatalf("bounds %v %v: positions %d..%d", c.from, c.to, rep.FirstPosition, rep.LastPosition)
		}
	}
	if _, err := evidence.Prepare(context.Background(), l, evidence.Request{Org: "acme", From: times[3], To: times[2]}); err == nil {
		t.Fatal("an empty range was accepted")
	}
	if _, err := evidence.Prepare(context.Background(), l, evidence.Request{Org: "ac me"}); err == nil {
		t.Fatal("an organization with a space was accepted")
	}
}

// The checkpoint must cover the last event exported: the latest, when it
// does; else one signed now; else ErrNotCovered, unless no event of the
// organization lies beyond the latest checkpoint.
func TestCheckpointCoverage(t *testing.T) {
	ctx := context.Background()
	l, s := twoTenants(t)
	l.add("secret/globex/shop/production/GLOBEX_STRIPE_KEY", "globex", "token:globex-ci", "secret.viewed", `{}`)
	// Only globex moved since the checkpoint: acme's evidence still uses it.
	x, err := evidence.Prepare(ctx, l, evidence.Request{Org: "acme"})
	if err != nil || x.Checkpoint.Size != uint64(len(l.recs)-1) {
		t.Fatalf("%v %+v", err, x)
	}
	if _, err := evidence.Prepare(ctx, l, evidence.Request{Org: "globex"}); !errors.Is(err, evidence.ErrNotCovered) {
		t.Fatalf("globex without a covering checkpoint: %v", err)
	}
	signed := 0
	req := evidence.Request{Org: "globex", Sign: func(context.Context) (eventstore.Checkpoint, error) { signed++; return l.sign(t, s), nil }}
	file := export(t, l, req)
	if rep, err := verifyFile(file, s); err != nil || rep.TreeSize != uint64(len(l.recs)) || rep.LastPosition != uint64(len(l.recs)) || signed != 1 {
		t.Fatalf("signed now: %+v %v (signed %d)", rep, err, signed)
	}
	// Now covered: no new signature.
	export(t, l, req)
	if signed != 1 {
		t.Fatal("signed again although the latest checkpoint covers the events")
	}
	// A range that ends before the checkpoint needs none.
	l.add("org/globex", "globex", "user:olga@example.com", "organization.renamed", `{}`)
	end := l.recs[len(l.recs)-1].RecordedAt
	if _, err := evidence.Prepare(ctx, l, evidence.Request{Org: "globex", To: end}); err != nil {
		t.Fatal(err)
	}
	// No checkpoint at all.
	if _, err := evidence.Prepare(ctx, newTestLog(), evidence.Request{Org: "acme"}); !errors.Is(err, evidence.ErrNotCovered) {
		t.Fatalf("no checkpoint: %v", err)
	}
}

// lines splits a file into lines, with their line ends.
func lines(file []byte) []string { return strings.SplitAfter(string(file), "\n") }

// reseal recomputes the end line of a file whose lines were changed,
// as a careful forger would: what it holds must still be caught by the
// other checks.
func reseal(ls []string) []byte {
	var body strings.Builder
	n := 0
	for _, l := range ls {
		if strings.HasPrefix(l, "end ") || l == "" {
			continue
		}
		if strings.HasPrefix(l, "event ") {
			n++
		}
		body.WriteString(l)
	}
	sum := sha256.Sum256([]byte(body.String()))
	return []byte(body.String() + fmt.Sprintf("end %d %x\n", n, sum))
}

// eventLines returns the indexes (in ls) of the event lines, and the
// position of each.
func eventLines(ls []string) (idx []int, pos []uint64) {
	for i, l := range ls {
		if strings.HasPrefix(l, "event ") {
			var p uint64
			fmt.Sscan(strings.Fields(l)[1], &p)
			idx, pos = append(idx, i), append(pos, p)
		}
	}
	return idx, pos
}

// mutateRecord decodes the record of an event line, changes it, and
// writes the line back; with rehash, the line's hash is recomputed.
func mutateRecord(t testing.TB, line string, rehash bool, f func(rec []byte)) string {
	fs := strings.Fields(line)
	rec, err := base64.StdEncoding.DecodeString(fs[3])
	if err != nil {
		t.Fatal(err)
	}
	f(rec)
	fs[3] = base64.StdEncoding.EncodeToString(rec)
	if rehash {
		sum := sha256.Sum256(rec)
		fs[2] = hex.EncodeToString(sum[:])
	}
	return strings.Join(fs, " ") + "\n"
}

func TestTamperDetected(t *testing.T) {
	l, s := twoTenants(t)
	older := export(t, l, evidence.Request{Org: "acme"}) // at the latest checkpoint
	// The log grows and is checkpointed again: the current export.
	for range 5 {
		l.add("secret/acme/web/production/DB_URL", "acme", "token:acme-ci", "secret.viewed", `{"version":40}`)
		l.add("org/globex", "globex", "user:olga@example.com", "organization.renamed", `{}`)
	}
	l.sign(t, s)
	file := export(t, l, evidence.Request{Org: "acme"})
	if _, err := verifyFile(file, s); err != nil {
		t.Fatal(err)
	}
	base := lines(file)
	idx, pos := eventLines(base)
	oldLines := lines(older)
	oidx, _ := eventLines(oldLines)
	globex := lines(export(t, l, evidence.Request{Org: "globex"}))
	gidx, gpos := eventLines(globex)
	mid := len(idx) / 2
	other := newSigner(t, "stele.test/evidence") // the same origin, another key
	copyOf := func() []string { return append([]string(nil), base...) }
	noteStart := 5 // the index in base of the note's first line
	// The last event of stream org/acme in the file (a grant): no later
	// event of its stream shows that it is missing.
	var lastOfStream int
	for i := len(idx) - 1; i >= 0; i-- {
		if l.recs[pos[i]-1].StreamID == "org/acme" {
			lastOfStream = i
			break
		}
	}

	cases := []struct {
		name     string
		file     func() []byte
		check    string
		position uint64
	}{
		{"a changed byte in a record", func() []byte {
			ls := copyOf()
			ls[idx[mid]] = mutateRecord(t, ls[idx[mid]], false, func(rec []byte) { rec[len(rec)-3] ^= 1 })
			return reseal(ls)
		}, evidence.CheckHash, pos[mid]},
		{"a changed byte in a record, its hash recomputed", func() []byte {
			ls := copyOf()
			ls[idx[mid]] = mutateRecord(t, ls[idx[mid]], true, func(rec []byte) { rec[len(rec)-3] ^= 1 })
			return reseal(ls)
		}, evidence.CheckInclusion, pos[mid]},
		{"a changed byte in the base64 text", func() []byte {
			ls := copyOf()
			b := []byte(ls[idx[mid]])
			i := len("event ") + len(fmt.Sprint(pos[mid])) + 1 + 64 + 1 + 40 // inside the record's previous hash
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			ls[idx[mid]] = string(b)
			return reseal(ls)
		}, evidence.CheckHash, pos[mid]},
		{"a changed proof hash", func() []byte {
			ls := copyOf()
			fs := strings.Fields(ls[idx[mid]])
			fs[4] = strings.Repeat("0", 64)
			ls[idx[mid]] = strings.Join(fs, " ") + "\n"
			return reseal(ls)
		}, evidence.CheckInclusion, pos[mid]},
		{"a removed event, the end line left alone", func() []byte {
			ls := copyOf()
			return []byte(strings.Join(append(ls[:idx[lastOfStream]:idx[lastOfStream]], ls[idx[lastOfStream]+1:]...), ""))
		}, evidence.CheckEnd, 0},
		{"a removed event with a later event in its stream", func() []byte {
			ls := copyOf()
			return reseal(append(ls[:idx[mid]:idx[mid]], ls[idx[mid]+1:]...))
		}, evidence.CheckStream, pos[mid+1]},
		{"the removed first event of a stream (range open at the start)", func() []byte {
			ls := copyOf()
			return reseal(append(ls[:idx[1]:idx[1]], ls[idx[1]+1:]...)) // DB_URL's version 1
		}, evidence.CheckStream, pos[2]},
		{"a line copied from an older export, replacing its own", func() []byte {
			ls := copyOf()
			ls[idx[mid]] = oldLines[oidx[mid]]
			return reseal(ls)
		}, evidence.CheckInclusion, pos[mid]},
		{"the checkpoint and lines of an older export, one line of this one", func() []byte {
			ls := append([]string(nil), oldLines...)
			last := len(idx) - 1
			ls = append(ls[:len(ls)-2:len(ls)-2], base[idx[last]]) // this export's last line, beyond the old checkpoint
			return reseal(ls)
		}, evidence.CheckInclusion, pos[len(idx)-1]},
		{"an event of another tenant, in position order", func() []byte {
			ls := copyOf()
			// globex's event just after acme's event at mid.
			j := 0
			for gpos[j] < pos[mid] {
				j++
			}
			ls = append(ls[:idx[mid]+1:idx[mid]+1], append([]string{globex[gidx[j]]}, ls[idx[mid]+1:]...)...)
			return reseal(ls)
		}, evidence.CheckTenant, gpos[func() int {
			j := 0
			for gpos[j] < pos[mid] {
				j++
			}
			return j
		}()]},
		{"two lines swapped", func() []byte {
			ls := copyOf()
			ls[idx[mid]], ls[idx[mid+1]] = ls[idx[mid+1]], ls[idx[mid]]
			return reseal(ls)
		}, evidence.CheckStream, pos[mid+1]}, // its stream skips a version before positions go back
		{"a line repeated", func() []byte {
			ls := copyOf()
			ls = append(ls[:idx[mid]+1:idx[mid]+1], append([]string{ls[idx[mid]]}, ls[idx[mid]+1:]...)...)
			return reseal(ls)
		}, evidence.CheckOrder, pos[mid]},
		{"the header's organization changed", func() []byte {
			ls := copyOf()
			ls[1] = "org globex\n"
			return reseal(ls)
		}, evidence.CheckTenant, pos[0]},
		{"the header's range narrowed", func() []byte {
			ls := copyOf()
			ls[2] = "from " + l.recs[pos[mid]-1].RecordedAt.Format(time.RFC3339Nano) + "\n"
			return reseal(ls)
		}, evidence.CheckRange, pos[0]},
		{"a forged checkpoint: signed by another key", func() []byte {
			n, err := other.Sign(l.cps[len(l.cps)-1].Size, l.cps[len(l.cps)-1].Root)
			if err != nil {
				t.Fatal(err)
			}
			return withNote(base, n)
		}, evidence.CheckCheckpoint, 0},
		{"a forged checkpoint: its root changed", func() []byte {
			n := []byte(base[noteStart] + base[noteStart+1] + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n" + strings.Join(base[noteStart+3:idx[0]], ""))
			return withNote(base, n)
		}, evidence.CheckCheckpoint, 0},
		{"a forged checkpoint: its size changed", func() []byte {
			n := []byte(base[noteStart] + "100000\n" + strings.Join(base[noteStart+2:idx[0]], ""))
			return withNote(base, n)
		}, evidence.CheckCheckpoint, 0},
		{"a forged checkpoint: re-signed by another key with a new root", func() []byte {
			// The forger changes a record and signs a tree of their own.
			ls := copyOf()
			ls[idx[mid]] = mutateRecord(t, ls[idx[mid]], true, func(rec []byte) { rec[len(rec)-3] ^= 1 })
			n, err := other.Sign(l.cps[len(l.cps)-1].Size, eventstore.Hash{1})
			if err != nil {
				t.Fatal(err)
			}
			return withNote(lines(reseal(ls)), n)
		}, evidence.CheckCheckpoint, 0},
		{"the file cut short", func() []byte { return file[:len(file)-200] }, evidence.CheckEnd, 0},
		{"the end line removed", func() []byte { return []byte(strings.Join(base[:len(base)-2], "")) }, evidence.CheckEnd, 0},
		{"a byte changed, the end line kept", func() []byte {
			ls := copyOf()
			ls[3] = "to 2099-01-01T00:00:00Z\n"
			return []byte(strings.Join(ls, ""))
		}, evidence.CheckEnd, 0},
		{"bytes after the end line", func() []byte { return append(append([]byte(nil), file...), "x\n"...) }, evidence.CheckFormat, 0},
		{"another kind of file", func() []byte { return []byte("stele-ledger-export/v1\n") }, evidence.CheckFormat, 0},
		{"an empty file", func() []byte { return nil }, evidence.CheckFormat, 0},
		{"a proof hash in upper case", func() []byte {
			ls := copyOf()
			fs := strings.Fields(ls[idx[mid]])
			fs[4] = strings.ToUpper(fs[4])
			ls[idx[mid]] = strings.Join(fs, " ") + "\n"
			return reseal(ls)
		}, evidence.CheckFormat, pos[mid]},
		{"a line position that is not the record's", func() []byte {
			ls := copyOf()
			fs := strings.Fields(ls[idx[mid]])
			fs[1] = fmt.Sprint(pos[mid] + 1)
			ls[idx[mid]] = strings.Join(fs, " ") + "\n"
			return reseal(ls)
		}, evidence.CheckFormat, pos[mid] + 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := verifyFile(c.file(), s)
			var ve *evidence.Error
			if !errors.As(err, &ve) || !errors.Is(err, evidence.ErrFailed) {
				t.Fatalf("not detected: %v", err)
			}
			if ve.Check != c.check || ve.Position != c.position {
				t.Fatalf("failed the %s check at position %d, want %s at %d: %v", ve.Check, ve.Position, c.check, c.position, err)
			}
			t.Log(err)
		})
	}

	// What the format does not promise: a forger who removes the last
	// event of a stream in the range and recomputes the end line is not
	// caught (the file is not signed as a whole; only the log is).
	ls := copyOf()
	forged := reseal(append(ls[:idx[lastOfStream]:idx[lastOfStream]], ls[idx[lastOfStream]+1:]...))
	if _, err := verifyFile(forged, s); err != nil {
		t.Fatalf("the documented limit changed: %v", err)
	}
}

// withNote replaces the checkpoint note of a file.
func withNote(ls []string, n []byte) []byte {
	idx, _ := eventLines(ls)
	end := len(ls) - 1
	if len(idx) > 0 {
		end = idx[0]
	}
	out := append([]string(nil), ls[:4]...)
	out = append(out, fmt.Sprintf("checkpoint %d\n", len(n)), string(n))
	out = append(out, ls[end:]...)
	return reseal(out)
}

// A log whose chain is broken, yet whose tree was signed (by a careless
// or dishonest signer), fails the chain check where two events of the
// organization are adjacent.
func TestBrokenChain(t *testing.T) {
	l := newTestLog()
	s := newSigner(t, "stele.test/evidence")
	l.add("org/acme", "acme", "user:ada@example.com", "organization.created", `{}`)
	r := eventstore.Record{Position: 2, StreamID: "org/acme", StreamVersion: 2, ID: eventstore.NewID(), Type: "organization.renamed",
		Data: []byte(`{}`), RecordedAt: l.clock.Add(time.Second), Metadata: eventstore.Metadata{Tenant: "acme"}}
	r.PrevHash = eventstore.Hash{7} // not event 1's hash
	r.Hash = eventstore.ComputeHash(&r)
	l.stored = l.frontier.Append(l.stored, r.Hash)
	l.recs = append(l.recs, r)
	l.sign(t, s)
	_, err := verifyFile(export(t, l, evidence.Request{Org: "acme"}), s)
	var ve *evidence.Error
	if !errors.As(err, &ve) || ve.Check != evidence.CheckChain || ve.Position != 2 {
		t.Fatalf("%v", err)
	}
}

// The worked example of docs/ledger-format.md: the vector events 2 and 3
// (of org-7f3a, from 2026-11-22T09:30:00.124Z), proven against the
// vectors' checkpoint of size 3.
func TestExample(t *testing.T) {
	l := newTestLog()
	t0 := time.Date(2026, 11, 22, 9, 30, 0, 123456000, time.UTC)
	id := func(s string) eventstore.ID { v, _ := eventstore.ParseID(s); return v }
	for _, r := range []eventstore.Record{
		{Position: 1, StreamID: "org-7f3a", StreamVersion: 1, ID: id("0199a0b1-0000-7000-8000-000000000001"), Type: "organization.created",
			Data: []byte(`{"name":"Acme"}`), RecordedAt: t0,
			Metadata: eventstore.Metadata{Actor: "user:ada", Tenant: "org-7f3a", RequestID: "req-1", ClientAddr: "192.0.2.10"}},
		{Position: 2, StreamID: "secret-91c2", StreamVersion: 1, ID: id("0199a0b1-0000-7000-8000-000000000002"), Type: "secret.created",
			Data: []byte(`{"name":"DATABASE_URL","ciphertext":"AQID"}`), RecordedAt: t0.Add(1500 * time.Microsecond),
			Metadata: eventstore.Metadata{Actor: "user:ada", Tenant: "org-7f3a", RequestID: "req-2", ClientAddr: "192.0.2.10", CausationID: "cmd-2", CorrelationID: "corr-2"}},
		{Position: 3, StreamID: "secret-91c2", StreamVersion: 2, ID: id("0199a0b1-0000-7000-8000-000000000003"), Type: "secret.viewed",
			Data: []byte{}, RecordedAt: t0.Add(2 * time.Second),
			Metadata: eventstore.Metadata{Actor: "token:ci-é", Tenant: "org-7f3a"}},
	} {
		l.append(r)
	}
	for i, want := range []string{"f4290ead356ee30f9ee80a32ee4a5b1a826cf894b2083f9ee004c673a0064c98",
		"23592a3fff557f5b7379abf1c45ab41cdea6315c54984b8f48df8f722980d412", "18a08ae2fe26326f994592ac24618a6df5a584b90680ab2cd70481c7d2d4dccf"} {
		if l.recs[i].Hash.String() != want {
			t.Fatalf("vector event %d hashes to %s", i+1, l.recs[i].Hash)
		}
	}
	signer, vkey := vectorSigner(t)
	cp := l.sign(t, signer)
	if !strings.Contains(string(cp.Note), "ccKRyC8Zbdmd69UCFXrwv/rrkKAYR3BWLqO3RlbM/Ro=") {
		t.Fatalf("not the vectors' checkpoint:\n%s", cp.Note)
	}
	from := time.Date(2026, 11, 22, 9, 30, 0, 124000000, time.UTC)
	file := export(t, l, evidence.Request{Org: "org-7f3a", From: from})
	if *update {
		if err := os.WriteFile("testdata/example.evidence", file, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("testdata/example.evidence")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, file) {
		t.Fatal("testdata/example.evidence differs from what the code writes (run with -update if the change is intended)")
	}
	key, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := evidence.Verify(bytes.NewReader(got), key)
	if err != nil || rep.Events != 2 || rep.FirstPosition != 2 || rep.LastPosition != 3 {
		t.Fatalf("%+v %v", rep, err)
	}
	// The proofs are the ones §4 of the page gives.
	const leaf1, leaf3, root2 = "46bda07b1d80a722e8e462f8485874841a73426e06fe8451c7c665332d712879",
		"6128d6d8e87cdb40396a14740a94e89cf289dc265d3c1817eb051a5d9e45c022", "10da44d47b64035d16bfb59f7d3c456ef34c8a4344c94cc718ae42317d9e51fe"
	if !strings.Contains(string(got), "23592a3fff557f5b7379abf1c45ab41cdea6315c54984b8f48df8f722980d412 ") ||
		!strings.Contains(string(got), " "+leaf1+" "+leaf3+"\n") || !strings.Contains(string(got), " "+root2+"\n") {
		t.Fatalf("the example's proofs are not the documented ones:\n%s", got)
	}
	// The page quotes the whole file.
	doc, err := os.ReadFile("../../docs/ledger-format.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, got) {
		t.Error("docs/ledger-format.md does not quote testdata/example.evidence verbatim")
	}
}

// vectorSigner is the vectors' test key (the Ed25519 seed of 32 bytes
// 0x5e): never a real key.
func vectorSigner(t *testing.T) (*checkpoint.Signer, string) {
	const origin = "example.com/stele/test-vectors"
	seed := bytes.Repeat([]byte{0x5e}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	vkey, err := note.NewEd25519VerifierKey(origin, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(vkey, "+")
	s, err := checkpoint.NewSigner("PRIVATE+KEY+" + origin + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, seed...)))
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

// Verify never panics, whatever the bytes.
func FuzzVerify(f *testing.F) {
	l, s := twoTenants(f)
	f.Add(export(f, l, evidence.Request{Org: "acme"}))
	if b, err := os.ReadFile("testdata/example.evidence"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("stele-evidence/v1\norg a\nfrom -\nto -\ncheckpoint 3\nab\nend 0 00\n"))
	key := s.Verifier()
	f.Fuzz(func(t *testing.T, b []byte) {
		evidence.Verify(bytes.NewReader(b), key)
	})
}

// BenchmarkExport writes the evidence of one of two tenants of a log of
// 100,000 events: one page read and one tree-hash read per 1000 events.
func BenchmarkExport(b *testing.B) {
	l := newTestLog()
	s := newSigner(b, "stele.test/evidence")
	for i := range 100000 {
		tenant := []string{"acme", "globex"}[i%2]
		l.add("secret/"+tenant+"/web/production/K"+fmt.Sprint(i%50), tenant, "user:ada@example.com", "secret.viewed", `{"version":1,"channel":"cli-run"}`)
	}
	l.sign(b, s)
	b.ResetTimer()
	for range b.N {
		x, err := evidence.Prepare(context.Background(), l, evidence.Request{Org: "acme"})
		if err != nil {
			b.Fatal(err)
		}
		sum, err := x.WriteTo(context.Background(), io.Discard)
		if err != nil || sum.Events != 50000 {
			b.Fatal(sum, err)
		}
		b.ReportMetric(float64(sum.Events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	}
}
