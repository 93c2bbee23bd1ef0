package projections_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"stele.dev/stele/projections"
)

const natsURL = "nats://127.0.0.1:4222"

// The event stream reaches NATS JetStream in order, once per event, with
// tenant, type and position in the metadata, and with no secret value nor
// ciphertext in it.
func TestPublisherToNATS(t *testing.T) {
	if c, err := net.DialTimeout("tcp", "127.0.0.1:4222", time.Second); err != nil {
		t.Skipf("no NATS server at %s (%v): the publisher is not exercised here", natsURL, err)
	} else {
		c.Close()
	}
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	stream := "stele-test-" + suffix
	subject := stream
	pub, err := projections.NewPublisher(projections.PublisherConfig{URL: natsURL, Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	e := newEnv(t, projections.Secrets{}, pub)
	e.start(t)
	scenario(t, e, 4, 2)
	e.caughtUp(t)
	head := ok(e.store.Head(ctx)).Position

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	defer js.DeleteStream(stream)
	sub, err := js.PullSubscribe(subject, "", nats.BindStream(stream))
	if err != nil {
		t.Fatal(err)
	}
	var got []projections.Published
	for uint64(len(got)) < head {
		msgs, err := sub.Fetch(100, nats.MaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(got), head, err)
		}
		for _, m := range msgs {
			var p projections.Published
			if err := json.Unmarshal(m.Data, &p); err != nil {
				t.Fatal(err)
			}
			if m.Header.Get("tenant") != p.Tenant || m.Header.Get("type") != p.Type || m.Header.Get("position") != fmt.Sprint(p.Position) {
				t.Fatalf("metadata %v for %+v", m.Header, p)
			}
			for i := range 4 {
				for r := range 2 {
					if bytes.Contains(m.Data, []byte(fmt.Sprintf("value-%d-%d", i, r))) {
						t.Fatal("a plaintext value was published")
					}
				}
			}
			if bytes.Contains(m.Data, []byte(`"ciphertext"`)) {
				t.Fatalf("a ciphertext was published: %s", m.Data)
			}
			m.Ack()
			got = append(got, p)
		}
	}
	for i, p := range got {
		if p.Position != uint64(i)+1 {
			t.Fatalf("message %d has position %d", i, p.Position)
		}
	}
	// Publishing the whole log again (a rebuild) adds nothing: JetStream
	// drops duplicates by event id.
	if err := e.proj.Rebuild(ctx, pub.Name()); err != nil {
		t.Fatal(err)
	}
	info, err := js.StreamInfo(stream)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != head {
		t.Fatalf("the stream holds %d messages after republishing, want %d", info.State.Msgs, head)
	}
}
