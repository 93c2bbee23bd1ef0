package api

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/tlog"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
	"stele.dev/stele/eventstore/witness"
)

// The log as C2SP tlog-tiles (https://c2sp.org/tlog-tiles) serves it,
// under /v1/ledger/log/, so that transparency-log clients, monitors and
// witnesses that know nothing of Stele can follow the ledger: the latest
// checkpoint, the Merkle tree as hash tiles (height 8), and entry bundles.
// The log's entries are the events' hashes, so an entry bundle holds 32-byte
// event hashes, never an event's content: following the log tells a client
// how many events there are and lets it prove that a given event (whose
// hash it computed from the event) is in the log, nothing more.
//
// Tiles are served only within the latest signed checkpoint: a client
// verifies that checkpoint first and then needs nothing beyond it.

// Witnesses is what the API reads of the witnesses' cosignatures of
// checkpoints (package eventstore/witness's Cosigner is one).
type Witnesses interface {
	// Cosignatures returns the stored cosignatures of the checkpoint of
	// this size and root.
	Cosignatures(ctx context.Context, size uint64, root eventstore.Hash) ([]witness.Cosignature, error)
	// Witnessed lists cosigned checkpoints below size before (0: any),
	// newest first.
	Witnessed(ctx context.Context, before uint64, limit int) ([]witness.Witnessed, error)
	// Status reports on each configured witness.
	Status(ctx context.Context) ([]witness.Status, error)
}

// mountLog registers the endpoints a transparency-log client needs: the
// tlog-tiles resources, the latest checkpoint and the checkpoints' key.
// They are public with Config.PublicLog, else for signed-in callers.
func (s *Server) mountLog(r chi.Router) {
	r.Get("/ledger/checkpoint", s.ledgerCheckpoint)
	r.Get("/ledger/key", s.ledgerKey)
	r.Get("/ledger/log/checkpoint", s.logCheckpoint)
	r.Get("/ledger/log/tile/*", s.logTile)
}

// immutable is the caching of tiles and entry bundles, which never change
// (a partial tile of width W is as fixed as a full one). Without
// PublicLog only the caller's own cache may keep them.
func (s *Server) immutable() string {
	if s.cfg.PublicLog {
		return "public, max-age=31536000, immutable"
	}
	return "private, max-age=31536000, immutable"
}

// latestCheckpoint reads the latest checkpoint, answering 404 when there
// is none.
func (s *Server) latestCheckpoint(w http.ResponseWriter, r *http.Request) (eventstore.Checkpoint, bool) {
	if s.cfg.Ledger == nil {
		s.fail(w, r, errNoLedger)
		return eventstore.Checkpoint{}, false
	}
	cp, err := s.cfg.Ledger.LatestCheckpoint(r.Context())
	if errors.Is(err, eventstore.ErrNotFound) {
		problem(w, r, http.StatusNotFound, "not_found", "the ledger has no signed checkpoint yet")
		return cp, false
	}
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return cp, false
	}
	return cp, true
}

// cosignatures returns the stored cosignatures of cp (none without
// witnesses).
func (s *Server) cosignatures(r *http.Request, cp eventstore.Checkpoint) ([]witness.Cosignature, error) {
	if s.cfg.Witnesses == nil || cp.Size == 0 {
		return nil, nil
	}
	cs, err := s.cfg.Witnesses.Cosignatures(r.Context(), cp.Size, cp.Root)
	if err != nil {
		return nil, ledgerErr(err)
	}
	return cs, nil
}

// logCheckpoint serves <prefix>/checkpoint: the latest signed checkpoint
// with the witnesses' cosignatures of it appended (clients ignore the
// lines of keys they do not know).
func (s *Server) logCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, ok := s.latestCheckpoint(w, r)
	if !ok {
		return
	}
	cs, err := s.cosignatures(r, cp)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(witness.AppendCosignatures(cp.Note, cs))
}

// tileRef is a parsed tile or entry bundle path.
type tileRef struct {
	entries bool
	level   uint64
	index   uint64
	width   uint8 // 0: a full tile
}

// parseTilePath parses what follows "tile/": "<L>/<N>[.p/<W>]" or
// "entries/<N>[.p/<W>]", N in groups of three digits with an x before
// all but the last (C2SP tlog-tiles). Only the canonical form is
// accepted.
func parseTilePath(rest string) (tileRef, error) {
	var t tileRef
	first, index, ok := strings.Cut(rest, "/")
	if !ok {
		return t, errors.New("want tile/<level>/<index>[.p/<width>] or tile/entries/<index>[.p/<width>]")
	}
	if first == "entries" {
		t.entries = true
	} else {
		l, err := layout.ParseTileLevel(first)
		if err != nil || strconv.FormatUint(l, 10) != first {
			return t, fmt.Errorf("level %q: want 0 to 63 with no leading zeros", first)
		}
		t.level = l
	}
	n, w, err := layout.ParseTileIndexPartial(index)
	if err != nil {
		return t, fmt.Errorf("index %q: want groups of three digits, x before all but the last (x001/234), then .p/<width 1 to 255> for a partial tile", index)
	}
	t.index, t.width = n, w
	want := layout.TilePath(t.level, n, w)
	if t.entries {
		want = layout.EntriesPath(n, w)
	}
	if "tile/"+rest != want {
		return t, fmt.Errorf("not the canonical path of this tile: %s", want)
	}
	return t, nil
}

// end returns the number of entries a tree must hold to contain the tile:
// (index·256 + width)·256^level; ok is false past 2^64.
func (t tileRef) end() (uint64, bool) {
	w := uint64(t.width)
	if w == 0 {
		w = layout.TileWidth
	}
	level := t.level
	if t.entries {
		level = 0
	}
	if level >= 8 {
		return 0, false
	}
	hi, n := bits.Mul64(t.index, layout.TileWidth)
	if hi != 0 {
		return 0, false
	}
	n, carry := bits.Add64(n, w, 0)
	if carry != 0 {
		return 0, false
	}
	hi, end := bits.Mul64(n, 1<<(8*level))
	return end, hi == 0
}

func (t tileRef) count() int {
	if t.width == 0 {
		return layout.TileWidth
	}
	return int(t.width)
}

// logTile serves <prefix>/tile/<L>/<N>[.p/<W>] and
// <prefix>/tile/entries/<N>[.p/<W>].
func (s *Server) logTile(w http.ResponseWriter, r *http.Request) {
	t, err := parseTilePath(chi.URLParam(r, "*"))
	if err != nil {
		problem(w, r, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	cp, ok := s.latestCheckpoint(w, r)
	if !ok {
		return
	}
	if end, ok := t.end(); !ok || end > cp.Size {
		problem(w, r, http.StatusNotFound, "not_found", fmt.Sprintf("no such tile: it lies beyond the latest checkpoint (size %d)", cp.Size))
		return
	}
	var body []byte
	if t.entries {
		body, err = s.entryBundle(r, t)
	} else {
		body, err = tlog.ReadTileData(tlog.Tile{H: 8, L: int(t.level), N: int64(t.index), W: t.count()}, merkle.HashReader(r.Context(), s.cfg.Ledger))
	}
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", s.immutable())
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// entryBundle returns the bundle's entries, the events' hashes, each as a
// big-endian uint16 length (32) and the hash. They hash (SHA-256 of 0x00
// and the entry) to the level 0 tile's leaf hashes.
func (s *Server) entryBundle(r *http.Request, t tileRef) ([]byte, error) {
	first := t.index*layout.EntryBundleWidth + 1 // positions are 1-based
	n := t.count()
	recs, err := s.cfg.Ledger.ReadAll(r.Context(), first, n)
	if err != nil {
		return nil, err
	}
	if len(recs) != n {
		return nil, fmt.Errorf("api: entry bundle %d: read %d events from position %d, want %d", t.index, len(recs), first, n)
	}
	out := make([]byte, 0, n*(2+eventstore.HashSize))
	for i, rec := range recs {
		if rec.Position != first+uint64(i) {
			return nil, fmt.Errorf("api: entry bundle %d: position %d where %d belongs", t.index, rec.Position, first+uint64(i))
		}
		out = binary.BigEndian.AppendUint16(out, eventstore.HashSize)
		out = append(out, rec.Hash[:]...)
	}
	return out, nil
}

// LedgerCosignature is a witness's cosignature of a checkpoint.
type LedgerCosignature struct {
	// Witness is the witness key's name, Key its cosignature verifier key.
	Witness string `json:"witness"`
	Key     string `json:"key"`
	// CosignedAt is the witness's timestamp in the cosignature;
	// ReceivedAt when the server received it.
	CosignedAt time.Time `json:"cosigned_at"`
	ReceivedAt time.Time `json:"received_at"`
}

func ledgerCosignatures(cs []witness.Cosignature) []LedgerCosignature {
	out := make([]LedgerCosignature, len(cs))
	for i, c := range cs {
		out[i] = LedgerCosignature{Witness: c.Witness, Key: c.Key, CosignedAt: c.CosignedAt.UTC(), ReceivedAt: c.ReceivedAt.UTC()}
	}
	return out
}

// LedgerWitnessed says which checkpoints are witnessed, by whom and when,
// and how each configured witness is doing.
type LedgerWitnessed struct {
	Witnesses   []LedgerWitness             `json:"witnesses"`
	Checkpoints []LedgerWitnessedCheckpoint `json:"checkpoints"`
}

// LedgerWitness is one configured witness.
type LedgerWitness struct {
	Name string `json:"name"`
	Key  string `json:"key"`
	// LatestSize and LatestCosignedAt are those of the newest checkpoint
	// it cosigned; absent before the first.
	LatestSize       uint64     `json:"latest_size,omitempty"`
	LatestCosignedAt *time.Time `json:"latest_cosigned_at,omitempty"`
	// LastAttemptAt is when this server last sent it a checkpoint;
	// Problem what went wrong then (absent when it worked); Failures the
	// attempts that failed in a row; NextAttemptAt when it retries.
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	Problem       string     `json:"problem,omitempty"`
	Failures      int        `json:"failures"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
}

// LedgerWitnessedCheckpoint is a checkpoint and its cosignatures.
type LedgerWitnessedCheckpoint struct {
	Size         uint64              `json:"size"`
	RootHash     string              `json:"root_hash"`
	Cosignatures []LedgerCosignature `json:"cosignatures"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func (s *Server) ledgerWitnessed(w http.ResponseWriter, r *http.Request) {
	before, _, ok := ledgerQuerySize(w, r, "before", false)
	if !ok {
		return
	}
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "limit", Detail: "limit: want 1 to 100"})
			return
		}
		limit = n
	}
	out := LedgerWitnessed{Witnesses: []LedgerWitness{}, Checkpoints: []LedgerWitnessedCheckpoint{}}
	if s.cfg.Witnesses != nil {
		st, err := s.cfg.Witnesses.Status(r.Context())
		if err != nil {
			s.fail(w, r, ledgerErr(err))
			return
		}
		for _, x := range st {
			lw := LedgerWitness{Name: x.Witness, Key: x.Key, LastAttemptAt: timePtr(x.LastAttempt), Problem: x.Problem, Failures: x.Failures,
				NextAttemptAt: timePtr(x.NextAttempt)}
			if x.Latest != nil {
				lw.LatestSize, lw.LatestCosignedAt = x.Latest.Size, timePtr(x.Latest.CosignedAt)
			}
			out.Witnesses = append(out.Witnesses, lw)
		}
		ws, err := s.cfg.Witnesses.Witnessed(r.Context(), before, limit)
		if err != nil {
			s.fail(w, r, ledgerErr(err))
			return
		}
		for _, x := range ws {
			out.Checkpoints = append(out.Checkpoints, LedgerWitnessedCheckpoint{Size: x.Size, RootHash: x.Root.String(), Cosignatures: ledgerCosignatures(x.Cosignatures)})
		}
	}
	writeJSON(w, http.StatusOK, out)
}
