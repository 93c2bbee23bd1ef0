package postgres

// SetScanBlock sets how many positions each connection of ScanLog copies
// in turn, and returns a function that restores it.
func SetScanBlock(n uint64) (restore func()) {
	old := scanBlock
	scanBlock = n
	return func() { scanBlock = old }
}
