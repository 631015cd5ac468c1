package keyring_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/cmd/cryptod/cryptodtest"
	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/issuer/issuertest"
	cryptov1 "github.com/auth-platform/tokenservice/proto/crypto/v1"
	"github.com/auth-platform/tokenservice/proto/crypto/v1/cryptov1connect"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/awskms"
	"github.com/auth-platform/tokenservice/signing/awskms/kmstest"
	"github.com/auth-platform/tokenservice/signing/cryptosvc"
	"github.com/auth-platform/tokenservice/signing/keyring"
	"github.com/auth-platform/tokenservice/signing/keystate"
)

var (
	_ keyring.Provisioner = awskms.Provisioned{}
	_ keyring.Provisioner = cryptosvc.Provisioned{}
)

// recordingKMS is the whole KMS client the managed backend uses, which
// records the name of every call before passing it on: what tokend would
// need IAM permissions for.
type recordingKMS struct {
	awskms.KeyAPI
	mu    sync.Mutex
	calls map[string]int
}

func (r *recordingKMS) record(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[op]++
}

func (r *recordingKMS) ops() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for op := range r.calls {
		out = append(out, op)
	}
	slices.Sort(out)
	return out
}

func (r *recordingKMS) Sign(ctx context.Context, in *kms.SignInput, o ...func(*kms.Options)) (*kms.SignOutput, error) {
	r.record("Sign")
	return r.KeyAPI.Sign(ctx, in, o...)
}

func (r *recordingKMS) GetPublicKey(ctx context.Context, in *kms.GetPublicKeyInput, o ...func(*kms.Options)) (*kms.GetPublicKeyOutput, error) {
	r.record("GetPublicKey")
	return r.KeyAPI.GetPublicKey(ctx, in, o...)
}

func (r *recordingKMS) CreateKey(ctx context.Context, in *kms.CreateKeyInput, o ...func(*kms.Options)) (*kms.CreateKeyOutput, error) {
	r.record("CreateKey")
	return r.KeyAPI.CreateKey(ctx, in, o...)
}

func (r *recordingKMS) ListKeys(ctx context.Context, in *kms.ListKeysInput, o ...func(*kms.Options)) (*kms.ListKeysOutput, error) {
	r.record("ListKeys")
	return r.KeyAPI.ListKeys(ctx, in, o...)
}

func (r *recordingKMS) ListResourceTags(ctx context.Context, in *kms.ListResourceTagsInput, o ...func(*kms.Options)) (*kms.ListResourceTagsOutput, error) {
	r.record("ListResourceTags")
	return r.KeyAPI.ListResourceTags(ctx, in, o...)
}

func (r *recordingKMS) DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, o ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	r.record("DescribeKey")
	return r.KeyAPI.DescribeKey(ctx, in, o...)
}

func (r *recordingKMS) ScheduleKeyDeletion(ctx context.Context, in *kms.ScheduleKeyDeletionInput, o ...func(*kms.Options)) (*kms.ScheduleKeyDeletionOutput, error) {
	r.record("ScheduleKeyDeletion")
	return r.KeyAPI.ScheduleKeyDeletion(ctx, in, o...)
}

var _ awskms.KeyAPI = (*recordingKMS)(nil)

// replica returns another tokend replica on node, sharing clock: a
// process restarted with another backend configuration.
func replica(t *testing.T, node *eventlogtest.Node, clock *issuertest.Clock, b keyring.Backend) *issuertest.Env {
	t.Helper()
	nc, err := node.Embedded.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return issuertest.New(t, issuertest.Options{Conn: nc, Clock: clock, Algorithm: signing.ES256, Backend: b,
		Prepublish: 6 * time.Minute, Retention: time.Hour})
}

// issueVerified issues a token on env and checks it verifies on every
// replica in verifiers, against the keys of their JWKS, and that kid
// signed it.
func issueVerified(t *testing.T, env *issuertest.Env, kid string, verifiers ...*issuertest.Env) issuer.Tokens {
	t.Helper()
	tok, err := env.Issuer.Generate(context.Background(), issuer.GenerateRequest{Subject: "p", ClientID: "c", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if tok.KeyID != kid {
		t.Fatalf("signed by %s, want %s", tok.KeyID, kid)
	}
	for _, v := range append(verifiers, env) {
		v.CaughtUp(t)
		if !jwksKids(v)[kid] {
			t.Fatalf("key %s is not in the JWKS", kid)
		}
		if _, err := v.Issuer.VerifyAccessToken(tok.AccessToken, true); err != nil {
			t.Fatalf("a token of %s does not verify: %v", kid, err)
		}
	}
	return tok
}

// tick runs a lifecycle step on every replica, none of which may fail.
func tick(t *testing.T, envs ...*issuertest.Env) {
	t.Helper()
	for _, e := range envs {
		if err := e.Keyring.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKMSProvisionedKey: with KMS_KEY_ID (awskms.Provisioned) tokend
// signs with the operator's key against local-kms and makes no key. A
// rotation needs a key from the operator: without one it is refused
// (and so is a compromise, before it is declared). A replica restarted
// with the next KMS_KEY_ID stages that key, which signs after the
// pre-publication while the old one stays in the JWKS for its retention
// and is then dropped from it but not deleted from KMS. Through all of
// it, the replicas call only Sign and GetPublicKey.
func TestKMSProvisionedKey(t *testing.T) {
	e := kmstest.Start(t)
	ctx := context.Background()
	first := e.CreateKey(t, types.KeySpecEccNistP256)
	kmsAPI := &recordingKMS{KeyAPI: e.Client}
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	before := replica(t, node, clock, awskms.Provisioned{API: kmsAPI, KeyID: first})

	active, ok := before.Set.ActiveKey()
	if !ok || active.Backend != awskms.BackendName || !active.Provisioned || active.IntentID != "" || !strings.Contains(active.Ref, first) {
		t.Fatalf("active key %+v, want the provisioned %s", active, first)
	}
	old := issueVerified(t, before, active.ID)
	if _, err := before.Keyring.Rotate(ctx, false); !errors.Is(err, keyring.ErrNoNewKey) {
		t.Fatalf("a rotation without a new key: %v, want ErrNoNewKey", err)
	}
	if _, err := before.Responder.Compromise(ctx, false); !errors.Is(err, keyring.ErrNoNewKey) {
		t.Fatalf("a compromise without a new key: %v, want ErrNoNewKey", err)
	}
	if c := before.Set.PendingCompromises(); len(c) != 0 {
		t.Fatalf("a compromise was declared without a key to replace it: %+v", c)
	}
	tick(t, before)
	if n := kmsKeys(t, e); n != 1 {
		t.Fatalf("%d KMS keys, want the operator's one", n)
	}

	// The operator supplies the next key and restarts a replica with it.
	second := e.CreateKey(t, types.KeySpecEccNistP256)
	after := replica(t, node, clock, awskms.Provisioned{API: kmsAPI, KeyID: second})
	after.CaughtUp(t)
	keys, _ := after.Set.Keys()
	var next keystate.Key
	for _, k := range keys {
		if strings.Contains(k.Ref, second) {
			next = k
		}
	}
	if next.Status != eventsv1.KeyStatus_KEY_STATUS_PUBLISHED || !next.Provisioned {
		t.Fatalf("the next key is %+v, want published and provisioned", next)
	}
	issueVerified(t, after, active.ID, before) // still the first key: pre-published only
	if !jwksKids(before)[next.ID] {
		t.Fatal("the next key is not pre-published in the JWKS")
	}
	clock.Advance(6 * time.Minute)
	tick(t, before, after) // the replica on the old KMS_KEY_ID moves along too
	issueVerified(t, before, next.ID, after)
	issueVerified(t, after, next.ID, before)
	for _, v := range []*issuertest.Env{before, after} {
		if _, err := v.Issuer.VerifyAccessToken(old.AccessToken, true); err != nil {
			t.Fatalf("a token of the retired key does not verify: %v", err)
		}
	}
	clock.Advance(time.Hour)
	tick(t, after, before, after)
	if k, _ := after.Set.Key(active.ID); k.Status != eventsv1.KeyStatus_KEY_STATUS_DESTROYED || k.MaterialDeleted {
		t.Fatalf("the first key is %v (material deleted %v), want destroyed, its material left to the operator", k.Status, k.MaterialDeleted)
	}
	d, err := e.Client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(first)})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStateEnabled {
		t.Fatalf("the operator's first key: %v (%v), want it enabled", d, err)
	}
	if got := kmsAPI.ops(); !slices.Equal(got, []string{"GetPublicKey", "Sign"}) {
		t.Fatalf("KMS calls %v, want only GetPublicKey and Sign", got)
	}
	if n := kmsKeys(t, e); n != 2 {
		t.Fatalf("%d KMS keys, want the operator's two", n)
	}
}

// operator is the crypto service as the platform's operator uses it:
// the crypto.v1 API called directly, with the fixture's credentials.
func operator(t *testing.T, f *cryptodtest.Fixture, srv *cryptodtest.Server) cryptov1connect.CryptoServiceClient {
	t.Helper()
	return cryptov1connect.NewCryptoServiceClient(f.HTTPClient(t, f.ClientCert, f.ClientKey), srv.URL, connect.WithGRPC())
}

// TestCryptoServiceProvisionedKey: with CRYPTO_SIGNING_KEY=name
// (cryptosvc.Provisioned) tokend signs with the operator's key in cmd/cryptod
// and creates none. A rotation needs a new version: without one it is
// refused. When the operator adds a version (RotateKey), the next
// lifecycle step stages it; it signs after the pre-publication, the old
// version stays in the JWKS for its retention, and tokend never destroys
// the key in the service (that would destroy every version).
func TestCryptoServiceProvisionedKey(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	ctx := context.Background()
	op := operator(t, f, srv)
	const name = "token-signing"
	if _, err := op.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: name, Spec: cryptov1.KeySpec_KEY_SPEC_EC_P256})); err != nil {
		t.Fatal(err)
	}
	objects := f.Token.Objects(t)
	c, err := cryptosvc.New(cryptosvc.Config{Address: srv.URL, TLS: f.ClientTLS(t, f.ClientCert, f.ClientKey), Namespace: cryptodtest.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	env := replica(t, node, clock, cryptosvc.Provisioned{Client: c, Key: name})

	v1, _ := env.Set.ActiveKey()
	if v1.Ref != cryptodtest.Namespace+"/"+name+"/1" || !v1.Provisioned || v1.Backend != cryptosvc.BackendName {
		t.Fatalf("active key %+v, want version 1 of the provisioned key", v1)
	}
	old := issueVerified(t, env, v1.ID)
	if _, err := env.Keyring.Rotate(ctx, false); !errors.Is(err, keyring.ErrNoNewKey) {
		t.Fatalf("a rotation without a new version: %v, want ErrNoNewKey", err)
	}
	tick(t, env)

	if _, err := op.RotateKey(ctx, connect.NewRequest(&cryptov1.RotateKeyRequest{Namespace: cryptodtest.Namespace, Name: name})); err != nil {
		t.Fatal(err)
	}
	objects = f.Token.Objects(t) // the operator's new version
	tick(t, env)
	staged, err := env.Keyring.Rotate(ctx, false) // returns the staged key
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := env.Set.Key(staged.KeyID)
	if v2.Ref != cryptodtest.Namespace+"/"+name+"/2" || v2.Status != eventsv1.KeyStatus_KEY_STATUS_PUBLISHED || !jwksKids(env)[v2.ID] {
		t.Fatalf("after RotateKey: %+v, want version 2 published", v2)
	}
	issueVerified(t, env, v1.ID)
	clock.Advance(6 * time.Minute)
	tick(t, env)
	issueVerified(t, env, v2.ID)
	if _, err := env.Issuer.VerifyAccessToken(old.AccessToken, true); err != nil {
		t.Fatalf("a token of version 1 does not verify after the rotation: %v", err)
	}
	clock.Advance(time.Hour)
	tick(t, env, env)
	if k, _ := env.Set.Key(v1.ID); k.Status != eventsv1.KeyStatus_KEY_STATUS_DESTROYED || k.MaterialDeleted || jwksKids(env)[v1.ID] {
		t.Fatalf("version 1 is %v (material deleted %v), want destroyed, out of the JWKS, its material left to the operator", k.Status, k.MaterialDeleted)
	}
	if _, err := op.GetPublicKey(ctx, connect.NewRequest(&cryptov1.GetPublicKeyRequest{Key: &cryptov1.KeyRef{Namespace: cryptodtest.Namespace, Name: name, Version: 1}})); err != nil {
		t.Fatalf("the operator's version 1 is gone: %v", err)
	}
	if n := f.Token.Objects(t); n != objects {
		t.Fatalf("%d objects on the token, %d after the operator's rotation: tokend made or deleted keys", n, objects)
	}
}

// TestCryptoServicePinnedVersion: CRYPTO_SIGNING_KEY=name/version signs
// with that version, not the primary one, and a replica restarted with
// the next version stages it.
func TestCryptoServicePinnedVersion(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	ctx := context.Background()
	op := operator(t, f, srv)
	const name = "pinned"
	if _, err := op.CreateKey(ctx, connect.NewRequest(&cryptov1.CreateKeyRequest{Namespace: cryptodtest.Namespace, Name: name, Spec: cryptov1.KeySpec_KEY_SPEC_EC_P256})); err != nil {
		t.Fatal(err)
	}
	if _, err := op.RotateKey(ctx, connect.NewRequest(&cryptov1.RotateKeyRequest{Namespace: cryptodtest.Namespace, Name: name})); err != nil {
		t.Fatal(err)
	}
	c, err := cryptosvc.New(cryptosvc.Config{Address: srv.URL, TLS: f.ClientTLS(t, f.ClientCert, f.ClientKey), Namespace: cryptodtest.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	env := replica(t, node, clock, cryptosvc.Provisioned{Client: c, Key: name, Version: 1})
	v1, _ := env.Set.ActiveKey()
	if v1.Ref != cryptodtest.Namespace+"/"+name+"/1" {
		t.Fatalf("active key %s, want version 1 (pinned), not the primary 2", v1.Ref)
	}
	issueVerified(t, env, v1.ID)
	tick(t, env)
	if keys, _ := env.Set.Keys(); len(keys) != 1 {
		t.Fatalf("%d keys with version 1 pinned, want 1", len(keys))
	}
	next := replica(t, node, clock, cryptosvc.Provisioned{Client: c, Key: name, Version: 2})
	clock.Advance(6 * time.Minute)
	tick(t, next, env)
	v2, _ := env.Set.ActiveKey()
	if v2.Ref != cryptodtest.Namespace+"/"+name+"/2" {
		t.Fatalf("active key %s after the restart with version 2", v2.Ref)
	}
	issueVerified(t, env, v2.ID, next)
}

// TestProvisionedKeyNotFound: a CRYPTO_SIGNING_KEY the service does not
// hold is an error naming it at start-up (EnsureActive), and nothing is
// created in its place.
func TestProvisionedKeyNotFound(t *testing.T) {
	f := cryptodtest.New(t)
	srv := f.Start(t)
	c, err := cryptosvc.New(cryptosvc.Config{Address: srv.URL, TLS: f.ClientTLS(t, f.ClientCert, f.ClientKey), Namespace: cryptodtest.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cryptosvc.Provisioned{Client: c, Key: "missing"}.Provisioned(context.Background(), signing.ES256)
	if !errors.Is(err, cryptosvc.ErrKeyNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("got %v, want ErrKeyNotFound naming the key", err)
	}
	if _, err := (cryptosvc.Provisioned{Client: c, Key: "missing"}).Create(context.Background(), signing.ES256, "i"); !errors.Is(err, signing.ErrProvisioned) {
		t.Fatalf("Create: %v", err)
	}
	if n := f.Token.Objects(t); n != 0 {
		t.Fatalf("%d objects on the token, want none", n)
	}
}

// TestKMSProvisionedAlias: with KMS_KEY_ID an alias, the log records the
// key it points to (its ARN), never the alias: when the operator points
// the alias at the next key, the next lifecycle step stages that key
// without a restart, and the old key keeps signing until the
// pre-publication is over (a signer never follows the alias).
func TestKMSProvisionedAlias(t *testing.T) {
	e := kmstest.Start(t)
	ctx := context.Background()
	first := e.CreateKey(t, types.KeySpecEccNistP256)
	const alias = "alias/tokend-signing"
	if _, err := e.Client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(first)}); err != nil {
		t.Fatal(err)
	}
	kmsAPI := &recordingKMS{KeyAPI: e.Client}
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	env := replica(t, node, clock, awskms.Provisioned{API: kmsAPI, KeyID: alias})
	v1, _ := env.Set.ActiveKey()
	if !strings.Contains(v1.Ref, first) || strings.Contains(v1.Ref, "alias/") {
		t.Fatalf("active key ref %q, want the ARN of %s", v1.Ref, first)
	}
	second := e.CreateKey(t, types.KeySpecEccNistP256)
	if _, err := e.Client.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(second)}); err != nil {
		t.Fatal(err)
	}
	tick(t, env)
	issueVerified(t, env, v1.ID)
	clock.Advance(6 * time.Minute)
	tick(t, env)
	v2, _ := env.Set.ActiveKey()
	if !strings.Contains(v2.Ref, second) || !v2.Provisioned {
		t.Fatalf("active key %+v after the alias moved, want %s", v2, second)
	}
	issueVerified(t, env, v2.ID)
	if got := kmsAPI.ops(); !slices.Equal(got, []string{"GetPublicKey", "Sign"}) {
		t.Fatalf("KMS calls %v, want only GetPublicKey and Sign", got)
	}
}

// TestKMSProvisionedCompromise: a compromised provisioned key is replaced
// by the key the operator supplied, even one staged before the
// declaration (the operator vouches for it): it signs at once, and the
// compromised key leaves the JWKS at once; its families are revoked.
func TestKMSProvisionedCompromise(t *testing.T) {
	e := kmstest.Start(t)
	ctx := context.Background()
	first := e.CreateKey(t, types.KeySpecEccNistP256)
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	before := replica(t, node, clock, awskms.Provisioned{API: e.Client, KeyID: first})
	compromised, _ := before.Set.ActiveKey()
	tok := issueVerified(t, before, compromised.ID)
	after := replica(t, node, clock, awskms.Provisioned{API: e.Client, KeyID: e.CreateKey(t, types.KeySpecEccNistP256)})
	c, err := after.Responder.Compromise(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Previous != compromised.ID || c.KeyID == compromised.ID || c.RevokedFamilies != 1 {
		t.Fatalf("containment %+v", c)
	}
	issueVerified(t, after, c.KeyID, before)
	if jwksKids(before)[compromised.ID] {
		t.Fatal("the compromised key is still in the JWKS")
	}
	if _, err := before.Issuer.VerifyAccessToken(tok.AccessToken, true); err == nil {
		t.Fatal("a token of the compromised key still verifies")
	}
	tick(t, before, after)
}

// TestProvisionedAfterInterruptedIntent: a managed replica crashed between
// key.requested and key.generated, and tokend restarts with KMS_KEY_ID.
// The provisioned replica starts and ticks without trying to create the
// intent's key (it may not), stages the operator's key, and leaves the
// intent pending for managed mode, which would find its key.
func TestProvisionedAfterInterruptedIntent(t *testing.T) {
	e := kmstest.Start(t)
	ctx := context.Background()
	node := eventlogtest.SingleNode(t)
	clock := issuertest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	managed := replica(t, node, clock, awskms.Backend{API: e.Client})
	data, err := proto.Marshal(&eventsv1.KeyRequested{IntentId: "crashed", Algorithm: string(signing.ES256), Backend: awskms.BackendName, At: timestamppb.New(clock.Now())})
	if err != nil {
		t.Fatal(err)
	}
	s := managed.Log.Subjects()
	if _, err := managed.Log.AppendNext(ctx, eventlog.Event{Subject: s.Key("crashed", "requested"), Type: events.TypeKeyRequested, Data: data}, s.Keys()); err != nil {
		t.Fatal(err)
	}
	kmsAPI := &recordingKMS{KeyAPI: e.Client}
	operatorKey := e.CreateKey(t, types.KeySpecEccNistP256)
	provisioned := replica(t, node, clock, awskms.Provisioned{API: kmsAPI, KeyID: operatorKey})
	tick(t, provisioned)
	if in, ok := provisioned.Set.PendingKeyIntent(); !ok || in.ID != "crashed" {
		t.Fatalf("pending intent %+v, want the crashed one left to managed mode", in)
	}
	clock.Advance(6 * time.Minute)
	tick(t, provisioned)
	active, _ := provisioned.Set.ActiveKey()
	if !strings.Contains(active.Ref, operatorKey) {
		t.Fatalf("active key %s, want the operator's %s", active.Ref, operatorKey)
	}
	issueVerified(t, provisioned, active.ID)
	if got := kmsAPI.ops(); !slices.Equal(got, []string{"GetPublicKey", "Sign"}) {
		t.Fatalf("KMS calls %v, want only GetPublicKey and Sign", got)
	}
}
