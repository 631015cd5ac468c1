// Package envvartest checks that a README's configuration table is the
// one a command's declarations render (envvar.Table).
package envvartest

import (
	"os"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
)

// CheckReadme fails t unless the first configuration table after heading
// in the Markdown file at path is want; with update it rewrites that
// table instead.
func CheckReadme(t testing.TB, path, heading, want string, update bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	got, ok := envvar.TableIn(text, heading)
	if !ok {
		t.Fatalf("%s has no configuration table after %q", path, heading)
	}
	if got == want {
		return
	}
	if update {
		i := strings.Index(text, heading)
		j := i + strings.Index(text[i:], got)
		if err := os.WriteFile(path, []byte(text[:j]+want+text[j+len(got):]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	gotLines, wantLines := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(gotLines) || i < len(wantLines); i++ {
		var g, w string
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if g != w {
			t.Errorf("%s, table after %q, line %d:\n have: %s\n want: %s", path, heading, i+1, g, w)
		}
	}
	t.Errorf("the README's table differs from the declarations; the test's -update-readme flag rewrites it")
}
