package subscriber_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/projections/subscriber"
	feedv1 "github.com/auth-platform/tokenservice/proto/token/feed/v1"
)

func header(event string) nats.Header {
	h := nats.Header{}
	h.Set(subscriber.HeaderEvent, event)
	h.Set(subscriber.HeaderSourceSeq, "42")
	return h
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecode: each event type decodes to what a reader needs; an unknown
// type is skipped; a payload that does not hold what its header says is
// ErrBadMessage.
func TestDecode(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		event   string
		data    []byte
		wantRev *subscriber.Revocation
		wantKey *subscriber.Key
		wantErr error
	}{
		{name: "family", event: subscriber.EventFamilyRevoked,
			data: marshal(t, &feedv1.FamilyRevoked{FamilyId: "f1", Subject: "alice", Reason: feedv1.RevocationReason_REVOCATION_REASON_REUSE,
				RevokedAt: timestamppb.New(at), AccessExpiresAt: timestamppb.New(at.Add(time.Hour))}),
			wantRev: &subscriber.Revocation{Seq: 7, SourceSeq: 42, FamilyID: "f1", Subject: "alice", Reason: "reuse", RevokedAt: at, AccessExpiresAt: at.Add(time.Hour)}},
		{name: "subject", event: subscriber.EventSubjectRevoked,
			data:    marshal(t, &feedv1.SubjectRevoked{Subject: "bob", Reason: feedv1.RevocationReason_REVOCATION_REASON_ADMIN, RevokedAt: timestamppb.New(at)}),
			wantRev: &subscriber.Revocation{Seq: 7, SourceSeq: 42, Subject: "bob", Reason: "admin", RevokedAt: at}},
		{name: "key", event: subscriber.EventKeyRetired,
			data:    marshal(t, &feedv1.KeyChanged{KeyId: "k1", Algorithm: "ES256", Status: feedv1.KeyStatus_KEY_STATUS_RETIRED, At: timestamppb.New(at), RetainUntil: timestamppb.New(at.Add(time.Hour))}),
			wantKey: &subscriber.Key{Seq: 7, SourceSeq: 42, ID: "k1", Algorithm: "ES256", Status: "retired", At: at, RetainUntil: at.Add(time.Hour)}},
		{name: "unknown type skipped", event: "family.issued", data: []byte("anything")},
		{name: "garbage", event: subscriber.EventFamilyRevoked, data: []byte{0xff, 0xff}, wantErr: subscriber.ErrBadMessage},
		{name: "family without ID", event: subscriber.EventFamilyRevoked, data: marshal(t, &feedv1.FamilyRevoked{Subject: "alice"}), wantErr: subscriber.ErrBadMessage},
		{name: "cut-off without subject", event: subscriber.EventSubjectRevoked, data: marshal(t, &feedv1.SubjectRevoked{}), wantErr: subscriber.ErrBadMessage},
		{name: "too large", event: subscriber.EventKeyPublished, data: make([]byte, 1<<17), wantErr: subscriber.ErrBadMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, k, err := subscriber.Decode(7, time.Time{}, header(tc.event), tc.data)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if (r == nil) != (tc.wantRev == nil) || (r != nil && *r != *tc.wantRev) {
				t.Fatalf("revocation %+v, want %+v", r, tc.wantRev)
			}
			if (k == nil) != (tc.wantKey == nil) || (k != nil && (k.ID != tc.wantKey.ID || k.Status != tc.wantKey.Status || k.SourceSeq != 42 ||
				!k.At.Equal(tc.wantKey.At) || !k.RetainUntil.Equal(tc.wantKey.RetainUntil) || k.Algorithm != tc.wantKey.Algorithm)) {
				t.Fatalf("key %+v, want %+v", k, tc.wantKey)
			}
		})
	}
}

// FuzzDecode: no feed message, however malformed, makes Decode panic, and
// a revocation it returns always names what it revokes.
func FuzzDecode(f *testing.F) {
	f.Add(subscriber.EventFamilyRevoked, marshal(f, &feedv1.FamilyRevoked{FamilyId: "f1", Subject: "a"}))
	f.Add(subscriber.EventSubjectRevoked, marshal(f, &feedv1.SubjectRevoked{Subject: "a"}))
	f.Add(subscriber.EventKeyActivated, marshal(f, &feedv1.KeyChanged{KeyId: "k"}))
	f.Fuzz(func(t *testing.T, event string, data []byte) {
		r, k, err := subscriber.Decode(1, time.Time{}, header(event), data)
		if err != nil && (r != nil || k != nil) {
			t.Fatal("a result with an error")
		}
		if r != nil && r.FamilyID == "" && r.Subject == "" {
			t.Fatal("a revocation of nothing")
		}
	})
}
