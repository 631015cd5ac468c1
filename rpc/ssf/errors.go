package ssf

import "errors"

// Errors of the management and poll API; Handler maps each to an HTTP
// status in one function (statusOf).
var (
	// ErrInvalidRequest is a request that does not parse or breaks a
	// rule (400). Its text says what is wrong.
	ErrInvalidRequest = errors.New("invalid_request")
	// ErrStreamNotFound is a stream that does not exist, or that belongs
	// to another receiver (404: the caller learns nothing of it).
	ErrStreamNotFound = errors.New("stream not found")
	// ErrTooManyStreams is a create over the receiver's limit of streams
	// (409).
	ErrTooManyStreams = errors.New("too many streams")
	// ErrTooSoon is a verification request sooner than
	// min_verification_interval after the previous one (429).
	ErrTooSoon = errors.New("verification requested too soon")
	// ErrStreamDisabled is a verification request on a disabled stream,
	// which holds no events (409).
	ErrStreamDisabled = errors.New("stream disabled")
	// ErrBodyTooLarge is a request body over the limit (413).
	ErrBodyTooLarge = errors.New("request body too large")
	// ErrNoPublicURL is a request for the metadata when no absolute URL
	// can be made (404; see rpc.PublicURL).
	ErrNoPublicURL = errors.New("no public base URL")
	// ErrConflict is a stream changed by another request at the same
	// time, more often than the store retries (409).
	ErrConflict = errors.New("stream changed concurrently")
)
