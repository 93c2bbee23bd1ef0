package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"stele.dev/stele/crypto"
)

// SecretsRequest is what an approval request for secrets asks.
type SecretsRequest struct {
	Org, Project, Env string
	// Bundle, or Keys: what is asked for.
	Bundle string
	Keys   []string
	// TTL is how long the request stays open (0: the server's default).
	TTL time.Duration
}

// Ticket is an open request, as the requester shows it to the approver.
type Ticket struct {
	ID              string    `json:"id"`
	VerificationURL string    `json:"verification_url"`
	UserCode        string    `json:"user_code"`
	ExpiresAt       time.Time `json:"expires_at"`
	PollToken       string    `json:"poll_token"`
}

// Delivery is what an approved request handed over, opened.
type Delivery struct {
	// Values are the secrets let through, by name.
	Values map[string]string
	// Versions are the versions delivered, by name.
	Versions map[string]uint64
}

// Errors a request ends with, besides the server's problems.
var (
	ErrDenied  = errors.New("the request was denied")
	ErrExpired = errors.New("the request expired before anyone approved it")
	ErrTimeout = errors.New("gave up waiting for an approval")
)

// Requester holds the one-time key of one request; the private key never
// leaves memory.
type Requester struct {
	c         *Client
	pub, priv *[32]byte
	ticket    Ticket
}

// NewRequester makes a fresh one-time X25519 key pair.
func NewRequester(c *Client) (*Requester, error) {
	pub, priv, err := crypto.GenerateBoxKeyPair()
	if err != nil {
		return nil, err
	}
	return &Requester{c: c, pub: pub, priv: priv}, nil
}

// Open opens the request on the server.
func (q *Requester) Open(ctx context.Context, r SecretsRequest) (Ticket, error) {
	body := map[string]any{"kind": "secrets", "public_key": base64.StdEncoding.EncodeToString(q.pub[:]),
		"org": r.Org, "project": r.Project, "env": r.Env}
	if r.Bundle != "" {
		body["bundle"] = r.Bundle
	} else {
		body["keys"] = r.Keys
	}
	if r.TTL > 0 {
		body["ttl_seconds"] = int(r.TTL / time.Second)
	}
	if _, err := q.c.do(ctx, http.MethodPost, "/v1/approvals", body, &q.ticket); err != nil {
		return Ticket{}, err
	}
	return q.ticket, nil
}

// OpenLogin opens a sign-in request: whoever approves it, signed in in a
// browser, starts a CLI session that is delivered sealed to this
// request's key.
func (q *Requester) OpenLogin(ctx context.Context, ttl time.Duration) (Ticket, error) {
	body := map[string]any{"kind": "login", "public_key": base64.StdEncoding.EncodeToString(q.pub[:])}
	if ttl > 0 {
		body["ttl_seconds"] = int(ttl / time.Second)
	}
	if _, err := q.c.do(ctx, http.MethodPost, "/v1/approvals", body, &q.ticket); err != nil {
		return Ticket{}, err
	}
	return q.ticket, nil
}

// Wait long-polls until the request is decided (or ctx ends), then
// collects and opens the delivery of a request for secrets. The server
// holds each poll until something happens, so this is not busy polling.
func (q *Requester) Wait(ctx context.Context) (Delivery, error) {
	plain, keys, err := q.collect(ctx)
	if err != nil {
		return Delivery{}, err
	}
	d := Delivery{Values: map[string]string{}, Versions: map[string]uint64{}}
	err = json.Unmarshal(plain, &d.Values)
	clear(plain)
	if err != nil {
		return Delivery{}, fmt.Errorf("the delivery is not the expected JSON: %w", err)
	}
	for _, k := range keys {
		d.Versions[k.Name] = k.Version
	}
	return d, nil
}

// Login is a session delivered to a sign-in request.
type Login struct {
	Credential string    `json:"credential"`
	User       string    `json:"user"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// WaitLogin is Wait for a sign-in request.
func (q *Requester) WaitLogin(ctx context.Context) (Login, error) {
	plain, _, err := q.collect(ctx)
	if err != nil {
		return Login{}, err
	}
	var l Login
	err = json.Unmarshal(plain, &l)
	clear(plain)
	if err != nil || l.Credential == "" {
		return Login{}, fmt.Errorf("the sign-in delivered is not the expected JSON")
	}
	return l, nil
}

type deliveredKey struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
}

// collect long-polls until the request is decided and opens the sealed
// box it delivers.
func (q *Requester) collect(ctx context.Context) ([]byte, []deliveredKey, error) {
	for {
		wait := 55
		if dl, ok := ctx.Deadline(); ok {
			wait = max(1, min(wait, int(time.Until(dl)/time.Second)))
		}
		var out struct {
			Status    string         `json:"status"`
			SealedBox string         `json:"sealed_box"`
			Keys      []deliveredKey `json:"keys"`
		}
		status, err := q.c.do(ctx, http.MethodPost, "/v1/approvals/"+q.ticket.ID+"/collect",
			map[string]any{"poll_token": q.ticket.PollToken, "wait_seconds": wait}, &out)
		switch {
		case IsCode(err, "approval_denied"):
			return nil, nil, ErrDenied
		case IsCode(err, "expired"):
			return nil, nil, ErrExpired
		case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
			return nil, nil, ErrTimeout
		case IsCode(err, "rate_limited"), IsCode(err, "busy"):
			if err := sleep(ctx, 2*time.Second); err != nil {
				return nil, nil, ErrTimeout
			}
			continue
		case err != nil:
			return nil, nil, err
		case status == http.StatusAccepted:
			continue // still pending: poll again at once
		}
		sealed, err := base64.StdEncoding.DecodeString(out.SealedBox)
		if err != nil {
			return nil, nil, fmt.Errorf("the delivery is not base64: %w", err)
		}
		plain, err := crypto.OpenSealed(sealed, q.pub, q.priv)
		if err != nil {
			return nil, nil, fmt.Errorf("the delivery does not open with this request's key: %w", err)
		}
		return plain, out.Keys, nil
	}
}
