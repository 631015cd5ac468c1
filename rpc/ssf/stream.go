package ssf

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Delivery methods (SSF 1.0 §6.1).
const (
	MethodPush = "urn:ietf:rfc:8935"
	MethodPoll = "urn:ietf:rfc:8936"
)

// Stream statuses (SSF 1.0 §8.1.2).
const (
	StatusEnabled  = "enabled"
	StatusPaused   = "paused"
	StatusDisabled = "disabled"
)

// Bounds of what a receiver may configure.
const (
	maxDescription  = 256
	maxURL          = 2048
	maxAuthHeader   = 4096
	maxAudience     = 255
	maxAudiences    = 8
	maxEventTypes   = 16
	maxReason       = 256
	maxExcluded     = 1000
	maxAdded        = 1000
	maxSubjectField = 1024
	maxState        = 256
)

// Delivery is a stream's delivery configuration (SSF 1.0 §8.1.1).
type Delivery struct {
	Method string `json:"method"`
	// EndpointURL is the receiver's push URL, or the transmitter's poll
	// URL.
	EndpointURL string `json:"endpoint_url,omitempty"`
	// AuthorizationHeader is sent with every push (receiver-supplied). It
	// is a secret: it is kept sealed and never read back.
	AuthorizationHeader string `json:"authorization_header,omitempty"`
}

// StreamConfig is the stream configuration as the API reads and writes it (SSF
// 1.0 §8.1.1).
type StreamConfig struct {
	StreamID                string    `json:"stream_id"`
	Iss                     string    `json:"iss"`
	Aud                     Audience  `json:"aud"`
	EventsSupported         []string  `json:"events_supported"`
	EventsRequested         []string  `json:"events_requested"`
	EventsDelivered         []string  `json:"events_delivered"`
	Delivery                *Delivery `json:"delivery"`
	MinVerificationInterval int       `json:"min_verification_interval"`
	Description             string    `json:"description,omitempty"`
}

// Audience is a JWT "aud": a string, or an array of strings.
type Audience []string

// MarshalJSON writes one audience as a string, several as an array.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON reads a string or an array of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("aud: a string or an array of strings")
	}
	*a = many
	return nil
}

// record is a stream as the store keeps it.
type record struct {
	ID     string `json:"id"`
	Owner  string `json:"owner"` // the caller that created it (auth.Identity.Actor)
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Aud is the stream's audience (the SETs' aud).
	Aud             []string `json:"aud"`
	EventsRequested []string `json:"events_requested"`
	Delivery        Delivery `json:"delivery"` // EndpointURL: push only
	Description     string   `json:"description,omitempty"`
	// Excluded are the subjects removed from the stream (subjectKey):
	// the stream receives every subject (default_subjects ALL) but these.
	Excluded []string `json:"excluded,omitempty"`
	// Added are the subjects the receiver added (add_subject, subjectKey):
	// what a restricted stream receives of subject-wide events (entitled).
	Added []string `json:"added,omitempty"`
	// Restrict are the audiences of the creator's policy entry
	// (Caller.Audiences), recorded at creation and kept by updates: when
	// set, the stream hears only of its audiences' sessions (entitled).
	Restrict []string `json:"restrict,omitempty"`
	// Iss is the transmitter's issuer as the receiver discovered it when
	// it created the stream (the configured public base URL, or the
	// loopback origin it called in development): the iss of its SETs.
	Iss string `json:"iss,omitempty"`
	// AfterSeq is the log's last sequence when the stream was created:
	// the stream receives the events after it.
	AfterSeq  uint64    `json:"after_seq"`
	CreatedAt time.Time `json:"created_at"`
	// VerifiedAt is when the receiver last asked for a verification event.
	VerifiedAt time.Time `json:"verified_at,omitzero"`
}

// StreamRequest is what a receiver sends to create, update or replace a
// stream: the receiver-supplied members of StreamConfig (others are ignored,
// SSF 1.0 §8.1.1.3, except stream_id, which names the stream).
type StreamRequest struct {
	StreamID        string    `json:"stream_id"`
	Aud             Audience  `json:"aud"`
	EventsRequested []string  `json:"events_requested"`
	Delivery        *Delivery `json:"delivery"`
	Description     *string   `json:"description"`
}

// Caller is who calls the management API.
type Caller struct {
	// Owner identifies the receiver (auth.Identity.Actor): the streams it
	// creates are its own, and it sees no others.
	Owner string
	// Admin sees and manages every stream.
	Admin bool
	// Audiences, if not empty, are the only audiences the caller may ask
	// for (the policy entry's audiences).
	Audiences []string
	// Issuer is the transmitter's issuer for the request (Config.BaseURL):
	// the iss of the SETs of a stream it creates.
	Issuer string
}

// visibleTo is the one rule of who may see and manage a stream: its
// owner, or an admin. Any other caller is told that the stream does not
// exist (ErrStreamNotFound), so stream IDs reveal nothing.
func visibleTo(r *record, c Caller) bool {
	return c.Admin || r.Owner == c.Owner
}

// holds reports whether the stream keeps the SETs of new events: an
// enabled or paused stream does, a disabled one drops them (SSF 1.0
// §8.1.2).
func holds(r *record) bool { return r.Status == StatusEnabled || r.Status == StatusPaused }

// transmits reports whether the stream's SETs may be delivered now: only
// an enabled stream's are; a paused one holds them.
func transmits(r *record) bool { return r.Status == StatusEnabled }

// delivered returns the event types the stream delivers: those requested
// that the transmitter supports, in the supported order (SSF 1.0 §8.1.1
// events_delivered).
func delivered(requested []string) []string {
	var out []string
	for _, t := range EventTypes() {
		if slices.Contains(requested, t) {
			out = append(out, t)
		}
	}
	return out
}

// wants reports whether the stream receives sig: it holds events, sig
// comes after the stream's start, its type was requested, none of its
// subjects was removed, and the receiver is entitled to it.
func wants(r *record, sig *signal) bool {
	if !holds(r) || sig.Seq <= r.AfterSeq || !slices.Contains(r.EventsRequested, sig.Type) {
		return false
	}
	for _, k := range sig.Keys {
		if slices.Contains(r.Excluded, k) {
			return false
		}
	}
	return entitled(r, sig)
}

// entitled is the one rule of what a receiver may learn. A stream whose
// creator's policy lists audiences (record.Restrict) receives a session's
// revocation only when the family was issued for one of them, and a
// subject-wide event (a user's sessions-revoked, a key compromise) only
// about a subject it added (add_subject); an unrestricted stream
// receives everything.
func entitled(r *record, sig *signal) bool {
	if len(r.Restrict) == 0 {
		return true
	}
	if sig.Type == EventSessionRevoked {
		return slices.ContainsFunc(sig.Aud, func(a string) bool { return slices.Contains(r.Restrict, a) })
	}
	return slices.ContainsFunc(sig.Keys, func(k string) bool { return slices.Contains(r.Added, k) })
}

// configOf returns what the API shows of r.
func configOf(r *record, iss, pollURL string) StreamConfig {
	d := &Delivery{Method: r.Delivery.Method, EndpointURL: r.Delivery.EndpointURL}
	if r.Delivery.Method == MethodPoll {
		d.EndpointURL = pollURL
	}
	return StreamConfig{StreamID: r.ID, Iss: iss, Aud: r.Aud, EventsSupported: EventTypes(), EventsRequested: r.EventsRequested,
		EventsDelivered: delivered(r.EventsRequested), Delivery: d, MinVerificationInterval: int(minVerificationInterval / time.Second),
		Description: r.Description}
}

// minVerificationInterval is the least time between two verification
// requests of one stream (SSF 1.0 §8.1.4.2).
const minVerificationInterval = 5 * time.Second

// PushURLPolicy says which push URLs are accepted. The zero value
// accepts https URLs to public addresses only.
type PushURLPolicy struct {
	// AllowLoopback lets pushes reach a loopback host (a receiver on the
	// transmitter's own machine), by a URL that names it (127.0.0.1,
	// [::1], localhost), over https or http. Default false: a receiver
	// cannot aim every replica at a local port (a sidecar's admin API,
	// SSRF). tokend sets it when SSF_PUSH_ALLOW_PRIVATE is on or when it
	// listens on loopback itself (development, tests).
	AllowLoopback bool
	// DenyHTTPLoopback refuses http:// URLs to a loopback host too.
	// Default false: with AllowLoopback, http is accepted to a loopback
	// address or localhost, and any other URL must be https.
	DenyHTTPLoopback bool
	// AllowPrivate lets pushes reach private, shared and link-local
	// addresses (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10,
	// 169.254/16, fe80::/10), for receivers inside the operator's network.
	// Default false: a receiver cannot aim the service at its neighbours
	// or at a cloud metadata endpoint (SSRF). It does not imply
	// AllowLoopback.
	AllowPrivate bool
}

// checkPushURL is the one rule of which push URLs are accepted: absolute,
// https (http only to a loopback host, when loopback is allowed and the
// policy does not forbid http), a host, no user information or fragment,
// at most maxURL bytes; a loopback host only with AllowLoopback, an IP
// address only one allowedAddr accepts.
func (p PushURLPolicy) checkPushURL(s string) error {
	if s == "" {
		return fmt.Errorf("%w: delivery.endpoint_url is required for push", ErrInvalidRequest)
	}
	if len(s) > maxURL {
		return fmt.Errorf("%w: delivery.endpoint_url is over %d bytes", ErrInvalidRequest, maxURL)
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%w: delivery.endpoint_url must be an absolute https URL", ErrInvalidRequest)
	}
	if u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%w: delivery.endpoint_url must not carry user information or a fragment", ErrInvalidRequest)
	}
	if loopback(u.Hostname()) && !p.AllowLoopback {
		return fmt.Errorf("%w: delivery.endpoint_url names a loopback host, which this transmitter does not push to", ErrInvalidRequest)
	}
	if u.Scheme == "http" && (p.DenyHTTPLoopback || !loopback(u.Hostname())) {
		return fmt.Errorf("%w: delivery.endpoint_url must be https (http only to a loopback host)", ErrInvalidRequest)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !p.allowedAddr(u.Hostname(), ip) {
		return fmt.Errorf("%w: delivery.endpoint_url is not a public address (private, shared, link-local, reserved or special-purpose)", ErrInvalidRequest)
	}
	return nil
}

// origin is the scheme, host and port of a checked push URL, the port
// made explicit ("https://rp.example:443"), or "" for one that does not
// parse.
func origin(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[strings.ToLower(u.Scheme)]
	}
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(strings.ToLower(strings.TrimSuffix(u.Hostname(), ".")), port)
}

func loopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkText refuses a member longer than max bytes or holding a control
// character.
func checkText(name, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s is over %d bytes", ErrInvalidRequest, name, max)
	}
	for _, c := range s {
		if c < ' ' || c == 0x7f {
			return fmt.Errorf("%w: %s holds a control character", ErrInvalidRequest, name)
		}
	}
	return nil
}

// apply is the one rule that turns a create, update or replace request
// into the stream's new record. base is the current record (a fresh one
// for create), replace says whether members the request leaves out are
// reset (PUT) or kept (PATCH, create's defaults already in base).
func (p PushURLPolicy) apply(base record, req StreamRequest, c Caller, replace bool) (record, error) {
	r := base
	if req.Aud != nil || replace {
		aud := []string(req.Aud)
		if len(aud) == 0 {
			aud = []string{defaultAudience(c)}
		}
		if len(aud) > maxAudiences {
			return record{}, fmt.Errorf("%w: at most %d audiences", ErrInvalidRequest, maxAudiences)
		}
		for _, a := range aud {
			if a == "" {
				return record{}, fmt.Errorf("%w: aud: an empty audience", ErrInvalidRequest)
			}
			if err := checkText("aud", a, maxAudience); err != nil {
				return record{}, err
			}
			if len(c.Audiences) > 0 && !slices.Contains(c.Audiences, a) {
				return record{}, fmt.Errorf("%w: aud %q is not one of the caller's audiences", ErrInvalidRequest, a)
			}
		}
		r.Aud = aud
	}
	if len(r.Aud) == 0 {
		r.Aud = []string{defaultAudience(c)}
	}
	if req.EventsRequested != nil || replace {
		if len(req.EventsRequested) > maxEventTypes {
			return record{}, fmt.Errorf("%w: at most %d events_requested", ErrInvalidRequest, maxEventTypes)
		}
		for _, t := range req.EventsRequested {
			if err := checkText("events_requested", t, maxURL); err != nil {
				return record{}, err
			}
		}
		r.EventsRequested = slices.Compact(slices.Sorted(slices.Values(req.EventsRequested)))
	}
	if req.Description != nil || replace {
		d := ""
		if req.Description != nil {
			d = *req.Description
		}
		if err := checkText("description", d, maxDescription); err != nil {
			return record{}, err
		}
		r.Description = d
	}
	if req.Delivery != nil || replace {
		d := req.Delivery
		if d == nil {
			d = &Delivery{Method: MethodPoll}
		}
		switch d.Method {
		case MethodPoll:
			r.Delivery = Delivery{Method: MethodPoll}
		case MethodPush:
			if err := p.checkPushURL(d.EndpointURL); err != nil {
				return record{}, err
			}
			if err := checkText("delivery.authorization_header", d.AuthorizationHeader, maxAuthHeader); err != nil {
				return record{}, err
			}
			auth := d.AuthorizationHeader
			if auth == "" && !replace && base.Delivery.Method == MethodPush && base.Delivery.AuthorizationHeader != "" {
				// A PATCH of the URL keeps the secret within its origin only:
				// whoever holds the management credential must not move it
				// to a host of their choice and be sent it.
				if origin(base.Delivery.EndpointURL) != origin(d.EndpointURL) {
					return record{}, fmt.Errorf("%w: delivery.authorization_header must be given again when endpoint_url moves to another origin", ErrInvalidRequest)
				}
				auth = base.Delivery.AuthorizationHeader
			}
			r.Delivery = Delivery{Method: MethodPush, EndpointURL: d.EndpointURL, AuthorizationHeader: auth}
		default:
			return record{}, fmt.Errorf("%w: delivery.method must be %s (push) or %s (poll)", ErrInvalidRequest, MethodPush, MethodPoll)
		}
	}
	return r, nil
}

// defaultAudience is a stream's audience when the receiver names none:
// the receiver's own identity.
func defaultAudience(c Caller) string {
	if c.Owner == "" {
		return "receiver"
	}
	return c.Owner
}

// checkStatus checks a status update (SSF 1.0 §8.1.2.2).
func checkStatus(status, reason string) error {
	switch status {
	case StatusEnabled, StatusPaused, StatusDisabled:
	default:
		return fmt.Errorf("%w: status must be enabled, paused or disabled", ErrInvalidRequest)
	}
	return checkText("reason", reason, maxReason)
}
