package main

import "github.com/spf13/cobra"

// auditHistoryCmds are the auditor's history commands: stele audit
// replay, who-could-read, who-read and report.
func auditHistoryCmds() []*cobra.Command { return nil }
