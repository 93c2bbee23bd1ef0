package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

// Log is what the cosigner reads of the ledger: its latest checkpoint, and
// the tree hashes consistency proofs are made of. An eventstore.Store is
// one.
type Log interface {
	LatestCheckpoint(ctx context.Context) (eventstore.Checkpoint, error)
	merkle.Reader
}

// ErrConflict means a witness reports that it cosigned another tree of
// this log at the same size: the log has shown two histories.
var ErrConflict = errors.New("witness: the witness holds a conflicting checkpoint")

// ErrRefused means a witness refused a checkpoint for a reason that needs
// an operator: it does not know the log or its key, or the request or
// its consistency proof is wrong in its eyes.
var ErrRefused = errors.New("witness: refused")

// Cosigner sends the ledger's latest checkpoint to each witness when it
// has not cosigned it yet, and stores the cosignatures that verify.
// Witnesses are independent: one that is down or refuses does not hold up
// the others, nor anything else the server does.
type Cosigner struct {
	Log       Log
	Store     *Store
	Witnesses []Witness
	// Client sends the requests; one with a 30s timeout when nil.
	Client *http.Client
	// Poll is how often to look for a new checkpoint (default 2s);
	// after a failure a witness is retried after Poll, doubled with each
	// further failure up to MaxBackoff (default 5m).
	Poll       time.Duration
	MaxBackoff time.Duration
	// Logger receives a line per cosignature and per failure; slog's
	// default when nil.
	Logger *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu    sync.Mutex
	state map[string]*witnessState // by verifier key
}

// witnessState is what the cosigner knows of one witness.
type witnessState struct {
	loaded bool
	// cosigned is the largest size this server holds a cosignature of;
	// seen the size the witness last cosigned, as far as we know (the
	// "old size" of the next request).
	cosigned, seen uint64
	// attempted is the size of the checkpoint last looked at.
	attempted   uint64
	failures    int
	lastAttempt time.Time
	lastErr     string
	problem     string
	nextAttempt time.Time
}

// maxAnswer bounds a witness's answer.
const maxAnswer = 64 << 10

func (c *Cosigner) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Cosigner) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c *Cosigner) client() *http.Client {
	if c.Client != nil {
		return c.Client
	}
	return &http.Client{Timeout: 30 * time.Second}
}

func (c *Cosigner) poll() time.Duration {
	if c.Poll > 0 {
		return c.Poll
	}
	return 2 * time.Second
}

func (c *Cosigner) maxBackoff() time.Duration {
	if c.MaxBackoff > 0 {
		return c.MaxBackoff
	}
	return 5 * time.Minute
}

func (c *Cosigner) stateOf(w Witness) *witnessState {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == nil {
		c.state = map[string]*witnessState{}
	}
	st, ok := c.state[w.Key]
	if !ok {
		st = &witnessState{}
		c.state[w.Key] = st
	}
	return st
}

// Run asks each witness to cosign every new checkpoint until ctx is done.
// It returns at once when no witness is configured.
func (c *Cosigner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range c.Witnesses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.follow(ctx, w)
		}()
	}
	wg.Wait()
}

// follow submits to one witness, backing off while it fails.
func (c *Cosigner) follow(ctx context.Context, w Witness) {
	st := c.stateOf(w)
	for {
		wait := c.poll()
		_, err := c.Submit(ctx, w)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		failures := st.failures
		if err != nil {
			for i := 1; i < failures && wait < c.maxBackoff(); i++ {
				wait *= 2
			}
			wait = min(wait, c.maxBackoff())
		}
		st.nextAttempt = c.now().Add(wait)
		c.mu.Unlock()
		if err != nil {
			if errors.Is(err, ErrBadCosignature) || errors.Is(err, ErrConflict) || errors.Is(err, ErrRefused) {
				c.logger().Error("witness cosignature refused", "witness", w.Name, "url", w.URL, "err", err, "failures", failures, "retry_in", wait.String())
			} else {
				c.logger().Warn("witness unavailable", "witness", w.Name, "url", w.URL, "err", err, "failures", failures, "retry_in", wait.String())
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Submit asks the witness to cosign the log's latest checkpoint unless
// this server already holds its cosignature of it, and stores the
// cosignature if it verifies. It reports whether it stored one. It
// follows the witness's 409 answers that name the size it holds (a few
// times); an answer that does not verify is an error matching
// ErrBadCosignature and is not stored.
func (c *Cosigner) Submit(ctx context.Context, w Witness) (bool, error) {
	st := c.stateOf(w)
	attempted, err := c.submitLatest(ctx, w, st)
	c.mu.Lock()
	defer c.mu.Unlock()
	if attempted || err != nil {
		st.lastAttempt = c.now()
		st.lastErr, st.problem = "", problemOf(err)
		if err != nil {
			st.lastErr = err.Error()
			st.failures++
		} else {
			st.failures = 0
		}
	}
	return attempted && err == nil && st.cosigned >= st.attempted, err
}

// submitLatest does Submit's work; it reports whether it sent anything.
func (c *Cosigner) submitLatest(ctx context.Context, w Witness, st *witnessState) (bool, error) {
	cp, err := c.Log.LatestCheckpoint(ctx)
	if errors.Is(err, eventstore.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	loaded := st.loaded
	c.mu.Unlock()
	if !loaded {
		n, err := c.Store.LatestSize(ctx, w.Key)
		if err != nil {
			return false, err
		}
		c.mu.Lock()
		st.loaded, st.cosigned, st.seen = true, n, n
		c.mu.Unlock()
	}
	c.mu.Lock()
	cosigned, seen := st.cosigned, st.seen
	st.attempted = cp.Size
	c.mu.Unlock()
	if cosigned >= cp.Size {
		return false, nil
	}
	return true, c.submit(ctx, w, st, cp, seen)
}

func (c *Cosigner) submit(ctx context.Context, w Witness, st *witnessState, cp eventstore.Checkpoint, old uint64) error {
	const maxTries = 4
	for try := 0; ; try++ {
		if old > cp.Size {
			// The witness cosigned a larger tree: another server signed
			// and sent a newer checkpoint; the next poll sees it.
			return nil
		}
		status, answer, header, err := c.post(ctx, w, cp, old)
		if err != nil {
			return err
		}
		switch status {
		case http.StatusOK:
			cs, err := Open(cp, answer, w, c.now())
			if err != nil {
				return err
			}
			if err := c.Store.Add(ctx, cs); err != nil {
				return err
			}
			c.mu.Lock()
			st.cosigned, st.seen = max(st.cosigned, cp.Size), cp.Size
			c.mu.Unlock()
			c.logger().Info("checkpoint cosigned", "witness", w.Name, "size", cp.Size, "cosigned_at", cs.CosignedAt.Format(time.RFC3339))
			return nil
		case http.StatusConflict:
			// With a size: the witness holds another size than old. Without
			// one, or with old itself: it holds another tree of that size.
			mt, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
			if mt != "text/x.tlog.size" {
				return fmt.Errorf("%w: %s answered 409 Conflict to the checkpoint of size %d from size %d%s", ErrConflict, w.Name, cp.Size, old, explain(0, answer))
			}
			n, err := strconv.ParseUint(strings.TrimSuffix(string(answer), "\n"), 10, 64)
			if err != nil {
				return fmt.Errorf("witness %s: 409 Conflict with a malformed size %q", w.Name, firstLine(answer))
			}
			if n == old {
				return fmt.Errorf("%w: %s cosigned another tree of this log at size %d than the checkpoint sent at size %d", ErrConflict, w.Name, n, cp.Size)
			}
			c.mu.Lock()
			st.seen = n
			c.mu.Unlock()
			c.logger().Info("witness holds another size; sending a proof from it", "witness", w.Name, "sent_old_size", old, "witness_size", n, "size", cp.Size)
			old = n
			if try+1 >= maxTries {
				return fmt.Errorf("witness %s: still a conflict after %d requests", w.Name, maxTries)
			}
		case http.StatusNotFound, http.StatusForbidden, http.StatusBadRequest, http.StatusUnprocessableEntity:
			return fmt.Errorf("%w: witness %s: %d %s%s", ErrRefused, w.Name, status, http.StatusText(status), explain(status, answer))
		default:
			return fmt.Errorf("witness %s: %d %s%s", w.Name, status, http.StatusText(status), explain(status, answer))
		}
	}
}

// post sends one add-checkpoint request.
func (c *Cosigner) post(ctx context.Context, w Witness, cp eventstore.Checkpoint, old uint64) (int, []byte, http.Header, error) {
	body, err := Request(ctx, c.Log, cp, old)
	if err != nil {
		return 0, nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL+"/add-checkpoint", bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("User-Agent", "stele")
	resp, err := c.client().Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("witness %s: %w", w.Name, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("witness %s: reading the answer: %w", w.Name, err)
	}
	if len(answer) > maxAnswer {
		return 0, nil, nil, fmt.Errorf("witness %s: an answer over %d bytes", w.Name, maxAnswer)
	}
	return resp.StatusCode, answer, resp.Header, nil
}

// Request returns the body of an add-checkpoint request for cp from the
// witness's size old: the old size line, the consistency proof from old
// to cp.Size (none from 0), an empty line and the checkpoint.
func Request(ctx context.Context, r merkle.Reader, cp eventstore.Checkpoint, old uint64) ([]byte, error) {
	var proof []eventstore.Hash
	if old > 0 && old < cp.Size {
		var err error
		if proof, err = merkle.ConsistencyProof(ctx, r, cp.Size, old); err != nil {
			return nil, fmt.Errorf("witness: consistency proof %d→%d: %w", old, cp.Size, err)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.Write(cp.Note)
	return b.Bytes(), nil
}

// explain says what a witness's refusal means (C2SP tlog-witness).
func explain(status int, answer []byte) string {
	var why string
	switch status {
	case http.StatusNotFound:
		why = "the witness does not know this log's origin: give its operator the log's verifier key"
	case http.StatusForbidden:
		why = "the witness does not trust the key that signed the checkpoint"
	case http.StatusBadRequest:
		why = "the witness refused the request as malformed"
	case http.StatusUnprocessableEntity:
		why = "the witness says the consistency proof does not verify"
	}
	if l := firstLine(answer); l != "" {
		if why != "" {
			why += "; "
		}
		why += "it says: " + l
	}
	if why == "" {
		return ""
	}
	return " (" + why + ")"
}

// firstLine is the start of a witness's answer, for logs.
func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// Status is what the server knows of one configured witness.
type Status struct {
	Witness string
	Key     string
	URL     string
	// Latest is the newest cosignature stored for the witness's key; nil
	// before the first.
	Latest *Cosignature
	// LastAttempt is when this process last sent it a checkpoint;
	// LastError what went wrong then ("" when it worked); Failures how
	// many attempts in a row failed; NextAttempt when it tries again
	// after a failure.
	LastAttempt time.Time
	LastError   string
	Failures    int
	NextAttempt time.Time
	// Problem classifies LastError: "conflict" (the witness holds
	// another history of the log), "bad_cosignature", "refused" (the
	// witness does not know the log or its key, or rejects the request
	// or proof) or "unavailable"; "" when the last attempt worked.
	Problem string
}

// problemOf classifies a submission error for Status.
func problemOf(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrBadCosignature):
		return "bad_cosignature"
	case errors.Is(err, ErrRefused):
		return "refused"
	}
	return "unavailable"
}

// Status reports on each configured witness.
func (c *Cosigner) Status(ctx context.Context) ([]Status, error) {
	latest, err := c.Store.Latest(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(c.Witnesses))
	for _, w := range c.Witnesses {
		s := Status{Witness: w.Name, Key: w.Key, URL: w.URL}
		if l, ok := latest[w.Key]; ok {
			s.Latest = &l
		}
		c.mu.Lock()
		if st, ok := c.state[w.Key]; ok {
			s.LastAttempt, s.LastError, s.Problem, s.Failures = st.lastAttempt, st.lastErr, st.problem, st.failures
			if st.failures > 0 {
				s.NextAttempt = st.nextAttempt
			}
		}
		c.mu.Unlock()
		out = append(out, s)
	}
	return out, nil
}

// Cosignatures returns the stored cosignatures of a checkpoint.
func (c *Cosigner) Cosignatures(ctx context.Context, size uint64, root eventstore.Hash) ([]Cosignature, error) {
	return c.Store.Cosignatures(ctx, size, root)
}

// Witnessed lists cosigned checkpoints, newest first (see Store.Witnessed).
func (c *Cosigner) Witnessed(ctx context.Context, before uint64, limit int) ([]Witnessed, error) {
	return c.Store.Witnessed(ctx, before, limit)
}
