package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/auth-platform/tokenservice/issuer"
	"github.com/auth-platform/tokenservice/projections"
)

const cacheNotUsed = "CACHE_SERVICE_ADDRESS is set but not used"

// TestFamiliesCacheSealed: tokend wires the sealer into the families read
// model (the bucket holds no subject or client in clear, ListFamilies
// reads it) and logs once that CACHE_SERVICE_ADDRESS, the specification's
// cache service, is not used.
func TestFamiliesCacheSealed(t *testing.T) {
	m, logs := startForLogs(t, map[string]string{"CACHE_SERVICE_ADDRESS": "http://cache.internal:50051"}, nil)
	if n := strings.Count(logs.String(), cacheNotUsed); n != 1 {
		t.Fatalf("%d log records say CACHE_SERVICE_ADDRESS is not used, want 1:\n%s", n, logs.String())
	}
	const subject, client = "cache-subject-4e7a@example.com", "cache-client-91fd"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Issuer.Generate(ctx, issuer.GenerateRequest{Subject: subject, ClientID: client, Audience: []string{"https://api.test"}}); err != nil {
		t.Fatal(err)
	}
	for {
		recs, err := m.Families.ListFamilies(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 1 && recs[0].GetState().GetClientId() == client {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the family never reached the read model")
		case <-time.After(20 * time.Millisecond):
		}
	}
	s, err := m.Log.JetStream().Stream(ctx, "KV_"+projections.FamilyBucket)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, "$KV."+projections.FamilyBucket+".>")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(msg.Data, []byte(subject)) || bytes.Contains(msg.Data, []byte(client)) || len(msg.Data) == 0 {
		t.Fatalf("the bucket holds the family in clear: %q", msg.Data)
	}
}

// TestCacheServiceAddressUnsetIsQuiet: without CACHE_SERVICE_ADDRESS,
// nothing is said about it.
func TestCacheServiceAddressUnsetIsQuiet(t *testing.T) {
	_, logs := startForLogs(t, nil, nil)
	if strings.Contains(logs.String(), "CACHE_SERVICE_ADDRESS") {
		t.Fatalf("logged about an unset CACHE_SERVICE_ADDRESS:\n%s", logs.String())
	}
}
