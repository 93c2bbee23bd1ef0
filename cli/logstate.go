package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/merkle"
)

// ErrLogRewritten is the error of a server whose ledger is not an
// extension of the one this client verified before: a checkpoint signed
// by another key, one that shrank, or one that a consistency proof does
// not connect to the remembered one. Whatever the cause (a restored
// backup, a rewritten history, another server behind the same address),
// the client must not go on trusting the server silently.
var ErrLogRewritten = errors.New("the server's ledger is not an extension of the one this client verified before")

// LogState is what a client remembers of one server's ledger: the key
// that signs its checkpoints (trusted on first contact) and the newest
// checkpoint it verified. Like the Go command's checksum-database client,
// on every contact it asks for the server's current checkpoint and a
// consistency proof from the remembered one, so a server that rewrites
// its history is caught by every client that saw the history before.
type LogState struct {
	// Key is the checkpoint verifier key ("origin+hash+base64").
	Key string `json:"key"`
	// Checkpoint is the newest signed checkpoint verified (a signed note).
	Checkpoint string `json:"checkpoint,omitempty"`
	// Size is the size of the log that Checkpoint commits to.
	Size uint64 `json:"size,omitempty"`
}

// LogCheck is the outcome of one check.
type LogCheck struct {
	// Trusted is set when the key was seen for the first time and is now
	// remembered.
	Trusted bool
	// From and To are the sizes of the remembered and the current
	// checkpoint (equal when the log did not grow since).
	From, To uint64
	// Skipped says why nothing was checked ("" when something was).
	Skipped string
}

// LogStateDir is where a client keeps what it remembers of each server's
// ledger, one file per server.
type LogStateDir string

// path is the file of one server.
func (d LogStateDir) path(server string) string {
	u, err := url.Parse(server)
	name := server
	if err == nil && u.Host != "" {
		name = u.Scheme + "_" + u.Host + strings.ReplaceAll(strings.TrimRight(u.Path, "/"), "/", "_")
	}
	name = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
	return filepath.Join(string(d), name+".json")
}

// Load returns what is remembered of server's ledger; ok is false when
// nothing is.
func (d LogStateDir) Load(server string) (st LogState, ok bool, err error) {
	data, err := os.ReadFile(d.path(server))
	if errors.Is(err, os.ErrNotExist) {
		return LogState{}, false, nil
	}
	if err != nil {
		return LogState{}, false, err
	}
	if err := json.Unmarshal(data, &st); err != nil || st.Key == "" {
		return LogState{}, false, fmt.Errorf("%s is damaged; remove it to trust the server's ledger afresh", d.path(server))
	}
	return st, true, nil
}

// Save remembers st for server, replacing the file atomically.
func (d LogStateDir) Save(server string, st LogState) error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	path := d.path(server)
	tmp, err := os.CreateTemp(string(d), ".state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Forget drops what is remembered of server.
func (d LogStateDir) Forget(server string) error {
	err := os.Remove(d.path(server))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// CheckLog compares the server's current signed checkpoint with the one
// remembered in dir, proves that the log only grew in between, and
// remembers the new one. On first contact it trusts and remembers the
// server's key. It returns an error matching ErrLogRewritten when the
// server's ledger does not extend the remembered one; a server that
// cannot be asked (the caller is not signed in, or it has signed no
// checkpoint yet) is skipped, and the outcome says why.
func (c *Client) CheckLog(ctx context.Context, dir LogStateDir) (LogCheck, error) {
	st, known, err := dir.Load(c.Server)
	if err != nil {
		return LogCheck{}, err
	}
	var out LogCheck
	if !known {
		key, err := c.text(ctx, "/v1/ledger/key")
		switch {
		case IsCode(err, "unauthenticated"):
			return LogCheck{Skipped: "not signed in"}, nil
		case IsCode(err, "not_found"):
			return LogCheck{Skipped: "the server publishes no ledger key"}, nil
		case err != nil:
			return LogCheck{}, fmt.Errorf("reading the server's ledger key: %w", err)
		}
		if _, err := checkpoint.NewVerifier(key); err != nil {
			return LogCheck{}, fmt.Errorf("the server's ledger key does not parse: %w", err)
		}
		st, out.Trusted = LogState{Key: strings.TrimSpace(key)}, true
	}
	v, err := checkpoint.NewVerifier(st.Key)
	if err != nil {
		return LogCheck{}, fmt.Errorf("the remembered ledger key of %s: %w", c.Server, err)
	}
	note, err := c.text(ctx, "/v1/ledger/checkpoint")
	switch {
	case IsCode(err, "unauthenticated"):
		return LogCheck{Skipped: "not signed in"}, nil
	case IsCode(err, "not_found"):
		if out.Trusted {
			return out, dir.Save(c.Server, st)
		}
		if st.Size > 0 {
			return LogCheck{}, fmt.Errorf("%w: it shows no signed checkpoint, but this client verified one of %d events before", ErrLogRewritten, st.Size)
		}
		return LogCheck{Skipped: "the server has signed no checkpoint yet"}, nil
	case err != nil:
		return LogCheck{}, fmt.Errorf("reading the server's checkpoint: %w", err)
	}
	size, root, err := v.Open([]byte(note))
	if err != nil {
		return LogCheck{}, fmt.Errorf("%w: its checkpoint is not signed by the key this client trusts (%s): %v", ErrLogRewritten, st.Key, err)
	}
	out.From, out.To = st.Size, size
	if st.Checkpoint != "" {
		if err := c.Extends(ctx, v, []byte(st.Checkpoint), size, root); err != nil {
			return LogCheck{}, err
		}
	}
	st.Checkpoint, st.Size = note, size
	return out, dir.Save(c.Server, st)
}

// Extends proves, with a consistency proof from the server, that the log
// of size events with root extends the one that the signed checkpoint
// old (verified with v) commits to. It returns an error matching
// ErrLogRewritten when it does not.
func (c *Client) Extends(ctx context.Context, v *checkpoint.Verifier, old []byte, size uint64, root eventstore.Hash) error {
	oldSize, oldRoot, err := v.Open(old)
	if err != nil {
		return fmt.Errorf("the earlier checkpoint does not verify with %s: %w", v, err)
	}
	switch {
	case size < oldSize:
		return fmt.Errorf("%w: its checkpoint covers %d events, fewer than the %d verified before", ErrLogRewritten, size, oldSize)
	case size == oldSize && root != oldRoot:
		return fmt.Errorf("%w: two checkpoints of %d events with different roots", ErrLogRewritten, size)
	case size > oldSize:
		proof, err := c.consistency(ctx, oldSize, size)
		if err != nil {
			return fmt.Errorf("asking for a consistency proof from %d to %d events: %w", oldSize, size, err)
		}
		if err := merkle.VerifyConsistency(proof, size, root, oldSize, oldRoot); err != nil {
			return fmt.Errorf("%w: the log of %d events does not extend the %d verified before: %v", ErrLogRewritten, size, oldSize, err)
		}
	}
	return nil
}

// Pin makes key the one trusted for server's checkpoints: remembered if
// nothing is yet; an error matching ErrLogRewritten if another key is.
func (d LogStateDir) Pin(server, key string) error {
	if _, err := checkpoint.NewVerifier(key); err != nil {
		return err
	}
	st, known, err := d.Load(server)
	switch {
	case err != nil:
		return err
	case !known:
		return d.Save(server, LogState{Key: strings.TrimSpace(key)})
	case st.Key != strings.TrimSpace(key):
		return fmt.Errorf("%w: this client trusts %s for it, not %s", ErrLogRewritten, st.Key, strings.TrimSpace(key))
	}
	return nil
}

// text GETs a text/plain resource.
func (c *Client) text(ctx context.Context, path string) (string, error) {
	resp, err := c.Do(ctx, Call{Method: http.MethodGet, Path: path, Header: http.Header{"Accept": {"text/plain"}}})
	if err != nil {
		return "", err
	}
	return string(resp.Body), nil
}

// consistency asks for the proof that the tree of newSize events extends
// the one of oldSize.
func (c *Client) consistency(ctx context.Context, oldSize, newSize uint64) ([]eventstore.Hash, error) {
	var out struct {
		Proof []string `json:"proof"`
	}
	if _, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/ledger/proof/consistency?from=%d&to=%d", oldSize, newSize), nil, &out); err != nil {
		return nil, err
	}
	proof := make([]eventstore.Hash, len(out.Proof))
	for i, h := range out.Proof {
		var err error
		if proof[i], err = eventstore.ParseHash(h); err != nil {
			return nil, fmt.Errorf("the proof's hash %d: %w", i, err)
		}
	}
	return proof, nil
}
