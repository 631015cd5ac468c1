package app

import (
	"flag"
	"testing"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
	"github.com/auth-platform/tokenservice/cmd/internal/envvar/envvartest"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite the README's configuration table from the declarations")

// TestReadmeTable: the README's configuration table is exactly the one
// the declarations render (vars.go, through Variables), so a default or a description is
// written once. go test ./cmd/tokend/app -run TestReadmeTable
// -update-readme rewrites it.
func TestReadmeTable(t *testing.T) {
	envvartest.CheckReadme(t, "../../../README.md", "## Configuration", envvar.Table(Variables), *updateReadme)
}
