package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections"
	"github.com/auth-platform/tokenservice/projections/subscriber"
)

// revocationView is the JSON line of one revocation.
type revocationView struct {
	Seq             uint64     `json:"seq"`
	Kind            string     `json:"kind"` // family or subject
	FamilyID        string     `json:"family_id,omitempty"`
	Subject         string     `json:"subject"`
	Reason          string     `json:"reason"`
	RevokedAt       time.Time  `json:"revoked_at"`
	AccessExpiresAt *time.Time `json:"access_expires_at,omitempty"`
	AppendedAt      time.Time  `json:"appended_at"`
}

// watchRevocations prints revocations as they are appended: from now, after
// a sequence, or from a time in the past. On the feed (--stream
// TOKENS_FEED, a subscriber's view) it reads as a resource server's
// subscriber does, through the consumer named after the nkey's public key;
// on the log (an operator's view) it reads the revocation events. Sequences
// are those of the stream read.
func (o *options) watchRevocations(ctx context.Context, start subscriber.Start) error {
	enc := json.NewEncoder(o.stdout)
	show := func(r subscriber.Revocation) error {
		v := revocationView{Seq: r.Seq, Kind: "family", FamilyID: r.FamilyID, Subject: r.Subject, Reason: r.Reason,
			RevokedAt: r.RevokedAt.UTC(), AppendedAt: r.AppendedAt.UTC()}
		if r.FamilyID == "" {
			v.Kind = "subject"
		} else {
			t := r.AccessExpiresAt.UTC()
			v.AccessExpiresAt = &t
		}
		if o.json {
			return enc.Encode(v)
		}
		if v.Kind == "subject" {
			_, err := fmt.Fprintf(o.stdout, "%s seq=%d subject cut-off subject=%q reason=%s (tokens issued at or before %s)\n",
				v.AppendedAt.Format(time.RFC3339Nano), v.Seq, v.Subject, v.Reason, v.RevokedAt.Format(time.RFC3339))
			return err
		}
		_, err := fmt.Fprintf(o.stdout, "%s seq=%d family %s revoked subject=%q reason=%s (its access tokens live until %s)\n",
			v.AppendedAt.Format(time.RFC3339Nano), v.Seq, v.FamilyID, v.Subject, v.Reason, v.AccessExpiresAt.Format(time.RFC3339))
		return err
	}
	if o.stream == eventlog.DefaultFeedStream {
		consumer, err := o.creds.consumerName()
		if err != nil {
			return err
		}
		cfg := subscriber.Config{Stream: o.stream, Prefix: o.prefix, Consumer: consumer}
		return subscriber.Watch(ctx, o.log.JetStream(), cfg, start, show)
	}
	after := start.AfterSeq
	if after == 0 && start.Since.IsZero() {
		last, err := o.log.LastSeq(ctx)
		if err != nil {
			return err
		}
		after = last
	}
	return projections.WatchRevocations(ctx, o.log, after, start.Since, nil, show)
}

// rebuildFamilies drops the families read model; the running tokend
// replicas rebuild it from the first event. With wait it reports when the
// rebuild has caught up with the stream.
func (o *options) rebuildFamilies(ctx context.Context, wait time.Duration) error {
	js := o.log.JetStream()
	if err := projections.DropFamilies(ctx, js, o.stream, o.log.Replicas()); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "dropped the families read model (bucket %s); the tokend replicas rebuild it from the first event\n", projections.FamilyBucket)
	if wait <= 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	for {
		last, err := o.log.LastConsistent(wctx, o.log.Subjects().Families())
		if err == nil {
			floor, pending, perr := projections.FamiliesProgress(wctx, js, o.stream)
			if perr == nil && pending == 0 && floor >= last.Seq {
				fmt.Fprintf(o.stdout, "rebuilt up to seq %d in %s\n", floor, time.Since(start).Round(time.Millisecond))
				return nil
			}
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("the rebuild did not catch up within %s (is a tokend replica running?)", wait)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
