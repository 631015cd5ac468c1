// Package keyring drives the lifecycle of signing keys through the event
// log (generated → published → activated → retired → destroyed) and hands
// the issuer the Signer of the active key.
//
// Key events are serialized: every one is appended with compare-and-set on
// the single filter token.key.>, so two replicas that race to create or
// rotate a key produce one change; the loser re-reads and adopts the
// winner's key. The key projection is the source of the JWKS and of the
// active key on every replica; the keyring reads it through View, a narrow
// interface of its own (projections.Set implements it), and shares only the
// types of package signing/keystate with it: it does not import
// projections.
//
// Lifecycle. The first key of an empty log is published and activated at
// once (no verifier can have cached a JWKS yet). Every later key is
// published first and activated only Prepublish later, so a verifier that
// caches the JWKS for its max-age never meets an unknown kid. The previous
// key is then retired and stays in the JWKS for Retention, so tokens it
// signed keep verifying until they expire; after that it is destroyed (it
// leaves the JWKS). Tick, run periodically by every replica, moves keys
// along: it stages the next key Prepublish before the active one is
// RotationPeriod old (or as soon as the configured algorithm changes),
// activates a staged key when its pre-publication is over, and destroys
// keys past their retention. Rotate stages a key on request.
//
// # Provisioned keys
//
// A Backend creates its keys (managed mode), or is a Provisioner: the
// operator provisions the keys (KMS_KEY_ID, CRYPTO_SIGNING_KEY) and tokend
// only signs with them. The decisions for that mode:
//
//   - How tokend learns of the next key: every converge (Tick, every 10 s
//     in tokend; EnsureActive; Rotate; a compromise) first asks the
//     Provisioner which key the operator provisioned (one GetPublicKey),
//     then plans from the log, the clock and that answer. A key the log
//     does not hold is adopted (key.generated with provisioned set and no
//     intent: nothing was created, so there is no orphan to guard
//     against) and goes through the same lifecycle as any later key:
//     published, activated after Prepublish, the old key retired and kept
//     in the JWKS for Retention. So a crypto-service key followed by name
//     moves to a version the operator adds (RotateKey) within a tick, and
//     a KMS alias moves when the operator points it elsewhere; a pinned
//     version or key ID moves when the setting changes and a replica
//     restarts with it (the replicas still on the old setting offer a key
//     the log holds, and do nothing). An admin call was the alternative;
//     it would have had to record the new key's reference in the log
//     itself, and a restarted replica would still have signed with the
//     configured key.
//   - Rotate, without a new key from the operator, is refused with
//     ErrNoNewKey; so is a compromise, before it is declared, since no
//     replica could finish it. A key the operator supplied counts as
//     fresh for a compromise even if it was staged before the
//     declaration. A key the log retired or destroyed is never adopted
//     again, whatever the setting says. RotationPeriod does not apply.
//   - The material of a provisioned key is never deleted (no
//     key.material_deleted), and a Provisioner deletes nothing at all:
//     the keys tokend created in managed mode before a switch wait for
//     managed mode, or for the operator. For the crypto service this is
//     also a necessity: DestroyKey destroys every version of a name.
//   - If the question fails, the steps that need no new key are taken
//     and the error is returned (Tick logs it).
//   - A key.requested intent of managed mode left pending by a crash is
//     not finished (a Provisioner creates nothing): it waits for managed
//     mode, which finds its key by the intent.
//
// With Config.Fallback, a local key stays published to sign while a remote
// backend's breaker is open; Run, which the keyring's owner runs for as
// long as it signs, records each such outage as a fallback_engaged event.
//
// # Key compromise
//
// A compromised key is one command, Responder.Compromise, owned here: its
// intent and its outcome are key events, serialized with every other key
// change by compare-and-set on token.key.>, and its rotation is the
// keyring's. Only the revocation of families is not the keyring's: it goes
// through Revoker, a one-method interface that *issuer.Issuer implements
// (the issuer owns the family invariants; the keyring imports neither the
// issuer nor the projections). The issuer was the other candidate; it
// would have had to append key events and drive the keyring's rotation,
// making two packages writers of the key aggregate. Responder is a type of
// its own, built after the issuer, because the issuer itself takes the
// Keyring.
//
// The command records its intent first and acts after:
//
//  1. key.compromise_declared{key_id, at, revoke_families} for the log's
//     active key (a pending declaration of the same key is joined);
//  2. the rotation: plan, which every converge runs, contains each pending
//     compromise from the log alone — a key generated after the
//     declaration is activated (generated first if there is none), the
//     compromised key is retired and destroyed (it leaves the JWKS), and
//     any key staged before the declaration is destroyed so it cannot take
//     over later;
//  3. with revoke_families, Revoker.RevokeSignedBy(key), after the
//     projections applied the destruction;
//  4. key.compromise_resolved{key_id, new_key_id, revoked_families}.
//
// A crash anywhere leaves the declaration without its resolution. Every
// step is decided from the log and idempotent, so finishing is running
// them again: the key lifecycle of any replica (Tick, and EnsureActive at
// start-up) finishes step 2, and Responder.Resume, which tokend runs at
// start-up before serving and at every key tick, finishes steps 3 and 4.
// Two replicas that finish the same compromise at once revoke each family
// once (a revocation is compare-and-set on the family) and append one
// resolution (compare-and-set on the keys). Rotate with immediate is the
// same command without the revocation.
package keyring
