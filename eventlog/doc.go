// Package eventlog is the event store of the token service: one JetStream
// stream (default TOKENS, subjects token.>) that every state change is
// appended to. It is the only code that writes to JetStream.
//
// # Aggregates and compare-and-set
//
// An aggregate is identified by one filter subject, for example
// token.family.<fid>.> for a token family or token.key.> for the set of
// signing keys. Append with an Expect writes only if the last message on the
// filter still has the expected sequence (JetStream's
// Nats-Expected-Last-Subject-Sequence with ...-Subject). On a cluster two
// writers that use different filter strings for one aggregate can both win,
// so each aggregate has exactly one filter string, built by the functions in
// subjects.go and nowhere else.
//
// A lost race is reported by the server as error 10071 on a single node and
// 10164 on a replicated stream; both become ErrConflict. After an ambiguous
// failure (a timeout: the append may or may not be stored) Append retries
// with the same Nats-Msg-Id and expectation. The retry is answered with
// "conflict" on a single node and "duplicate" on a cluster; either way Append
// reads the last message of the aggregate from the stream leader and
// compares its Nats-Msg-Id with its own to learn whether it won.
//
// # Reads
//
// Last reads the last message of an aggregate with a direct get, which any
// replica may answer and may therefore be slightly behind; a decision based
// on it is safe because the following CAS append fails if it was stale.
// LastConsistent asks the stream leader and is used where a stale answer
// cannot be corrected by a CAS (resolving an ambiguous append, reading a
// record written just before).
//
// Replay and Follow deliver records in stream order through an ordered
// consumer (never Fetch in a loop); a reader is caught up when the consumer
// reports nothing pending.
//
// # Setting up beside a cluster that recovers
//
// nats-server answers a request about a stream or a consumer (info,
// create, update) from the leader of its Raft group only, and says nothing
// while the group has none. After a node that led idle groups (the feed,
// the checkpoints' bucket, Shared Signals) is killed or restarted, such a
// group may stay without a leader for seconds (measured up to 15 s); a
// request sent before the election is never answered. Provision's tries
// are therefore short at first (1 s, doubled up to Config.AttemptTimeout),
// so that a replica starting beside a restarted node waits about as long
// as the election, not a whole long try past it.
//
// # Authentication
//
// Only the service may write the log, and a reader does not take that on
// trust (DESIGN: the log is authenticated, not merely access-controlled).
// Every append carries a Token-Auth header: an HMAC-SHA256 under a key
// derived from ENCRYPTION_KEY over the subject, the aggregate's filter, the
// event type, message ID, actor, correlation ID, TTL, payload and the
// sequence the event follows in its aggregate (the compare-and-set
// expectation, which is why every append is conditional). Every read
// checks it: a record without a valid MAC is ErrForged, as is an authentic
// event published again, since its aggregate's message after its stated
// predecessor is the original, not the copy (Last and LastConsistent
// check that with one more get; readers in stream order with
// Record.Follows). Forged records are never delivered, and are reported
// once each to Config.OnForged. After an ENCRYPTION_KEY rotation the old
// key's records verify while it is configured; Authenticator.Vouch accepts
// them by position once the service has recorded that it verified them.
//
// The service's NATS user is derived from the same key (ServiceKey), so
// replicas share one identity and nothing else holds it; ProbeAnonymousAppend
// tells whether a client without credentials could append.
//
// # Retention
//
// The stream has no MaxAge: what leaves it leaves through a per-message TTL
// (Nats-TTL, Event.TTL) set by the writer at append, which the event's MAC
// covers, so it can be neither stripped nor shortened. DPoP claims and
// grace records carry their short windows. With EVENT_RETENTION set, the
// issuer gives every family event a TTL that ends the retention after the
// family ended (family.RetainUntil: the later of its refresh expiry and its
// last access token's expiry, and never before the event it follows, whose
// expiry Record.TTL gives), and every subject cut-off one that ends the
// retention after the last token it can end; TTLUntil turns that instant
// into whole seconds. Key events and rekey checkpoints never get a TTL: a
// key's events are its only record (published, signing, retired, its
// sealed material), and they are few.
//
// Each event of a family leaves no earlier than the events before it, so
// what is left of an aggregate is always the end of its chain. Last and
// LastConsistent keep working: the aggregate's first message after the
// last record's stated predecessor is still that record. A reader in
// stream order that meets an aggregate whose first events have left sees
// a first record whose Prev it never saw; Chained vouches for it with the
// same check (a copy of an event fails it while the original, or any later
// event of the aggregate, is in the stream). When all of a family's events
// have left, the family is unknown: the issuer answers as for a token
// never issued.
//
// Before events leave, tokenctl export --archive writes them as Stored
// messages, every header included; Restore reads one back with its MAC
// checked, so an archived family can still be audited.
//
// # Durability
//
// Append returns after the server acknowledged the message. With the
// embedded single node the message has then been written to the file (it
// survives a kill of the process); it reaches the disk at the next sync
// (Config.SyncInterval, default 2 minutes) unless SyncAlways is set, which
// makes every acknowledged message survive a power loss at about a tenth of
// the throughput. On a cluster an acknowledged message is on a quorum of
// servers.
package eventlog
