package awskms_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
)

// TestWithObserverSeesEveryCall runs the whole key lifecycle (creating
// keys, opening, signing, discarding) against the local-kms emulator
// through a proxy that counts the requests KMS receives (kmstest.Counter), and checks that the observer saw each operation as often, with
// its outcome.
func TestWithObserverSeesEveryCall(t *testing.T) {
	e := kmstest.Start(t)
	counter := e.Count(t)
	var mu sync.Mutex
	observed, failed := map[string]int{}, map[string]int{}
	client := kms.New(kms.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(counter.URL), Credentials: aws.AnonymousCredentials{}, RetryMaxAttempts: 1,
	}, awskms.WithObserver(func(op string, err error) {
		mu.Lock()
		defer mu.Unlock()
		observed[op]++
		if err != nil {
			failed[op]++
		}
	}))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.CreateKey(t, "ECC_NIST_P256") // a key of someone else's: its tags are read, it is not adopted
	b := awskms.Backend{API: client}
	adopted, err := b.Create(ctx, signing.ES256, "intent-1") // ListKeys, ListResourceTags, CreateKey
	if err != nil {
		t.Fatal(err)
	}
	created, err := b.Create(ctx, signing.ES256, "intent-2") // ListKeys, ListResourceTags, CreateKey
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.Open(ctx, created) // GetPublicKey
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(ctx, []byte("payload")); err != nil { // Sign
		t.Fatal(err)
	}
	for _, k := range []signing.StoredKey{adopted, created} {
		if err := b.Discard(ctx, k); err != nil { // ScheduleKeyDeletion
			t.Fatal(err)
		}
	}
	if _, err := awskms.New(ctx, client, "no-such-key", signing.ES256); err == nil { // GetPublicKey, failing
		t.Fatal("unknown key accepted")
	}

	received := counter.Received()
	mu.Lock()
	defer mu.Unlock()
	for op, n := range received {
		if observed[op] != n {
			t.Errorf("%s: observed %d, KMS received %d", op, observed[op], n)
		}
	}
	for op, n := range observed {
		if received[op] != n {
			t.Errorf("%s: observed %d, KMS received %d", op, n, received[op])
		}
		if !slices.Contains(awskms.Operations, op) {
			t.Errorf("observed %q, which awskms.Operations does not list", op)
		}
	}
	for _, op := range []string{"CreateKey", "GetPublicKey", "Sign", "ScheduleKeyDeletion", "ListKeys", "ListResourceTags"} {
		if observed[op] == 0 {
			t.Errorf("no %s observed: the test did not exercise it", op)
		}
	}
	if failed["GetPublicKey"] == 0 {
		t.Error("the failed GetPublicKey was not reported with its error")
	}
	t.Logf("observed %v, failed %v", observed, failed)
}
