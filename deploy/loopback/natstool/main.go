// Command natstool is the NATS half of deploy/loopback/run.sh that a shell
// cannot do: it makes user nkeys for the cluster's configurations and
// checks that a connection without credentials cannot append to the log.
//
// Usage:
//
//	natstool nkey DIR NAME
//	    Writes DIR/NAME.nk (the seed, mode 0600) unless it exists, and
//	    prints the public key (U...). The file holds only the seed, the
//	    format NATS_NKEY_SEED, nats.NkeyOptionFromSeed and nats --nkey read.
//	natstool anonymous URL CA_FILE SUBJECT
//	    Connects to URL without credentials (verifying the server with
//	    CA_FILE) and publishes to SUBJECT, waiting for the server's answer.
//	    Exit 0 if the server refused the connection or the publish, 1 if
//	    it accepted them, 2 on a usage or TLS error.
//	natstool subscriber-users ADMIN_KEY [SUBSCRIBER_KEY...]
//	    Prints, on one line, the users of the account SUBSCRIBERS as a
//	    nats-server configuration line "users: [...]", which the
//	    deployments' configurations include in the account:
//	    the feed admin ADMIN_KEY, who may create, update and inspect the
//	    stream TOKENS_FEED, and one user per resource server, who may read
//	    TOKENS_FEED and create, inspect, pull from and delete only the
//	    consumer named after its own public key (eventlog.Accounts'
//	    subscriber permissions). The keys are public user nkeys (U...).
//	natstool feed URL CA_FILE NKEYS_DIR FEED_JSON FAMILY_ID
//	    As NKEYS_DIR/feed-admin.nk, creates (or updates) the stream of
//	    FEED_JSON (deploy/nats-feed.json); then, as the resource server
//	    NKEYS_DIR/subscriber.nk, through the consumer named after its
//	    public key, reads the feed with projections/subscriber until the
//	    revocation of family FAMILY_ID arrives, and reads every message
//	    of the stream, each of which must be a feed message (a tokenfeed.
//	    subject, a token.feed.v1 payload that decodes): nothing of the
//	    log. Exit 0 if so, 1 if not, 2 on a usage or connection error.
//
// The deploy configurations use it too, to make the nkeys of their users
// and the SUBSCRIBERS users (see deploy/README.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections/subscriber"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	switch {
	case len(args) == 3 && args[0] == "nkey":
		pub, err := nkey(args[1], args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "natstool:", err)
			return 2
		}
		fmt.Println(pub)
		return 0
	case len(args) == 4 && args[0] == "anonymous":
		return anonymous(args[1], args[2], args[3])
	case len(args) == 6 && args[0] == "feed":
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return feed(ctx, args[1], args[2], args[3], args[4], args[5])
	case len(args) >= 2 && args[0] == "subscriber-users":
		users, err := subscriberUsers(feedStream, args[1], args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "natstool:", err)
			return 2
		}
		fmt.Println(users)
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: natstool nkey DIR NAME | natstool anonymous URL CA_FILE SUBJECT | natstool subscriber-users ADMIN_KEY [SUBSCRIBER_KEY...] | natstool feed URL CA_FILE NKEYS_DIR FEED_JSON FAMILY_ID")
	return 2
}

// nkey returns the public key of the user seed in dir/name.nk, creating
// the seed if the file does not exist.
func nkey(dir, name string) (string, error) {
	path := filepath.Join(dir, name+".nk")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", err
		}
		defer kp.Wipe()
		seed, err := kp.Seed()
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", err
		}
		_, werr := f.Write(append(seed, '\n'))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return "", fmt.Errorf("%s: %w", path, werr)
		}
		return kp.PublicKey()
	}
	if err != nil {
		return "", err
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("%s: not a user nkey seed", path)
	}
	return pub, nil
}

// anonymous publishes to subject without credentials and reports whether
// the server refused.
func anonymous(url, caFile, subject string) int {
	errs := make(chan error, 1)
	nc, err := nats.Connect(url, nats.RootCAs(caFile), nats.Timeout(5*time.Second), nats.NoReconnect(),
		nats.Name("loopback-anonymous-probe"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization") {
			fmt.Printf("refused: connection without credentials: %v\n", err)
			return 0
		}
		fmt.Fprintf(os.Stderr, "natstool: connect to %s: %v\n", url, err)
		return 2
	}
	defer nc.Close()
	if err := nc.Publish(subject, []byte("anonymous")); err != nil {
		fmt.Printf("refused: publish to %s: %v\n", subject, err)
		return 0
	}
	// A permissions violation comes back asynchronously; a flush makes
	// sure the server has read the publish.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		fmt.Printf("refused: publish to %s: %v\n", subject, err)
		return 0
	}
	select {
	case err := <-errs:
		fmt.Printf("refused: publish to %s: %v\n", subject, err)
		return 0
	case <-time.After(500 * time.Millisecond):
	}
	fmt.Printf("ACCEPTED: a connection without credentials published to %s\n", subject)
	return 1
}

// feedStream is the stream of the account SUBSCRIBERS that mirrors the
// feed tokend writes (subscriber.DefaultStream).
const feedStream = "TOKENS_FEED"

// subscriberUsers returns the users of the account SUBSCRIBERS as a
// nats-server configuration line (users: [...]): the feed admin, then one user per
// resource server whose rights are those of eventlog.Accounts'
// subscriberPermissions, with its public key as the consumer's name (the
// permission's subject carries the name, so one resource server cannot
// read through, replace or delete another's consumer). nats-server
// configuration cannot build a subject from a variable (nor take users
// with permissions from the environment), hence a generated file.
func subscriberUsers(feed, admin string, subscribers []string) (string, error) {
	seen := map[string]bool{}
	for _, k := range append([]string{admin}, subscribers...) {
		if !nkeys.IsValidPublicUserKey(k) {
			return "", fmt.Errorf("subscriber-users: %q is not a public user nkey (U...)", k)
		}
		if seen[k] {
			return "", fmt.Errorf("subscriber-users: %s is given twice", k)
		}
		seen[k] = true
	}
	users := []string{user(admin, []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.CREATE." + feed,
		"$JS.API.STREAM.UPDATE." + feed,
		"$JS.API.STREAM.INFO." + feed,
	})}
	for _, k := range subscribers {
		users = append(users, user(k, eventlog.SubscriberPublishAllow(feed, k)))
	}
	return "users: [" + strings.Join(users, ", ") + "]", nil
}

// user returns one user of a nats-server configuration: the nkey, the
// subjects it may publish to, and replies on _INBOX.> only.
func user(key string, publish []string) string {
	q := make([]string, len(publish))
	for i, s := range publish {
		q[i] = strconv.Quote(s)
	}
	return fmt.Sprintf(`{nkey: %q, permissions: {publish: {allow: [%s]}, subscribe: {allow: ["_INBOX.>"]}}}`, key, strings.Join(q, ", "))
}

// feed creates the subscribers' stream as the feed admin and checks, as
// the resource server, that it holds family fid's revocation and only
// feed messages.
func feed(ctx context.Context, url, caFile, dir, feedJSON, fid string) int {
	b, err := os.ReadFile(feedJSON)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstool:", err)
		return 2
	}
	var cfg jetstream.StreamConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "natstool: %s: %v\n", feedJSON, err)
		return 2
	}
	connect := func(user string) (*nats.Conn, error) {
		seed, err := nats.NkeyOptionFromSeed(filepath.Join(dir, user+".nk"))
		if err != nil {
			return nil, err
		}
		return nats.Connect(url, nats.RootCAs(caFile), seed, nats.Name("loopback-check-"+user), nats.Timeout(5*time.Second))
	}
	anc, err := connect("feed-admin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstool: feed admin:", err)
		return 2
	}
	defer anc.Close()
	admin, err := jetstream.New(anc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstool:", err)
		return 2
	}
	if _, err := admin.CreateOrUpdateStream(ctx, cfg); err != nil {
		fmt.Printf("FAIL: the feed admin creates %s: %v\n", cfg.Name, err)
		return 1
	}
	consumer, err := subscriber.ConsumerName(filepath.Join(dir, "subscriber.nk"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstool:", err)
		return 2
	}
	snc, err := connect("subscriber")
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstool: subscriber:", err)
		return 2
	}
	defer snc.Close()

	// The library resource servers embed, with the consumer named after
	// the user's key.
	got := make(chan subscriber.Revocation, 64)
	rs, err := subscriber.New(snc, subscriber.Config{Stream: cfg.Name, Consumer: consumer,
		OnRevocation: func(r subscriber.Revocation) {
			select {
			case got <- r:
			default:
			}
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstool:", err)
		return 2
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rs.Run(rctx) }()
	found := false
	for !found {
		select {
		case r := <-got:
			found = r.FamilyID == fid
		case <-ctx.Done():
			stop()
			<-done
			fmt.Printf("FAIL: the resource server read no revocation of family %s from %s\n", fid, cfg.Name)
			return 1
		}
	}
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "natstool: subscriber:", err)
	}

	// Every message the resource server can read is a feed message.
	js, err := jetstream.New(snc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstool:", err)
		return 2
	}
	cons, err := js.CreateConsumer(ctx, cfg.Name, jetstream.ConsumerConfig{
		Name: consumer, FilterSubject: subscriber.NewSubjects("").All(), AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		fmt.Printf("FAIL: the resource server's consumer %s on %s: %v\n", consumer, cfg.Name, err)
		return 1
	}
	defer func() {
		if err := js.DeleteConsumer(context.WithoutCancel(ctx), cfg.Name, consumer); err != nil {
			fmt.Fprintln(os.Stderr, "natstool: delete consumer:", err) // InactiveThreshold removes it
		}
	}()
	n := cons.CachedInfo().NumPending
	batch, err := cons.FetchNoWait(int(n))
	if err != nil {
		fmt.Fprintln(os.Stderr, "natstool:", err)
		return 2
	}
	var read uint64
	for m := range batch.Messages() {
		read++
		md, err := m.Metadata()
		if err != nil {
			fmt.Fprintln(os.Stderr, "natstool:", err)
			return 2
		}
		schema := m.Headers().Get(subscriber.HeaderSchema)
		if !strings.HasPrefix(m.Subject(), "tokenfeed.") || !strings.HasPrefix(schema, "token.feed.v1.") {
			fmt.Printf("FAIL: %s holds %s (schema %q): not a feed message\n", cfg.Name, m.Subject(), schema)
			return 1
		}
		if _, _, err := subscriber.Decode(md.Sequence.Stream, md.Timestamp, m.Headers(), m.Data()); err != nil {
			fmt.Printf("FAIL: %s holds %s, which does not decode as a feed message: %v\n", cfg.Name, m.Subject(), err)
			return 1
		}
	}
	if err := batch.Error(); err != nil || read != n {
		fmt.Fprintf(os.Stderr, "natstool: read %d of %d messages: %v\n", read, n, err)
		return 2
	}
	fmt.Printf("the resource server read the revocation of %s through consumer %s; the %d messages of %s are all feed messages\n", fid, consumer, n, cfg.Name)
	return 0
}
