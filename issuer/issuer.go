package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/events"
	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/signing"
	"github.com/auth-platform/tokenservice/signing/seal"
)

// Config configures an Issuer.
type Config struct {
	// Issuer is the iss claim. Required.
	Issuer string
	// AccessTTL is the access-token lifetime. Default 15 minutes.
	AccessTTL time.Duration
	// RefreshTTL is the lifetime of each refresh token, renewed by each
	// rotation. Default 7 days.
	RefreshTTL time.Duration
	// Grace is the reuse grace window; 0 disables it.
	Grace time.Duration
	// FallbackAccessTTL is the lifetime of access tokens signed by the
	// fallback key. Default min(AccessTTL, 5 minutes).
	FallbackAccessTTL time.Duration
	// Retention is how long family and subject events stay in the log
	// after the family (or the cut-off) stopped mattering
	// (EVENT_RETENTION); they leave through a per-message TTL set at
	// append (see family.RetainUntil). Default 0: kept forever.
	Retention time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the source of IDs and secrets. Required (crypto/rand.Reader).
	Rand io.Reader
	// Observer, if set, is told of every outcome. Default: none.
	Observer Observer
	// Tracer, if set, records a span around the signing of every access
	// token (its attributes: algorithm, key ID, token type, outcome; never
	// a claim). Default: a no-op tracer.
	Tracer trace.Tracer
	// VerifiedTokens bounds the cache of access tokens VerifyAccessToken
	// has verified (resource servers present the same token many times);
	// a cached token is not verified again, but its key and claims are
	// checked again on every use. Default DefaultVerifiedTokens; negative
	// turns the cache off.
	VerifiedTokens int
}

// Observer is told what the issuer did, for metrics. Implementations must
// be safe for concurrent use and must not block.
type Observer interface {
	// Issued reports a token pair issued, by Generate or by Refresh (a
	// rotation or a grace successor): tokenType is TokenTypeBearer or
	// TokenTypeDPoP, algorithm the JWS alg of the access token.
	Issued(tokenType, algorithm string)
	// FallbackSigned reports an access token signed by the fallback key.
	FallbackSigned()
	Refreshed(status string)
	Revoked(reason string, families int)
	SecurityEvent(eventType string)
}

// Refresh statuses reported to Observer.Refreshed.
const (
	StatusSuccess = "success"
	StatusGrace   = "grace"
	StatusReuse   = "reuse"
	StatusInvalid = "invalid"
	StatusError   = "error"
)

// Security event types reported to Observer.SecurityEvent.
const (
	SecurityRefreshReuse = "refresh_token_reuse"
	SecurityDPoPMismatch = "dpop_key_mismatch"
)

// FamilyIndex lists the IDs of the families, not known to be revoked, of a
// subject or holding tokens a key signed; the issuer uses it to revoke them
// all (deciding each from the log) and waits for it to catch up with a
// sequence first.
type FamilyIndex interface {
	ActiveFamiliesOf(subject string) []string
	ActiveFamiliesSignedBy(kid string) []string
	WaitFor(ctx context.Context, seq uint64) error
}

// Issuer executes the token commands. It is safe for concurrent use.
type Issuer struct {
	log    *eventlog.Log
	subj   eventlog.Subjects
	keys   Keys
	index  FamilyIndex
	sealer *seal.Sealer
	cfg    Config

	verified *verifiedTokens // nil: no cache
}

type nopObserver struct{}

func (nopObserver) Issued(string, string) {}
func (nopObserver) Refreshed(string)      {}
func (nopObserver) Revoked(string, int)   {}
func (nopObserver) SecurityEvent(string)  {}
func (nopObserver) FallbackSigned()       {}

// New returns an Issuer.
func New(log *eventlog.Log, keys Keys, index FamilyIndex, sealer *seal.Sealer, cfg Config) (*Issuer, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("issuer: Config.Issuer is required")
	}
	if cfg.Rand == nil {
		return nil, errors.New("issuer: Config.Rand is required")
	}
	if cfg.AccessTTL <= 0 {
		cfg.AccessTTL = 15 * time.Minute
	}
	if cfg.FallbackAccessTTL <= 0 || cfg.FallbackAccessTTL > cfg.AccessTTL {
		cfg.FallbackAccessTTL = min(cfg.AccessTTL, 5*time.Minute)
	}
	if cfg.RefreshTTL <= 0 {
		cfg.RefreshTTL = 7 * 24 * time.Hour
	}
	if cfg.Grace < 0 {
		cfg.Grace = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.VerifiedTokens == 0 {
		cfg.VerifiedTokens = DefaultVerifiedTokens
	}
	return &Issuer{log: log, subj: log.Subjects(), keys: keys, index: index, sealer: sealer, cfg: cfg,
		verified: newVerifiedTokens(cfg.VerifiedTokens)}, nil
}

// GenerateRequest starts a family.
type GenerateRequest struct {
	Subject  string
	ClientID string
	Audience []string
	Scopes   []string
	Extra    *structpb.Struct
	// AllowedClaims are the authorization claims (ClaimAuthorization)
	// Extra may set: those the caller's policy grants. Default none.
	AllowedClaims []string
	// DPoPJKT binds the family to a DPoP key (RFC 9449 §5), if set.
	DPoPJKT string
}

// RefreshRequest rotates a refresh token.
type RefreshRequest struct {
	RefreshToken string
	ClientID     string
	// Scopes, if set, narrow the new access token's scopes.
	Scopes []string
	// DPoPJKT is the thumbprint of the key of a verified proof, if any.
	DPoPJKT string
	// Proof, if set, verifies the request's DPoP proof and returns its
	// key's thumbprint (replacing DPoPJKT). Refresh calls it once the
	// refresh token is known to the log (its current secret or a spent
	// one), before deciding: checking a proof claims its jti, an append,
	// which a made-up token must not cost.
	Proof func(context.Context) (string, error)
}

// Tokens is the response of a command that issues tokens.
type Tokens struct {
	AccessToken      string    `json:"access_token"`
	TokenType        string    `json:"token_type"`
	AccessExpiresAt  time.Time `json:"access_expires_at"`
	RefreshToken     string    `json:"refresh_token"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at"`
	FamilyID         string    `json:"family_id"`
	Scopes           []string  `json:"scopes"`
	KeyID            string    `json:"kid"`
	Algorithm        string    `json:"alg"`
	AccessTokenID    string    `json:"jti"`
}

// Token types.
const (
	TokenTypeBearer = "Bearer"
	TokenTypeDPoP   = "DPoP"
)

// Validate checks the request's fields as Generate does first (its
// errors are Generate's). A caller that must do something costly or
// irreversible before Generate, such as claiming a DPoP proof, calls it
// first, so that a request refused for its fields costs nothing.
func (r GenerateRequest) Validate() error {
	_, err := r.checked()
	return err
}

// checked validates r and returns its scopes, normalized.
func (r GenerateRequest) checked() ([]string, error) {
	if err := checkText("subject", r.Subject, MaxSubjectLen); err != nil {
		return nil, err
	}
	if err := checkClientID(r.ClientID); err != nil {
		return nil, err
	}
	if err := checkAudience(r.Audience); err != nil {
		return nil, err
	}
	scopes, err := normalizeScopes(r.Scopes)
	if err != nil {
		return nil, err
	}
	if err := checkExtraClaims(r.Extra, r.AllowedClaims); err != nil {
		return nil, err
	}
	if r.DPoPJKT != "" && !eventlog.ValidToken(r.DPoPJKT) {
		return nil, invalidRequest("malformed DPoP key thumbprint")
	}
	return scopes, nil
}

// Generate starts a family and returns its first tokens. Errors:
// ErrInvalidRequest for a malformed request (ErrClaimNotAllowed for an
// authorization claim in Extra that AllowedClaims does not list); others
// are server errors.
func (i *Issuer) Generate(ctx context.Context, req GenerateRequest) (Tokens, error) {
	scopes, err := req.checked()
	if err != nil {
		return Tokens{}, err
	}
	now := i.cfg.Now()
	r, err := newFresh(i.cfg.Rand)
	if err != nil {
		return Tokens{}, err
	}
	fid := r.familyID
	st := &eventsv1.FamilyState{
		FamilyId:         fid,
		Subject:          req.Subject,
		ClientId:         req.ClientID,
		Audience:         req.Audience,
		Scopes:           scopes,
		ExtraClaims:      req.Extra,
		Generation:       1,
		SecretHash:       hashSecret(r.secret),
		Status:           eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE,
		CreatedAt:        timestamppb.New(now),
		RotatedAt:        timestamppb.New(now),
		RefreshExpiresAt: timestamppb.New(now.Add(i.cfg.RefreshTTL)),
		DpopJkt:          req.DPoPJKT,
	}
	tokens, err := i.mint(ctx, st, r, scopes, now)
	if err != nil {
		return Tokens{}, err
	}
	ev, err := events.FamilyIssued(i.subj, st)
	if err != nil {
		return Tokens{}, err
	}
	retain(&ev, family.RetainUntil(st, i.cfg.Retention, time.Time{}), now)
	_, err = i.log.Append(ctx, ev, eventlog.Expect{Filter: i.subj.FamilyFilter(fid)})
	if err != nil {
		return Tokens{}, fmt.Errorf("issue family: %w", err)
	}
	i.cfg.Observer.Issued(tokens.TokenType, tokens.Algorithm)
	return tokens, nil
}

// mint signs an access token with ID r.jti for st and fills in the
// response with refresh secret r.secret; it records the key and access
// expiry in st.
func (i *Issuer) mint(ctx context.Context, st *eventsv1.FamilyState, r fresh, scopes []string, now time.Time) (Tokens, error) {
	signer, err := i.keys.Active(ctx)
	if err != nil {
		return Tokens{}, fmt.Errorf("signing key: %w", err)
	}
	jti := r.jti
	sign := func(s signing.Signer) (string, time.Time, error) {
		exp := now.Add(i.cfg.AccessTTL)
		if f, ok := s.(interface{ IsFallback() bool }); ok && f.IsFallback() {
			exp = now.Add(i.cfg.FallbackAccessTTL)
			i.cfg.Observer.FallbackSigned()
		}
		at, err := signAccessToken(ctx, i.cfg.Tracer, s, AccessClaims{
			Issuer: i.cfg.Issuer, Subject: st.GetSubject(), Audience: st.GetAudience(), ClientID: st.GetClientId(),
			IssuedAt: now, Expiry: exp, ID: jti, Scopes: scopes, FamilyID: st.GetFamilyId(), JKT: st.GetDpopJkt(),
			Extra: st.GetExtraClaims(),
		})
		return at, exp, err
	}
	at, exp, err := sign(signer)
	if errors.Is(err, signing.ErrUnavailable) {
		// The remote backend failed this call: the fallback key, which is
		// in the JWKS, signs instead.
		if fb, ok := i.keys.Fallback(); ok {
			signer = fb
			at, exp, err = sign(fb)
		}
	}
	if err != nil {
		return Tokens{}, err
	}
	if st.GetAccessExpiresAt() == nil || st.GetAccessExpiresAt().AsTime().Before(exp) {
		st.AccessExpiresAt = timestamppb.New(exp)
	}
	st.KeyIds = addKeyID(st.GetKeyIds(), signer.KeyID())
	tt := TokenTypeBearer
	if st.GetDpopJkt() != "" {
		tt = TokenTypeDPoP
	}
	return Tokens{
		AccessToken: at, TokenType: tt, AccessExpiresAt: exp,
		RefreshToken: formatRefreshToken(st.GetFamilyId(), r.secret), RefreshExpiresAt: st.GetRefreshExpiresAt().AsTime(),
		FamilyID: st.GetFamilyId(), Scopes: scopes, KeyID: signer.KeyID(), Algorithm: string(signer.Algorithm()), AccessTokenID: jti,
	}, nil
}

// maxKeyIDs bounds the key IDs a family remembers.
const maxKeyIDs = 16

func addKeyID(ids []string, kid string) []string {
	for _, id := range ids {
		if id == kid {
			return ids
		}
	}
	ids = append(ids, kid)
	if len(ids) > maxKeyIDs {
		ids = ids[len(ids)-maxKeyIDs:]
	}
	return ids
}

// loaded is a loaded family: its state, the sequence of its last event
// and until when the log keeps that event (the zero time: forever, or a
// state not read from the log).
type loaded struct {
	st    *eventsv1.FamilyState
	seq   uint64
	until time.Time
}

// load reads the current state of family fid; consistent asks the stream
// leader. It returns eventlog.ErrNotFound for an unknown family.
func (i *Issuer) load(ctx context.Context, fid string, consistent bool) (loaded, error) {
	read := i.log.Last
	if consistent {
		read = i.log.LastConsistent
	}
	rec, err := read(ctx, i.subj.FamilyFilter(fid))
	if err != nil {
		return loaded{}, err
	}
	m, err := events.Decode(rec)
	if err != nil {
		return loaded{}, err
	}
	st := events.FamilyStateOf(m)
	if st == nil || st.GetFamilyId() != fid {
		return loaded{}, fmt.Errorf("%w: family %s: event without state", events.ErrBadRecord, fid)
	}
	if st.GetIssuedSeq() == 0 {
		st.IssuedSeq = rec.Seq // the issued event itself
	}
	f := loaded{st: st, seq: rec.Seq}
	if rec.TTL > 0 {
		f.until = rec.Time.Add(rec.TTL)
	}
	return f, nil
}

// revoke appends the revocation of f with compare-and-set.
func (i *Issuer) revoke(ctx context.Context, f loaded, reason Reason, now time.Time) (uint64, error) {
	next := proto.Clone(f.st).(*eventsv1.FamilyState)
	next.Status = eventsv1.FamilyStatus_FAMILY_STATUS_REVOKED
	next.RevokedReason = reason.Code
	next.RevokedAt = timestamppb.New(now)
	next.GraceId = ""
	ev, err := events.FamilyRevoked(i.subj, &eventsv1.FamilyRevoked{State: next, Reason: reason.Code, ReasonText: reason.Text})
	if err != nil {
		return 0, err
	}
	retain(&ev, family.RetainUntil(next, i.cfg.Retention, f.until), now)
	return i.log.Append(ctx, ev, eventlog.Expect{Filter: i.subj.FamilyFilter(f.st.GetFamilyId()), Seq: f.seq})
}
