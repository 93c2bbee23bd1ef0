package api

import (
	"context"
	"errors"
	"mime"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/evidence"
)

// Evidence: an organization's events in a time range, each with its
// canonical record and an inclusion proof against one signed checkpoint,
// and that checkpoint, as one file an auditor verifies offline with the
// ledger's public key (format in docs/ledger-format.md, "Evidence
// file"). It reads the log itself, not the read models, and holds
// nothing of other tenants' events but the Merkle hashes the proofs need.

// CheckpointSigner is implemented by a Config.Ledger that can sign a
// checkpoint of the log's head on demand (as eventstore/checkpoint's
// Checkpointer does): the evidence endpoint then never has to wait for
// the next periodic checkpoint. SigningLedger makes one of a Ledger and
// a Checkpointer.
type CheckpointSigner interface {
	SignCheckpoint(ctx context.Context) (eventstore.Checkpoint, error)
}

// SigningLedger is a Ledger whose SignCheckpoint calls Signer (such as a
// *checkpoint.Checkpointer).
type SigningLedger struct {
	Ledger
	Signer interface {
		Checkpoint(ctx context.Context) (eventstore.Checkpoint, error)
	}
}

// SignCheckpoint signs a checkpoint of the head (or returns the latest,
// when it covers the head).
func (l SigningLedger) SignCheckpoint(ctx context.Context) (eventstore.Checkpoint, error) {
	return l.Signer.Checkpoint(ctx)
}

// evidenceRetry is how long a client waits for the next periodic
// checkpoint when none covers its organization's latest events.
const evidenceRetry = 5

func (s *Server) auditEvidence(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	if _, ok := s.authorize(w, r, org, "", "", domain.PermReadAudit); !ok {
		return
	}
	if !validQuery(w, r) {
		return
	}
	from, to, ok := queryWindow(w, r)
	if !ok {
		return
	}
	if s.cfg.Ledger == nil {
		s.fail(w, r, errNoLedger)
		return
	}
	req := evidence.Request{Org: org, From: from, To: to}
	if sg, ok := s.cfg.Ledger.(CheckpointSigner); ok {
		req.Sign = sg.SignCheckpoint
	}
	x, err := evidence.Prepare(r.Context(), s.cfg.Ledger, req)
	if errors.Is(err, evidence.ErrNotCovered) {
		retryAfter(w, evidenceRetry)
		problem(w, r, http.StatusServiceUnavailable, "not_yet",
			"no signed checkpoint covers the organization's latest events yet; the server signs one every few seconds while the log grows: try again")
		return
	}
	if errors.Is(err, evidence.ErrInvalid) {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "to", Detail: "to: the window is empty: want from before to, a microsecond apart at least"})
		return
	}
	if err != nil {
		s.fail(w, r, ledgerErr(err))
		return
	}
	name := org + "-evidence-" + s.now().UTC().Format("20060102T150405Z") + ".txt"
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	fw := &flushWriter{w: w, rc: http.NewResponseController(w)}
	if _, err := x.WriteTo(r.Context(), fw); err != nil {
		if r.Context().Err() == nil && fw.err == nil {
			s.log.Error("evidence export failed", "org", org, "err", err, "request_id", middleware.GetReqID(r.Context()))
		}
		// Cut the response off: a client never takes a file without its
		// end line for a whole one, and no verifier accepts one.
		panic(http.ErrAbortHandler)
	}
}

// flushWriter sends each write (the export writes 64 KiB at a time) to
// the client at once.
type flushWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error // the client's side failed
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		if ferr := f.rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
			err = ferr
		}
	}
	if err != nil {
		f.err = err
	}
	return n, err
}
