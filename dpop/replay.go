package dpop

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// LogReplayStore claims proof IDs in the event log: one message on
// token.dpop.<jkt>.<base64url SHA-256 of jti>, appended with
// compare-and-set expecting no message on that exact subject and a TTL,
// so that of any number of replicas that see one proof, exactly one
// accepts it.
type LogReplayStore struct {
	Log *eventlog.Log
	Now func() time.Time
}

var _ ReplayStore = LogReplayStore{}

// Claim implements ReplayStore.
func (s LogReplayStore) Claim(ctx context.Context, jkt, jti string, ttl time.Duration) error {
	if !eventlog.ValidToken(jkt) {
		return ErrJWK
	}
	sum := sha256.Sum256([]byte(jti))
	h := base64.RawURLEncoding.EncodeToString(sum[:])
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	ev, err := events.DPoPProofUsed(s.Log.Subjects(), &eventsv1.DPoPProofUsed{Jkt: jkt, JtiHash: h, At: timestamppb.New(now())}, ttl)
	if err != nil {
		return err
	}
	_, err = s.Log.Append(ctx, ev, eventlog.Expect{Filter: ev.Subject, Seq: 0})
	if errors.Is(err, eventlog.ErrConflict) {
		return ErrReplay
	}
	if err != nil {
		return fmt.Errorf("claim DPoP jti: %w", err)
	}
	return nil
}
