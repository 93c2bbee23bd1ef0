package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"stele.dev/stele/cli"
	"stele.dev/stele/eventstore/checkpoint"
)

// verifyOnline is `stele ledger verify` through a server: the server's
// signed checkpoint against the state this client remembers (and against
// a checkpoint kept elsewhere, with --checkpoint), with consistency
// proofs, and the outcome of the server's own last full verification.
// A client sees no event's content, so the full check of every hash is
// the server's (or an auditor's, with an export).
func verifyOnline(c *cobra.Command, cf *clientFlags, key *checkpoint.Verifier, trustedFile string, asJSON bool) error {
	s, err := cf.dial(c)
	if err != nil {
		return err
	}
	if err := s.needAuth(); err != nil {
		return err
	}
	ctx := c.Context()
	if key != nil {
		if err := s.dirs.ledgers.Pin(s.Server, key.String()); err != nil {
			return logRewrittenError{err, s.Server}
		}
	}
	res, err := s.CheckLog(ctx, s.dirs.ledgers)
	if err != nil {
		return logRewrittenError{err, s.Server}.orPlain(err)
	}
	st, known, err := s.dirs.ledgers.Load(s.Server)
	if err != nil {
		return err
	}
	if !known || st.Checkpoint == "" {
		return fmt.Errorf("the server has no signed checkpoint to verify yet (%s)", firstOf(res.Skipped, "none"))
	}
	v, err := checkpoint.NewVerifier(st.Key)
	if err != nil {
		return err
	}
	size, root, err := v.Open([]byte(st.Checkpoint))
	if err != nil {
		return err
	}
	out := struct {
		OK         bool      `json:"ok"`
		Server     string    `json:"server"`
		Key        string    `json:"key"`
		Size       uint64    `json:"size"`
		Root       string    `json:"root"`
		FirstKey   bool      `json:"first_contact"`
		Since      uint64    `json:"consistent_since,omitempty"`
		Trusted    uint64    `json:"trusted_checkpoint,omitempty"`
		ServerLast *struct { // the server's own last full verification
			At     time.Time `json:"at"`
			Events uint64    `json:"events"`
			OK     bool      `json:"ok"`
			Fail   string    `json:"failure,omitempty"`
		} `json:"last_full_verification,omitempty"`
	}{OK: true, Server: s.Server, Key: st.Key, Size: size, Root: root.String(), FirstKey: res.Trusted, Since: res.From}
	if trustedFile != "" {
		b, err := os.ReadFile(trustedFile)
		if err != nil {
			return usageError{fmt.Errorf("--checkpoint: %v", err)}
		}
		tsize, _, err := v.Open(b)
		if err != nil {
			return logRewrittenError{fmt.Errorf("--checkpoint %s is not signed by the ledger's key: %w", trustedFile, err), s.Server}
		}
		if err := s.Extends(ctx, v, b, size, root); err != nil {
			return logRewrittenError{err, s.Server}.orPlain(err)
		}
		out.Trusted = tsize
	}
	var status struct {
		LastVerification *struct {
			At     time.Time `json:"at"`
			Events uint64    `json:"events"`
			OK     bool      `json:"ok"`
			Fail   string    `json:"failure"`
		} `json:"last_verification"`
	}
	if _, err := s.call(ctx, cli.Call{Method: http.MethodGet, Path: "/v1/ledger/status"}, &status); err != nil {
		return err
	}
	if lv := status.LastVerification; lv != nil {
		out.ServerLast = &struct {
			At     time.Time `json:"at"`
			Events uint64    `json:"events"`
			OK     bool      `json:"ok"`
			Fail   string    `json:"failure,omitempty"`
		}{lv.At, lv.Events, lv.OK, lv.Fail}
	}
	w := c.OutOrStdout()
	if asJSON {
		return printJSON(w, out)
	}
	fmt.Fprintf(w, "ledger of %s: OK\n", s.Server)
	fmt.Fprintf(w, "  signed checkpoint  %d events, root %s\n", size, root)
	fmt.Fprintf(w, "  key                %s\n", st.Key)
	switch {
	case res.Trusted:
		fmt.Fprintln(w, "  consistency        first contact: this checkpoint is now the one later checks start from")
	case res.From < size:
		fmt.Fprintf(w, "  consistency        proven to extend the checkpoint of %d events verified before\n", res.From)
	default:
		fmt.Fprintln(w, "  consistency        the same checkpoint as verified before")
	}
	if out.Trusted > 0 {
		fmt.Fprintf(w, "  trusted checkpoint %d events: contained\n", out.Trusted)
	}
	if lv := out.ServerLast; lv != nil {
		state := "OK"
		if !lv.OK {
			state = "FAILED: " + lv.Fail
		}
		fmt.Fprintf(w, "  server's last full verification  %s, %d events, %s\n", lv.At.Local().Format(time.RFC3339), lv.Events, state)
	} else {
		fmt.Fprintln(w, "  server's last full verification  none recorded")
	}
	return nil
}

// orPlain keeps err as it is unless it is a rewritten log.
func (e logRewrittenError) orPlain(err error) error {
	if errors.Is(err, cli.ErrLogRewritten) {
		return e
	}
	return err
}

func newLedgerForgetCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "forget",
		Short: "Forget the ledger key and checkpoint this client remembers for a server",
		Long: `Forget what this client remembers of a server's ledger: the key that
signs its checkpoints and the newest checkpoint verified. The next contact
trusts the server's key afresh. Do this only when an operator explains a
failed ledger check (a new signing key, a restored backup): a client that
forgets cannot notice a history rewritten before it was told to forget.`,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := cf.dial(c)
			if err != nil {
				return err
			}
			if err := s.dirs.ledgers.Forget(s.Server); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Forgot the ledger state of %s.\n", s.Server)
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}
