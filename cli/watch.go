package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Env names an environment.
type Env struct{ Org, Project, Env string }

// Path is the environment's API path.
func (e Env) Path() string {
	return "/v1/orgs/" + url.PathEscape(e.Org) + "/projects/" + url.PathEscape(e.Project) + "/envs/" + url.PathEscape(e.Env)
}

func (e Env) String() string { return e.Org + "/" + e.Project + "/" + e.Env }

// Change is a change to a secret of an environment, as the server
// announces it: the name and the new version, never a value.
type Change struct {
	Position uint64 `json:"position"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Version  uint64 `json:"version,omitempty"`
}

// WatchChanges follows the changes to env's secrets after position
// after, as server-sent events, and sends each one on the returned
// channel until ctx ends; then it closes the channel. The server pushes
// the changes as they are appended to the log; a dropped stream is
// reopened where it left off (Last-Event-ID) after a short pause. The
// ready channel is closed once the first stream is open. Errors that
// retrying cannot mend (no such environment, no access) end the watch
// and are sent on errc.
func (c *Client) WatchChanges(ctx context.Context, env Env, after uint64) (changes <-chan Change, ready <-chan struct{}, errc <-chan error) {
	out := make(chan Change, 16)
	rd := make(chan struct{})
	ec := make(chan error, 1)
	go func() {
		defer close(out)
		last := after
		backoff := 250 * time.Millisecond
		opened := false
		for ctx.Err() == nil {
			err := c.watchOnce(ctx, env, last, func() {
				if !opened {
					opened = true
					close(rd)
				}
				backoff = 250 * time.Millisecond
			}, func(ch Change) bool {
				last = max(last, ch.Position)
				select {
				case out <- ch:
					return true
				case <-ctx.Done():
					return false
				}
			})
			if ctx.Err() != nil {
				return
			}
			var p *Problem
			if errors.As(err, &p) && p.Status < 500 && p.Status != http.StatusTooManyRequests {
				ec <- err
				return
			}
			if sleep(ctx, backoff) != nil {
				return
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}()
	return out, rd, ec
}

// watchOnce reads one stream of changes until it ends.
func (c *Client) watchOnce(ctx context.Context, env Env, after uint64, opened func(), fn func(Change) bool) error {
	h := http.Header{"Accept": {"text/event-stream"}}
	if after > 0 {
		h.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	// A stream lasts as long as it is watched: no overall timeout.
	sc := *c
	if c.HTTP != nil {
		hc := *c.HTTP
		hc.Timeout = 0
		sc.HTTP = &hc
	}
	resp, err := sc.send(ctx, Call{Method: http.MethodGet, Path: fmt.Sprintf("%s/changes?after=%d", env.Path(), after), Header: h})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		data := make([]byte, 64<<10)
		n, _ := resp.Body.Read(data)
		return problemOf(resp, data[:n])
	}
	opened()
	sc2 := bufio.NewScanner(resp.Body)
	sc2.Buffer(make([]byte, 4096), 1<<20)
	var event, data string
	for sc2.Scan() {
		line := sc2.Text()
		switch {
		case line == "":
			if event == "change" && data != "" {
				var ch Change
				if err := json.Unmarshal([]byte(data), &ch); err == nil && !fn(ch) {
					return nil
				}
			}
			event, data = "", ""
		case strings.HasPrefix(line, ":"): // a comment: ready, keepalive
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "data":
				if data != "" {
					data += "\n"
				}
				data += value
			}
		}
	}
	if err := sc2.Err(); err != nil {
		return err
	}
	return fmt.Errorf("the server ended the stream of changes")
}
