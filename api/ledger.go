package api

import (
	"errors"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/projections"
)

// The ledger endpoints describe the whole log, not one tenant: its size,
// the hash of its last event, its latest signed checkpoint and its last
// full verification. They reveal how many events the log holds and
// hashes that commit to them, never an event's content, stream or tenant.
// Any signed-in caller may read them, so that an auditor can keep
// checkpoints and later check that the log was only ever appended to.

func (s *Server) mountLedger(r chi.Router) {
	r.Get("/ledger/head", s.ledgerHead)
	r.Get("/ledger/checkpoint", s.ledgerCheckpoint)
	r.Get("/ledger/status", s.ledgerStatus)
}

// LedgerHead is the log's last event: its position and hash.
type LedgerHead struct {
	Position   uint64     `json:"position"`
	Hash       string     `json:"hash"`
	RecordedAt *time.Time `json:"recorded_at,omitempty"`
}

func (s *Server) ledgerHead(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ledger == nil {
		s.fail(w, r, errNoLedger)
		return
	}
	h, err := s.cfg.Ledger.Head(r.Context())
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	out := LedgerHead{Position: h.Position, Hash: h.Hash.String()}
	if h.Position > 0 && !h.RecordedAt.IsZero() {
		t := h.RecordedAt.UTC()
		out.RecordedAt = &t
	}
	writeJSON(w, http.StatusOK, out)
}

// errNoLedger: the server runs without a ledger to read.
var errNoLedger = errors.New("api: no ledger configured")

// ledgerErr marks a store failure as the ledger being unavailable.
func ledgerErr(err error) error {
	if errors.Is(err, eventstore.ErrNotFound) {
		return err
	}
	return errors.Join(app.ErrUnavailable, err)
}

// LedgerCheckpoint is a signed checkpoint: the size of the log and the
// Merkle root over its first Size events, and the signed note (C2SP
// tlog-checkpoint) that commits to both.
type LedgerCheckpoint struct {
	Origin    string    `json:"origin"`
	Size      uint64    `json:"size"`
	RootHash  string    `json:"root_hash"`
	Note      string    `json:"note"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *Server) ledgerCheckpoint(w http.ResponseWriter, r *http.Request) {
	kind := negotiate(r.Header.Get("Accept"), "text/plain", "application/json")
	if kind == "" {
		problem(w, r, http.StatusNotAcceptable, "not_acceptable", "the checkpoint is served as text/plain (the signed note) or application/json")
		return
	}
	if s.cfg.Ledger == nil {
		s.fail(w, r, errNoLedger)
		return
	}
	cp, err := s.cfg.Ledger.LatestCheckpoint(r.Context())
	if errors.Is(err, eventstore.ErrNotFound) {
		problem(w, r, http.StatusNotFound, "not_found", "the ledger has no signed checkpoint yet")
		return
	}
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	w.Header().Set("Vary", "Accept")
	if kind == "text/plain" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(cp.Note)
		return
	}
	origin, _, _ := strings.Cut(string(cp.Note), "\n")
	writeJSON(w, http.StatusOK, LedgerCheckpoint{Origin: origin, Size: cp.Size, RootHash: cp.Root.String(), Note: string(cp.Note), CreatedAt: cp.CreatedAt.UTC()})
}

// negotiate picks the first of offers that the Accept header accepts with
// the highest quality (RFC 9110, section 12.5.1); the first offer when the
// header is absent; "" when none is acceptable.
func negotiate(accept string, offers ...string) string {
	if strings.TrimSpace(accept) == "" {
		return offers[0]
	}
	best, bestQ, bestSpec := "", 0.0, -1
	for _, offer := range offers {
		// The most specific range that matches the offer sets its quality.
		q, spec := 0.0, -1
		for _, part := range strings.Split(accept, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			s := -1
			switch {
			case mt == offer:
				s = 2
			case mt == "*/*":
				s = 0
			case strings.HasSuffix(mt, "/*") && strings.HasPrefix(offer, strings.TrimSuffix(mt, "*")):
				s = 1
			}
			if s < 0 || s < spec {
				continue
			}
			pq := 1.0
			if v, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && f <= 1 {
					pq = f
				}
			}
			q, spec = pq, s
		}
		if spec >= 0 && q > 0 && (q > bestQ || (q == bestQ && spec > bestSpec)) {
			best, bestQ, bestSpec = offer, q, spec
		}
	}
	return best
}

// LedgerState is the ledger's status: its head, latest checkpoint and
// last full verification.
type LedgerState struct {
	Head           LedgerStateHead        `json:"head"`
	LastCheckpoint *LedgerStateCheckpoint `json:"last_checkpoint,omitempty"`
	// LastVerification is absent until a full verification has run.
	LastVerification *LedgerVerification `json:"last_verification,omitempty"`
}

// LedgerStateHead is the log's size and when its last event was recorded.
type LedgerStateHead struct {
	Position   uint64     `json:"position"`
	RecordedAt *time.Time `json:"recorded_at,omitempty"`
}

// LedgerStateCheckpoint is the latest signed checkpoint's size and time.
type LedgerStateCheckpoint struct {
	Size      uint64    `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// LedgerVerification is the outcome of a full verification of the log.
type LedgerVerification struct {
	At     time.Time `json:"at"`
	Events uint64    `json:"events"`
	OK     bool      `json:"ok"`
	// Failure says what failed and at which position; the names of
	// streams are withheld (they name tenants' objects).
	Failure string `json:"failure,omitempty"`
}

// quoted matches the quoted names (streams) in a verification failure.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

func (s *Server) ledgerStatus(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Pool == nil {
		s.fail(w, r, errNoReadModels)
		return
	}
	if !s.awaitPosition(w, r, projections.Ledger{}.Name()) {
		return
	}
	st, err := projections.LedgerState(r.Context(), s.cfg.Pool)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := LedgerState{Head: LedgerStateHead{Position: st.Head}}
	if st.Head > 0 && !st.HeadAt.IsZero() {
		t := st.HeadAt.UTC()
		out.Head.RecordedAt = &t
	}
	if st.Checkpoint > 0 {
		out.LastCheckpoint = &LedgerStateCheckpoint{Size: st.Checkpoint, CreatedAt: st.CheckpointAt.UTC()}
	}
	if !st.VerifiedAt.IsZero() {
		out.LastVerification = &LedgerVerification{At: st.VerifiedAt.UTC(), Events: st.VerifiedEvents, OK: st.VerifiedOK,
			Failure: quoted.ReplaceAllString(st.Failure, `"…"`)}
	}
	writeJSON(w, http.StatusOK, out)
}
