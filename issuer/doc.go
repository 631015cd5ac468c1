// Package issuer is the write model of token families and the commands on
// them: GenerateTokens, RefreshTokens and the revocations. It keeps the
// invariants of refresh-token rotation (OAuth 2.0 Security BCP, RFC 9700
// §4.14; RFC 6749 §6 and §10.4) and issues access tokens in the JWT profile
// of RFC 9068.
//
// # Families
//
// A family is one login of one client instance. Its refresh token is
// "<family ID>.<secret>" (a random 128-bit ID and 256-bit secret, both
// base64url); only SHA-256 hashes of secrets are stored. Every family event
// (issued, rotated, revoked, on token.family.<fid>.<event>) carries the
// family's whole resulting state, so a family is loaded with one read of the
// last message on token.family.<fid>.> and its sequence is the
// compare-and-set expectation of the next event.
//
// Invariants:
//
//   - At most one refresh token of a family is live: a rotation is appended
//     with compare-and-set, so of any number of concurrent refreshes with
//     the same token, on any replica, exactly one wins.
//   - A spent secret presented again outside the grace window is a replay:
//     the family is revoked (reason reuse). A secret that matches nothing is
//     refused and revokes nothing, so guessing family IDs denies no one.
//   - A refresh that lost a race to a concurrent rotation of the same token
//     is refused without revoking (it was not a replay: the token was
//     current when it was read), or inside the grace window gets the
//     winner's response if no one had it yet.
//   - Grace window: the immediately previous token, presented again within
//     it (with the same DPoP key if the family is bound), returns the same
//     successor response, not a new sibling, once: handing it out appends
//     a record marking it used, with compare-and-set on the grace subject,
//     and a further presentation of that token is a replay (the family is
//     revoked, reason reuse), so a stolen spent Bearer token cannot fetch
//     the live session again and again. The response is sealed
//     (AES-256-GCM) on token.grace.<fid>.<grace ID> with a TTL of the
//     window, written before the rotation, and honoured only if the family
//     state names that grace ID.
//   - A revoked family never refreshes. A subject revocation
//     (token.subject.<sid>.revoked) revokes every family whose issued event
//     precedes it in the stream, including families created concurrently:
//     each refresh checks the cut-off in the log, so no refresh of such a
//     family succeeds after the revocation was acknowledged.
//   - Rotation never revokes the previous access token: it lives until exp
//     unless its family is revoked.
//
// Every decision takes the time from the injected clock, once per command.
//
// # Access tokens presented again
//
// VerifyAccessToken remembers the tokens whose signature it checked
// (Config.VerifiedTokens, bounded): a resource server presents the same
// token with every request. A remembered token skips only the signature:
// its key must still be in the JWKS and its claims pass the same time
// checks on every use, and revocation (AccessTokenRevoked) is never
// remembered, so a revoked token is refused at once.
package issuer
