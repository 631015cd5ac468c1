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
//     may still be live.
//   - Families: the families that can still be used, by subject and by the
//     keys that signed for them, for the issuer's family index (a subject's
//     families on a cut-off, a compromised key's families) and the chain
//     check. Listing sessions reads the families KV read model instead.
//
// The families KV read model (FamilyProjector, FamilyStore) is the
// specification's encrypted token cache: every value is sealed with the
// service's sealer (signing/seal, AES-256-GCM under ENCRYPTION_KEY or a
// data key of the crypto service), bound to the bucket and the key; a
// value that does not open is counted and never served
// (ErrEntryUnreadable), and the projector replaces it from the log. A
// bucket of plain values from an earlier release is rebuilt, not read.
// An event is acknowledged to the projector's consumer only once its state
// is in the bucket (or the entry already holds it or a later one). An
// event whose predecessor is not in the entry yet (that one's write failed
// and it comes again) writes the family's last state from the log, which
// the log checks; only an event chained to one the entry already passed
// is a replay, reported as forged. A family's first event is created
// without a read and without waiting for the previous create's
// acknowledgement, in order per family (issue 16).
//
// # Live state, not history
//
// What a replica holds follows what is live, not everything that ever
// happened (issue 13):
//
//   - A family is forgotten once nothing can use it (issuer/family.EndsAt:
//     its refresh expiry, or its last access token's if later, revoked or
//     not), a revocation once no access token it covers can be valid, a
//     subject cut-off ACCESS_TOKEN_TTL after it. Keys are held until
//     destroyed (they are few).
//   - Pruning follows event time, never the replica's clock: a sweep runs at
//     a tick (events.LogTick, appended by tokend when the log is quiet and
//     something held has ended) or at the first event of a new minute once
//     an eighth of what is held has been applied since the last sweep, so
//     replay forgets exactly what live updates forgot and a sweep costs a
//     constant per event (a sweep of 1M families takes 18 ms under the
//     write lock, BenchmarkSnapshot).
//   - A held family is 40 bytes plus its ID and its place in its subject's
//     list (BenchmarkFamilyMemory: about 190 B against 466 B before).
//   - A replica starts from a checkpoint (Checkpoints): the set's state at
//     one position, sealed under ENCRYPTION_KEY and bound to the stream and
//     the position, in the TOKEN_CHECKPOINTS object store; then it replays
//     the key aggregate up to that position and the log after it. So it
//     starts in time proportional to what is live plus what happened since
//     the checkpoint. We chose checkpoints over consumers that start from a
//     time (revocations from now - ACCESS_TOKEN_TTL): those would miss a
//     revocation whose access tokens were issued under a longer
//     ACCESS_TOKEN_TTL than today's, and the family index would need a
//     position of its own; a checkpoint is exact, and a rapid property
//     (TestCheckpointPlusTailEqualsReplay) checks that a checkpoint at any
//     position plus the tail equals a full replay, pruning included. A
//     checkpoint that is missing, stale or does not open means a full
//     replay, logged and counted (token_service_projection_checkpoint_loads_total).
//     Taking one holds the set's read lock only to copy its maps (about
//     0.12 s at 1M families, BenchmarkSnapshot: appliers wait, readers do
//     not); building, encoding, sealing and writing it happen outside.
//
// The command side (package issuer) never decides from a projection alone:
// it decides from the log, whose compare-and-set catches stale reads.
//
// A record that cannot be decoded is counted, reported through the runner's
// OnBadRecord hook and skipped; it never stops the projection.
package projections
