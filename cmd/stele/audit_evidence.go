package main

import "github.com/spf13/cobra"

// auditEvidenceCmds are the auditor's evidence commands: stele audit
// export and stele audit verify.
func auditEvidenceCmds() []*cobra.Command { return nil }
