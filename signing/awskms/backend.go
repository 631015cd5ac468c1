package awskms

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/auth-platform/tokenservice/signing"
)

// KeyAPI is the part of the KMS client the key lifecycle calls.
type KeyAPI interface {
	API
	CreateKey(ctx context.Context, in *kms.CreateKeyInput, opts ...func(*kms.Options)) (*kms.CreateKeyOutput, error)
	ListKeys(ctx context.Context, in *kms.ListKeysInput, opts ...func(*kms.Options)) (*kms.ListKeysOutput, error)
	ListResourceTags(ctx context.Context, in *kms.ListResourceTagsInput, opts ...func(*kms.Options)) (*kms.ListResourceTagsOutput, error)
	DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, opts ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
	ScheduleKeyDeletion(ctx context.Context, in *kms.ScheduleKeyDeletionInput, opts ...func(*kms.Options)) (*kms.ScheduleKeyDeletionOutput, error)
}

var _ KeyAPI = (*kms.Client)(nil)

// Tags the backend puts on the keys it creates.
const (
	TagIntent  = "tokenservice-intent"
	TagService = "tokenservice"
)

// Backend creates signing keys in KMS for the keyring (managed mode: no
// KMS_KEY_ID; Provisioned signs with the operator's key). Creation is
// idempotent per intent: the key is tagged with the intent ID when it is
// created (atomically, in CreateKey), and a creation that is retried after
// a crash finds that key instead of making another.
type Backend struct {
	API KeyAPI
	// DeletionWindowDays is the waiting period of a discarded key.
	// Default 7 (the KMS minimum).
	DeletionWindowDays int32
	// Backoff retries GetPublicKey and the creation of a key by intent
	// (signing.Retry). Default signing.Backoff's.
	Backoff signing.Backoff
}

// BackendName names this backend in key events.
const BackendName = "awskms"

// Name implements keyring.Backend.
func (Backend) Name() string { return BackendName }

// Remote implements keyring.Backend.
func (Backend) Remote() bool { return true }

// Create returns the key made for intent, making it if there is none.
// With an intent, a transient failure is retried (Backoff) from the
// search: CreateKey itself is not idempotent, and a key made by an
// attempt whose answer was lost is found by its tag. Without one (a test's
// key), CreateKey is made once.
func (b Backend) Create(ctx context.Context, alg signing.Algorithm, intent string) (signing.StoredKey, error) {
	spec, err := KeySpec(alg)
	if err != nil {
		return signing.StoredKey{}, err
	}
	var id string
	if intent == "" {
		id, err = b.create(ctx, spec, intent)
	} else {
		id, err = signing.Retry(ctx, b.Backoff, transient, func(ctx context.Context) (string, error) {
			id, found, err := b.find(ctx, intent)
			if err != nil || found {
				return id, err
			}
			return b.create(ctx, spec, intent)
		})
	}
	if err != nil {
		return signing.StoredKey{}, err
	}
	return b.stored(ctx, id, alg)
}

// create makes a key tagged with intent and returns its ID.
func (b Backend) create(ctx context.Context, spec types.KeySpec, intent string) (string, error) {
	out, err := b.API.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec: spec, KeyUsage: types.KeyUsageTypeSignVerify,
		Description: aws.String("tokenservice access-token signing key"),
		Tags:        []types.Tag{{TagKey: aws.String(TagIntent), TagValue: aws.String(intent)}, {TagKey: aws.String(TagService), TagValue: aws.String("signing")}},
	})
	if err != nil {
		return "", fmt.Errorf("awskms: create %s key: %w", spec, err)
	}
	return aws.ToString(out.KeyMetadata.KeyId), nil
}

func (b Backend) stored(ctx context.Context, id string, alg signing.Algorithm) (signing.StoredKey, error) {
	s, err := NewWithBackoff(ctx, b.API, id, alg, b.Backoff)
	if err != nil {
		return signing.StoredKey{}, err
	}
	return signing.StoredKey{ID: s.KeyID(), Algorithm: alg, JWK: s.PublicJWK(), Ref: id}, nil
}

// find returns the live key tagged with intent. It lists every key of the
// account: it runs once per rotation.
func (b Backend) find(ctx context.Context, intent string) (string, bool, error) {
	var marker *string
	for {
		page, err := b.API.ListKeys(ctx, &kms.ListKeysInput{Marker: marker})
		if err != nil {
			return "", false, fmt.Errorf("awskms: list keys: %w", err)
		}
		for _, k := range page.Keys {
			tags, err := b.API.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: k.KeyId})
			if err != nil {
				return "", false, fmt.Errorf("awskms: tags of %s: %w", aws.ToString(k.KeyId), err)
			}
			for _, t := range tags.Tags {
				if aws.ToString(t.TagKey) != TagIntent || aws.ToString(t.TagValue) != intent {
					continue
				}
				d, err := b.API.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: k.KeyId})
				if err != nil {
					return "", false, fmt.Errorf("awskms: describe %s: %w", aws.ToString(k.KeyId), err)
				}
				if d.KeyMetadata.KeyState == types.KeyStateEnabled {
					return aws.ToString(k.KeyId), true, nil
				}
			}
		}
		if !page.Truncated {
			return "", false, nil
		}
		marker = page.NextMarker
	}
}

// Open returns the signer of key.
func (b Backend) Open(ctx context.Context, key signing.StoredKey) (signing.Signer, error) {
	return NewWithBackoff(ctx, b.API, key.Ref, key.Algorithm, b.Backoff)
}

// Discard schedules the deletion of a key: one the log did not record, or
// one the lifecycle destroyed. Calling it again is harmless.
func (b Backend) Discard(ctx context.Context, key signing.StoredKey) error {
	days := b.DeletionWindowDays
	if days == 0 {
		days = 7
	}
	_, err := b.API.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(key.Ref), PendingWindowInDays: aws.Int32(days)})
	if err != nil {
		// Already scheduled (a retry after a crash) is done.
		if d, derr := b.API.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key.Ref)}); derr == nil &&
			d.KeyMetadata.KeyState == types.KeyStatePendingDeletion {
			return nil
		}
		return fmt.Errorf("awskms: schedule deletion of %s: %w", key.Ref, err)
	}
	return nil
}
