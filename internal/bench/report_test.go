package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

func TestMetricsReadsBareAndLabelledCounters(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP tokenwarden_store_writes_total Writes.
# TYPE tokenwarden_store_writes_total counter
tokenwarden_store_writes_total 12
tokenwarden_store_writes_total_other 99
# TYPE tokenwarden_peer_forwarded_total counter
tokenwarden_peer_forwarded_total{outcome="answered"} 340
tokenwarden_peer_forwarded_total{outcome="no_owner"} 2
`)
	}))
	defer srv.Close()
	got, err := metrics(srv.URL, "tokenwarden_store_writes_total", forwardedAnswered, "tokenwarden_absent_total")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"tokenwarden_store_writes_total": 12, forwardedAnswered: 340}
	if len(got) != len(want) {
		t.Errorf("got %v; want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v; want %v", k, got[k], v)
		}
	}
}

func TestScaleOutReport(t *testing.T) {
	mk := func(kind string, replicas, ops int, p99 time.Duration, cpu, api, writes, conflicts, forwarded float64, errs map[string]int) row {
		return row{scenario: scenario{kind, v1alpha1.EdDSA, 64, 10000, replicas},
			res:        &result{ops: ops, elapsed: time.Second, latencies: []time.Duration{p99}, errors: errs},
			cpuPer1000: cpu, apiCPUPer1000: api, writesPerOp: writes, conflicts: conflicts, forwarded: forwarded}
	}
	tests := map[string]struct {
		rows []row
		want []string // lines the report holds
		not  []string // and does not
	}{
		"no table without a row on several replicas": {
			rows: []row{mk("refresh", 1, 1000, 10*time.Millisecond, 1, 1, 0.01, 0, 0, nil)},
			not:  []string{"Scale-out"},
		},
		"no table without the same scenario on one replica": {
			rows: []row{mk("login", 1, 1000, 10*time.Millisecond, 1, 1, 0.01, 0, 0, nil), mk("refresh", 2, 1000, 10*time.Millisecond, 1, 1, 0.01, 0, 0.5, nil)},
			not:  []string{"Scale-out"},
		},
		"a row within every target": {
			rows: []row{mk("refresh", 1, 1000, 10*time.Millisecond, 1, 1, 0.01, 0, 0, nil), mk("refresh", 2, 950, 14*time.Millisecond, 1.2, 1.2, 0.04, 5, 0.5, nil)},
			want: []string{"| refresh EdDSA c64 10k | 2 | 0.95x (950 vs 1000/s) | 1.40x (14.0ms vs 10.0ms) | 1.20x (1.20 vs 1.00) | 1.20x (1.20 vs 1.00) | 0.0053 | 0.0400 | 0.50 of 0.50 | - | none |"},
		},
		"a row missing every target": {
			rows: []row{mk("refresh", 1, 1000, 10*time.Millisecond, 1, 1, 0.01, 0, 0, nil), mk("refresh", 3, 500, 20*time.Millisecond, 2, 2, 0.5, 100, 0.6, map[string]int{"503": 10})},
			want: []string{"| 503:10 | throughput, p99, issuer CPU, API CPU, conflicts, writes, errors |"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			scaleOutReport(&b, tc.rows)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("got\n%s\nwant a line holding %q", b.String(), w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("got\n%s\nwant nothing holding %q", b.String(), n)
				}
			}
		})
	}
}
