package envvar

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// String stores the value as it is.
func String(p *string) Parser {
	return func(v string) error { *p = v; return nil }
}

// Int accepts a decimal integer from lo to hi.
func Int(p *int, lo, hi int) Parser {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("must be an integer from %d to %d, got %q", lo, hi, v)
		}
		*p = n
		return nil
	}
}

// Port accepts a TCP port, 0 (any free port) to 65535.
func Port(p *int) Parser { return Int(p, 0, 65535) }

// Duration accepts whole seconds ("900") or a Go duration ("15m"), at
// least lo and never negative.
func Duration(p *time.Duration, lo time.Duration) Parser {
	return func(v string) error {
		var d time.Duration
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			d = time.Duration(n) * time.Second
		} else if d, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("must be seconds or a duration such as 15m, got %q", v)
		}
		if d < lo || d < 0 {
			return fmt.Errorf("must be at least %s, got %q", lo, v)
		}
		*p = d
		return nil
	}
}

// Bool accepts true, 1, false and 0.
func Bool(p *bool) Parser {
	return func(v string) error {
		b, err := parseBool(v)
		if err != nil {
			return err
		}
		*p = b
		return nil
	}
}

// OptionalBool is Bool for a variable whose default the command derives:
// *p stays nil while the variable is unset.
func OptionalBool(p **bool) Parser {
	return func(v string) error {
		b, err := parseBool(v)
		if err != nil {
			return err
		}
		*p = &b
		return nil
	}
}

func parseBool(v string) (bool, error) {
	switch v {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, errors.New("must be true or false")
}

// OneOf accepts one of choices, exactly as written.
func OneOf(p *string, choices ...string) Parser {
	return func(v string) error {
		for _, c := range choices {
			if v == c {
				*p = v
				return nil
			}
		}
		return errors.New("must be " + orList(choices))
	}
}

// Level accepts a log level: debug, info, warn (or warning) or error, in
// any case.
func Level(p *slog.Level) Parser {
	return func(v string) error {
		switch strings.ToLower(v) {
		case "debug":
			*p = slog.LevelDebug
		case "info":
			*p = slog.LevelInfo
		case "warn", "warning":
			*p = slog.LevelWarn
		case "error":
			*p = slog.LevelError
		default:
			return errors.New("must be debug, info, warn or error")
		}
		return nil
	}
}

// orList writes "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
