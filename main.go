// Command featurestore is the single binary of the feature store: it validates,
// plans and applies feature definitions, runs ingest and serving, and starts an
// embedded development environment. See README.md and docs/.
package main

import (
	"os"

	"github.com/featurestore/featurestore/featurestore/cmd"
)

func main() {
	os.Exit(cmd.Main(os.Args[1:], os.Stdout, os.Stderr))
}
