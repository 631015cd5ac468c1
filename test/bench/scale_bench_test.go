package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/auth-platform/tokenservice/eventlog"
	"github.com/auth-platform/tokenservice/eventlog/eventlogtest"
	"github.com/auth-platform/tokenservice/eventlog/events"
	eventsv1 "github.com/auth-platform/tokenservice/proto/token/events/v1"
)

// appendConcurrencies are the appender counts of BenchmarkAppendCeiling.
var appendConcurrencies = []int{1, 8, 32, 128}

// appendWindow is how long BenchmarkAppendCeiling appends to one
// configuration per round; appendWindowMax bounds the appends of a window
// whatever its length.
var appendWindow = flag.Duration("append-window", time.Second, "length of one BenchmarkAppendCeiling window")

const appendWindowMax = 200_000

// partitions is how many streams the partitioned configuration of
// BenchmarkAppendCeiling spreads families over.
const partitions = 2

// BenchmarkAppendCeiling measures how many family events one JetStream
// stream accepts per second, appended the way tokend appends them
// (eventlog.Log.Append: compare-and-set on the family's filter
// <prefix>.family.<fid>.>, with the event's MAC, a synchronous
// acknowledgement per append), by c concurrent appenders, on three
// configurations measured in turn, in the same run:
//
//	r1    one stream, one replica, on a single embedded node (tokend's
//	      default), appenders on its in-process connection
//	r3    one stream, three replicas, on a 3-node cluster on loopback,
//	      leader on n1, appenders spread over the three nodes'
//	      connections (as three tokend replicas would be)
//	r3x2  the same cluster with families partitioned over 2 R3 streams
//	      whose leaders are on n1 and n2: an account subject mapping
//	      sends token.family.<fid>.<event> to tokenp.{{partition(2,1)}}.…
//	      and each partition stream maps its subjects back to
//	      token.family.…, so a family's subjects and CAS filter are those
//	      of the single stream (see "Scaling out" in the README)
//
// Every appender owns its families: it issues one (expecting no message),
// rotates it three times (expecting the sequence of its previous event),
// then issues the next, so no append loses a race to another writer and
// the stream gains a new family every four events, like fillStream's busy
// day. A window lasts -append-window (default 1s) or 200,000 appends,
// whichever ends first; each b.N round runs one window of every
// configuration, the order turning every round. Metrics per configuration (<cfg> = r1, r3, r3x2):
//
//	<cfg>_appends/s   acknowledged appends per second of the window
//	<cfg>_p99_ms      latency of one append (nearest rank), retries
//	                  included
//	<cfg>_conflicts_per_1k  conflicts per 1,000 appends that no other
//	                  writer caused, each answered as the issuer does (read
//	                  from the leader, append again); see appendOwned
//	<cfg>_cpu_us      CPU of the whole process (appenders and every
//	                  server) per append
//	<cfg>_cores       that CPU per second of the window: near GOMAXPROCS
//	                  the machine is the limit, well below it something
//	                  serial is (the stream leader's path, or neighbours
//	                  on a shared machine)
//	<cfg>_cpu_ceiling/s  GOMAXPROCS / <cfg>_cpu_us: the rate if the
//	                  process had its cores to itself and the CPU were the
//	                  only limit; robust to neighbours that steal cores,
//	                  meaningful where <cfg>_cores nears GOMAXPROCS when
//	                  the machine is quiet (c=128)
//	avail_cores       the CPU a busy loop on every core got per second
//	                  just before the round (median of the rounds): how
//	                  much of the machine the neighbours left; where
//	                  <cfg>_cores stays well below it, the limit is serial
//	r3_x_r1           r3_appends/s / r1_appends/s
//	r3x2_x_r3         r3x2_appends/s / r3_appends/s: what a second
//	                  partition adds on this machine
//
// ns/op is the time of one round and means nothing. Every server runs in
// this process on the same cores: on the 2-core machine the three nodes
// of a cluster share them, so the cluster figures are lower bounds of
// what three machines would do. Run it with -benchtime 1x and -count.
func BenchmarkAppendCeiling(b *testing.B) {
	ctx := context.Background()
	single := eventlogtest.SingleNode(b)
	nodes := eventlogtest.Cluster(b, 3)
	partitioned, checked := openPartitions(b, nodes, partitions)
	targets := []*appendTarget{
		{name: "r1", logs: [][]*eventlog.Log{{eventlogtest.OpenLog(b, single.Conn, eventlog.Config{})}}},
		{name: "r3", logs: openR3(b, nodes)},
		{name: "r3x2", logs: partitioned},
	}
	for _, t := range targets {
		t.counts = make([]atomic.Int64, len(t.logs[0]))
	}
	targets[2].counts[checked].Add(2)
	for _, t := range targets {
		t.window(ctx, b, 8, 200*time.Millisecond) // files created, leaders settled
	}
	for _, conc := range appendConcurrencies {
		b.Run("c="+strconv.Itoa(conc), func(b *testing.B) {
			res := make([]windowResult, len(targets))
			var avail []float64
			for i := range b.N {
				avail = append(avail, availableCores(100*time.Millisecond))
				for k := range targets {
					j := (i + k) % len(targets)
					res[j].add(targets[j].window(ctx, b, conc, *appendWindow))
				}
			}
			b.StopTimer()
			for j, t := range targets {
				r := res[j]
				slices.Sort(r.lat)
				b.ReportMetric(r.rate(), t.name+"_appends/s")
				b.ReportMetric(ms(percentile(r.lat, 0.99)), t.name+"_p99_ms")
				b.ReportMetric(1000*float64(r.retries)/float64(r.n), t.name+"_conflicts_per_1k")
				if r.cpu > 0 {
					b.ReportMetric(float64(r.cpu)/float64(r.n)/float64(time.Microsecond), t.name+"_cpu_us")
					b.ReportMetric(r.cpu.Seconds()/r.d.Seconds(), t.name+"_cores")
					b.ReportMetric(float64(runtime.GOMAXPROCS(0)*r.n)/r.cpu.Seconds(), t.name+"_cpu_ceiling/s")
				}
			}
			slices.Sort(avail)
			b.ReportMetric(avail[len(avail)/2], "avail_cores")
			b.ReportMetric(res[1].rate()/res[0].rate(), "r3_x_r1")
			b.ReportMetric(res[2].rate()/res[1].rate(), "r3x2_x_r3")
		})
	}
	// Families were sent to partitions by fnvPartition, the Go twin of
	// the server's partition(): each stream must hold what was counted
	// for it, or the README's claim that a writer knows its family's
	// stream is wrong.
	t := targets[2]
	for p, l := range t.logs[0] {
		info, err := l.JetStream().Stream(ctx, partitionStream(p))
		if err != nil {
			b.Fatal(err)
		}
		if got, want := info.CachedInfo().State.Msgs, uint64(t.counts[p].Load()); got != want {
			b.Fatalf("stream %s holds %d messages, the appenders sent %d to it", partitionStream(p), got, want)
		}
	}
}

// availableCores spins on GOMAXPROCS goroutines for d and returns the CPU
// the process got per second of it.
func availableCores(d time.Duration) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	cpu0 := processCPU()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for time.Since(start) < d {
			}
		})
	}
	wg.Wait()
	return (processCPU() - cpu0).Seconds() / time.Since(start).Seconds()
}

// appendTarget is one configuration of BenchmarkAppendCeiling:
// logs[connection][partition].
type appendTarget struct {
	name    string
	logs    [][]*eventlog.Log
	counts  []atomic.Int64 // appends per partition, for the final check
	retries atomic.Int64   // conflicts no other writer caused (appendOwned)
}

// appendOwned appends ev to the aggregate filter whose last message is
// prev, and that only this writer appends to, as the issuer does: on a
// conflict it reads the aggregate again from the leader and, if its last
// message is still prev, appends again (at most 8 times). It returns the
// sequence and how many such conflicts it met. On a cluster they happen:
// nats-server 2.15.2 acknowledges an append before it forgets the
// aggregate's expectation as in process, and refuses the next append on
// the same aggregate in between with 10164 (jetstream_cluster.go,
// applyStreamMsgOp).
func appendOwned(ctx context.Context, l *eventlog.Log, ev eventlog.Event, filter string, prev uint64) (seq uint64, conflicts int, err error) {
	for range 8 {
		seq, err = l.Append(ctx, ev, eventlog.Expect{Filter: filter, Seq: prev})
		if !errors.Is(err, eventlog.ErrConflict) {
			return seq, conflicts, err
		}
		conflicts++
		var last uint64
		rec, err := l.LastConsistent(ctx, filter)
		switch {
		case err == nil:
			last = rec.Seq
		case !errors.Is(err, eventlog.ErrNotFound):
			return 0, conflicts, err
		}
		if last != prev {
			return 0, conflicts, fmt.Errorf("append %s after %d: another writer appended %d", ev.Subject, prev, last)
		}
	}
	return 0, conflicts, fmt.Errorf("append %s after %d: %w 8 times with nobody else appending", ev.Subject, prev, eventlog.ErrConflict)
}

type windowResult struct {
	n       int
	retries int
	d       time.Duration
	cpu     time.Duration
	lat     []time.Duration
}

func (r *windowResult) add(o windowResult) {
	r.n += o.n
	r.retries += o.retries
	r.d += o.d
	r.cpu += o.cpu
	r.lat = append(r.lat, o.lat...)
}

func (r windowResult) rate() float64 { return float64(r.n) / r.d.Seconds() }

// window appends with conc appenders for d (or appendWindowMax appends).
func (t *appendTarget) window(ctx context.Context, b *testing.B, conc int, d time.Duration) windowResult {
	b.Helper()
	var left atomic.Int64
	left.Store(appendWindowMax)
	lats := make([][]time.Duration, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	retries0 := t.retries.Load()
	start := time.Now()
	deadline := start.Add(d)
	cpu0 := processCPU()
	for w := range conc {
		wg.Go(func() {
			logs := t.logs[w%len(t.logs)]
			lats[w], errs[w] = t.appender(ctx, logs, deadline, &left)
		})
	}
	wg.Wait()
	r := windowResult{d: time.Since(start), cpu: processCPU() - cpu0, retries: int(t.retries.Load() - retries0)}
	if err := errors.Join(errs...); err != nil {
		b.Fatalf("%s, %d appenders: %v", t.name, conc, err)
	}
	for _, l := range lats {
		r.n += len(l)
		r.lat = append(r.lat, l...)
	}
	return r
}

// appender issues families and rotates each three times until deadline or
// until left runs out, and returns the latency of every append.
func (t *appendTarget) appender(ctx context.Context, logs []*eventlog.Log, deadline time.Time, left *atomic.Int64) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, 1024)
	subj := logs[0].Subjects()
	for {
		fid := newFamilyID()
		p := fnvPartition(fid, len(logs))
		st := benchFamilyState(fid)
		issued, err := events.FamilyIssued(subj, st)
		if err != nil {
			return lat, err
		}
		st.Generation++
		rotated, err := events.FamilyRotated(subj, st, "key-1", "jti")
		if err != nil {
			return lat, err
		}
		var prev uint64
		for i := range 4 {
			if time.Now().After(deadline) || left.Add(-1) < 0 {
				return lat, nil
			}
			ev := issued
			if i > 0 {
				ev = rotated
			}
			t0 := time.Now()
			seq, n, err := appendOwned(ctx, logs[p], ev, subj.FamilyFilter(fid), prev)
			if err != nil {
				return lat, err
			}
			lat = append(lat, time.Since(t0))
			t.counts[p].Add(1)
			t.retries.Add(int64(n))
			prev = seq
		}
	}
}

// newFamilyID returns a random 128-bit family ID, as the issuer makes them.
func newFamilyID() string {
	var b [16]byte
	rand.Read(b[:]) // crypto/rand.Read never returns an error (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// fnvPartition is the partition nats-server's partition(n, 1) mapping
// gives family fid: FNV-1a (32 bits) of the token, modulo n.
func fnvPartition(fid string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(fid))
	return int(h.Sum32() % uint32(n))
}

func benchFamilyState(fid string) *eventsv1.FamilyState {
	now := timestamppb.Now()
	return &eventsv1.FamilyState{
		FamilyId: fid, Subject: "user-" + fid[:6] + "@example.com", ClientId: clientID,
		Audience: []string{"https://api.example.com"}, Scopes: []string{"openid", "profile"},
		Generation: 1, SecretHash: make([]byte, 32), CreatedAt: now, RotatedAt: now, RefreshExpiresAt: now, AccessExpiresAt: now,
		Status: eventsv1.FamilyStatus_FAMILY_STATUS_ACTIVE, KeyIds: []string{"key-1"},
	}
}

// openR3 opens one R3 stream (prefix r3, so that it does not meet the
// partition mapping of token.family) with its leader on n1, and returns a
// Log on it per node.
func openR3(b *testing.B, nodes []*eventlogtest.Node) [][]*eventlog.Log {
	b.Helper()
	logs := make([][]*eventlog.Log, len(nodes))
	for i, nd := range nodes {
		logs[i] = []*eventlog.Log{eventlogtest.OpenLog(b, nd.Conn, eventlog.Config{Stream: "R3", Prefix: "r3", Replicas: 3})}
	}
	placeLeader(b, nodes[0].Conn, "R3", "n1")
	return logs
}

func partitionStream(p int) string { return "TOKENS_P" + strconv.Itoa(p) }

// openPartitions sets up n R3 partition streams of the family events, the
// leader of partition p on node p mod 3, and returns a Log per node and
// partition. On every node an account mapping sends
// token.family.<fid>.<event> to tokenp.<partition(n, fid)>.family.…;
// partition p's stream listens on tokenp.<p>.> and stores the subject
// back under token.>, so the family's subjects and its CAS filter
// (token.family.<fid>.>) are those of the single stream. It also returns
// the partition that holds the messages of checkPartitionedCAS.
func openPartitions(b *testing.B, nodes []*eventlogtest.Node, n int) ([][]*eventlog.Log, int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, nd := range nodes {
		dest := fmt.Sprintf("tokenp.{{partition(%d,1)}}.family.{{wildcard(1)}}.{{wildcard(2)}}", n)
		if err := nd.Embedded.Server().GlobalAccount().AddMapping("token.family.*.*", dest); err != nil {
			b.Fatal(err)
		}
	}
	js, err := jetstream.New(nodes[0].Conn)
	if err != nil {
		b.Fatal(err)
	}
	for p := range n {
		src := "tokenp." + strconv.Itoa(p) + ".>"
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: partitionStream(p), Subjects: []string{src},
			SubjectTransform: &jetstream.SubjectTransformConfig{Source: src, Destination: "token.>"},
			Storage:          jetstream.FileStorage, Replicas: 3, Duplicates: 2 * time.Minute,
			AllowDirect: true, AllowMsgTTL: true, DenyDelete: true, MaxConsumers: -1,
		})
		if err != nil {
			b.Fatal(err)
		}
		placeLeader(b, nodes[0].Conn, partitionStream(p), fmt.Sprintf("n%d", p%len(nodes)+1))
	}
	logs := make([][]*eventlog.Log, len(nodes))
	for i, nd := range nodes {
		for p := range n {
			l, err := eventlog.Attach(ctx, nd.Conn, eventlog.Config{Stream: partitionStream(p), Auth: eventlogtest.Auth(b)})
			if err != nil {
				b.Fatal(err)
			}
			logs[i] = append(logs[i], l)
		}
	}
	return logs, checkPartitionedCAS(ctx, b, logs[1], n)
}

// checkPartitionedCAS checks the premise of the partitioned configuration
// on one family: its events land in the stream fnvPartition names, under
// their unchanged subjects; the CAS on the unchanged filter sees them (an
// append that expects the family's last sequence is accepted, one that
// expects an older one is refused). It returns the partition that holds
// the family's two messages.
func checkPartitionedCAS(ctx context.Context, b *testing.B, logs []*eventlog.Log, n int) (partition int) {
	b.Helper()
	subj := logs[0].Subjects()
	fid := newFamilyID()
	filter := subj.FamilyFilter(fid)
	p := fnvPartition(fid, n)
	st := benchFamilyState(fid)
	issued, err := events.FamilyIssued(subj, st)
	if err != nil {
		b.Fatal(err)
	}
	rotated, err := events.FamilyRotated(subj, st, "key-1", "jti")
	if err != nil {
		b.Fatal(err)
	}
	first, _, err := appendOwned(ctx, logs[p], issued, filter, 0)
	if err != nil {
		b.Fatalf("first append to partition %d: %v", p, err)
	}
	rec, err := logs[p].LastConsistent(ctx, filter)
	if err != nil {
		b.Fatalf("family not found in partition %d: %v", p, err)
	}
	if rec.Subject != issued.Subject || rec.Seq != first {
		b.Fatalf("partition %d holds %s at %d, want %s at %d", p, rec.Subject, rec.Seq, issued.Subject, first)
	}
	second, _, err := appendOwned(ctx, logs[p], rotated, filter, first)
	if err != nil {
		b.Fatalf("append expecting the family's last sequence through the mapping: %v", err)
	}
	if _, err := logs[p].Append(ctx, rotated, eventlog.Expect{Filter: filter, Seq: first}); !errors.Is(err, eventlog.ErrConflict) {
		b.Fatalf("stale append through the mapping: %v, want ErrConflict", err)
	}
	if rec, err := logs[p].LastConsistent(ctx, filter); err != nil || rec.Seq != second {
		b.Fatalf("after a stale append the family's last message is %d (%v), want %d", rec.Seq, err, second)
	}
	return p
}

// placeLeader makes server the leader of stream (a stepdown with a
// preferred placement) and waits until every replica is current.
func placeLeader(b *testing.B, nc *nats.Conn, stream, server string) {
	b.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	req := []byte(fmt.Sprintf(`{"placement":{"preferred":%q}}`, server))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, stream)
		cancel()
		if err == nil {
			ci := s.CachedInfo().Cluster
			if ci != nil && ci.Leader == server && len(ci.Replicas) == 2 && ci.Replicas[0].Current && ci.Replicas[1].Current {
				return
			}
			if ci != nil && ci.Leader != "" && ci.Leader != server {
				// Its outcome is what the next Info shows.
				if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 5*time.Second); err != nil {
					b.Logf("stream %s: leader stepdown to %s: %v (retrying)", stream, server, err)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("stream %s: leader not on %s within 30s", stream, server)
}
