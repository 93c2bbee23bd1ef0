package projections

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"stele.dev/stele/domain"
)

// PublisherConfig says where the event stream goes.
type PublisherConfig struct {
	// URL of a NATS server with JetStream, e.g. nats://127.0.0.1:4222.
	URL string
	// Stream is the JetStream stream and its subject, one name for both
	// (created if missing; default "stele-events": no dots, which stream
	// names do not allow).
	Stream string
	Logger watermill.LoggerAdapter
}

// Publisher publishes the log to outside consumers through Watermill's
// NATS JetStream publisher: one message per event, in log order, with the
// tenant, type, stream and position in the message metadata. The message
// id is the event id, so JetStream drops a message published twice
// (within its duplicate window). Secret values never travel: events
// carry none, and the sealed ciphertexts are stripped as well.
//
// It is a projection without tables: its position in projection_state
// says how far the stream has been published. Rebuilding it republishes
// the whole log.
type Publisher struct {
	cfg PublisherConfig
	pub message.Publisher
}

var _ Projection = (*Publisher)(nil)

// NewPublisher connects to NATS.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Stream == "" {
		cfg.Stream = "stele-events"
	}
	if cfg.Logger == nil {
		cfg.Logger = watermill.NopLogger{}
	}
	pub, err := wmnats.NewPublisher(wmnats.PublisherConfig{
		URL:         cfg.URL,
		NatsOptions: []nats.Option{nats.Name("stele"), nats.Timeout(5 * time.Second)},
		JetStream:   wmnats.JetStreamConfig{AutoProvision: true, TrackMsgId: true},
	}, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("projections: NATS at %s: %w", cfg.URL, err)
	}
	return &Publisher{cfg: cfg, pub: pub}, nil
}

// Close closes the NATS connection.
func (p *Publisher) Close() error { return p.pub.Close() }

func (p *Publisher) Name() string            { return "publisher" }
func (p *Publisher) Version() int            { return 1 }
func (p *Publisher) Tables() []string        { return nil }
func (p *Publisher) Create(n Names) []string { return nil }

// Published is the JSON body of a published event.
type Published struct {
	Position      uint64          `json:"position"`
	EventID       string          `json:"event_id"`
	Stream        string          `json:"stream"`
	StreamVersion uint64          `json:"stream_version"`
	Type          string          `json:"type"`
	RecordedAt    time.Time       `json:"recorded_at"`
	Actor         string          `json:"actor"`
	Tenant        string          `json:"tenant"`
	RequestID     string          `json:"request_id,omitempty"`
	Data          json.RawMessage `json:"data"`
	Hash          string          `json:"hash"`
	PrevHash      string          `json:"prev_hash"`
}

// Apply publishes the batch; the position commits only once NATS has
// acknowledged every message.
func (p *Publisher) Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error {
	msgs := make([]*message.Message, 0, len(batch))
	for _, e := range batch {
		data, err := domain.Encode(redact(e.Event))
		if err != nil {
			return err
		}
		body, err := json.Marshal(Published{Position: e.Position, EventID: e.ID.String(), Stream: e.StreamID, StreamVersion: e.StreamVersion,
			Type: e.Type, RecordedAt: e.RecordedAt, Actor: e.Metadata.Actor, Tenant: e.Metadata.Tenant, RequestID: e.Metadata.RequestID,
			Data: data, Hash: hex.EncodeToString(e.Hash[:]), PrevHash: hex.EncodeToString(e.PrevHash[:])})
		if err != nil {
			return err
		}
		m := message.NewMessage(e.ID.String(), body)
		m.Metadata.Set("tenant", e.Metadata.Tenant)
		m.Metadata.Set("type", e.Type)
		m.Metadata.Set("stream", e.StreamID)
		m.Metadata.Set("position", strconv.FormatUint(e.Position, 10))
		msgs = append(msgs, m)
	}
	return p.pub.Publish(p.cfg.Stream, msgs...)
}

// redact drops sealed values from an event before it leaves Stele.
func redact(e domain.Event) domain.Event {
	switch ev := e.(type) {
	case domain.SecretCreated:
		ev.Value.Ciphertext = nil
		return ev
	case domain.SecretUpdated:
		ev.Value.Ciphertext = nil
		return ev
	case domain.SecretRolledBack:
		ev.Value.Ciphertext = nil
		return ev
	case domain.SecretResealed:
		ev.Value.Ciphertext = nil
		return ev
	case domain.TokenIssued:
		ev.SecretHash = ""
		return ev
	case domain.ApprovalRequested:
		ev.PollTokenHash = ""
		ev.Changes = slices.Clone(ev.Changes)
		for i := range ev.Changes {
			ev.Changes[i].Value.Ciphertext = nil
		}
		return ev
	}
	return e
}
