package issuer

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/auth-platform/tokenservice/issuer/family"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// FuzzParseRefreshToken: the parser never panics, and what it accepts is
// canonical (formatting it back gives the same string), so one family and
// secret have exactly one spelling.
func FuzzParseRefreshToken(f *testing.F) {
	r, _ := newFresh(rand.Reader)
	fid := r.familyID
	good := formatRefreshToken(fid, r.secret)
	for _, s := range []string{good, good[:len(good)-1], good + "A", "", ".", "a.b", fid + ".", "." + good[23:],
		good[:22] + "=" + good[23:], good[:len(good)-1] + "=", "token.family.>.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rt, err := parseRefreshToken(s)
		if err != nil {
			return
		}
		if back := formatRefreshToken(rt.familyID, rt.secret); back != s {
			t.Fatalf("accepted non-canonical %q (canonical %q)", s, back)
		}
		if !validFamilyID(rt.familyID) || len(rt.secret) != secretBytes {
			t.Fatalf("accepted %q with family %q and %d-byte secret", s, rt.familyID, len(rt.secret))
		}
	})
}

// FuzzSpentPrefixes: a hash is found among the spent prefixes exactly when
// it was appended and not yet pushed out by the cap.
func FuzzSpentPrefixes(f *testing.F) {
	f.Add([]byte("abcdefgh"), uint8(3))
	f.Fuzz(func(t *testing.T, seed []byte, n uint8) {
		var spent []byte
		var hashes [][]byte
		for i := range int(n) {
			h := hashSecret(append(append([]byte(nil), seed...), byte(i), byte(i>>8)))
			spent = appendSpent(spent, h)
			hashes = append(hashes, h)
		}
		st := &eventsv1.FamilyState{SpentSecretPrefixes: spent}
		for _, h := range hashes {
			if family.MatchSecret(st, h) != family.Spent {
				t.Fatalf("appended hash not found")
			}
		}
		other := hashSecret(append([]byte("other"), seed...))
		for _, h := range hashes {
			if bytes.Equal(h[:family.SpentPrefixLen], other[:family.SpentPrefixLen]) {
				return
			}
		}
		if family.MatchSecret(st, other) != family.Unknown {
			t.Fatalf("a hash never appended was found")
		}
	})
}
