package projections

// All returns every read model Stele keeps.
func All() []Projection {
	return []Projection{Secrets{}, Audit{}, Access{}, Directory{}, AccessControl{}, Keys{}, Approvals{}, Ledger{}}
}
