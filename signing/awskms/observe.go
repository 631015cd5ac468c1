package awskms

import (
	"context"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go/middleware"
)

// Operations lists the KMS API operations tokend calls (API and KeyAPI),
// by their AWS names, which are also CloudTrail's event names.
var Operations = []string{
	"CreateKey", "DescribeKey", "GetPublicKey", "ListKeys", "ListResourceTags",
	"ScheduleKeyDeletion", "Sign",
}

// OtherOperation names an operation not in Operations.
const OtherOperation = "other"

// WithObserver returns a client option that reports every KMS operation
// the client carries out to obs, once per call (retries of the SDK
// included in it), with the error it ended with (nil on success). The
// operation is one of Operations or OtherOperation. Because it sits in the
// client, no call escapes it, whatever part of tokend makes it. obs must be
// safe for concurrent use and must not block.
func WithObserver(obs func(operation string, err error)) func(*kms.Options) {
	return func(o *kms.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			// The client builds one stack per call, named after the
			// operation.
			op := stack.ID()
			if !slices.Contains(Operations, op) {
				op = OtherOperation
			}
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("tokendObserveOperation",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					out, md, err := next.HandleInitialize(ctx, in)
					obs(op, err)
					return out, md, err
				}), middleware.Before)
		})
	}
}
