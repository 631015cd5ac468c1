package envvar_test

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
)

type config struct {
	port    int
	ttl     time.Duration
	name    string
	on      *bool
	listing []string
}

func (c *config) vars() []envvar.Var {
	return []envvar.Var{
		{Name: "PORT", Default: "8080", Parse: envvar.Port(&c.port), Doc: "the port"},
		{Name: "TTL", Default: "900", Parse: envvar.Duration(&c.ttl, time.Second), Doc: "a lifetime"},
		{Name: "NAME", Required: true, Flag: "name", Parse: envvar.String(&c.name), Doc: "a name"},
		{Name: "ON", DefaultDoc: "`true` with `NAME`", Parse: envvar.OptionalBool(&c.on), Doc: "switch"},
		{Name: "LIST", Parse: func(v string) error {
			var errs []error
			for _, item := range strings.Split(v, ",") {
				if item == "bad" {
					errs = append(errs, errors.New("bad item"))
				}
			}
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			c.listing = strings.Split(v, ",")
			return nil
		}, Doc: "a list"},
	}
}

func getenv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		vars     map[string]string
		wantErrs []string
		check    func(c config) bool
	}{
		{"defaults parsed", map[string]string{"NAME": "n"}, nil,
			func(c config) bool { return c.port == 8080 && c.ttl == 900*time.Second && c.name == "n" && c.on == nil }},
		{"set values", map[string]string{"NAME": "n", "PORT": "0", "TTL": "15m", "ON": "0", "LIST": "a,b"}, nil,
			func(c config) bool {
				return c.port == 0 && c.ttl == 15*time.Minute && c.on != nil && !*c.on && len(c.listing) == 2
			}},
		{"required", nil, []string{"NAME: is required"}, nil},
		{"invalid takes the default", map[string]string{"NAME": "n", "PORT": "http", "TTL": "0"},
			[]string{`PORT: must be an integer from 0 to 65535, got "http"`, `TTL: must be at least 1s, got "0"`},
			func(c config) bool { return c.port == 8080 && c.ttl == 900*time.Second }},
		{"each joined error names the variable", map[string]string{"NAME": "n", "LIST": "bad,ok,bad", "ON": "maybe"},
			[]string{"ON: must be true or false", "LIST: bad item", "LIST: bad item"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var c config
			err := envvar.Load(getenv(tc.vars), c.vars()).Err()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if strings.Join(got, "|") != strings.Join(tc.wantErrs, "|") {
				t.Fatalf("errors %q, want %q", got, tc.wantErrs)
			}
			if tc.check != nil && !tc.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

// TestFlags: a flag's default is the variable's value, the flag wins, and
// a variable without a flag is read from the environment.
func TestFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"environment", map[string]string{"NAME": "from-env"}, nil, "from-env"},
		{"flag wins", map[string]string{"NAME": "from-env"}, []string{"--name", "from-flag"}, "from-flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var c config
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			load := envvar.Flags(fs, getenv(tc.env), c.vars())
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := load().Err(); err != nil || c.name != tc.want || c.port != 8080 {
				t.Fatalf("name %q port %d (%v), want %q", c.name, c.port, err, tc.want)
			}
			if f := fs.Lookup("name"); f == nil || f.Usage != "a name [NAME]" {
				t.Fatalf("flag %+v", f)
			}
		})
	}
}

func TestParsers(t *testing.T) {
	t.Parallel()
	var format string
	if err := envvar.OneOf(&format, "json", "text")("xml"); err == nil || err.Error() != "must be json or text" {
		t.Fatalf("OneOf: %v", err)
	}
	var d time.Duration
	if err := envvar.Duration(&d, 0)("-5"); err == nil {
		t.Fatal("a negative duration parsed")
	}
}

func TestTable(t *testing.T) {
	t.Parallel()
	got := envvar.Table(envvar.Docs(new(config).vars()))
	want := "| variable | default | meaning |\n|---|---|---|\n" +
		"| `PORT` | `8080` | the port |\n" +
		"| `TTL` | `900` | a lifetime |\n" +
		"| `NAME` | — | a name |\n" +
		"| `ON` | `true` with `NAME` | switch |\n" +
		"| `LIST` | — | a list |\n"
	if got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	doc := "# x\n\n## Configuration\n\ntext\n\n" + want + "\nafter\n"
	if table, ok := envvar.TableIn(doc, "## Configuration"); !ok || table != want {
		t.Fatalf("TableIn: %q %v", table, ok)
	}
	if _, ok := envvar.TableIn(doc, "## Missing"); ok {
		t.Fatal("TableIn found a table after a missing heading")
	}
}
