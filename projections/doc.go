// Package projections holds the read models of the token service and the
// runner that feeds them from the event log.
//
// Each projection is a reducer: Apply(event) changes its state using only
// the state and the event (never the clock), so replaying the log gives
// exactly the state that live updates gave. Set groups the projections a
// replica keeps in memory:
//
//   - Keys: every signing key and its lifecycle state; the JWKS and the
//     active key.
//   - Revocations: revoked families and subject cut-offs whose access tokens
//     may still be live (entries are pruned by event time once every access
//     token they cover has expired).
//   - Families: the sessions of each subject, for listing and for
//     enumerating a subject's families on revocation.
//
// The command side (package issuer) never decides from a projection alone:
// it decides from the log, whose compare-and-set catches stale reads.
//
// A record that cannot be decoded is counted, reported through the runner's
// OnBadRecord hook and skipped; it never stops the projection.
package projections
