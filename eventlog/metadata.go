package eventlog

import "context"

// Header names stamped on every appended message. They are part of the
// public event contract.
const (
	HeaderMsgID         = "Nats-Msg-Id"
	HeaderTTL           = "Nats-TTL"
	HeaderEvent         = "Token-Event"
	HeaderCorrelationID = "Token-Correlation-Id"
	HeaderActor         = "Token-Actor"
)

type correlationKey struct{}
type actorKey struct{}

// WithCorrelationID returns a context whose appends carry id in the
// Token-Correlation-Id header.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationID returns the correlation ID of ctx, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}

// WithActor returns a context whose appends carry actor (the authenticated
// caller that caused the event) in the Token-Actor header.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// Actor returns the actor of ctx, or "".
func Actor(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}
