package awskms_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	smithy "github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
)

// counted returns a client of e through a kmstest.Counter, without the
// SDK's retries (as tokend's client): every attempt is a request the
// counter sees.
func counted(t *testing.T, e *kmstest.Emulator) (*kms.Client, *kmstest.Counter) {
	t.Helper()
	c := e.Count(t)
	return kms.New(kms.Options{Region: "us-east-1", BaseEndpoint: aws.String(c.URL), Credentials: aws.AnonymousCredentials{}, Retryer: aws.NopRetryer{}}), c
}

// waitFor waits until the counter has seen n requests of op (the
// outage has been met n times) and fails the test after 20 s.
func waitFor(t *testing.T, c *kmstest.Counter, op string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for c.Received()[op] < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d requests, want %d", op, c.Received()[op], n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRetryOutage: KMS goes down and comes back while GetPublicKey and a
// creation by intent are retrying; both succeed, the counter saw the
// failed attempts, and the intent has one key.
func TestRetryOutage(t *testing.T) {
	e := kmstest.Start(t)
	client, counter := counted(t, e)
	id := e.CreateKey(t, types.KeySpecEccNistP256)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	e.Stop()
	opened := make(chan error, 1)
	go func() {
		_, err := awskms.New(ctx, client, id, signing.ES256)
		opened <- err
	}()
	waitFor(t, counter, "GetPublicKey", 2) // two attempts met the outage (502 from the proxy)
	e.Restart(t)
	if err := <-opened; err != nil {
		t.Fatalf("GetPublicKey across a short outage: %v", err)
	}
	if n := counter.Received()["GetPublicKey"]; n < 3 {
		t.Fatalf("GetPublicKey received %d times, want the failed attempts and the one that succeeded", n)
	}

	b := awskms.Backend{API: client}
	before := keys(t, e)
	e.Stop()
	created := make(chan error, 1)
	go func() {
		_, err := b.Create(ctx, signing.ES256, "outage-intent")
		created <- err
	}()
	waitFor(t, counter, "ListKeys", 2)
	e.Restart(t)
	if err := <-created; err != nil {
		t.Fatalf("Create by intent across a short outage: %v", err)
	}
	if got := keys(t, e); got != before+1 {
		t.Fatalf("%d keys after the creation, want %d", got, before+1)
	}
	if n := counter.Received()["CreateKey"]; n != 1 {
		t.Fatalf("CreateKey received %d times, want 1 (the attempts during the outage failed at ListKeys)", n)
	}
}

// TestRetryFindsKeyOfLostAnswer: a creation by intent whose CreateKey
// answer was lost (the proxy answers 503 after KMS made the key) is
// retried from the search, which finds that key: no second key.
func TestRetryFindsKeyOfLostAnswer(t *testing.T) {
	e := kmstest.Start(t)
	client, counter := counted(t, e)
	counter.LoseAnswers("CreateKey", 1, http.StatusServiceUnavailable)
	before := keys(t, e)
	key, err := awskms.Backend{API: client}.Create(context.Background(), signing.ES256, "lost-answer")
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(t, e); got != before+1 {
		t.Fatalf("%d keys, want %d: the retry made a second key", got, before+1)
	}
	if n := counter.Received()["CreateKey"]; n != 1 {
		t.Fatalf("CreateKey received %d times, want 1", n)
	}
	if n := counter.Received()["ListKeys"]; n != 2 {
		t.Fatalf("ListKeys received %d times, want 2 (the search, then the retry's)", n)
	}
	if key.Ref == "" || key.ID == "" {
		t.Fatalf("key %+v", key)
	}
}

// TestRetryPermanent: an error KMS will answer again is not retried.
func TestRetryPermanent(t *testing.T) {
	e := kmstest.Start(t)
	client, counter := counted(t, e)
	rsa := e.CreateKey(t, types.KeySpecRsa2048)
	for _, tc := range []struct {
		name, keyID string
		alg         signing.Algorithm
		wantErr     error
	}{
		{"no such key", "no-such-key", signing.ES256, nil},
		{"not a key of the algorithm", rsa, signing.ES256, signing.ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counter.Received()["GetPublicKey"]
			_, err := awskms.New(context.Background(), client, tc.keyID, tc.alg)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if n := counter.Received()["GetPublicKey"] - before; n != 1 {
				t.Fatalf("GetPublicKey received %d times, want 1: %v", n, err)
			}
		})
	}
}

// TestRetryDeadline: with KMS down, the retries end at the caller's
// deadline, or at Backoff.Timeout for a caller without one, with KMS's
// last error rather than the context's.
func TestRetryDeadline(t *testing.T) {
	e := kmstest.Start(t)
	client, counter := counted(t, e)
	id := e.CreateKey(t, types.KeySpecEccNistP256)
	e.Stop()
	for _, tc := range []struct {
		name    string
		api     awskms.API
		timeout time.Duration // the caller's; 0: none
		backoff time.Duration
	}{
		{"caller's deadline, through the proxy (502)", client, 400 * time.Millisecond, time.Hour},
		{"Backoff.Timeout, through the proxy (502)", client, 0, 400 * time.Millisecond},
		{"caller's deadline, connection refused", e.Client, 400 * time.Millisecond, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			before := counter.Received()["GetPublicKey"]
			start := time.Now()
			_, err := awskms.NewWithBackoff(ctx, tc.api, id, signing.ES256, signing.Backoff{Timeout: tc.backoff})
			elapsed := time.Since(start)
			if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "attempts)") {
				t.Fatalf("error %v, want KMS's last error after several attempts", err)
			}
			// Waits of at least 25, 50, 100 and 200 ms: at most 5 attempts fit in 400 ms.
			if n := counter.Received()["GetPublicKey"] - before; tc.api == client && (n < 2 || n > 5) {
				t.Fatalf("%d attempts in 400 ms, want 2 to 5", n)
			}
			if elapsed > 400*time.Millisecond+time.Second {
				t.Fatalf("returned after %v: the retries outlived the 400 ms bound", elapsed)
			}
		})
	}
}

// TestTransient lists the errors local-kms does not produce.
func TestTransient(t *testing.T) {
	t.Parallel()
	answer := func(status int, code string) error {
		return &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.GenericAPIError{Code: code, Message: "m"},
		}}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"throttled", answer(400, "ThrottlingException"), true},
		{"internal error", answer(500, "KMSInternalException"), true},
		{"dependency timeout", answer(503, "DependencyTimeoutException"), true},
		{"custom key store unavailable", answer(500, "KeyUnavailableException"), true},
		{"a proxy's 502", answer(502, "UnknownError"), true},
		{"no such key", answer(400, "NotFoundException"), false},
		{"access denied", answer(400, "AccessDeniedException"), false},
		{"disabled key", answer(400, "DisabledException"), false},
		{"key quota", answer(400, "LimitExceededException"), false},
		{"invalid key usage", &types.InvalidKeyUsageException{Message: aws.String("m")}, false},
		{"caller's deadline", fmt.Errorf("op: %w", context.DeadlineExceeded), false},
		{"caller's cancellation", context.Canceled, false},
	} {
		if got := awskms.Transient(tc.err); got != tc.want {
			t.Errorf("%s: transient %v, want %v", tc.name, got, tc.want)
		}
	}
}

func keys(t *testing.T, e *kmstest.Emulator) int {
	t.Helper()
	out, err := e.Client.ListKeys(context.Background(), &kms.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Keys)
}
