package api

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"stele.dev/stele/app"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
	"stele.dev/stele/eventstore/witness"
	"stele.dev/stele/projections"
)

// The ledger endpoints describe the whole log, not one tenant: its size,
// the hash of its last event, its latest signed checkpoint and its last
// full verification. They reveal how many events the log holds and
// hashes that commit to them, never an event's content, stream or tenant.
// Any signed-in caller may read them, so that an auditor can keep
// checkpoints and later check that the log was only ever appended to.
// With Config.PublicLog the checkpoint, the key and the tlog-tiles
// endpoints (tiles.go) are public, for witnesses and generic clients.

func (s *Server) mountLedger(r chi.Router) {
	r.Get("/ledger/head", s.ledgerHead)
	r.Get("/ledger/status", s.ledgerStatus)
	r.Get("/ledger/witnessed", s.ledgerWitnessed)
	if !s.cfg.PublicLog {
		s.mountLog(r) // the checkpoint, the key and the tiles
	}
	r.Get("/ledger/proof/consistency", s.ledgerConsistency)
	r.Get("/ledger/proof/inclusion", s.ledgerInclusion)
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
	// Cosignatures are the witnesses' cosignatures of the checkpoint,
	// when asked for with cosigned=true (their lines are then in Note).
	Cosignatures []LedgerCosignature `json:"cosignatures,omitempty"`
}

func (s *Server) ledgerCheckpoint(w http.ResponseWriter, r *http.Request) {
	kind := negotiate(r.Header.Get("Accept"), "text/plain", "application/json")
	if kind == "" {
		problem(w, r, http.StatusNotAcceptable, "not_acceptable", "the checkpoint is served as text/plain (the signed note) or application/json")
		return
	}
	cosigned := false
	if v := r.URL.Query().Get("cosigned"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "cosigned", Detail: "cosigned: want true or false"})
			return
		}
		cosigned = b
	}
	cp, ok := s.latestCheckpoint(w, r)
	if !ok {
		return
	}
	signed := cp.Note
	var cs []witness.Cosignature
	if cosigned {
		var err error
		if cs, err = s.cosignatures(r, cp); err != nil {
			s.fail(w, r, err)
			return
		}
		signed = witness.AppendCosignatures(cp.Note, cs)
	}
	w.Header().Set("Vary", "Accept")
	if kind == "text/plain" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(signed)
		return
	}
	origin, _, _ := strings.Cut(string(cp.Note), "\n")
	writeJSON(w, http.StatusOK, LedgerCheckpoint{Origin: origin, Size: cp.Size, RootHash: cp.Root.String(), Note: string(signed), CreatedAt: cp.CreatedAt.UTC(),
		Cosignatures: ledgerCosignatures(cs)})
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

// LedgerKey is the verifier key of the ledger's checkpoints.
type LedgerKey struct {
	// Origin is the log's origin, the key's name.
	Origin string `json:"origin"`
	// Key is the note verifier key, "<origin>+<key hash>+<base64 key>".
	Key string `json:"key"`
}

func (s *Server) ledgerKey(w http.ResponseWriter, r *http.Request) {
	kind := negotiate(r.Header.Get("Accept"), "text/plain", "application/json")
	if kind == "" {
		problem(w, r, http.StatusNotAcceptable, "not_acceptable", "the key is served as text/plain (the verifier key) or application/json")
		return
	}
	k := s.cfg.CheckpointKey
	if k == nil {
		problem(w, r, http.StatusNotFound, "not_found", "no key configured: this server publishes no checkpoint verifier key")
		return
	}
	w.Header().Set("Vary", "Accept")
	if kind == "text/plain" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(k.String()))
		return
	}
	writeJSON(w, http.StatusOK, LedgerKey{Origin: k.Origin(), Key: k.String()})
}

// LedgerConsistencyProof proves that the log's first From events are the
// first From of its first To events (RFC 6962 consistency proof).
type LedgerConsistencyProof struct {
	From  uint64   `json:"from"`
	To    uint64   `json:"to"`
	Proof []string `json:"proof"`
}

// LedgerInclusionProof proves that the event at Position (its hash,
// EventHash) is leaf LeafIndex of the tree of the log's first Size events
// (RFC 6962 audit path).
type LedgerInclusionProof struct {
	Position  uint64   `json:"position"`
	Size      uint64   `json:"size"`
	LeafIndex uint64   `json:"leaf_index"`
	EventHash string   `json:"event_hash"`
	Proof     []string `json:"proof"`
}

// ledgerQuerySize reads a tree size or position from the query: 1 or
// more. present is false when it is absent; on a bad value it answers and
// returns ok false.
func ledgerQuerySize(w http.ResponseWriter, r *http.Request, name string, required bool) (n uint64, present, ok bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		if required {
			writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: name, Detail: name + ": required"})
			return 0, false, false
		}
		return 0, false, true
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: name, Detail: name + ": want a whole number of events, 1 or more"})
		return 0, false, false
	}
	return n, true, true
}

// ledgerTreeSize is the size a proof is for: the one asked for (field),
// which must not be beyond the head, or the latest checkpoint's.
func (s *Server) ledgerTreeSize(w http.ResponseWriter, r *http.Request, field string, size uint64, given bool) (uint64, bool) {
	if s.cfg.Ledger == nil {
		s.fail(w, r, errNoLedger)
		return 0, false
	}
	if !given {
		cp, err := s.cfg.Ledger.LatestCheckpoint(r.Context())
		if errors.Is(err, eventstore.ErrNotFound) {
			problem(w, r, http.StatusNotFound, "not_found", "the ledger has no signed checkpoint yet; name the tree size ("+field+")")
			return 0, false
		}
		if err != nil {
			s.fail(w, r, ledgerErr(err))
			return 0, false
		}
		return cp.Size, true
	}
	h, err := s.cfg.Ledger.Head(r.Context())
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return 0, false
	}
	if size > h.Position {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: field,
			Detail: fmt.Sprintf("%s: the log holds %d events, fewer than %d", field, h.Position, size)})
		return 0, false
	}
	return size, true
}

func ledgerHexes(hs []eventstore.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func (s *Server) ledgerConsistency(w http.ResponseWriter, r *http.Request) {
	from, _, ok := ledgerQuerySize(w, r, "from", true)
	if !ok {
		return
	}
	to, given, ok := ledgerQuerySize(w, r, "to", false)
	if !ok {
		return
	}
	if given && from > to {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "from", Detail: fmt.Sprintf("from: %d is above to (%d)", from, to)})
		return
	}
	if to, ok = s.ledgerTreeSize(w, r, "to", to, given); !ok {
		return
	}
	if from > to {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "from",
			Detail: fmt.Sprintf("from: %d is above the latest checkpoint's size (%d)", from, to)})
		return
	}
	proof, err := merkle.ConsistencyProof(r.Context(), s.cfg.Ledger, to, from)
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	writeJSON(w, http.StatusOK, LedgerConsistencyProof{From: from, To: to, Proof: ledgerHexes(proof)})
}

func (s *Server) ledgerInclusion(w http.ResponseWriter, r *http.Request) {
	pos, _, ok := ledgerQuerySize(w, r, "position", true)
	if !ok {
		return
	}
	size, given, ok := ledgerQuerySize(w, r, "size", false)
	if !ok {
		return
	}
	if given && pos > size {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "position", Detail: fmt.Sprintf("position: %d is beyond size (%d)", pos, size)})
		return
	}
	if size, ok = s.ledgerTreeSize(w, r, "size", size, given); !ok {
		return
	}
	if pos > size {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "position",
			Detail: fmt.Sprintf("position: %d is beyond the latest checkpoint's size (%d)", pos, size)})
		return
	}
	recs, err := s.cfg.Ledger.ReadAll(r.Context(), pos, 1)
	if err == nil && (len(recs) == 0 || recs[0].Position != pos) {
		err = fmt.Errorf("api: the log has no event at position %d below its size %d", pos, size)
	}
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	proof, err := merkle.InclusionProof(r.Context(), s.cfg.Ledger, size, pos-1)
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	writeJSON(w, http.StatusOK, LedgerInclusionProof{Position: pos, Size: size, LeafIndex: pos - 1, EventHash: recs[0].Hash.String(), Proof: ledgerHexes(proof)})
}
