package app

import "testing"

// TestSharedSignalsPushPolicy: a tokend that serves the network never
// pushes to its own host unless SSF_PUSH_ALLOW_PRIVATE says so; on a
// loopback HOST (development, tests) its receivers run beside it.
func TestSharedSignalsPushPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                   string
		env                    map[string]string
		wantLoopback, wantPriv bool
	}{
		{"default host", nil, false, false},
		{"public host", map[string]string{"HOST": "10.0.0.5"}, false, false},
		{"loopback host", map[string]string{"HOST": "127.0.0.1"}, true, false},
		{"loopback v6 host", map[string]string{"HOST": "::1"}, true, false},
		{"allow private", map[string]string{"SSF_PUSH_ALLOW_PRIVATE": "true"}, true, true},
	} {
		c, err := ConfigFromEnv(env(tc.env))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		p := pushURLPolicy(t.Context(), c)
		if p.AllowLoopback != tc.wantLoopback || p.AllowPrivate != tc.wantPriv {
			t.Errorf("%s: %+v, want loopback %v, private %v", tc.name, p, tc.wantLoopback, tc.wantPriv)
		}
	}
}
