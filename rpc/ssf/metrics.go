package ssf

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a delivery, as token_service_ssf_deliveries_total names them.
const (
	// OutcomeDelivered: a pushed SET the receiver accepted (2xx), or a
	// polled one it acknowledged.
	OutcomeDelivered = "delivered"
	// OutcomeFailed: a push that failed (network, timeout, a status other
	// than 2xx or 400); it is retried with backoff.
	OutcomeFailed = "failed"
	// OutcomeRejected: a SET the receiver refused as invalid (push: 400,
	// RFC 8935 §2.3; poll: setErrs, RFC 8936 §2.4). It is not sent again.
	OutcomeRejected = "rejected"
)

// DroppedStreamBacklog is the reason of token_service_ssf_dropped_total
// for a SET not queued because its stream was over MaxPendingPerStream.
const DroppedStreamBacklog = "stream_backlog"

// Metrics are the Shared Signals metrics, on the service's registry. Every
// label takes values from a fixed set and exists from start-up at 0.
type Metrics struct {
	sets       *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	lag        *prometheus.HistogramVec
	drops      *prometheus.CounterVec
}

// RegisterMetrics registers the transmitter's metrics with reg, with no
// service behind the gauges (they read 0): what a running tokend serves,
// for the checks of its dashboard and documentation.
func RegisterMetrics(reg prometheus.Registerer) { newMetrics(reg, nil) }

// newMetrics registers the metrics with reg; the queue gauges ask s at
// each scrape.
func newMetrics(reg prometheus.Registerer, s *Service) *Metrics {
	m := &Metrics{
		sets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_ssf_sets_total", Help: "Security Event Tokens made for Shared Signals streams, by event (session_revoked, sessions_revoked, key_compromised, verification).",
		}, []string{"event"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_ssf_deliveries_total", Help: "Shared Signals deliveries by method (push, poll) and outcome (delivered, failed, rejected).",
		}, []string{"method", "outcome"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "token_service_ssf_delivery_lag_seconds", Help: "Time from a SET being made to its delivery (push accepted by the receiver, poll acknowledged), by method.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400},
		}, []string{"method"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "token_service_ssf_dropped_total", Help: "SETs not queued, by reason (stream_backlog: the stream had SSF_STREAM_MAX_PENDING SETs its receiver had not taken).",
		}, []string{"reason"}),
	}
	m.drops.WithLabelValues(DroppedStreamBacklog)
	for _, e := range []string{"session_revoked", "sessions_revoked", "key_compromised", "verification"} {
		m.sets.WithLabelValues(e)
	}
	for _, method := range []string{"push", "poll"} {
		m.lag.WithLabelValues(method)
		for _, o := range []string{OutcomeDelivered, OutcomeFailed, OutcomeRejected} {
			m.deliveries.WithLabelValues(method, o)
		}
	}
	reg.MustRegister(m.sets, m.deliveries, m.lag, m.drops)
	queued := func() (float64, float64) {
		if s == nil {
			return 0, 0
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, first, err := s.queue.pending(ctx)
		if err != nil || n == 0 || first.IsZero() {
			return float64(n), 0
		}
		return float64(n), s.cfg.Now().Sub(first).Seconds()
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "token_service_ssf_pending_sets", Help: "SETs made and not yet delivered, over every stream (held by paused streams and for receivers that are down, within SSF_RETENTION).",
	}, func() float64 { n, _ := queued(); return n }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "token_service_ssf_oldest_pending_seconds", Help: "Age of the oldest SET not yet delivered (0 when none): the lag of the slowest receiver.",
	}, func() float64 { _, age := queued(); return age }))
	return m
}

func eventLabel(typ string) string {
	switch typ {
	case EventSessionRevoked:
		return "session_revoked"
	case EventSessionsRevoked:
		return "sessions_revoked"
	case EventKeyCompromised:
		return "key_compromised"
	}
	return "verification"
}

func (m *Metrics) made(typ string) {
	if m != nil {
		m.sets.WithLabelValues(eventLabel(typ)).Inc()
	}
}

func (m *Metrics) delivery(method, outcome string, made time.Time, now time.Time) {
	if m == nil {
		return
	}
	m.deliveries.WithLabelValues(method, outcome).Inc()
	if outcome == OutcomeDelivered && !made.IsZero() {
		m.lag.WithLabelValues(method).Observe(now.Sub(made).Seconds())
	}
}

func (m *Metrics) dropped(reason string) {
	if m != nil {
		m.drops.WithLabelValues(reason).Inc()
	}
}
