package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the --help examples of the client commands whose
// definitions do not carry their own, by command path.
var examples = map[string]string{
	"logout":           "  stele logout\n  stele logout --server https://stele.example.com",
	"whoami":           "  stele whoami\n  STELE_TOKEN=stele_tok_… stele whoami --json",
	"secrets delete":   "  stele secrets delete OLD_API_KEY --env staging",
	"secrets restore":  "  stele secrets restore OLD_API_KEY --env staging",
	"secrets history":  "  stele secrets history DB_URL --env production\n  stele secrets history DB_URL --json",
	"secrets rollback": "  stele secrets history DB_URL\n  stele secrets rollback DB_URL --to 3",
	"secrets destroy":  "  stele secrets destroy DB_URL --version 2 --env production",
	"projects list":    "  stele projects list --org acme",
	"projects create":  "  stele projects create billing --name \"Billing service\"",
	"envs list":        "  stele envs list --project web --json",
	"envs create":      "  stele envs create staging\n  stele envs create production --production",
	"bundles list":     "  stele bundles list --project web",
	"bundles set":      "  stele bundles set backend --keys DB_URL!,REDIS_URL!,SENTRY_DSN",
	"bundles delete":   "  stele bundles delete backend",
	"members list":     "  stele members list --org acme",
	"members grant":    "  stele members grant bob@example.com --role developer\n  stele members grant carol@example.com --role admin --project web",
	"members revoke":   "  stele members revoke bob@example.com --project web",
	"tokens list":      "  stele tokens list --json",
	"tokens create":    "  stele tokens create ci-deploy --role developer --project web --envs staging,production --ttl 720h",
	"tokens revoke":    "  stele tokens list\n  stele tokens revoke 0f3c… --reason \"leaked in a build log\"",
	"keys status":      "  stele keys status --env production\n  stele keys status acme/web/production --json",
	"keys rotate":      "  stele keys rotate --env production",
	"keys disable":     "  stele keys status --env production\n  stele keys disable 1234567 --env production",
	"keys enable":      "  stele keys enable 1234567 --env production",
	"keys destroy":     "  stele keys destroy 1234567 --env production",
	"keys reseal":      "  stele keys reseal acme/web/production --database-url \"$DATABASE_URL\"",
	"keys rewrap":      "  stele keys rewrap acme/web/production --database-url \"$DATABASE_URL\" --kek-uri aws-kms://arn:aws:kms:…",
	"ledger forget":    "  stele ledger forget --server https://stele.example.com",
}

// addExamples gives the commands of examples their examples.
func addExamples(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		if ex, ok := examples[path]; ok && c.Example == "" {
			c.Example = ex
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
