package awskms

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	smithy "github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// transient reports whether a KMS call that failed with err may succeed
// if it is made again: KMS throttled it (ThrottlingException), answered
// with a 5xx (KMSInternalException, DependencyTimeoutException,
// KeyUnavailableException, or a proxy's 502/503/504), or never answered
// (a refused or reset connection, as the SDK's retryer classifies it).
// Anything else KMS said is permanent: NotFoundException, an invalid or
// disabled key, AccessDeniedException, and LimitExceededException, which
// is KMS's quota on keys, not on requests. The caller's own cancellation
// or deadline is not transient.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var resp *smithyhttp.ResponseError
	if errors.As(err, &resp) && resp.HTTPStatusCode() >= 500 {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode() == "ThrottlingException"
	}
	return retry.RetryableConnectionError{}.IsErrorRetryable(err) == aws.TrueTernary
}
