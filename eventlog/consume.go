package eventlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumeShared runs handle on the messages of cons, a durable consumer
// that replicas share through the pinned-client priority group group
// (one replica receives at a time, another takes over when it goes), in
// batches of up to batch messages, until ctx ends (nil) or the consumer
// is deleted or lost (its error: the caller makes it again, for example
// after an ENCRYPTION_KEY rotation on the embedded server wiped the
// consumers). The families read model and the Shared Signals transmitter
// consume the log this way.
func ConsumeShared(ctx context.Context, cons jetstream.Consumer, group string, batch int, handle func(jetstream.Msg)) error {
	lost := make(chan error, 1)
	cc, err := cons.Consume(handle,
		jetstream.PullPriorityGroup(group),
		jetstream.PullMaxMessages(batch),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				select {
				case lost <- err:
				default:
				}
			}
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", group, err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-lost:
		return err
	}
}
