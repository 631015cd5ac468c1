package eventlog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/auth-platform/tokenservice/projections/subscriber"
)

// Names used by the embedded server's accounts. They are part of the
// subscriber contract (see the package documentation).
const (
	// SubscriberAccount is the NATS account of subscribers.
	SubscriberAccount = "SUBSCRIBERS"
	// DefaultStream is the default name of the event log's stream.
	DefaultStream = "TOKENS"
	// DefaultPrefix is the default subject prefix of the log.
	DefaultPrefix = subscriber.DefaultPrefix
	// DefaultFeedStream is the default name of the subscribers' stream.
	DefaultFeedStream = subscriber.DefaultStream
	// AnonymousConsumer is the one consumer of the feed that connections
	// without credentials may use (Anonymous).
	AnonymousConsumer = "anonymous"
	// SubscriberSeedFile is the file, under the data directory, that holds
	// the generated subscriber nkey seed.
	SubscriberSeedFile = "nats-subscriber.nk"

	// Limits of the subscriber account: the feed stream only, and a bound
	// on the consumers subscribers may keep.
	subscriberMaxStreams   = 1
	subscriberMaxConsumers = 1000
)

// AccountsConfig configures the accounts of an embedded server.
type AccountsConfig struct {
	// Stream is the event log's stream. Default DefaultStream (TOKENS).
	Stream string
	// Prefix is the subject prefix of the log. Default DefaultPrefix
	// (token).
	Prefix string
	// FeedStream names the subscribers' stream, the feed. Default
	// "TOKENS_FEED".
	FeedStream string
	// SubscriberKeys are the public user nkeys ("U...") of the subscriber
	// users, one per resource server (or per process): each may manage
	// only the consumer named after its key. At least one is required;
	// SubscriberSeed makes one.
	SubscriberKeys []string
	// OperatorKeys are public user nkeys of operators' tools (tokenctl):
	// users of the log's account with the service's rights, who can read
	// the whole log (audits) and could append to it. Default none.
	OperatorKeys []string
	// Anonymous lets connections without credentials in as subscribers:
	// they read the feed and nothing else, like a subscriber user (for a
	// development server, where a resource server or `tokenctl
	// revocations watch` then needs no seed). Never more: the log is
	// written only by the service's identity. Default false: every
	// connection authenticates.
	Anonymous bool
	// ServiceSecrets derive the service user's nkey (ServiceKey): the
	// first is the ENCRYPTION_KEY, the others its previous keys, whose
	// users are admitted too so that replicas still on a previous key join
	// during a rotation. Default: a key made in memory at each start,
	// which no other process can present.
	ServiceSecrets [][]byte
}

// ServiceKey returns the NATS user nkey of the service, derived from its
// ENCRYPTION_KEY: every replica that holds the key presents the same
// identity, and nothing else does (the key is never sent; nkeys answer a
// challenge with an Ed25519 signature). A replica that connects to
// another's embedded server, or to a cluster whose configuration lists the
// public key (tokenctl nats service-key), needs no other credential.
func ServiceKey(encryptionKey []byte) (nkeys.KeyPair, error) {
	if len(encryptionKey) < 32 {
		return nil, errors.New("eventlog: service key: the encryption key is shorter than 32 bytes")
	}
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, DeriveKey(encryptionKey, "tokenservice nats service nkey v1"))
	if err != nil {
		return nil, fmt.Errorf("eventlog: service key: %w", err)
	}
	return kp, nil
}

// NkeyOption returns the NATS option that authenticates as user kp.
func NkeyOption(kp nkeys.KeyPair) nats.Option { return nkeyOption(kp) }

// Accounts is the authentication and authorization of an embedded server
// (EmbeddedConfig.Accounts). Without it the server accepts any client.
//
// With it the server has two accounts:
//
//   - the global account, which holds the event log: the service's user
//     exists in it, authenticated with the nkey derived from the
//     ENCRYPTION_KEY (ServiceKey; one made in memory without
//     ServiceSecrets), with full rights, and so do the operators of
//     OperatorKeys;
//   - SUBSCRIBERS, which holds one stream (FeedStream), the subscriber
//     feed: public revocations and key lifecycle that tokend derives from
//     the log and writes there (projections.FeedWriter), never a copy of
//     a log event. An admin user, also with an in-memory nkey, creates the
//     stream (ProvisionFeed) and writes it (ConnectFeed). Each subscriber
//     user may read the stream, and create, read and delete one consumer,
//     named after its public key; nothing else. With Anonymous,
//     connections without credentials are subscribers too, whose consumer
//     is named AnonymousConsumer.
//
// The boundary is the account, not user permissions inside the log's
// account, because a user who may create consumers on a stream can also
// update a durable consumer of the same name (the families projector's),
// pull from the service's consumers, or name a delivery subject that the
// server then publishes to (a KV bucket's subject, for instance): none of
// that can be expressed as a permission on subjects. No import or export
// joins the two accounts: nothing a subscriber does can reach the log, and
// nothing but what tokend writes reaches the feed. Inside SUBSCRIBERS,
// consumer names keep subscribers apart: the consumer API carries the
// consumer's name in its subject, so one subscriber cannot delete, pause
// or update another's consumer.
//
// Subscribers connect to the embedded server's listener with their nkey
// (nats.NkeyOptionFromSeed, or nats --nkey) and read FeedStream through the
// consumer named after their public key (projections/subscriber,
// Config.Consumer). The feed's files are under the data directory too,
// encrypted like the log's.
//
// An Accounts is immutable and safe for concurrent use.
type Accounts struct {
	cfg       AccountsConfig
	service   nkeys.KeyPair
	previous  []nkeys.KeyPair // service users of the previous keys
	admin     nkeys.KeyPair
	anonymous nkeys.KeyPair // nil unless cfg.Anonymous
}

// NewAccounts returns the accounts of cfg, with fresh in-memory keys for
// the service and admin users. It returns an error if no subscriber key is
// given or one is not a public user nkey.
func NewAccounts(cfg AccountsConfig) (*Accounts, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.FeedStream == "" {
		cfg.FeedStream = DefaultFeedStream
	}
	for _, name := range []string{cfg.Stream, cfg.FeedStream, cfg.Prefix} {
		if !validToken(name) {
			return nil, fmt.Errorf("eventlog: accounts: %q is not a valid stream name or subject token", name)
		}
	}
	if cfg.Stream == cfg.FeedStream {
		return nil, errors.New("eventlog: accounts: the feed stream needs a name of its own")
	}
	if len(cfg.SubscriberKeys) == 0 {
		return nil, errors.New("eventlog: accounts: at least one subscriber nkey is required")
	}
	for _, k := range cfg.SubscriberKeys {
		if !nkeys.IsValidPublicUserKey(k) {
			return nil, fmt.Errorf("eventlog: accounts: subscriber key %q is not a public user nkey (U...)", k)
		}
	}
	seen := map[string]bool{}
	for _, k := range append(append([]string(nil), cfg.SubscriberKeys...), cfg.OperatorKeys...) {
		if seen[k] {
			return nil, fmt.Errorf("eventlog: accounts: nkey %q is given twice", k)
		}
		seen[k] = true
	}
	for _, k := range cfg.OperatorKeys {
		if !nkeys.IsValidPublicUserKey(k) {
			return nil, fmt.Errorf("eventlog: accounts: operator key %q is not a public user nkey (U...)", k)
		}
	}
	cfg.SubscriberKeys = append([]string(nil), cfg.SubscriberKeys...)
	cfg.OperatorKeys = append([]string(nil), cfg.OperatorKeys...)
	var service nkeys.KeyPair
	var previous []nkeys.KeyPair
	var err error
	for i, secret := range cfg.ServiceSecrets {
		kp, err := ServiceKey(secret)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			service = kp
		} else {
			previous = append(previous, kp)
		}
	}
	if service == nil {
		if service, err = nkeys.CreateUser(); err != nil {
			return nil, fmt.Errorf("eventlog: accounts: service key: %w", err)
		}
	}
	admin, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("eventlog: accounts: admin key: %w", err)
	}
	cfg.ServiceSecrets = nil // the keys are derived; the secrets are not kept
	a := &Accounts{cfg: cfg, service: service, previous: previous, admin: admin}
	if cfg.Anonymous {
		if a.anonymous, err = nkeys.CreateUser(); err != nil {
			return nil, fmt.Errorf("eventlog: accounts: anonymous key: %w", err)
		}
	}
	return a, nil
}

// FeedStream returns the name of the subscribers' stream.
func (a *Accounts) FeedStream() string { return a.cfg.FeedStream }

// FeedSubjects returns the subjects of the feed stream.
func (a *Accounts) FeedSubjects() string { return subscriber.NewSubjects(a.cfg.Prefix).All() }

// ServiceOption returns the option that authenticates the service's own
// connection (Embedded.Connect(a.ServiceOption())).
func (a *Accounts) ServiceOption() nats.Option { return nkeyOption(a.service) }

func nkeyOption(kp nkeys.KeyPair) nats.Option {
	pub, _ := kp.PublicKey() // cannot fail for a key made by CreateUser
	return nats.Nkey(pub, kp.Sign)
}

// ConnectFeed returns an in-process connection of the admin user of the
// subscribers' account, which may write the feed stream; the caller closes
// it.
func (a *Accounts) ConnectFeed(e *Embedded) (*nats.Conn, error) {
	return e.Connect(nkeyOption(a.admin), nats.Name("tokend-feed"))
}

// configure adds the accounts and users to the options of a server that
// is not started yet. The log stays in the global account, where a server
// without accounts kept it: the account's name is part of where its files
// are and of the key that encrypts them, so adding accounts moves nothing.
// The global account cannot be declared in configuration text, hence the
// API; enableJetStream completes it once the server runs.
func (a *Accounts) configure(opts *server.Options) error {
	global := server.NewAccount(server.DEFAULT_GLOBAL_ACCOUNT)
	subs := server.NewAccount(SubscriberAccount)
	servicePub, _ := a.service.PublicKey()
	adminPub, _ := a.admin.PublicKey()
	opts.Accounts = append(opts.Accounts, global, subs)
	opts.Nkeys = append(opts.Nkeys,
		&server.NkeyUser{Nkey: servicePub, Account: global},
		&server.NkeyUser{Nkey: adminPub, Account: subs},
	)
	for _, kp := range a.previous {
		pub, _ := kp.PublicKey()
		if pub != servicePub {
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: pub, Account: global})
		}
	}
	for _, k := range a.cfg.SubscriberKeys {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k, Account: subs, Permissions: a.subscriberPermissions(k)})
	}
	for _, k := range a.cfg.OperatorKeys {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k, Account: global})
	}
	if a.anonymous != nil {
		// A connection without credentials becomes this user, whose key
		// nobody holds (nats-server skips the signature for it): a
		// subscriber, with a subscriber's rights.
		pub, _ := a.anonymous.PublicKey()
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: pub, Account: subs, Permissions: a.subscriberPermissions(AnonymousConsumer)})
		opts.NoAuthUser = pub
	}
	return nil
}

// enableJetStream enables JetStream in both accounts of a running server
// (which recovers the log's stream from its files).
func (a *Accounts) enableJetStream(srv *server.Server) error {
	if err := srv.GlobalAccount().EnableJetStream(nil, nil); err != nil {
		return fmt.Errorf("jetstream in the global account: %w", err)
	}
	subs, err := srv.LookupAccount(SubscriberAccount)
	if err != nil {
		return err
	}
	limits := map[string]server.JetStreamAccountLimits{"": {
		MaxMemory: -1, MaxStore: -1, MaxAckPending: -1,
		MaxStreams: subscriberMaxStreams, MaxConsumers: subscriberMaxConsumers,
	}}
	if err := subs.EnableJetStream(limits, nil); err != nil {
		return fmt.Errorf("jetstream in account %s: %w", SubscriberAccount, err)
	}
	return nil
}

// subscriberPermissions allows a subscriber to read the feed stream
// (stream info, message gets) and to create, read, pull from and delete
// the one consumer named consumer (its public key); nothing else: no
// publish to any other subject, in particular not to the feed's subjects,
// no other consumer's API (create, which updates, pause, delete), no
// stream management. A push consumer cannot deliver into the feed: the
// server refuses a delivery subject that the stream captures.
func (a *Accounts) subscriberPermissions(consumer string) *server.Permissions {
	feed := a.cfg.FeedStream
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: SubscriberPublishAllow(feed, consumer)},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
}

// SubscriberPublishAllow returns the subjects a subscriber whose consumer
// is named consumer may publish to, for the feed stream feed: stream info
// and message gets of the feed, and the API of that one consumer. A
// cluster's configuration for subscribers lists the same (deploy/).
func SubscriberPublishAllow(feed, consumer string) []string {
	own := feed + "." + consumer
	return []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.LIST",
		"$JS.API.STREAM.INFO." + feed,
		"$JS.API.STREAM.MSG.GET." + feed,
		"$JS.API.DIRECT.GET." + feed,
		"$JS.API.DIRECT.GET." + feed + ".>",
		"$JS.API.CONSUMER.CREATE." + own,
		"$JS.API.CONSUMER.CREATE." + own + ".>", // with a filter in the subject
		"$JS.API.CONSUMER.INFO." + own,
		"$JS.API.CONSUMER.DELETE." + own,
		"$JS.API.CONSUMER.MSG.NEXT." + own,
		"$JS.ACK." + own + ".>",
		"$JS.FC." + own + ".>",
	}
}

// SubscriberSeed returns the public key of the subscriber nkey whose seed
// is in dir/nats-subscriber.nk, creating the key and the file (mode 0600)
// if the file does not exist. The file holds only the seed, the format that
// nats.NkeyOptionFromSeed and the nats CLI's --nkey read. The server
// itself needs only the public key.
func SubscriberSeed(dir string) (publicKey, path string, err error) {
	path = filepath.Join(dir, SubscriberSeedFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		kp, err := nkeys.ParseDecoratedNKey(data)
		if err != nil {
			return "", "", fmt.Errorf("eventlog: subscriber seed %s: %w", path, err)
		}
		defer kp.Wipe()
		pub, err := kp.PublicKey()
		if err != nil || !nkeys.IsValidPublicUserKey(pub) {
			return "", "", fmt.Errorf("eventlog: subscriber seed %s: not a user nkey seed", path)
		}
		return pub, path, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", "", fmt.Errorf("eventlog: subscriber seed: %w", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", "", fmt.Errorf("eventlog: subscriber seed: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", "", fmt.Errorf("eventlog: subscriber seed: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("eventlog: subscriber seed: %w", err)
	}
	// O_EXCL: two processes starting on one data directory keep one key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return SubscriberSeed(dir)
		}
		return "", "", fmt.Errorf("eventlog: subscriber seed: %w", err)
	}
	_, werr := f.Write(append(seed, '\n'))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return "", "", fmt.Errorf("eventlog: subscriber seed %s: %w", path, werr)
	}
	pub, _ := kp.PublicKey()
	return pub, path, nil
}
