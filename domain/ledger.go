package domain

// LedgerStream is the stream of facts about the ledger itself.
const LedgerStream = "ledger/verifications"

// LedgerVerified records a full verification of the ledger: how far it
// reached, and whether it passed. The server appends one after each
// scheduled verification, so the audit trail shows it was checked.
type LedgerVerified struct {
	Events      uint64  `json:"events"`
	Head        string  `json:"head"`
	Root        string  `json:"root"`
	Checkpoints int     `json:"checkpoints"`
	OK          bool    `json:"ok"`
	Failure     string  `json:"failure,omitempty"`
	Seconds     float64 `json:"seconds"`
}

func (LedgerVerified) EventType() string { return "ledger.verified" }

func init() { register[LedgerVerified]() }
