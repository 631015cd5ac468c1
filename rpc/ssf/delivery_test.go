package ssf_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
	"github.com/auth-platform/tokenservice/rpc/ssf"
	"github.com/auth-platform/tokenservice/signing"
)

func (h *harness) revoke(fid string) {
	h.t.Helper()
	if n, err := h.env.Issuer.RevokeFamily(context.Background(), fid, eventsv1.RevocationReason_REVOCATION_REASON_ADMIN); err != nil || n != 1 {
		h.t.Fatalf("revoke %s: %d, %v", fid, n, err)
	}
}

func sessionOf(h *harness, raw string) string {
	s := h.verify(raw)
	if s.Claims.SubID.Session == nil {
		h.t.Fatalf("no session in %+v", s.Claims.SubID)
	}
	return s.Claims.SubID.Session.ID
}

// TestPushOutageCatchUp: a receiver that is down gets every SET, in
// order, when it returns; the failures are counted, and the SET pushed
// again has the jti it had.
func TestPushOutageCatchUp(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rcv := newReceiver(t)
	rcv.setDown(true)
	h.createStream("alice", map[string]any{"delivery": map[string]any{"method": ssf.MethodPush, "endpoint_url": rcv.srv.URL},
		"events_requested": []string{ssf.EventSessionRevoked}})
	var want []string
	for i := range 5 {
		tok := h.generate("user-" + string(rune('a'+i)))
		h.revoke(tok.FamilyID)
		want = append(want, tok.FamilyID)
	}
	// Wait until the first push failed a few times.
	deadline := time.Now().Add(5 * time.Second)
	for deliveries(h, "push", ssf.OutcomeFailed) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no failed pushes counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := metric(h, "token_service_ssf_pending_sets"); n != 5 {
		t.Fatalf("pending SETs while the receiver is down: %v, want 5", n)
	}
	rcv.setDown(false)
	var got []string
	var jtis []string
	for range want {
		raw := rcv.next(t, 5*time.Second)
		got = append(got, sessionOf(h, raw))
		jtis = append(jtis, h.verify(raw).Claims.Jti)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("order after the outage: %v, want %v", got, want)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(jtis)))) != 5 {
		t.Fatalf("jtis not distinct: %v", jtis)
	}
	select {
	case extra := <-rcv.got:
		t.Fatalf("a SET delivered twice after acceptance: %s", extra)
	case <-time.After(200 * time.Millisecond):
	}
	if n := deliveries(h, "push", ssf.OutcomeDelivered); n != 5 {
		t.Fatalf("delivered count %v, want 5", n)
	}
	waitGauge(t, h, "token_service_ssf_pending_sets", 0)
}

// TestRedeliveryKeepsJTI: a SET queued but not delivered when the
// transmitter stops is delivered by the next one with the same jti and
// bytes.
func TestRedeliveryKeepsJTI(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rcv := newReceiver(t)
	rcv.setDown(true)
	h.createStream("alice", map[string]any{"delivery": map[string]any{"method": ssf.MethodPush, "endpoint_url": rcv.srv.URL},
		"events_requested": []string{ssf.EventSessionRevoked}})
	tok := h.generate("user-1")
	h.revoke(tok.FamilyID)
	deadline := time.Now().Add(5 * time.Second)
	for len(rcv.authSeen()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no push attempts")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.stop()
	rcv.setDown(false)
	// A new transmitter (another replica, or this one restarted) on the
	// same JetStream: the streams and the queue survive.
	h.svc = h.newService(t, nil)
	h.start(t)
	raw := rcv.next(t, 5*time.Second)
	if sessionOf(h, raw) != tok.FamilyID {
		t.Fatal("another SET delivered")
	}
	// The SET the first transmitter tried is the one delivered, byte for
	// byte: same jti.
	rcv.mu.Lock()
	first := rcv.tried[0]
	rcv.mu.Unlock()
	if first != raw || h.verify(first).Claims.Jti != h.verify(raw).Claims.Jti {
		t.Fatal("the SET delivered after the restart is not the one tried before")
	}
	var streams []ssf.StreamConfig
	h.must(http.StatusOK, "alice", http.MethodGet, ssf.PathStreams, nil, &streams)
	if len(streams) != 1 {
		t.Fatalf("streams after restart: %d", len(streams))
	}
}

func (r *receiver) authSeen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.auth)
}

// TestPauseResumeDisable: a paused stream holds its SETs and delivers them
// when enabled again; a disabled one drops them and queues none.
func TestPauseResumeDisable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	poll := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	setStatus := func(status string) {
		var st struct{ Status, Reason string }
		h.must(http.StatusOK, "alice", http.MethodPost, ssf.PathStatus, map[string]any{"stream_id": poll.StreamID, "status": status, "reason": "maintenance"}, &st)
		if st.Status != status {
			t.Fatalf("status %q, want %q", st.Status, status)
		}
		var got struct {
			Status string `json:"status"`
		}
		h.must(http.StatusOK, "alice", http.MethodGet, ssf.PathStatus+"?stream_id="+poll.StreamID, nil, &got)
		if got.Status != status {
			t.Fatalf("read status %q, want %q", got.Status, status)
		}
	}
	setStatus(ssf.StatusPaused)
	tok := h.generate("user-1")
	h.revoke(tok.FamilyID)
	waitGauge(t, h, "token_service_ssf_pending_sets", 1)
	if resp := h.poll("alice", poll, map[string]any{"returnImmediately": true}); len(resp.Sets) != 0 {
		t.Fatalf("a paused stream delivered %d SETs", len(resp.Sets))
	}
	setStatus(ssf.StatusEnabled)
	sets := h.pollUntil("alice", poll, 1, time.Second)
	for _, raw := range sets {
		if sessionOf(h, raw) != tok.FamilyID {
			t.Fatal("wrong SET after resume")
		}
	}
	setStatus(ssf.StatusDisabled)
	waitGauge(t, h, "token_service_ssf_pending_sets", 0)
	tok2 := h.generate("user-2")
	h.revoke(tok2.FamilyID)
	setStatus(ssf.StatusEnabled)
	// A SET made after the disabled one's revocation shows the order: the
	// revocation while disabled never arrives.
	tok3 := h.generate("user-3")
	h.revoke(tok3.FamilyID)
	for _, raw := range h.pollUntil("alice", poll, 1, 2*time.Second) {
		if got := sessionOf(h, raw); got != tok3.FamilyID {
			t.Fatalf("got session %s; the one revoked while disabled (%s) must be dropped", got, tok2.FamilyID)
		}
	}
}

// TestPushRejectedNotRetried: a 400 from the receiver (RFC 8935 §2.3)
// drops that SET; the next one is delivered.
func TestPushRejectedNotRetried(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rcv := newReceiver(t)
	h.createStream("alice", map[string]any{"delivery": map[string]any{"method": ssf.MethodPush, "endpoint_url": rcv.srv.URL},
		"events_requested": []string{ssf.EventSessionRevoked}})
	// A receiver that refuses everything that is not its content type:
	// make it refuse by switching the stream to a URL whose handler 400s.
	bad := newReceiverFunc(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"err":"invalid_key","description":"unknown kid"}` + strings.Repeat(" ", 1<<20)))
	})
	var streams []ssf.StreamConfig
	h.must(http.StatusOK, "alice", http.MethodGet, ssf.PathStreams, nil, &streams)
	h.must(http.StatusOK, "alice", http.MethodPatch, ssf.PathStreams, map[string]any{"stream_id": streams[0].StreamID,
		"delivery": map[string]any{"method": ssf.MethodPush, "endpoint_url": bad.URL}}, nil)
	tok := h.generate("user-1")
	h.revoke(tok.FamilyID)
	deadline := time.Now().Add(5 * time.Second)
	for deliveries(h, "push", ssf.OutcomeRejected) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the rejection was not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitGauge(t, h, "token_service_ssf_pending_sets", 0)
	if n := deliveries(h, "push", ssf.OutcomeFailed); n != 0 {
		t.Fatalf("a rejected SET was retried: %v failures", n)
	}
}

// TestPushBoundedResponse: a receiver that answers too slowly, or with an
// endless body, costs a push PushTimeout at most; its SET is pushed again.
func TestPushBoundedResponse(t *testing.T) {
	h := newHarness(t, harnessOptions{pushTimeout: 200 * time.Millisecond})
	var mu sync.Mutex
	calls := 0
	stop := make(chan struct{})
	rcv := newReceiverFunc(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		switch n {
		case 1: // hangs
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		case 2: // an endless body after the status
			w.WriteHeader(http.StatusServiceUnavailable)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := w.Write(make([]byte, 64<<10)); err != nil {
					return
				}
			}
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	})
	t.Cleanup(func() { close(stop) }) // before the server's Close (cleanups run last first)
	h.createStream("alice", map[string]any{"delivery": map[string]any{"method": ssf.MethodPush, "endpoint_url": rcv.URL},
		"events_requested": []string{ssf.EventSessionRevoked}})
	start := time.Now()
	tok := h.generate("user-1")
	h.revoke(tok.FamilyID)
	waitFor(t, "delivery after two bad answers", func() bool { return deliveries(h, "push", ssf.OutcomeDelivered) == 1 })
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("two bad answers cost %s", took)
	}
	if n := deliveries(h, "push", ssf.OutcomeFailed); n != 2 {
		t.Fatalf("failures %v, want 2", n)
	}
}

// TestTwoReplicas: two transmitters on one JetStream (two replicas) make
// each SET once and push each once, in order.
func TestTwoReplicas(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	second := h.newService(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = second.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	rcv := newReceiver(t)
	h.createStream("alice", map[string]any{"delivery": map[string]any{"method": ssf.MethodPush, "endpoint_url": rcv.srv.URL},
		"events_requested": []string{ssf.EventSessionRevoked}})
	var want []string
	for range 20 {
		tok := h.generate("user-r")
		h.revoke(tok.FamilyID)
		want = append(want, tok.FamilyID)
	}
	var got []string
	for range want {
		got = append(got, sessionOf(h, rcv.next(t, 5*time.Second)))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("order across replicas: %v, want %v", got, want)
	}
	select {
	case extra := <-rcv.got:
		t.Fatalf("a SET pushed twice: %s", sessionOf(h, extra))
	case <-time.After(300 * time.Millisecond):
	}
}

// TestResignAfterCompromise: a SET queued, signed by a key that is then
// declared compromised (and leaves the JWKS), is delivered signed by the
// new key, with the same jti: the receiver can still verify it.
func TestResignAfterCompromise(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	poll := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	tok := h.generate("user-1")
	h.revoke(tok.FamilyID)
	before := h.pollUntil("alice", poll, 1, time.Second)
	var jti, kid string
	for j, raw := range before {
		jti, kid = j, h.verify(raw).Header.KeyID
	}
	if _, err := h.env.Responder.Compromise(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	h.env.CaughtUp(t)
	for _, k := range h.env.Set.JWKS() {
		if k.Kid == kid {
			t.Fatal("the compromised key is still published")
		}
	}
	after := h.poll("alice", poll, map[string]any{"returnImmediately": true})
	raw, ok := after.Sets[jti]
	if !ok || len(after.Sets) != 1 {
		t.Fatalf("after the compromise: %v", after.Sets)
	}
	s := h.verify(raw) // fails unless signed by a published key
	if s.Header.KeyID == kid || s.Claims.Jti != jti || sessionOf(h, raw) != tok.FamilyID {
		t.Fatalf("re-signed SET: kid %s (was %s), jti %s", s.Header.KeyID, kid, s.Claims.Jti)
	}
}

// stuckKeys is a signing key source that hangs, ignoring its context: a
// replica that dies while it makes a SET.
type stuckKeys struct {
	ssf.SignerSource
	entered chan struct{}
	release chan struct{}
}

func (k stuckKeys) Active(ctx context.Context) (signing.Signer, error) {
	select {
	case k.entered <- struct{}{}:
	default:
	}
	<-k.release
	return nil, errors.New("stuck")
}

// TestMaterializerCrash: a replica that dies while it makes the SETs of a
// log record (the record neither acknowledged nor refused) leaves it to
// another replica, which makes the SET once, with the jti derived from
// the stream and the record.
func TestMaterializerCrash(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	poll := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	h.stop() // the harness's replica steps aside

	stuck := stuckKeys{SignerSource: h.env.Keyring, entered: make(chan struct{}, 1), release: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dead, err := ssf.New(ctx, ssf.Config{Log: h.env.Log, Keys: stuck, Sealer: h.env.Sealer, Issuer: h.srv.URL, TokenIssuer: tokenIssuer})
	if err != nil {
		t.Fatal(err)
	}
	dctx, kill := context.WithCancel(context.Background())
	go func() { _ = dead.Run(dctx) }()
	t.Cleanup(func() { close(stuck.release) })

	tok := h.generate("user-1")
	h.revoke(tok.FamilyID)
	select {
	case <-stuck.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the doomed replica never took the record")
	}
	kill() // its signer never returns: the record is neither acked nor nacked

	h.svc = h.newService(t, nil)
	h.start(t)
	start := time.Now()
	sets := h.pollUntil("alice", poll, 1, 20*time.Second)
	t.Logf("taken over after %s", time.Since(start))
	if len(sets) != 1 {
		t.Fatalf("%d SETs", len(sets))
	}
	for _, raw := range sets {
		if sessionOf(h, raw) != tok.FamilyID {
			t.Fatal("wrong SET")
		}
	}
}

// TestRetentionBound: what a receiver does not take within the retention
// is dropped, so a receiver gone for good costs bounded storage.
func TestRetentionBound(t *testing.T) {
	h := newHarness(t, harnessOptions{retention: time.Second})
	poll := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	for range 3 {
		h.revoke(h.generate("user-1").FamilyID)
	}
	waitGauge(t, h, "token_service_ssf_pending_sets", 3)
	if age := metric(h, "token_service_ssf_oldest_pending_seconds"); age < 0 || age > 5 {
		t.Fatalf("oldest pending age %v", age)
	}
	waitGauge(t, h, "token_service_ssf_pending_sets", 0)
	if resp := h.poll("alice", poll, map[string]any{"returnImmediately": true}); len(resp.Sets) != 0 {
		t.Fatalf("%d SETs outlived the retention", len(resp.Sets))
	}
}

// TestConsumerLost: the log's consumer deleted while the transmitter is
// down (an ENCRYPTION_KEY rotation on the embedded server wipes
// consumers) is made again from the oldest stream's start, so the events
// appended meanwhile are not lost.
func TestConsumerLost(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	poll := h.createStream("alice", map[string]any{"events_requested": []string{ssf.EventSessionRevoked}})
	h.stop()
	ctx := context.Background()
	if err := h.env.Log.JetStream().DeleteConsumer(ctx, h.env.Log.Stream(), ssf.DefaultConsumer); err != nil {
		t.Fatal(err)
	}
	tok := h.generate("user-1")
	h.revoke(tok.FamilyID)
	h.svc = h.newService(t, nil)
	h.start(t)
	for _, raw := range h.pollUntil("alice", poll, 1, 5*time.Second) {
		if sessionOf(h, raw) != tok.FamilyID {
			t.Fatal("wrong SET")
		}
	}
}
