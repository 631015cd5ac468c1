package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/template"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/auth-platform/tokenservice/rpc"
	"github.com/auth-platform/tokenservice/rpc/ssf"
)

const (
	dashboardFile = "grafana/tokend-dashboard.json"
	alertsFile    = "prometheus/alerts.yml"
)

// plannedHistograms and plannedSeries are metrics a later change adds:
// the dashboard and the alerts may name them before tokend serves them,
// and the README lists them as arriving. Once rpc.NewMetrics registers
// one, the registry is the authority for its type and TestReadmeMetrics
// asks for it to be taken off this list. None is planned now.
var (
	plannedHistograms = []string{}
	plannedSeries     = []string{}
)

// knownMetrics returns every series name tokend serves today (from the
// real registry: rpc.NewMetrics with the projection lag gauge, plus the Go
// and process collectors), histograms and summaries expanded to their
// _bucket, _count and _sum series, and the planned ones. It also returns
// the token_service_ families served today.
// servedFamilies gathers what tokend's /metrics serves: rpc.NewMetrics
// (with the projection lag gauge, as tokend starts it) and the Shared
// Signals transmitter's metrics, registered on the same registry.
func servedFamilies(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	m := rpc.NewMetrics(func() float64 { return 0 })
	ssf.RegisterMetrics(m.Registry)
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func knownMetrics(t *testing.T) (known map[string]bool, served []string) {
	t.Helper()
	fams := servedFamilies(t)
	known = map[string]bool{}
	add := func(name string, typ dto.MetricType) {
		known[name] = true
		switch typ {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			known[name+"_bucket"], known[name+"_count"], known[name+"_sum"] = true, true, true
		case dto.MetricType_SUMMARY:
			known[name+"_count"], known[name+"_sum"] = true, true
		}
	}
	for _, f := range fams {
		add(f.GetName(), f.GetType())
		if strings.HasPrefix(f.GetName(), "token_service_") {
			served = append(served, f.GetName())
		}
	}
	for _, n := range plannedHistograms {
		add(n, dto.MetricType_HISTOGRAM)
	}
	for _, n := range plannedSeries {
		add(n, dto.MetricType_COUNTER)
	}
	// The brief's list of today's metrics: fail loudly if one of them
	// disappears from the registry (renamed without updating deploy/).
	for _, n := range []string{
		"token_service_tokens_issued_total", "token_service_tokens_refreshed_total",
		"token_service_tokens_revoked_total", "token_service_security_events_total",
		"token_service_dpop_validations_total", "token_service_grpc_latency_seconds_bucket",
		"token_service_eventlog_append_seconds_bucket", "token_service_eventlog_appends_total",
		"token_service_projection_lag_records", "token_service_projection_bad_records_total",
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if !known[n] {
			t.Errorf("tokend no longer serves %s: update deploy/ and this test", n)
		}
	}
	return known, served
}

// PromQL words that are not metric names.
var promqlFuncs = map[string]bool{}
var promqlKeywords = map[string]bool{}

func init() {
	for _, f := range strings.Fields(`abs absent absent_over_time avg avg_over_time bottomk ceil changes clamp
		clamp_max clamp_min count count_over_time count_values day_of_month day_of_week day_of_year days_in_month
		delta deriv exp floor group histogram_avg histogram_count histogram_fraction histogram_quantile
		histogram_stddev histogram_stdvar histogram_sum holt_winters idelta increase irate label_join label_replace
		last_over_time ln log10 log2 max max_over_time min min_over_time minute month predict_linear
		present_over_time quantile quantile_over_time rate resets round scalar sgn sort sort_desc sqrt stddev
		stddev_over_time stdvar stdvar_over_time sum sum_over_time time timestamp topk vector year label_values`) {
		promqlFuncs[f] = true
	}
	for _, k := range strings.Fields(`by without on ignoring group_left group_right and or unless bool offset inf nan`) {
		promqlKeywords[k] = true
	}
}

var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	reMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	reRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	reGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	reOffset   = regexp.MustCompile(`\boffset\s+-?[0-9a-z]+`)
	reNumber   = regexp.MustCompile(`\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b`)
	reIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
)

// metricNames returns the metric names an expression selects, and an error
// for a word that is neither a known function or keyword nor a metric
// name. It is a lexer, not a parser (the PromQL parser is a heavy
// dependency of this module; check the syntax with promtool check rules).
func metricNames(expr string) ([]string, error) {
	s := reString.ReplaceAllString(expr, `""`)
	s = reMatchers.ReplaceAllString(s, " ")
	s = reRange.ReplaceAllString(s, " ")
	s = reGrouping.ReplaceAllString(s, " ")
	s = reOffset.ReplaceAllString(s, " ")
	s = reNumber.ReplaceAllString(s, " ")
	var names []string
	for _, m := range reIdent.FindAllStringSubmatch(s, -1) {
		word := strings.TrimRight(strings.TrimSuffix(strings.TrimSpace(m[0]), "("), " \t\n")
		call := m[1] != ""
		switch {
		case call && promqlFuncs[word]:
		case call:
			return nil, fmt.Errorf("unknown function %q", word)
		case promqlKeywords[strings.ToLower(word)]:
		default:
			names = append(names, word)
		}
	}
	if strings.ContainsAny(s, "{}[]") {
		return nil, fmt.Errorf("unbalanced brackets in %q", expr)
	}
	return names, nil
}

func TestMetricNamesLexer(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`sum by (method, le) (rate(a_bucket{instance=~"$instance",x="}"}[$__rate_interval]))`, []string{"a_bucket"}},
		{`histogram_quantile(0.99, sum by (le) (rate(b_bucket[5m]))) > 0.25`, []string{"b_bucket"}},
		{"rate(c[1m]) / on (instance) group_left d * 1e3", []string{"c", "d"}},
		{`max(e) == 1 and f offset 5m`, []string{"e", "f"}},
	} {
		got, err := metricNames(c.expr)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%q) = %q, %v; want %q", c.expr, got, err, c.want)
		}
	}
	if _, err := metricNames(`nosuchfunc(a)`); err == nil {
		t.Error("an unknown function passed")
	}
}

type dashboard struct {
	Title         string                    `json:"title"`
	UID           string                    `json:"uid"`
	SchemaVersion int                       `json:"schemaVersion"`
	Panels        []panel                   `json:"panels"`
	Templating    struct{ List []variable } `json:"templating"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *datasource     `json:"datasource"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int                      `json:"id"`
	Type        string                   `json:"type"`
	Title       string                   `json:"title"`
	Description string                   `json:"description"`
	Datasource  *datasource              `json:"datasource"`
	GridPos     struct{ H, W, X, Y int } `json:"gridPos"`
	Panels      []panel                  `json:"panels"` // a collapsed row's panels
	Targets     []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

var reRangeSel = regexp.MustCompile(`\[([^\[\]]*)\]`)

// TestDashboard: the dashboard is valid JSON of the expected shape, every
// panel queries the datasource variable and filters on $instance, ranges
// are $__rate_interval (or $__range in stat panels), and every metric it
// names is one tokend serves or a planned one; every token_service_ metric
// served today has a panel.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	known, served := knownMetrics(t)
	if d.Title == "" || d.UID == "" {
		t.Error("dashboard without title or uid")
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d, want about 39", d.SchemaVersion)
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("no Prometheus datasource variable named datasource: %+v", v)
	}
	if v, ok := vars["instance"]; !ok || v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
		t.Errorf("no instance query variable on ${datasource}: %+v", v)
	} else if m := regexp.MustCompile(`^label_values\((\w+), *instance\)$`).FindStringSubmatch(v.Definition); m == nil || !known[m[1]] {
		t.Errorf("instance variable %q: want label_values(<a metric tokend serves>, instance)", v.Definition)
	}

	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	var rows []string
	row := ""
	for _, p := range all {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or not unique", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			row = p.Title
			rows = append(rows, row)
			continue
		}
		if p.Title == "" || p.Description == "" {
			t.Errorf("panel %d: title %q, description %q: both are required", p.ID, p.Title, p.Description)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: target datasource %+v", p.Title, tg.Datasource)
			}
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: %q does not filter on $instance", p.Title, tg.Expr)
			}
			for _, m := range reRangeSel.FindAllStringSubmatch(tg.Expr, -1) {
				if m[1] != "$__rate_interval" && !(m[1] == "$__range" && p.Type == "stat") {
					t.Errorf("panel %q: range [%s] in %q: use [$__rate_interval]", p.Title, m[1], tg.Expr)
				}
			}
			names, err := metricNames(tg.Expr)
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			if len(names) == 0 {
				t.Errorf("panel %q: %q names no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !known[n] {
					t.Errorf("panel %q: unknown metric %s", p.Title, n)
				}
				planned := slices.ContainsFunc(append(plannedHistograms, plannedSeries...), func(b string) bool { return strings.HasPrefix(n, b) })
				if planned && !slices.Contains(served, strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")) &&
					!strings.Contains(p.Description, "Stays at 0") {
					t.Errorf("panel %q shows %s, which tokend does not serve yet: say so in its description (\"Stays at 0 ... until\")", p.Title, n)
				}
				if planned && row != "Crypto" {
					t.Errorf("panel %q: crypto metric %s outside the Crypto row", p.Title, n)
				}
			}
		}
	}
	for _, want := range []string{"Tokens", "Security", "DPoP", "Latency", "Event log & projections", "Crypto"} {
		if !slices.Contains(rows, want) {
			t.Errorf("no row %q (rows: %q)", want, rows)
		}
	}
	for _, n := range append(served, append(plannedHistograms, plannedSeries...)...) {
		if !used[n] && !used[n+"_bucket"] && !used[n+"_count"] {
			t.Errorf("metric %s has no panel: add one to %s", n, dashboardFile)
		}
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// TestAlerts: alerts.yml parses (strictly: no unknown fields), every rule
// is an alert with expr, severity, summary, description and runbook; the
// expected alerts are there with the expected `for`; their expressions
// name known metrics; annotation templates parse.
func TestAlerts(t *testing.T) {
	f, err := os.Open(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rf ruleFile
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	known, _ := knownMetrics(t)
	wantFor := map[string]string{
		"RefreshTokenReuseDetected": "",
		"RefreshTokenReuseBurst":    "",
		"CryptoCircuitBreakerOpen":  "1m",
		"ProjectionLagHigh":         "2m",
		"ProjectionBadRecords":      "",
		"CacheValueRefused":         "",
		"EventLogForgedRecords":     "",
		"EventLogAppendErrors":      "5m",
		"HighRPCLatency":            "10m",
	}
	seen := map[string]bool{}
	groups := map[string]bool{}
	if len(rf.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	for _, g := range rf.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("group name %q missing or repeated", g.Name)
		}
		groups[g.Name] = true
		for _, r := range g.Rules {
			if r.Alert == "" || r.Record != "" {
				t.Errorf("group %s: rule %+v is not an alerting rule", g.Name, r)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", r.Alert)
			}
			names, err := metricNames(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
			}
			for _, n := range names {
				if !known[n] {
					t.Errorf("%s: unknown metric %s", r.Alert, n)
				}
			}
			for _, m := range reRangeSel.FindAllStringSubmatch(r.Expr, -1) {
				if _, err := model.ParseDuration(m[1]); err != nil {
					t.Errorf("%s: range [%s]: %v", r.Alert, m[1], err)
				}
			}
			if want, ok := wantFor[r.Alert]; ok && r.For != want {
				t.Errorf("%s: for %q, want %q", r.Alert, r.For, want)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for: %v", r.Alert, err)
				}
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			for k, v := range r.Annotations {
				if err := checkTemplate(v); err != nil {
					t.Errorf("%s: annotation %s: %v", r.Alert, k, err)
				}
			}
		}
	}
	var missing []string
	for a := range wantFor {
		if !seen[a] {
			missing = append(missing, a)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("alerts missing: %q", missing)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			want := map[string]string{"RefreshTokenReuseDetected": "warning", "RefreshTokenReuseBurst": "critical"}[r.Alert]
			if want != "" && r.Labels["severity"] != want {
				t.Errorf("%s: severity %q, want %q", r.Alert, r.Labels["severity"], want)
			}
		}
	}
}

// checkTemplate parses an annotation the way Prometheus does (text/template
// with its variable prelude); the functions are stubs with Prometheus's
// names, so a misspelt one fails.
func checkTemplate(text string) error {
	stub := func(v any) string { return fmt.Sprint(v) }
	funcs := template.FuncMap{}
	for _, n := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
		"title", "toUpper", "toLower", "stripPort", "stripDomain", "safeHtml", "pathPrefix", "externalURL", "label",
		"value", "first", "sortByLabel", "strvalue", "args", "reReplaceAll", "match", "graphLink", "tableLink",
		"query", "parseDuration", "tmpl", "toTime", "toDuration", "urlQueryEscape"} {
		funcs[n] = stub
	}
	prelude := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	tmpl, err := template.New("annotation").Funcs(funcs).Option("missingkey=zero").Parse(prelude + text)
	if err != nil {
		return err
	}
	data := struct {
		Labels, ExternalLabels map[string]string
		ExternalURL            string
		Value                  float64
	}{Labels: map[string]string{"instance": "i", "method": "m"}, Value: 1}
	var sb strings.Builder
	return tmpl.Execute(&sb, data)
}

// readmeMetricRow is one row of the metrics table of rpc/README.md.
type readmeMetricRow struct {
	typ    string
	labels []string
}

// readmeMetrics parses the table under "<!-- metrics table" in rpc/README.md.
func readmeMetrics(t *testing.T) map[string]readmeMetricRow {
	t.Helper()
	b, err := os.ReadFile("../rpc/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "<!-- metrics table")
	if !ok {
		t.Fatal("rpc/README.md has no <!-- metrics table --> marker")
	}
	rows := map[string]readmeMetricRow{}
	lines := strings.Split(after, "\n")[1:]
	for i, line := range lines {
		if strings.TrimSpace(line) == "" {
			break
		}
		if i < 2 { // header and separator
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 4 {
			t.Fatalf("README metrics table: %d cells in %q", len(cells), line)
		}
		name := strings.Trim(strings.TrimSpace(cells[0]), "`")
		var labels []string
		if l := strings.TrimSpace(cells[2]); l != "-" {
			for _, part := range strings.Split(l, ",") {
				labels = append(labels, strings.Trim(strings.TrimSpace(part), "`"))
			}
		}
		if _, dup := rows[name]; dup {
			t.Errorf("README lists %s twice", name)
		}
		rows[name] = readmeMetricRow{typ: strings.TrimSpace(cells[1]), labels: labels}
	}
	if len(rows) == 0 {
		t.Fatal("README metrics table: no rows")
	}
	return rows
}

// TestReadmeMetrics: the metrics table of rpc/README.md lists exactly the
// token_service_ metrics that rpc.NewMetrics registers (with the
// projection lag gauge, as tokend starts it), each with its type and
// labels, and none that is only planned.
func TestReadmeMetrics(t *testing.T) {
	rows := readmeMetrics(t)
	fams := servedFamilies(t)
	served := map[string]bool{}
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "token_service_") {
			continue
		}
		served[name] = true
		row, ok := rows[name]
		if !ok {
			t.Errorf("tokend serves %s, which the metrics table of rpc/README.md does not list", name)
			continue
		}
		if want := strings.ToLower(f.GetType().String()); row.typ != want {
			t.Errorf("README: %s is a %s, the registry says %s", name, row.typ, want)
		}
		if len(f.GetMetric()) == 0 {
			t.Errorf("%s has no series at start-up", name)
			continue
		}
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		if !slices.Equal(sorted(labels), sorted(row.labels)) {
			t.Errorf("README: %s has labels %q, the registry %q", name, row.labels, labels)
		}
	}
	for name := range rows {
		if !served[name] {
			t.Errorf("the README lists %s, which tokend does not serve", name)
		}
	}
	for _, n := range append(plannedHistograms, plannedSeries...) {
		if served[n] {
			t.Errorf("%s is served now: take it off plannedSeries/plannedHistograms and add it to the README's metrics table", n)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}
