package issuer_test

import (
	"encoding/base64"

	"google.golang.org/protobuf/proto"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func stateOf(t interface{ Fatalf(string, ...any) }, rec eventlog.Record) *eventsv1.FamilyState {
	m, err := events.Decode(rec)
	if err != nil {
		t.Fatalf("decode %d: %v", rec.Seq, err)
	}
	st := events.FamilyStateOf(m)
	if st == nil {
		t.Fatalf("record %d (%s) has no family state", rec.Seq, rec.Type)
	}
	return proto.Clone(st).(*eventsv1.FamilyState)
}
