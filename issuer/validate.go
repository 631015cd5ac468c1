package issuer

import (
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Limits on request fields. They keep events small and refuse abuse.
const (
	MaxSubjectLen     = 255
	MaxClientIDLen    = 128
	MaxAudiences      = 16
	MaxAudienceLen    = 255
	MaxScopes         = 64
	MaxScopeLen       = 128
	MaxExtraClaimsLen = 4096
	MaxExtraDepth     = 8
)

// ClaimClass says who may set a claim through extra_claims.
type ClaimClass int

// The classes of claims.
const (
	// ClaimFree: any caller may set it.
	ClaimFree ClaimClass = iota
	// ClaimAuthorization: resource servers grant access on it (RFC 9068
	// §2.2.3.1 roles, groups and entitlements; RFC 8693 act and may_act;
	// azp; scp): only a caller whose policy entry lists it may set it.
	ClaimAuthorization
	// ClaimRegistered: the issuer sets it (iss, sub, aud, exp, cnf, …);
	// nobody may set it through extra_claims.
	ClaimRegistered
)

// ClassifyClaim returns who may set the claim name through extra_claims.
// It is the one list of reserved claims.
func ClassifyClaim(name string) ClaimClass {
	switch name {
	case "iss", "sub", "aud", "exp", "nbf", "iat", "jti",
		"client_id", "scope", "sid", "cnf", "auth_time", "acr", "amr":
		return ClaimRegistered
	case "azp", "act", "may_act", "roles", "groups", "entitlements", "scp":
		return ClaimAuthorization
	}
	return ClaimFree
}

func checkText(field, s string, maxLen int) error {
	if s == "" {
		return invalidRequest("%s is required", field)
	}
	if len(s) > maxLen {
		return invalidRequest("%s is longer than %d bytes", field, maxLen)
	}
	if !utf8.ValidString(s) {
		return invalidRequest("%s is not valid UTF-8", field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return invalidRequest("%s holds a control character", field)
		}
	}
	return nil
}

// checkClientID allows the VSCHAR set of RFC 6749 Appendix A.1.
func checkClientID(s string) error {
	if s == "" {
		return invalidRequest("client_id is required")
	}
	if len(s) > MaxClientIDLen {
		return invalidRequest("client_id is longer than %d bytes", MaxClientIDLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return invalidRequest("client_id holds a character outside VSCHAR")
		}
	}
	return nil
}

// normalizeScopes checks each scope-token (RFC 6749 §3.3: %x21 / %x23-5B /
// %x5D-7E) and drops duplicates, keeping order.
func normalizeScopes(scopes []string) ([]string, error) {
	if len(scopes) > MaxScopes {
		return nil, invalidRequest("more than %d scopes", MaxScopes)
	}
	out := make([]string, 0, len(scopes))
	seen := make(map[string]bool, len(scopes))
	for _, s := range scopes {
		if s == "" || len(s) > MaxScopeLen {
			return nil, invalidRequest("a scope is empty or longer than %d bytes", MaxScopeLen)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
				return nil, invalidRequest("scope %q holds a character outside scope-token", s)
			}
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

func checkAudience(aud []string) error {
	if len(aud) == 0 {
		return invalidRequest("audience is required (RFC 9068 §2.2)")
	}
	if len(aud) > MaxAudiences {
		return invalidRequest("more than %d audiences", MaxAudiences)
	}
	for _, a := range aud {
		if err := checkText("audience", a, MaxAudienceLen); err != nil {
			return err
		}
	}
	return nil
}

// checkExtraClaims refuses extra claims that are too large or deep, that
// set a registered claim, or that set an authorization claim not in
// allowed (ErrClaimNotAllowed).
func checkExtraClaims(s *structpb.Struct, allowed []string) error {
	if s == nil {
		return nil
	}
	if proto.Size(s) > MaxExtraClaimsLen {
		return invalidRequest("extra_claims are larger than %d bytes", MaxExtraClaimsLen)
	}
	// The JSON form is what goes into the token, and escapes can make it
	// several times the protobuf size.
	if js, err := s.MarshalJSON(); err != nil || len(js) > MaxExtraClaimsLen {
		return invalidRequest("extra_claims are larger than %d bytes as JSON", MaxExtraClaimsLen)
	}
	for k, v := range s.GetFields() {
		switch ClassifyClaim(k) {
		case ClaimRegistered:
			return invalidRequest("extra_claims may not set the registered claim %q", k)
		case ClaimAuthorization:
			if !slices.Contains(allowed, k) {
				return fmt.Errorf("%w: %q", ErrClaimNotAllowed, k)
			}
		}
		if k == "" || !utf8.ValidString(k) {
			return invalidRequest("extra_claims has an empty or invalid name")
		}
		if depth(v) > MaxExtraDepth {
			return invalidRequest("extra_claims are nested deeper than %d", MaxExtraDepth)
		}
	}
	return nil
}

func depth(v *structpb.Value) int {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		d := 0
		for _, f := range k.StructValue.GetFields() {
			d = max(d, depth(f))
		}
		return d + 1
	case *structpb.Value_ListValue:
		d := 0
		for _, f := range k.ListValue.GetValues() {
			d = max(d, depth(f))
		}
		return d + 1
	}
	return 1
}

// subset reports whether every scope of want is in have.
func subset(want, have []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if w == h {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
