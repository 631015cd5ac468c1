package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/auth-platform/tokenservice/projections/subscriber"
)

// FeedStreamConfig returns the configuration of a feed stream named name
// for the log prefix: the feed's subjects, file storage, no deletes or
// purges. tokend uses it on the embedded server (ProvisionFeed) and on a
// cluster of yours (NATS_URL).
func FeedStreamConfig(name, prefix string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: "public revocations and key lifecycle, written by tokend for subscribers",
		Subjects:    []string{subscriber.NewSubjects(prefix).All()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    replicas,
		AllowDirect: true,
		DenyDelete:  true,
		DenyPurge:   true,
		Duplicates:  2 * time.Minute,
	}
}

// ProvisionFeed creates the subscribers' stream, or updates its
// configuration, through an in-process connection of the admin user. A
// feed of an earlier version, which JetStream sourced from the log (and
// which held sealed keys and family states), is deleted first.
func (a *Accounts) ProvisionFeed(ctx context.Context, e *Embedded) error {
	nc, err := a.ConnectFeed(e)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("eventlog: feed: jetstream: %w", err)
	}
	return EnsureFeed(ctx, js, FeedStreamConfig(a.cfg.FeedStream, a.cfg.Prefix, 1))
}

// EnsureFeed makes the feed stream exist as want describes it, through js
// (of the account that holds it). A stream of that name that is not
// tokend's feed (foreignFeed) is deleted first; one that already is want
// is left alone: an update, even to the same configuration, waits on the
// stream's Raft group, which a cluster that just lost a node may take a
// while to answer with. A feed it makes holds no message but on its own
// subjects.
func EnsureFeed(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	st, err := js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		// Never update a stream we could not look at: it may hold what
		// the feed must not (a feed sourced from the log).
		return fmt.Errorf("eventlog: feed: stream %s: %w", want.Name, err)
	case foreignFeed(st.CachedInfo().Config, want):
		if err := js.DeleteStream(ctx, want.Name); err != nil {
			return fmt.Errorf("eventlog: feed: delete the stream %s that is not tokend's feed: %w", want.Name, err)
		}
	case sameFeed(st.CachedInfo().Config, want):
		return nil
	}
	if err := createFeed(ctx, js, want); err != nil {
		return fmt.Errorf("eventlog: feed: create stream %s: %w", want.Name, err)
	}
	return nil
}

// foreignMessages counts the messages of st, made as want, that are on
// none of want's subjects: what it cannot have been sent, only found on
// disk.
func foreignMessages(ctx context.Context, st jetstream.Stream, want jetstream.StreamConfig) (uint64, error) {
	total := st.CachedInfo().State.Msgs
	for _, subject := range want.Subjects {
		if total == 0 {
			break
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return 0, err
		}
		for _, n := range info.State.Subjects {
			total -= min(n, total)
		}
	}
	return total, nil
}

// sameFeed reports whether have is configured as want in every field
// FeedStreamConfig sets.
func sameFeed(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Description == want.Description &&
		have.Storage == want.Storage && have.Retention == want.Retention && have.Replicas == want.Replicas &&
		have.AllowDirect == want.AllowDirect && have.DenyDelete == want.DenyDelete && have.DenyPurge == want.DenyPurge &&
		have.Duplicates == want.Duplicates
}

// foreignFeed reports whether a stream named like the feed is not the feed
// tokend writes: it sources or mirrors another stream (an earlier design
// sourced the log, secrets included) or takes other subjects. Its messages
// are not the feed's, so it is deleted rather than updated.
func foreignFeed(have, want jetstream.StreamConfig) bool {
	return len(have.Sources) > 0 || have.Mirror != nil || !slices.Equal(have.Subjects, want.Subjects)
}

// errCodeStreamCreate is JetStream's "error creating store for stream"
// (nats-server's JSStreamCreateErrF; nats.go names no constant for it).
const errCodeStreamCreate jetstream.ErrorCode = 10049

// createFeed creates or updates the stream of want, holding no message
// but on its own subjects. Right after a stream of the same name was
// deleted, the server may still be removing its files: it answers "error
// creating store" (10049) for a moment, or, when the name was deleted
// twice meanwhile, it creates the stream over the second one's files
// (nats-server moves a deleted stream's directory aside, fails to move the
// second while the first is there, ignores that, and the new stream finds
// the old messages). Either is tried again, the second after deleting the
// stream again, for at most 5 s.
func createFeed(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	for attempt := 0; ; attempt++ {
		st, err := js.CreateOrUpdateStream(ctx, want)
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			foreign, err := foreignMessages(ctx, st, want)
			if err != nil || foreign == 0 {
				return err
			}
			if attempt == 100 {
				return fmt.Errorf("made again, it still holds %d messages of the stream it replaces", foreign)
			}
			if err := js.DeleteStream(ctx, want.Name); err != nil {
				return fmt.Errorf("delete it, holding %d messages of the stream it replaces: %w", foreign, err)
			}
		case !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeStreamCreate || attempt == 100:
			return err
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}
