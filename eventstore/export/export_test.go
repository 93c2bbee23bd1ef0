package export_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/export"
	"stele.dev/stele/eventstore/memstore"
	"stele.dev/stele/eventstore/verify"
)

type fixture struct {
	file   []byte
	signer *checkpoint.Signer
	last   []byte // the final checkpoint note
}

// build makes a 50-event log with checkpoints at 0, 20 and 50 and exports it.
func build(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	st := memstore.New(nil)
	skey, _, err := checkpoint.GenerateKey("stele.test/export")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	c := &checkpoint.Checkpointer{Store: st, Signer: signer}
	if _, err := c.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	var last eventstore.Checkpoint
	for i := range 50 {
		ev := eventstore.Event{ID: eventstore.NewID(), Type: "secret.updated", Data: fmt.Appendf(nil, `{"n":%d}`, i),
			Metadata: eventstore.Metadata{Actor: "user:ada", Tenant: "org-1"}}
		if _, err := st.Append(ctx, fmt.Sprintf("secret-%d", i%4), eventstore.Any, ev); err != nil {
			t.Fatal(err)
		}
		if i == 19 || i == 49 {
			if last, err = c.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	var buf bytes.Buffer
	sum, err := export.Write(ctx, &buf, st, export.Meta{Origin: signer.Origin(), VerifierKey: signer.Verifier().String()})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != 50 || sum.Checkpoints != 3 || sum.Bytes != int64(buf.Len()) {
		t.Fatalf("summary %+v", sum)
	}
	// The live store verifies too.
	rep, err := verify.Store(ctx, st, verify.Options{Key: signer.Verifier()})
	if err != nil || rep.Events != 50 || rep.Checkpoints != 3 || rep.TreeHashes == 0 {
		t.Fatalf("verify.Store = %+v, %v", rep, err)
	}
	return fixture{file: buf.Bytes(), signer: signer, last: last.Note}
}

type frame struct {
	kind    byte
	payload []byte
}

func frames(t *testing.T, b []byte) []frame {
	t.Helper()
	b = b[len(export.Header):]
	var out []frame
	for len(b) > 0 {
		n := binary.BigEndian.Uint32(b[1:5])
		out = append(out, frame{b[0], bytes.Clone(b[5 : 5+n])})
		b = b[5+n:]
	}
	return out
}

func join(fs []frame) []byte {
	b := []byte(export.Header)
	for _, f := range fs {
		b = append(b, f.kind)
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.payload)))
		b = append(b, f.payload...)
	}
	return b
}

// eventFrame returns the index of the frame holding position p.
func eventFrame(fs []frame, p uint64) int {
	for i, f := range fs {
		if f.kind == export.KindEvent {
			r, _ := eventstore.ParseCanonical(f.payload[32:])
			if r.Position == p {
				return i
			}
		}
	}
	panic("no such position")
}

// fixEnd rewrites the end frame to match the frames, as a careful forger would.
func fixEnd(fs []frame) []frame {
	var ev, cp uint64
	for _, f := range fs {
		switch f.kind {
		case export.KindEvent:
			ev++
		case export.KindCheckpoint:
			cp++
		}
	}
	end := binary.BigEndian.AppendUint64(nil, ev)
	end = binary.BigEndian.AppendUint64(end, cp)
	fs[len(fs)-1] = frame{export.KindEnd, end}
	return fs
}

// rechain rewrites position from..end with changed data and a recomputed
// hash chain, keeping everything else.
func rechain(t *testing.T, fs []frame, from uint64) []frame {
	t.Helper()
	var prev eventstore.Hash
	for i, f := range fs {
		if f.kind != export.KindEvent {
			continue
		}
		r, err := eventstore.ParseCanonical(f.payload[32:])
		if err != nil {
			t.Fatal(err)
		}
		if r.Position >= from {
			if r.Position == from {
				r.Data = []byte(`{"n":"forged"}`)
			}
			r.PrevHash = prev
			r.Hash = eventstore.ComputeHash(&r)
			fs[i].payload = eventstore.AppendCanonical(append([]byte(nil), r.Hash[:]...), &r)
		}
		copy(prev[:], fs[i].payload[:32])
	}
	return fs
}

func TestExportVerifies(t *testing.T) {
	fx := build(t)
	meta, rep, err := export.Verify(bytes.NewReader(fx.file), verify.Options{Key: fx.signer.Verifier()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != 50 || rep.Checkpoints != 3 || rep.LastCheckpoint != 50 || !rep.Signed || meta.Origin != "stele.test/export" || meta.Events != 50 {
		t.Fatalf("report %+v meta %+v", rep, meta)
	}
	_, rep, err = export.Verify(bytes.NewReader(fx.file), verify.Options{Key: fx.signer.Verifier(), Trusted: fx.last})
	if err != nil || rep.Trusted != 50 {
		t.Fatalf("with a trusted checkpoint: %+v %v", rep, err)
	}
}

func TestExportTampering(t *testing.T) {
	fx := build(t)
	key := fx.signer.Verifier()
	forger, _, _ := checkpoint.GenerateKey("stele.test/export")
	forgerSigner, _ := checkpoint.NewSigner(forger)

	cases := []struct {
		name    string
		mutate  func([]frame) []frame
		trusted []byte
		wantPos uint64 // 0: any position
		want    string
	}{
		{name: "flip a byte of event data", mutate: func(fs []frame) []frame {
			i := eventFrame(fs, 17)
			fs[i].payload[len(fs[i].payload)-2] ^= 1
			return fs
		}, wantPos: 17, want: "content"},
		{name: "change a stored hash", mutate: func(fs []frame) []frame {
			fs[eventFrame(fs, 17)].payload[0] ^= 1
			return fs
		}, wantPos: 17, want: "stored hash"},
		{name: "delete an event", mutate: func(fs []frame) []frame {
			i := eventFrame(fs, 17)
			return fixEnd(append(fs[:i], fs[i+1:]...))
		}, wantPos: 17, want: "missing"},
		{name: "insert an event (a copy of another)", mutate: func(fs []frame) []frame {
			i := eventFrame(fs, 17)
			fs = append(fs[:i+1], append([]frame{fs[i]}, fs[i+1:]...)...)
			return fixEnd(fs)
		}, wantPos: 18, want: "again"},
		{name: "swap two events", mutate: func(fs []frame) []frame {
			i, j := eventFrame(fs, 17), eventFrame(fs, 18)
			fs[i], fs[j] = fs[j], fs[i]
			return fs
		}, wantPos: 17},
		{name: "rewrite the tail with a recomputed chain", mutate: func(fs []frame) []frame {
			return rechain(t, fs, 30)
		}, want: "history was rewritten"},
		{name: "rewrite the tail and drop the checkpoint that covers it", mutate: func(fs []frame) []frame {
			fs = rechain(t, fs, 30)
			fs = append(fs[:len(fs)-2], fs[len(fs)-1])
			return fixEnd(fs)
		}, want: "not covered by a signed checkpoint"},
		{name: "rewrite the tail and forge its checkpoint with another key", mutate: func(fs []frame) []frame {
			fs = rechain(t, fs, 30)
			note, err := forgerSigner.Sign(50, rootOf(t, fs))
			if err != nil {
				t.Fatal(err)
			}
			fs[len(fs)-2].payload = note
			return fs
		}, want: "signature"},
		{name: "repeat a checkpoint", mutate: func(fs []frame) []frame {
			i := eventFrame(fs, 20) + 1 // the checkpoint at 20
			fs = append(fs[:i+1], append([]frame{fs[i]}, fs[i+1:]...)...)
			return fixEnd(fs)
		}, wantPos: 20, want: "must grow"},
		{name: "cut the tail back to an earlier checkpoint (caught by a trusted checkpoint)", mutate: func(fs []frame) []frame {
			i := eventFrame(fs, 21)
			return fixEnd(append(fs[:i], frame{kind: export.KindEnd}))
		}, trusted: fx.last, want: "events were removed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := c.mutate(frames(t, fx.file))
			_, _, err := export.Verify(bytes.NewReader(join(fs)), verify.Options{Key: key, Trusted: c.trusted})
			var ve *verify.Error
			if !errors.Is(err, verify.ErrFailed) || !errors.As(err, &ve) {
				t.Fatalf("got %v, want a verification failure", err)
			}
			if c.wantPos != 0 && ve.Position != c.wantPos {
				t.Fatalf("failure at position %d (%v), want %d", ve.Position, err, c.wantPos)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}

	// Without the trusted checkpoint a cleanly cut file is a valid, shorter export.
	fs := frames(t, fx.file)
	i := eventFrame(fs, 21)
	cut := join(fixEnd(append(fs[:i], frame{kind: export.KindEnd})))
	if _, rep, err := export.Verify(bytes.NewReader(cut), verify.Options{Key: key}); err != nil || rep.Events != 20 {
		t.Fatalf("a prefix export: %+v %v", rep, err)
	}
}

func rootOf(t *testing.T, fs []frame) eventstore.Hash {
	t.Helper()
	var recs []eventstore.Record
	for _, f := range fs {
		if f.kind == export.KindEvent {
			r, _ := eventstore.ParseCanonical(f.payload[32:])
			copy(r.Hash[:], f.payload[:32])
			recs = append(recs, r)
		}
	}
	v, _ := verify.NewVerifier(verify.Options{})
	for i := range recs {
		if err := v.Record(&recs[i], recs[i].Hash, nil); err != nil {
			t.Fatal(err)
		}
	}
	rep, _ := v.Finish()
	return rep.Root
}

func TestMalformedFiles(t *testing.T) {
	fx := build(t)
	key := fx.signer.Verifier()
	cases := map[string][]byte{
		"empty":             nil,
		"wrong header":      append([]byte("stele-ledger-export/v9\n"), fx.file[len(export.Header):]...),
		"truncated":         fx.file[:len(fx.file)/2],
		"missing end frame": fx.file[:len(fx.file)-21],
		"trailing bytes":    append(bytes.Clone(fx.file), 0),
	}
	for name, b := range cases {
		if _, _, err := export.Verify(bytes.NewReader(b), verify.Options{Key: key}); !errors.Is(err, export.ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
	}
	other, _, _ := checkpoint.GenerateKey("stele.test/export")
	otherSigner, _ := checkpoint.NewSigner(other)
	if _, _, err := export.Verify(bytes.NewReader(fx.file), verify.Options{Key: otherSigner.Verifier()}); !errors.Is(err, verify.ErrFailed) {
		t.Errorf("verified under the wrong key: %v", err)
	}
}
