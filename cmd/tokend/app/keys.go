package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/auth-platform/tokenservice/signing/awskms"
)

// runKeyLifecycle stages, activates, retires and destroys keys on time,
// and finishes declared key compromises, until ctx ends; a failed step is
// logged and tried again at the next tick.
func (m *Main) runKeyLifecycle(ctx context.Context) error {
	t := time.NewTicker(keyTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := m.Keyring.Tick(tctx); err != nil && ctx.Err() == nil {
			m.Logger.Error("key lifecycle step failed; retrying at the next tick", "error", err)
		}
		// Another replica may have died part-way through a key compromise.
		if err := m.Responder.Resume(tctx); err != nil && ctx.Err() == nil {
			m.Logger.Error("finishing a declared key compromise failed; retrying at the next tick", "error", err)
		}
		cancel()
	}
}

// kmsClient builds the AWS KMS client from the SDK's standard settings
// (region, credentials) and KMS_ENDPOINT; observe is told of every call
// it makes (token_service_kms_operations_total). The SDK's retries are
// off (AWS_MAX_ATTEMPTS included): package awskms retries the idempotent
// calls with signing.Retry within CRYPTO_TIMEOUT, and Sign is left to
// the breaker and the fallback key, so one rule decides every retry.
func kmsClient(ctx context.Context, cfg Config, observe func(operation string, err error)) (*kms.Client, error) {
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("KMS_PROVIDER=aws: AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("KMS_PROVIDER=aws: no AWS region (set AWS_REGION)")
	}
	return kms.NewFromConfig(awsCfg, func(o *kms.Options) {
		o.Retryer = aws.NopRetryer{}
		if cfg.KMSEndpoint != "" {
			o.BaseEndpoint = &cfg.KMSEndpoint
		}
	}, awskms.WithObserver(observe)), nil
}
