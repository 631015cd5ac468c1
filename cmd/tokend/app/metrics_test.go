package app

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// specMetrics are the twelve metrics of the specification's table
// (../shared/SPEC.md, "Metrics"), with their labels.
var specMetrics = map[string][]string{
	"token_service_tokens_issued_total":         {"algorithm", "token_type"},
	"token_service_tokens_refreshed_total":      {"status"},
	"token_service_tokens_revoked_total":        {"reason"},
	"token_service_dpop_validations_total":      {"error_type", "status"},
	"token_service_grpc_latency_seconds":        {"method"},
	"token_service_kms_operations_total":        {"operation", "status"},
	"token_service_crypto_operations_total":     {"operation", "status"},
	"token_service_crypto_latency_seconds":      {"operation"},
	"token_service_crypto_fallback_total":       {"operation"},
	"token_service_crypto_circuit_breaker_open": nil,
	"token_service_cache_operations_total":      {"operation", "status"},
	"token_service_security_events_total":       {"event_type"},
}

// TestSpecificationMetricsFromStartUp scrapes /metrics of a tokend that
// has just started, with no KMS, crypto service or request yet: every
// metric of the specification is there, with its labels, at 0.
func TestSpecificationMetricsFromStartUp(t *testing.T) {
	m, _ := startForLogs(t, nil, nil)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + m.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for name, labels := range specMetrics {
		f := fams[name]
		if f == nil || len(f.GetMetric()) == 0 {
			t.Errorf("%s is not exposed at start-up", name)
			continue
		}
		for _, s := range f.GetMetric() {
			var got []string
			for _, l := range s.GetLabel() {
				got = append(got, l.GetName())
			}
			slices.Sort(got)
			if !slices.Equal(got, labels) {
				t.Errorf("%s: labels %q, the specification says %q", name, got, labels)
				break
			}
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
			if v != 0 {
				t.Errorf("%s%v = %v at start-up, want 0", name, s.GetLabel(), v)
			}
		}
	}
}
