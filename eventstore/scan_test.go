package eventstore_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"stele.dev/stele/eventstore"
)

// StoredEvent.Header and CheckCanonical read the vectors as ParseCanonical
// does, and refuse the malformed ones.
func TestStoredEventHeader(t *testing.T) {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v Vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	for _, ev := range v.Events {
		c, _ := hex.DecodeString(ev.CanonicalHex)
		if err := eventstore.CheckCanonical(c); err != nil {
			t.Fatalf("%s: %v", ev.Description, err)
		}
		r, _ := eventstore.ParseCanonical(c)
		e := eventstore.StoredEvent{Canonical: c}
		pos, prev, version, at, stream := e.Header()
		if pos != r.Position || prev != r.PrevHash || version != r.StreamVersion || at != r.RecordedAt.UnixMicro() || string(stream) != r.StreamID {
			t.Fatalf("%s: header %d %s %d %d %q, parsed %+v", ev.Description, pos, prev, version, at, stream, r)
		}
		id := r.ID
		head := eventstore.AppendCanonicalHeader(nil, &prev, pos, version, at, &id)
		if string(head) != string(c[:len(head)]) {
			t.Fatalf("%s: AppendCanonicalHeader differs from the encoding's prefix", ev.Description)
		}
	}
	for _, m := range v.Malformed {
		c, _ := hex.DecodeString(m.CanonicalHex)
		if err := eventstore.CheckCanonical(c); !errors.Is(err, eventstore.ErrMalformed) {
			t.Errorf("%s (%s): %v, want ErrMalformed", m.Description, m.Mutation, err)
		}
	}
}
