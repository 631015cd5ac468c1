package ssf

import (
	"encoding/json"
	"fmt"
)

// Subject is a subject identifier (RFC 9493; SSF 1.0 §3): the formats the
// transmitter produces and accepts.
type Subject struct {
	Format string `json:"format"`
	// iss_sub
	Iss string `json:"iss,omitempty"`
	Sub string `json:"sub,omitempty"`
	// opaque
	ID string `json:"id,omitempty"`
	// complex (SSF 1.0 §3.3): the members this transmitter names.
	User    *Subject `json:"user,omitempty"`
	Session *Subject `json:"session,omitempty"`
}

// userSubject is the iss_sub identifier of user sub of issuer iss.
func userSubject(iss, sub string) *Subject { return &Subject{Format: "iss_sub", Iss: iss, Sub: sub} }

// sessionSubject is the complex subject of one session (a token family)
// of a user: SSF 1.0 §3.3, user iss_sub and session opaque (the family
// ID, the access tokens' sid claim).
func sessionSubject(iss, sub, fid string) *Subject {
	return &Subject{Format: "complex", User: userSubject(iss, sub), Session: &Subject{Format: "opaque", ID: fid}}
}

// subjectKey is how a removed subject is kept and matched: a user by its
// sub, a session by its family ID.
func userKey(sub string) string    { return "user:" + sub }
func sessionKey(fid string) string { return "session:" + fid }

// keysOf returns the keys of a subject a receiver adds or removes: iss_sub
// (iss must be the tokens' issuer), opaque (a session ID) and complex with
// a user, a session or both. Other formats are refused: the transmitter
// issues no event about them (ErrInvalidRequest).
func keysOf(raw json.RawMessage, tokenIssuer string) ([]string, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: subject is required", ErrInvalidRequest)
	}
	var s Subject
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%w: subject: %v", ErrInvalidRequest, err)
	}
	return s.keys(tokenIssuer, true)
}

func (s *Subject) keys(tokenIssuer string, top bool) ([]string, error) {
	for name, v := range map[string]string{"iss": s.Iss, "sub": s.Sub, "id": s.ID} {
		if err := checkText("subject."+name, v, maxSubjectField); err != nil {
			return nil, err
		}
	}
	switch s.Format {
	case "iss_sub":
		if s.Sub == "" || s.Iss != tokenIssuer {
			return nil, fmt.Errorf("%w: an iss_sub subject needs sub and iss %q", ErrInvalidRequest, tokenIssuer)
		}
		return []string{userKey(s.Sub)}, nil
	case "opaque":
		if s.ID == "" {
			return nil, fmt.Errorf("%w: an opaque subject (a session) needs id", ErrInvalidRequest)
		}
		return []string{sessionKey(s.ID)}, nil
	case "complex":
		if !top || (s.User == nil && s.Session == nil) {
			return nil, fmt.Errorf("%w: a complex subject needs user or session", ErrInvalidRequest)
		}
		var out []string
		if s.User != nil {
			if s.User.Format != "iss_sub" {
				return nil, fmt.Errorf("%w: subject.user must be iss_sub", ErrInvalidRequest)
			}
			k, err := s.User.keys(tokenIssuer, false)
			if err != nil {
				return nil, err
			}
			out = append(out, k...)
		}
		if s.Session != nil {
			if s.Session.Format != "opaque" {
				return nil, fmt.Errorf("%w: subject.session must be opaque", ErrInvalidRequest)
			}
			k, err := s.Session.keys(tokenIssuer, false)
			if err != nil {
				return nil, err
			}
			out = append(out, k...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: subject format must be iss_sub, opaque or complex", ErrInvalidRequest)
}
