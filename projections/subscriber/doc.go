// Package subscriber is what a resource server embeds to follow the token
// service's subscriber feed over NATS: it keeps the set of revocations that
// can still affect live access tokens, so that the resource server checks a
// token's revocation in memory with no call to the token service, and it
// reports the signing keys' public lifecycle.
//
// The feed (stream TOKENS_FEED by default) is written by the token service,
// not copied from its log: it holds only public facts, as protobuf messages
// of proto/token/feed/v1 (FamilyRevoked, SubjectRevoked, KeyChanged), on
// the subjects of Subjects, with the headers named here (HeaderEvent,
// HeaderSchema, HeaderSourceSeq). No refresh-token hash, family state or
// sealed key is ever in it. Readers skip event types they do not know.
//
// On the token service's embedded NATS server, connect with the nkey of a
// subscriber user (the seed tokend writes to DATA_DIR/nats-subscriber.nk,
// or one whose public key is in NATS_SUBSCRIBER_KEY) and set
// Config.Consumer to that user's public key: each subscriber user may
// create, read and delete only the consumer named after it, so one
// resource server cannot delete or pause another's.
//
// A Subscriber starts AccessTTL (plus a minute of clock leeway) in the
// past: a revocation older than that concerns only access tokens that have
// expired. A revoked family revokes every access token whose sid claim names
// it. A subject cut-off revokes every access token of the subject issued at
// or before the cut-off; iat has one-second precision, so a token issued in
// the same second as the cut-off but after it is refused too (the safe
// side). Until Ready is closed the set is still catching up: a resource
// server should refuse tokens (or wait) until then, and watch Lag.
//
// This package depends on the NATS client only, never on the NATS server
// or the token service's log: it is linked into resource servers.
package subscriber
