// Package cli is Stele's client side: an HTTP client of the API (sign-in
// credentials, problem documents as errors) and the flows the stele
// command runs on a person's or a CI job's machine, starting with the
// approval request of seed 003: ask, let a person approve in a browser,
// and receive the values sealed to a one-time key.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client talks to a Stele server.
type Client struct {
	// Server is the base URL ("https://stele.example.com").
	Server string
	// Token is a service token or a session credential; empty for the
	// requests that need none (opening and collecting an approval).
	Token string
	// HTTP does the requests (http.DefaultClient when nil).
	HTTP *http.Client
	// UserAgent names the client in the server's log.
	UserAgent string
}

// Problem is an error the server answered, as its problem document says.
type Problem struct {
	Status    int    `json:"status"`
	Code      string `json:"code"`
	Title     string `json:"title"`
	Detail    string `json:"detail"`
	RequestID string `json:"request_id"`
}

func (p *Problem) Error() string {
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	if msg == "" {
		msg = http.StatusText(p.Status)
	}
	return fmt.Sprintf("%s (%s)", msg, p.Code)
}

// IsCode reports whether err is a problem with that code.
func IsCode(err error, code string) bool {
	var p *Problem
	return errors.As(err, &p) && p.Code == code
}

// Call is one request to the API.
type Call struct {
	Method string
	// Path is below the server's URL, with its query ("/v1/me").
	Path string
	// JSON is marshalled as the body when set; Body is sent as it is,
	// with ContentType, otherwise.
	JSON        any
	Body        []byte
	ContentType string
	// Header holds extra request headers (If-Match, Accept…).
	Header http.Header
}

// Response is an answer that is not a problem.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Position is the log position a write answered with (X-Stele-Position),
// or 0.
func (r *Response) Position() uint64 {
	var p uint64
	fmt.Sscan(r.Header.Get("X-Stele-Position"), &p)
	return p
}

// Decode unmarshals the body into out.
func (r *Response) Decode(out any) error {
	if err := json.Unmarshal(r.Body, out); err != nil {
		return fmt.Errorf("the server's answer is not the expected JSON: %w", err)
	}
	return nil
}

// maxAnswer bounds what the client reads of one answer.
const maxAnswer = 64 << 20

// Do sends a request. An answer with status 400 or above is returned as
// a *Problem; a failure to reach the server says so and names it.
func (c *Client) Do(ctx context.Context, call Call) (*Response, error) {
	resp, err := c.send(ctx, call)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", c.Server, err)
	}
	if resp.StatusCode >= 400 {
		return nil, problemOf(resp, data)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// send makes the HTTP request and returns the raw answer, whatever its
// status.
func (c *Client) send(ctx context.Context, call Call) (*http.Response, error) {
	var body io.Reader
	ct := call.ContentType
	switch {
	case call.JSON != nil:
		b, err := json.Marshal(call.JSON)
		if err != nil {
			return nil, err
		}
		body, ct = bytes.NewReader(b), "application/json"
	case call.Body != nil:
		body = bytes.NewReader(call.Body)
	}
	req, err := http.NewRequestWithContext(ctx, call.Method, strings.TrimRight(c.Server, "/")+call.Path, body)
	if err != nil {
		return nil, err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Accept", "application/json")
	for k, vs := range call.Header {
		req.Header[k] = vs
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	ua := c.UserAgent
	if ua == "" {
		ua = "stele-cli"
	}
	req.Header.Set("User-Agent", ua)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cannot reach %s: %w", c.Server, unwrapURLError(err))
	}
	return resp, nil
}

// problemOf reads an error answer as a problem document.
func problemOf(resp *http.Response, data []byte) *Problem {
	p := &Problem{Status: resp.StatusCode}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		json.Unmarshal(data, p)
	}
	if p.Code == "" {
		p.Code = "http_" + fmt.Sprint(resp.StatusCode)
	}
	if p.Status == 0 {
		p.Status = resp.StatusCode
	}
	return p
}

// do sends a JSON request and decodes a JSON answer into out; the status
// is returned for answers that are not problems.
func (c *Client) do(ctx context.Context, method, path string, in, out any) (int, error) {
	resp, err := c.Do(ctx, Call{Method: method, Path: path, JSON: in})
	if err != nil {
		var p *Problem
		if errors.As(err, &p) {
			return p.Status, err
		}
		return 0, err
	}
	if out != nil && len(resp.Body) > 0 {
		if err := resp.Decode(out); err != nil {
			return resp.Status, err
		}
	}
	return resp.Status, nil
}

// unwrapURLError drops the "Get URL:" prefix net/http adds.
func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
