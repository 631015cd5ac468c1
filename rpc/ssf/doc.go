// Package ssf is the service's Shared Signals transmitter (OpenID Shared
// Signals Framework 1.0): it tells relying parties outside the platform
// about revocations as Security Event Tokens (RFC 8417), CAEP 1.0 and RISC
// 1.0 events made from the event log, delivered by push (RFC 8935) or poll
// (RFC 8936).
//
// # API
//
// Transmitter metadata (SSF 1.0 §7.1) at /.well-known/ssf-configuration,
// public; its absolute URLs come from the service's public base URL
// (rpc.PublicURL, PUBLIC_BASE_URL), and so does its issuer, the iss of
// every SET: Config.Issuer, or without one (development on loopback) the
// origin a stream's receiver called when it created the stream, recorded
// in the stream. Stream management (SSF 1.0 §8.1), for callers with the
// receiver or admin role:
//
//	/ssf/streams           POST create, GET read (one, or the caller's
//	                       list), PATCH update, PUT replace, DELETE
//	/ssf/status            GET, POST (enabled, paused, disabled)
//	/ssf/subjects/add      POST
//	/ssf/subjects/remove   POST
//	/ssf/verify            POST: a verification event with the state
//	/ssf/poll?stream_id=   POST: RFC 8936 poll (the stream's endpoint_url)
//
// A stream belongs to the caller that created it (auth.Identity.Actor):
// a receiver sees and manages only its own, an admin every stream
// (visibleTo is the one rule). A stream of another receiver is answered
// as unknown (404). Request bodies are bounded (32 KiB, 413 beyond);
// every member is bounded and checked. A push URL must be https, or http
// to a loopback host, and a loopback one only when the policy allows it
// (checkPushURL, PushURLPolicy.AllowLoopback). The push authorization header is a
// secret: stored sealed, never read back, and kept by a PATCH of the URL
// only within the URL's origin (moved elsewhere, it must be given again). default_subjects is ALL: a
// stream receives every subject except those removed (remove_subject),
// and add_subject takes a removed one back; it also records the subject,
// which is what a stream restricted to audiences receives subject-wide
// events about (entitled). Subjects are iss_sub (the
// user; iss is the access tokens' issuer), opaque (a session: the family
// ID, the access tokens' sid) and complex of the two.
//
// # Events
//
// signalOf is the one mapping from the log:
//
//	family revoked (any reason:     CAEP session-revoked; sub_id complex
//	reuse, client, subject, admin,  {user: iss_sub, session: opaque family
//	key compromise, other)          ID}; event_timestamp the revocation
//	                                time; reason_admin, reason_user
//	                                (the reason's label alone, never the
//	                                caller's words), initiating_entity
//	subject cut-off                 RISC sessions-revoked; sub_id iss_sub
//	key compromise declared and     signing-key-compromised (this
//	resolved                        transmitter's own type, sub_id opaque
//	                                key ID): the key, its replacement, how
//	                                many sessions were revoked; each of
//	                                those also comes as session-revoked
//	                                with reason key_compromise and the keys
//	                                that signed its access tokens
//	verification request            SSF verification, with the state
//
// What a receiver may learn (entitled): a stream records the audiences of
// its creator's policy entry (Caller.Audiences) when it is created, and
// keeps them. A stream so restricted receives a session-revoked only when
// the family's aud (FamilyState audience) is one of them, and a
// subject-wide event (sessions-revoked, signing-key-compromised) only
// about a subject it added (add_subject; at most maxAdded). A stream
// created without audiences receives every subject.
//
// Each SET is a JWS with typ secevent+jwt signed by the service's active
// signing key (verifiable with the JWKS), with iss, jti, iat, aud (the
// stream's audience: the receiver's choice within its policy audiences,
// by default its identity), sub_id and one event; txn names the log
// record, shared by the SETs made from it. A queued SET whose key left the
// JWKS (a compromised key, destroyed at once) is signed again by the
// active key when it is delivered, same claims and jti (resign); the SET
// of a compromise is never signed by the key it reports.
//
// # Delivery (the design decision)
//
// Streams are replicated state in a KV bucket (SSF_STREAMS), one sealed
// entry per stream, written by compare-and-set: every replica serves them,
// they survive restarts, and each replica watches the bucket into memory.
//
// SETs are made once per stream and kept until acknowledged, in one
// JetStream stream (SSF_SETS, subject tokend_ssf.SSF_SETS.<stream>.<jti>,
// payload sealed). A durable consumer of the log (ssf_materializer),
// shared by every replica and pinned to one, one record in flight, reads
// revocations and key compromises in log order and queues the SETs of
// every stream that wants each; the record is acknowledged only when all
// are queued. The jti is derived from the stream ID and the log sequence
// (jtiOf), and is the message's Nats-Msg-Id, so a record handled again
// after a replica was killed makes the same jti and is stored once.
// Streams receive the events after their creation. The consumer is
// created at the log's end, or, when streams exist (it was deleted, as an
// ENCRYPTION_KEY rotation of the embedded server does), after the oldest
// stream's start: events are then made again rather than lost.
//
// Poll reads a stream's queued SETs in order from any replica (a get of
// the next message on the stream's subject) and an ack purges the jti's
// subject. Push runs on every replica a worker per enabled push stream,
// reading a durable consumer of the queue with one SET in flight: one
// replica pushes at a time, in order; a SET is removed once the receiver
// answers 2xx (or 400, RFC 8935 §2.3: it refuses that SET, which is not
// sent again); any other outcome (network error, timeout, 5xx, 401, 429)
// sends it again after a backoff (doubled per attempt up to
// PushMaxBackoff) before any later SET. A worker killed mid-push leaves
// the SET unacknowledged; it is pushed again after the consumer's AckWait,
// with the same jti: at-least-once, receivers drop by jti.
//
// A paused stream keeps queuing and delivers nothing until enabled; a
// disabled one drops its queue and queues nothing (SSF 1.0 §8.1.2).
// Retention is bounded: a SET not delivered within Config.Retention
// (SSF_RETENTION), or pushed out when the queue is over MaxQueueBytes,
// is lost to its receiver. So is a SET made for a stream that already
// holds Config.MaxPendingPerStream (SSF_STREAM_MAX_PENDING): it is not
// queued (backlog; counted as dropped, logged once), so that one receiver
// that never takes its SETs cannot push the others' out of the queue. Responses from receivers are read up to 16 KiB
// within PushTimeout; redirects are not followed; the push client connects
// only to addresses allowedAddr accepts, checked on the address it dials,
// not on the name: an allow-list of public addresses (publicAddr: global
// unicast, in no special-purpose range, and the IPv4 inside a NAT64,
// 6to4, Teredo, IPv4-compatible or IPv4-mapped address public too);
// private, shared and link-local ones only with PushURLPolicy.AllowPrivate;
// loopback only with PushURLPolicy.AllowLoopback and a URL that names it.
//
// Metrics (Prometheus): token_service_ssf_sets_total{event},
// token_service_ssf_deliveries_total{method,outcome},
// token_service_ssf_delivery_lag_seconds{method},
// token_service_ssf_pending_sets, token_service_ssf_oldest_pending_seconds
// (the lag of the slowest receiver) and
// token_service_ssf_dropped_total{reason} (stream_backlog).
package ssf
