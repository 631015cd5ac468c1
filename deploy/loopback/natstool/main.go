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
//
// The deploy configurations use it too, to make the nkeys of their users
// and the SUBSCRIBERS users (see deploy/README.md).
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
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
	case len(args) >= 2 && args[0] == "subscriber-users":
		users, err := subscriberUsers(feedStream, args[1], args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "natstool:", err)
			return 2
		}
		fmt.Println(users)
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: natstool nkey DIR NAME | natstool anonymous URL CA_FILE SUBJECT | natstool subscriber-users ADMIN_KEY [SUBSCRIBER_KEY...]")
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
		own := feed + "." + k
		users = append(users, user(k, []string{
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
		}))
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
