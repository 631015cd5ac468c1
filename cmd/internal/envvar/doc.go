// Package envvar reads configuration from environment variables that are each
// declared once: a Var holds the variable's name, its default, the parser
// that stores its value into the configuration, and its documentation. The
// same declarations drive the parsing (Load, Flags) and the README's table
// (Table), so a default or a description cannot drift between them.
//
// Invariants:
//   - An unset or empty variable takes its Default, parsed by the same
//     parser as a set value; a Var without a Default leaves its target as
//     it is, for the command to derive (documented by DefaultDoc).
//   - Every error names its variable ("NAME: message") and never repeats a
//     value the parser did not put in its message, so secrets stay out.
//   - Load runs the parsers in declaration order and reports every error,
//     not only the first.
//
// Only the commands under cmd/ read the environment; this package is theirs.
package envvar
