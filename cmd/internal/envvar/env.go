package envvar

import (
	"errors"
	"flag"
	"fmt"
)

// Var declares one environment variable. Commands build their Vars with
// Parse bound to the configuration being read, so a list of Vars is built
// per read and never shared.
type Var struct {
	// Name is the variable's name, such as NATS_STREAM.
	Name string
	// Default is the value an unset or empty variable takes, written as
	// one would set it ("900", "2m") and parsed by Parse. Empty leaves the
	// target untouched: the variable is optional, or its default is
	// derived from other variables by the command (see DefaultDoc).
	Default string
	// DefaultDoc is the default as the README states it (Markdown), when
	// it is not Default: "generated", "1 embedded, 3 external".
	DefaultDoc string
	// Doc is what the variable means, as the README states it (Markdown).
	Doc string
	// Required makes an unset variable an error ("is required").
	Required bool
	// Flag, if set, is a command-line flag that overrides the variable
	// (see Flags).
	Flag string
	// Parse checks a value and stores it into the configuration.
	Parse Parser
}

// A Parser checks one value and stores it. Its error message completes
// "NAME: " and must not quote a secret; an error that joins several
// (errors.Join) is reported as several, each naming the variable.
type Parser func(value string) error

// Errors collects the problems of one configuration, each naming its
// variable. The zero value is ready to use; it is not safe for concurrent
// use.
type Errors struct{ errs []error }

// Fail records that the variable name is invalid: "name: msg".
func (e *Errors) Fail(name, msg string) {
	e.errs = append(e.errs, fmt.Errorf("%s: %s", name, msg))
}

// Err returns every recorded problem joined, or nil.
func (e *Errors) Err() error { return errors.Join(e.errs...) }

// Load parses every variable of vars through getenv (os.Getenv), in
// order, and returns the problems found. A variable whose value does not
// parse takes its Default, so that checks across variables made after
// Load see a sensible value and report nothing twice.
func Load(getenv func(string) string, vars []Var) *Errors {
	var errs Errors
	for _, v := range vars {
		v.load(getenv(v.Name), &errs)
	}
	return &errs
}

// Flags registers a string flag for every Var with a Flag; the flag's
// default is the variable's value, else its Default. The function it
// returns, called after fs.Parse, parses every Var (the flag's value, or
// the variable's for a Var without a Flag) as Load does.
func Flags(fs *flag.FlagSet, getenv func(string) string, vars []Var) func() *Errors {
	texts := make([]string, len(vars))
	for i, v := range vars {
		if v.Flag == "" {
			continue
		}
		initial := getenv(v.Name)
		if initial == "" {
			initial = v.Default
		}
		fs.StringVar(&texts[i], v.Flag, initial, v.Doc+" ["+v.Name+"]")
	}
	return func() *Errors {
		var errs Errors
		for i, v := range vars {
			value := texts[i]
			if v.Flag == "" {
				value = getenv(v.Name)
			}
			v.load(value, &errs)
		}
		return &errs
	}
}

func (v Var) load(value string, errs *Errors) {
	if value == "" {
		if v.Required {
			errs.Fail(v.Name, "is required")
			return
		}
		if v.Default == "" {
			return
		}
		value = v.Default
	}
	err := v.Parse(value)
	if err == nil {
		return
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			errs.Fail(v.Name, e.Error())
		}
	} else {
		errs.Fail(v.Name, err.Error())
	}
	if v.Default != "" && value != v.Default {
		if err := v.Parse(v.Default); err != nil {
			errs.Fail(v.Name, "the default "+v.Default+" does not parse: "+err.Error())
		}
	}
}
