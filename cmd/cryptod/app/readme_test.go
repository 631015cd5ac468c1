package app_test

import (
	"flag"
	"testing"

	"github.com/auth-platform/tokenservice/cmd/cryptod/app"
	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
	"github.com/auth-platform/tokenservice/cmd/internal/envvar/envvartest"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite the README's cryptod table from the declarations")

// TestReadmeTable: the README's cryptod table is exactly the one the
// declarations render (app.Variables), so a default or a description is
// written once. go test ./cmd/cryptod/app -run TestReadmeTable
// -update-readme rewrites it.
func TestReadmeTable(t *testing.T) {
	envvartest.CheckReadme(t, "../../../README.md", "### cryptod", envvar.Table(app.Variables), *updateReadme)
}
