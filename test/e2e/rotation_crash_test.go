package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
)

// TestKillDuringKMSRotation kills a tokend that signs with AWS KMS (the
// local-kms emulator, a child process on loopback) with SIGKILL while it
// rotates its key over and over, at a different moment each round. After
// the last restart there is exactly one active key, and every live KMS key
// the service created is a key of the log: none is orphaned.
func TestKillDuringKMSRotation(t *testing.T) {
	e := kmstest.Start(t)
	env := newChildEnv(t, map[string]string{
		"KMS_PROVIDER": "aws", "KMS_ENDPOINT": e.URL, "JWT_ALGORITHM": "ES256",
		"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
	})
	for round := range 5 {
		c := startChild(t, env)
		c.waitReady(env.baseURL(), 30*time.Second)
		client := tokenClient(h2cClient(), env.baseURL())
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for ctx.Err() == nil {
				_, _ = client.RotateSigningKey(ctx, connect.NewRequest(&tokenv1.RotateSigningKeyRequest{Immediate: true}))
			}
		}()
		// A different moment of the rotation loop each round.
		time.Sleep(time.Duration(40+35*round) * time.Millisecond)
		c.signal(syscall.SIGKILL)
		if !c.wait(10 * time.Second) {
			t.Fatal("tokend did not die")
		}
		cancel()
	}
	c := startChild(t, env)
	c.waitReady(env.baseURL(), 30*time.Second)
	client := tokenClient(h2cClient(), env.baseURL())
	// One lifecycle step (every 10 s) finishes a rotation the kill left
	// half done; a staged rotation call drives the same step at once.
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	var keys []*tokenv1.SigningKey
	for {
		resp, err := client.ListSigningKeys(ctx, connect.NewRequest(&tokenv1.ListSigningKeysRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		keys = resp.Msg.GetKeys()
		active, pending := 0, 0
		for _, k := range keys {
			switch k.GetStatus() {
			case "active":
				active++
			case "generated":
				pending++
			}
		}
		if active == 1 && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart: %d active and %d half-made keys, want 1 and 0", active, pending)
		}
		time.Sleep(200 * time.Millisecond)
	}
	logged := map[string]bool{}
	for _, k := range keys {
		if k.GetBackend() == awskms.BackendName {
			logged[k.GetBackendRef()] = true
		}
	}
	live := liveServiceKeys(t, e)
	for _, id := range live {
		if !logged[id] {
			t.Fatalf("KMS key %s was created by the service but is in no key event: an orphan", id)
		}
	}
	t.Logf("%d KMS keys in the log over 5 killed rotation loops, %d still live, no orphan", len(logged), len(live))
}

// liveServiceKeys returns the enabled KMS keys tagged by the service.
func liveServiceKeys(t *testing.T, e *kmstest.Emulator) []string {
	t.Helper()
	ctx := context.Background()
	out, err := e.Client.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1000)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range out.Keys {
		d, err := e.Client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: k.KeyId})
		if err != nil {
			t.Fatal(err)
		}
		if d.KeyMetadata.KeyState != types.KeyStateEnabled {
			continue
		}
		tags, err := e.Client.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: k.KeyId})
		if err != nil {
			t.Fatal(err)
		}
		for _, tag := range tags.Tags {
			if aws.ToString(tag.TagKey) == awskms.TagService {
				ids = append(ids, aws.ToString(k.KeyId))
				break
			}
		}
	}
	return ids
}
