// Package ctl implements tokenctl. Run parses the command line and runs a
// command against the event log (NATS; it never appends: projections
// rebuild only drops the families read model) and, for replay --verify and
// keys, the service. Output is readable text by default and JSON with
// --json; events tail and export always write JSON lines. Long replays
// report progress on stderr.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/auth-platform/tokenservice/cmd/internal/envvar"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections/subscriber"
)

const usage = `usage: tokenctl [flags] <command> [args]

commands:
  events tail [--family ID] [--subject SUB] [--type TYPE] [--from-seq N]
                               follow events as JSON lines (from now, or from N)
  export [--from-seq N] [--to-seq N]
                               every event as JSON lines, for SIEMs; with
                               --archive DIR, the stored messages (MACs
                               included) as one new file in DIR, from after
                               the last one there: run it more often than
                               EVENT_RETENTION
  audit family <family-id>     the lineage of a family (with --archive DIR,
                               from the archive and the live stream)
  audit subject <subject>      the lineage of every family of a subject
  audit at <RFC3339-time> <refresh-token|access-token|family-id>
                               was it valid at that instant, and if not, why
  replay --verify [--service URL]
                               rebuild every projection from the log and
                               compare it with the live one of tokend
  revocations watch [--from-seq N] [--since DURATION]
                               print revocations as they happen (from now,
                               after sequence N, or from DURATION ago)
  projections rebuild [--wait DURATION]
                               drop the families read model; the running
                               replicas rebuild it from the first event
  keys list                    signing keys and their lifecycle
  keys rotate [--immediate] [--revoke-families]
                               ask tokend to stage a new key, or with
                               --immediate replace a compromised one at once
  apikey new --name NAME --role ROLE [--client-id ID] [--audience AUD] [--extra-claim CLAIM] [--expires TIME]
                               make an API key for a caller and print it
                               with its AUTH_POLICY_FILE entry (offline)
  client new --client-id ID [--auth METHOD] [--jwks-file F] [--identity ID] [--role ROLE] [--audience AUD]
                               print the AUTH_POLICY_FILE entry of an OAuth
                               client of the standard endpoints, and its
                               secret for client_secret_basic (offline)

Commands that read the log need an operator nkey (NATS_OPERATOR_KEY) or
tokend's ENCRYPTION_KEY (which also checks every record's MAC: without it
records are read unchecked); revocations watch also works with the
subscriber's seed, or anonymously on a development server, and --stream
TOKENS_FEED. Commands that call tokend need an admin API key or
certificate.

flags (environment in brackets):
`

// Run runs tokenctl with args and returns the exit code: 0 success, 1
// failure (including a failed verification or an invalid token in audit
// at), 2 usage error.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tokenctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{stdout: stdout, stderr: stderr}
	load := envvar.Flags(fs, getenv, append(o.vars(), o.creds.vars()...))
	fs.BoolVar(&o.json, "json", false, "machine-readable JSON output")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := load().Err(); err != nil {
		fmt.Fprintf(stderr, "tokenctl: %v\n", err)
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 || rest[0] == "help" {
		fs.Usage()
		if len(rest) == 0 {
			return 2
		}
		return 0
	}
	cmd, err := o.command(rest)
	if err != nil {
		fmt.Fprintf(stderr, "tokenctl: %v\n", err)
		return 2
	}
	if rest[0] != "apikey" && rest[0] != "nats" && rest[0] != "client" { // offline
		if err := o.connect(ctx); err != nil {
			fmt.Fprintf(stderr, "tokenctl: %v\n", err)
			return 1
		}
		defer o.nc.Close()
	}
	if err := cmd(ctx); err != nil {
		if errors.Is(err, errFailed) {
			return 1
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return 0 // interrupted tail
		}
		fmt.Fprintf(stderr, "tokenctl: %v\n", err)
		return 1
	}
	return 0
}

// errFailed is returned by a command that printed its own verdict of
// failure (a verification that did not match, an invalid token).
var errFailed = errors.New("failed")

// vars declares the variables (and flags) of the log and the service.
func (o *options) vars() []envvar.Var {
	return []envvar.Var{
		{Name: "NATS_URL", Flag: "nats-url", Default: "nats://127.0.0.1:4222", Parse: envvar.String(&o.natsURL),
			Doc: "NATS server"},
		{Name: "NATS_STREAM", Flag: "stream", Default: eventlog.DefaultStream, Parse: envvar.String(&o.stream),
			Doc: "stream"},
		{Name: "NATS_SUBJECT_PREFIX", Flag: "prefix", Default: eventlog.DefaultPrefix, Parse: envvar.String(&o.prefix),
			Doc: "subject prefix"},
		{Name: "TOKEND_URL", Flag: "service", Default: "http://127.0.0.1:50051", Parse: envvar.String(&o.service),
			Doc: "tokend base URL, for replay --verify"},
		{Name: "TOKENCTL_ARCHIVE", Flag: "archive", Parse: envvar.String(&o.archive),
			Doc: "folder of log archives: export writes one there, audit reads them with the live stream"},
	}
}

type options struct {
	natsURL, stream, prefix, service string
	archive                          string // folder of log archives, "" for none
	json                             bool
	creds                            credentials
	stdout, stderr                   io.Writer
	nc                               *nats.Conn
	log                              *eventlog.Log
}

func (o *options) connect(ctx context.Context) error {
	opts, err := o.creds.natsOptions()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(o.natsURL, append(opts, nats.Name("tokenctl"), nats.Timeout(5*time.Second))...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", o.natsURL, err)
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	key, err := o.creds.encryptionKey()
	if err != nil {
		nc.Close()
		return err
	}
	cfg := eventlog.Config{Stream: o.stream, Prefix: o.prefix}
	if key != nil {
		if cfg.Auth, err = eventlog.NewAuthenticator(key); err != nil {
			nc.Close()
			return err
		}
		cfg.OnForged = func(rec eventlog.Record, err error) {
			fmt.Fprintf(o.stderr, "tokenctl: FORGED record refused: seq %d %s: %v\n", rec.Seq, rec.Subject, err)
		}
	}
	l, err := eventlog.Attach(actx, nc, cfg)
	if err != nil {
		nc.Close()
		if o.stream != eventlog.DefaultFeedStream && (o.creds.natsNkey != "" || o.creds.natsCreds != "") {
			// A subscriber of tokend's embedded server sees only the feed.
			return fmt.Errorf("%w (a subscriber of tokend's embedded server reads --stream %s)", err, eventlog.DefaultFeedStream)
		}
		if o.stream != eventlog.DefaultFeedStream && key == nil && o.creds.natsNkey == "" && o.creds.natsCreds == "" {
			// Without credentials, tokend's embedded server admits at most a reader of the feed.
			return fmt.Errorf("%w (the log is readable with tokend's ENCRYPTION_KEY, --encryption-key-file DATA_DIR/encryption.key, or an operator nkey, --nats-nkey; without credentials only --stream %s)", err, eventlog.DefaultFeedStream)
		}
		return err
	}
	o.nc, o.log = nc, l
	return nil
}

// serviceKey prints the public nkey of the service's NATS user.
func (o *options) serviceKey(context.Context) error {
	key, err := o.creds.encryptionKey()
	if err != nil {
		return err
	}
	if key == nil {
		return errors.New("nats service-key needs ENCRYPTION_KEY or --encryption-key-file")
	}
	kp, err := eventlog.ServiceKey(key)
	if err != nil {
		return err
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(o.stdout, pub)
	return nil
}

// command parses a command line into the function that runs it.
func (o *options) command(args []string) (func(context.Context) error, error) {
	sub := func(name string) *flag.FlagSet {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		fs.SetOutput(o.stderr)
		return fs
	}
	switch strings.Join(args[:min(2, len(args))], " ") {
	case "events tail":
		fs := sub("events tail")
		var f tailFilter
		fs.StringVar(&f.family, "family", "", "only this family")
		fs.StringVar(&f.subject, "subject", "", "only families of this subject")
		fs.StringVar(&f.typ, "type", "", "only this event type (family.issued, family.rotated, family.revoked, subject.revoked, key.*)")
		fs.Uint64Var(&f.fromSeq, "from-seq", 0, "start at this sequence instead of now")
		if err := fs.Parse(args[2:]); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return o.tail(ctx, f) }, nil
	case "audit family", "audit subject":
		if len(args) != 3 {
			return nil, fmt.Errorf("%s takes one argument", strings.Join(args[:2], " "))
		}
		if args[1] == "family" {
			return func(ctx context.Context) error { return o.auditFamily(ctx, args[2]) }, nil
		}
		return func(ctx context.Context) error { return o.auditSubject(ctx, args[2]) }, nil
	case "audit at":
		if len(args) != 4 {
			return nil, errors.New("audit at takes a time and a token or family ID")
		}
		at, err := time.Parse(time.RFC3339Nano, args[2])
		if err != nil {
			return nil, fmt.Errorf("audit at: time %q is not RFC 3339 (2026-11-28T12:00:00Z)", args[2])
		}
		return func(ctx context.Context) error { return o.auditAt(ctx, at, args[3]) }, nil
	case "revocations watch":
		fs := sub("revocations watch")
		var start subscriber.Start
		var since time.Duration
		fs.Uint64Var(&start.AfterSeq, "from-seq", 0, "start after this sequence instead of now")
		fs.DurationVar(&since, "since", 0, "start this long ago instead of now (e.g. 15m: every revocation a live access token can need)")
		if err := fs.Parse(args[2:]); err != nil {
			return nil, err
		}
		if since > 0 && start.AfterSeq == 0 {
			start.Since = time.Now().Add(-since)
		}
		return func(ctx context.Context) error { return o.watchRevocations(ctx, start) }, nil
	case "projections rebuild":
		fs := sub("projections rebuild")
		wait := fs.Duration("wait", 0, "wait up to this long for the rebuild to catch up, and report it")
		if err := fs.Parse(args[2:]); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return o.rebuildFamilies(ctx, *wait) }, nil
	case "keys list":
		return o.keysList, nil
	case "keys rotate":
		fs := sub("keys rotate")
		immediate := fs.Bool("immediate", false, "activate a new key now and remove the current one from the JWKS now (compromise)")
		revoke := fs.Bool("revoke-families", false, "with --immediate: revoke every family the old key signed for")
		if err := fs.Parse(args[2:]); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return o.keysRotate(ctx, *immediate, *revoke) }, nil
	}
	switch args[0] {
	case "apikey":
		if len(args) < 2 || args[1] != "new" {
			return nil, errors.New("apikey takes the command new")
		}
		return o.apikeyCommand(sub("apikey new"), args[2:])
	case "client":
		if len(args) < 2 || args[1] != "new" {
			return nil, errors.New("client takes the command new")
		}
		return o.clientCommand(sub("client new"), args[2:])
	case "nats":
		if len(args) != 2 || args[1] != "service-key" {
			return nil, errors.New("nats takes the command service-key")
		}
		return o.serviceKey, nil
	case "export":
		fs := sub("export")
		var from, to uint64
		fs.Uint64Var(&from, "from-seq", 0, "first sequence (0: 1, or with --archive after the last archived one)")
		fs.Uint64Var(&to, "to-seq", 0, "last sequence (0: the end when the export starts)")
		if err := fs.Parse(args[1:]); err != nil {
			return nil, err
		}
		if o.archive != "" {
			return func(ctx context.Context) error { return o.exportArchive(ctx, o.archive, from, to) }, nil
		}
		return func(ctx context.Context) error { return o.export(ctx, max(from, 1), to) }, nil
	case "replay":
		fs := sub("replay")
		verify := fs.Bool("verify", false, "compare the rebuilt projections with tokend's")
		if err := fs.Parse(args[1:]); err != nil {
			return nil, err
		}
		if !*verify {
			return nil, errors.New("replay needs --verify (it only reads)")
		}
		return o.replayVerify, nil
	}
	return nil, fmt.Errorf("unknown command %q (tokenctl help)", strings.Join(args, " "))
}
