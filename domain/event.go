package domain

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Event is a fact that happened. EventType returns its fixed wire name,
// such as "secret.created"; the name never changes once released.
type Event interface {
	EventType() string
}

// decoders maps wire names to a decoder of the event's Go value.
var decoders = map[string]func([]byte) (Event, error){}

// register adds event type T to the registry under its wire name.
func register[T Event]() {
	var zero T
	t := zero.EventType()
	if _, dup := decoders[t]; dup {
		panic("domain: event type registered twice: " + t)
	}
	decoders[t] = func(data []byte) (Event, error) {
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		return v, nil
	}
}

// Types returns every event wire name, sorted.
func Types() []string {
	out := make([]string, 0, len(decoders))
	for t := range decoders {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Encode returns an event's stored payload (JSON).
func Encode(e Event) ([]byte, error) {
	if _, ok := decoders[e.EventType()]; !ok {
		return nil, fmt.Errorf("domain: unregistered event type %q", e.EventType())
	}
	return json.Marshal(e)
}

// Decode rebuilds an event from its wire name and stored payload. An
// unknown type is an error: the reader is older than the log.
func Decode(eventType string, data []byte) (Event, error) {
	dec, ok := decoders[eventType]
	if !ok {
		return nil, fmt.Errorf("domain: unknown event type %q", eventType)
	}
	e, err := dec(data)
	if err != nil {
		return nil, fmt.Errorf("domain: decode %s: %w", eventType, err)
	}
	return e, nil
}
