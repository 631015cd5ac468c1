package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/projections"
	tokenv1 "github.com/auth-platform/tokenservice/proto/token/v1"
	"github.com/auth-platform/tokenservice/proto/token/v1/tokenv1connect"
)

// replayVerify rebuilds every projection from the log in memory, up to
// the position of tokend's live projections, and compares the digests.
func (o *options) replayVerify(ctx context.Context) error {
	live, err := o.liveSnapshot(ctx)
	if err != nil {
		return err
	}
	set := projections.NewSet(0)
	p := newProgress(o.stderr, "replayed")
	bad := 0
	err = o.log.Replay(ctx, 1, projections.Filters(o.log.Subjects()), func(r eventlog.Record) {
		if r.Seq > live.Seq {
			return
		}
		if set.Apply(r) != nil {
			bad++
		}
		p.add(r.Pending)
	})
	p.done()
	if err != nil {
		return err
	}
	seq, digest := set.Snapshot()
	ok := digest == live.Digest && seq == live.Seq
	if o.json {
		if err := json.NewEncoder(o.stdout).Encode(map[string]any{"ok": ok, "seq": live.Seq, "live_digest": live.Digest,
			"replayed_seq": seq, "replayed_digest": digest, "bad_records": bad}); err != nil {
			return err
		}
	} else {
		verdict := "OK: the live projections equal the replay of the log"
		if !ok {
			verdict = "MISMATCH: the live projections differ from the replay of the log"
		}
		fmt.Fprintf(o.stdout, "%s\n  position %d (replayed to %d, %d undecodable records skipped)\n  live     %s\n  replayed %s\n",
			verdict, live.Seq, seq, bad, live.Digest, digest)
	}
	if !ok {
		return errFailed
	}
	return nil
}

type snapshot struct {
	Seq    uint64 `json:"seq"`
	Digest string `json:"digest"`
}

func (o *options) liveSnapshot(ctx context.Context) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := strings.TrimRight(o.service, "/") + "/projections/digest"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return snapshot{}, err
	}
	hc, err := o.creds.httpClient()
	if err != nil {
		return snapshot{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return snapshot{}, fmt.Errorf("ask tokend for its projections: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return snapshot{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return snapshot{}, fmt.Errorf("tokend answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var s snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		return snapshot{}, fmt.Errorf("tokend's projection digest: %w", err)
	}
	return s, nil
}

func (o *options) keysList(ctx context.Context) error {
	set := projections.NewSet(0)
	if err := o.log.Replay(ctx, 1, []string{o.log.Subjects().Keys()}, func(r eventlog.Record) { _ = set.Apply(r) }); err != nil {
		return err
	}
	keys, _ := set.Keys()
	if o.json {
		enc := json.NewEncoder(o.stdout)
		for _, k := range keys {
			if err := enc.Encode(map[string]any{"kid": k.ID, "algorithm": k.Algorithm, "backend": k.Backend,
				"status": projections.StatusName(k.Status), "generated_at": k.GeneratedAt,
				"activated_at": k.ActivatedAt, "retired_at": k.RetiredAt, "retain_until": k.RetainUntil}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tALG\tBACKEND\tSTATUS\tGENERATED\tACTIVATED\tRETIRED")
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Algorithm, k.Backend,
			projections.StatusName(k.Status), ts(k.GeneratedAt), ts(k.ActivatedAt), ts(k.RetiredAt))
	}
	return tw.Flush()
}

// keysRotate asks tokend to rotate: key material never passes through
// tokenctl (only the service can seal it).
func (o *options) keysRotate(ctx context.Context, immediate, revoke bool) error {
	hc, err := o.creds.httpClient()
	if err != nil {
		return err
	}
	client := tokenv1connect.NewTokenServiceClient(hc, strings.TrimRight(o.service, "/"))
	resp, err := client.RotateSigningKey(ctx, connect.NewRequest(&tokenv1.RotateSigningKeyRequest{Immediate: immediate, RevokeFamilies: revoke}))
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	r := resp.Msg
	if o.json {
		return json.NewEncoder(o.stdout).Encode(map[string]any{"key_id": r.GetKeyId(), "previous_key_id": r.GetPreviousKeyId(),
			"activates_at": r.GetActivatesAt().AsTime(), "revoked_families": r.GetRevokedFamilies()})
	}
	fmt.Fprintf(o.stdout, "new key %s (replaces %s) signs from %s", r.GetKeyId(), r.GetPreviousKeyId(), r.GetActivatesAt().AsTime().UTC().Format(time.RFC3339))
	if immediate {
		fmt.Fprintf(o.stdout, "; %s left the JWKS; %d families revoked", r.GetPreviousKeyId(), r.GetRevokedFamilies())
	}
	fmt.Fprintln(o.stdout)
	return nil
}
