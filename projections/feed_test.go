package projections_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/projections/subscriber"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	feedv1 "github.com/auth-platform/tokenservice/proto/token/feed/v1"
)

// feedMsg is a feed message as a subscriber reads it.
type feedMsg struct {
	seq     uint64
	subject string
	header  nats.Header
	data    []byte
}

// readAll reads every message of the feed through the consumer named
// consumer, waiting until it holds at least want.
func readAll(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, consumer string, want int) []feedMsg {
	t.Helper()
	var got []feedMsg
	for {
		if consumer == "" {
			consumer = "reader"
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Name: consumer, AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		pending := cons.CachedInfo().NumPending
		for uint64(len(got)) < pending {
			msgs, err := cons.Fetch(int(pending)-len(got), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for m := range msgs.Messages() {
				md, err := m.Metadata()
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, feedMsg{seq: md.Sequence.Stream, subject: m.Subject(), header: m.Headers(), data: m.Data()})
			}
			if msgs.Error() != nil && !errors.Is(msgs.Error(), nats.ErrTimeout) {
				t.Fatal(msgs.Error())
			}
		}
		if err := js.DeleteConsumer(ctx, stream, consumer); err != nil {
			t.Fatal(err)
		}
		if len(got) >= want {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the feed holds %d messages, want %d", len(got), want)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// publicRecords returns the log sequences of the records the feed must
// carry, in order, and the secrets the log holds: sealed keys, refresh
// secret hashes and spent prefixes, grace records.
func publicRecords(ctx context.Context, t *testing.T, log *eventlog.Log) (seqs []uint64, secrets [][]byte) {
	t.Helper()
	err := log.Replay(ctx, 1, nil, func(rec eventlog.Record) {
		switch rec.Type {
		case events.TypeGrace:
			secrets = append(secrets, rec.Data)
			return
		case events.TypeDPoPProofUsed:
			return
		}
		ev, err := events.Decode(rec)
		if err != nil {
			t.Errorf("seq %d: %v", rec.Seq, err)
			return
		}
		if st := events.FamilyStateOf(ev); st != nil {
			for _, b := range [][]byte{st.GetSecretHash(), st.GetPreviousSecretHash(), st.GetSpentSecretPrefixes()} {
				if len(b) >= 8 {
					secrets = append(secrets, b)
				}
			}
		}
		switch e := ev.(type) {
		case *eventsv1.KeyGenerated:
			secrets = append(secrets, e.GetSealedPrivateKey())
		case *eventsv1.KeyResealed:
			secrets = append(secrets, e.GetSealedPrivateKey())
		case *eventsv1.FamilyRevoked, *eventsv1.SubjectRevoked, *eventsv1.KeyPublished, *eventsv1.KeyActivated, *eventsv1.KeyRetired, *eventsv1.KeyDestroyed:
			seqs = append(seqs, rec.Seq)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return seqs, secrets
}

// checkFeed checks that feed holds exactly one message per public record
// of the log, in log order, and no secret of the log.
func checkFeed(t *testing.T, feed []feedMsg, want []uint64, secrets [][]byte) {
	t.Helper()
	var got []uint64
	for _, m := range feed {
		src, err := strconv.ParseUint(m.header.Get(subscriber.HeaderSourceSeq), 10, 64)
		if err != nil {
			t.Fatalf("feed seq %d: no %s", m.seq, subscriber.HeaderSourceSeq)
		}
		got = append(got, src)
		whole := bytes.Join([][]byte{[]byte(m.subject), m.data, []byte(fmt.Sprint(m.header))}, nil)
		for _, s := range secrets {
			if len(s) > 0 && bytes.Contains(whole, s) {
				t.Fatalf("feed seq %d (%s) holds a secret of the log", m.seq, m.subject)
			}
		}
		if _, _, err := subscriber.Decode(m.seq, time.Time{}, m.header, m.data); err != nil {
			t.Fatalf("feed seq %d: %v", m.seq, err)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("feed source sequences %v, want %v (one per public event, in log order)", got, want)
	}
}

// TestFeedCarriesNoSecret: with tokend's accounts, a subscriber reads
// every message of the feed: each revocation and each public key step of
// the log is there once, in order, and no payload, subject or header holds
// a sealed key, a refresh secret hash or spent prefix, or a grace record.
func TestFeedCarriesNoSecret(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	pub, seedFile, err := eventlog.SubscriberSeed(dir)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := eventlog.NewAccounts(eventlog.AccountsConfig{SubscriberKeys: []string{pub}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := eventlog.StartEmbedded(eventlog.EmbeddedConfig{DataDir: filepath.Join(dir, "jetstream"), Listen: "127.0.0.1:0", Accounts: acc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	svc, err := e.Connect(acc.ServiceOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	env := issuertest.New(t, issuertest.Options{Conn: svc, Fallback: true, Grace: time.Minute})
	if err := acc.ProvisionFeed(ctx, e); err != nil {
		t.Fatal(err)
	}
	fc, err := acc.ConnectFeed(e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.Close)
	fjs, _ := jetstream.New(fc)
	w := projections.NewFeedWriter(env.Log, fjs, projections.FeedConfig{Stream: acc.FeedStream(), OnError: func(err error) { t.Log(err) }})
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(wctx) }()
	defer func() { stop(); <-done }()

	// Families issued, rotated (a grace record, spent prefixes), revoked
	// every way; keys rotated, one destroyed at once.
	for i := range 3 {
		tok, err := env.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: fmt.Sprintf("user-%d", i), ClientID: "app", Audience: []string{"api"}})
		if err != nil {
			t.Fatal(err)
		}
		next, err := env.Issuer.Refresh(ctx, issuer.RefreshRequest{RefreshToken: tok.RefreshToken, ClientID: "app"})
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0:
			_, err = env.Issuer.RevokeRefreshToken(ctx, next.RefreshToken, eventsv1.RevocationReason_REVOCATION_REASON_CLIENT)
		case 1:
			_, err = env.Issuer.RevokeSubject(ctx, "user-1", eventsv1.RevocationReason_REVOCATION_REASON_SUBJECT)
		case 2:
			_, err = env.Issuer.RevokeFamily(ctx, tok.FamilyID, eventsv1.RevocationReason_REVOCATION_REASON_ADMIN)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.Keyring.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Keyring.Rotate(ctx, true); err != nil {
		t.Fatal(err)
	}
	want, secrets := publicRecords(ctx, t, env.Log)
	if len(secrets) < 6 {
		t.Fatalf("the log holds only %d secrets: the test proves nothing", len(secrets))
	}

	// As the subscriber user, over TCP, through its own consumer.
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := nats.Connect(e.ClientURL(), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sjs, _ := jetstream.New(sc)
	feed := readAll(ctx, t, sjs, acc.FeedStream(), pub, len(want))
	checkFeed(t, feed, want, secrets)

	// The key steps in order, with the public key until destroyed.
	var steps []string
	for _, m := range feed {
		_, k, _ := subscriber.Decode(m.seq, time.Time{}, m.header, m.data)
		if k == nil {
			continue
		}
		steps = append(steps, k.ID+":"+k.Status)
		if (k.Status != "destroyed") != (k.PublicKey != nil && k.PublicKey.GetKid() == k.ID && k.Algorithm != "") {
			t.Fatalf("key step %s:%s: public key %v, algorithm %q", k.ID, k.Status, k.PublicKey, k.Algorithm)
		}
	}
	if len(steps) < 4 {
		t.Fatalf("key steps %v", steps)
	}
	t.Logf("key steps %v", steps)
}

// TestFeedWriterTakeover: two writers write the feed while events are
// appended; one stops in the middle. Every public event is in the feed
// once, in log order, and a writer started later adds nothing twice.
func TestFeedWriterTakeover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := eventlogtest.SingleNode(t)
	log := eventlogtest.OpenLog(t, node.Conn, eventlog.Config{})
	js := log.JetStream()
	if _, err := js.CreateOrUpdateStream(ctx, eventlog.FeedStreamConfig(subscriber.DefaultStream, "token", 1)); err != nil {
		t.Fatal(err)
	}
	// Each writer on a connection of its own, as on two replicas.
	start := func() (*projections.FeedWriter, context.CancelFunc, <-chan struct{}) {
		nc, err := node.Embedded.Connect()
		if err != nil {
			t.Fatal(err)
		}
		l, err := eventlog.Attach(ctx, nc, eventlog.Config{})
		if err != nil {
			t.Fatal(err)
		}
		fjs, _ := jetstream.New(nc)
		w := projections.NewFeedWriter(l, fjs, projections.FeedConfig{})
		wctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); defer nc.Close(); _ = w.Run(wctx) }()
		return w, stop, done
	}
	s := log.Subjects()
	n := 0
	appendSome := func(k int) {
		for range k {
			n++
			fid := fmt.Sprintf("f%d", n)
			st := &eventsv1.FamilyState{FamilyId: fid, Subject: "alice", SecretHash: bytes.Repeat([]byte{byte(n)}, 32)}
			issued, _ := proto.Marshal(&eventsv1.FamilyIssued{State: st})
			seq, err := log.Append(ctx, eventlog.Event{Subject: s.Family(fid, "issued"), Type: events.TypeFamilyIssued, Data: issued}, eventlog.Expect{Filter: s.FamilyFilter(fid)})
			if err != nil {
				t.Fatal(err)
			}
			revoked, _ := proto.Marshal(&eventsv1.FamilyRevoked{State: st, Reason: eventsv1.RevocationReason_REVOCATION_REASON_CLIENT})
			if _, err := log.Append(ctx, eventlog.Event{Subject: s.Family(fid, "revoked"), Type: events.TypeFamilyRevoked, Data: revoked}, eventlog.Expect{Filter: s.FamilyFilter(fid), Seq: seq}); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, stopA, doneA := start()
	appendSome(20)
	readAll(ctx, t, js, subscriber.DefaultStream, "", 20) // a alone wrote these
	b, stopB, doneB := start()
	appendSome(40)
	stopA() // a replica dies in the middle of a burst
	<-doneA
	appendSome(40)
	want, secrets := publicRecords(ctx, t, log)
	feed := readAll(ctx, t, js, subscriber.DefaultStream, "", len(want))
	checkFeed(t, feed, want, secrets)
	if a.Written() < 20 || b.Written() < 40 {
		t.Fatalf("a wrote %d, b %d: b did not take over", a.Written(), b.Written())
	}

	// A writer that starts on a full feed resumes after its last message.
	c, stopC, doneC := start()
	appendSome(5)
	want, _ = publicRecords(ctx, t, log)
	feed = readAll(ctx, t, js, subscriber.DefaultStream, "", len(want))
	stopB()
	stopC()
	<-doneB
	<-doneC
	checkFeed(t, feed, want, secrets)
	// The feed's content above is the proof; the counts can only miss the
	// one publish of a that its stop cut before the answer came back.
	if total := a.Written() + b.Written() + c.Written(); total > uint64(len(want)) || total+1 < uint64(len(want)) {
		t.Fatalf("writers wrote %d messages (a %d, b %d, c %d), want %d", total, a.Written(), b.Written(), c.Written(), len(want))
	}
	t.Logf("a wrote %d, b %d, c %d", a.Written(), b.Written(), c.Written())
}

// TestFeedMessage: what each log event becomes in the feed, field by
// field, and which events have no counterpart.
func TestFeedMessage(t *testing.T) {
	t.Parallel()
	subj := subscriber.NewSubjects("token")
	st := &eventsv1.FamilyState{FamilyId: "fid1", Subject: "alice", SecretHash: []byte("hash"), SpentSecretPrefixes: []byte("spent"),
		ClientId: "app", GraceId: "g1"}
	keys := map[string]*eventsv1.KeyGenerated{}
	gen := &eventsv1.KeyGenerated{KeyId: "k1", Algorithm: "ES256", SealedPrivateKey: []byte("sealed"), PublicKey: &eventsv1.PublicKey{Kty: "EC", Kid: "k1", Crv: "P-256", X: "x", Y: "y"}}
	for _, tc := range []struct {
		name        string
		ev          proto.Message
		wantSubject string
		want        proto.Message
	}{
		{"generated", gen, "", nil},
		{"issued", &eventsv1.FamilyIssued{State: st}, "", nil},
		{"resealed", &eventsv1.KeyResealed{KeyId: "k1", SealedPrivateKey: []byte("sealed2")}, "", nil},
		{"family revoked", &eventsv1.FamilyRevoked{State: st, Reason: eventsv1.RevocationReason_REVOCATION_REASON_REUSE},
			"tokenfeed.family.fid1.revoked", &feedv1.FamilyRevoked{FamilyId: "fid1", Subject: "alice", Reason: feedv1.RevocationReason_REVOCATION_REASON_REUSE}},
		{"subject revoked", &eventsv1.SubjectRevoked{Subject: "bob", Reason: eventsv1.RevocationReason_REVOCATION_REASON_ADMIN},
			subj.SubjectRevoked(eventlog.SubjectID("bob")), &feedv1.SubjectRevoked{Subject: "bob", Reason: feedv1.RevocationReason_REVOCATION_REASON_ADMIN}},
		{"key published", &eventsv1.KeyPublished{KeyId: "k1"}, "tokenfeed.key.k1.published",
			&feedv1.KeyChanged{KeyId: "k1", Algorithm: "ES256", Status: feedv1.KeyStatus_KEY_STATUS_PUBLISHED, PublicKey: &feedv1.PublicJWK{Kty: "EC", Kid: "k1", Crv: "P-256", X: "x", Y: "y"}}},
		{"key destroyed", &eventsv1.KeyDestroyed{KeyId: "k1"}, "tokenfeed.key.k1.destroyed",
			&feedv1.KeyChanged{KeyId: "k1", Algorithm: "ES256", Status: feedv1.KeyStatus_KEY_STATUS_DESTROYED}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if g, ok := tc.ev.(*eventsv1.KeyGenerated); ok {
				keys[g.GetKeyId()] = g
			}
			m, err := projections.FeedMessage(subj, eventlog.Record{Seq: 7}, tc.ev, keys)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if m != nil {
					t.Fatalf("%s reached the feed as %s", tc.name, m.Subject)
				}
				return
			}
			if m.Subject != tc.wantSubject || m.Header.Get(subscriber.HeaderSourceSeq) != "7" ||
				m.Header.Get(subscriber.HeaderSchema) != string(tc.want.ProtoReflect().Descriptor().FullName()) {
				t.Fatalf("subject %s, headers %v", m.Subject, m.Header)
			}
			got := tc.want.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(m.Data, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Fatalf("payload %v, want %v", got, tc.want)
			}
		})
	}
}
