package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tokenwarden/tokenwarden/internal/revocation/configmap"
)

// compactionMetrics count what merging sealed segments into shard bases sends to the API server.
type compactionMetrics struct {
	passes, failures, segments, writes, bytes *prometheus.CounterVec
}

// compactionLabels name the policy, as namespace/name.
var compactionLabels = []string{"policy"}

var compactions = compactionMetrics{
	passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_compactions_total",
		Help: "Passes merging a policy's sealed segments into its shard bases."}, compactionLabels),
	failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_compaction_failures_total",
		Help: "Passes that failed (retried on the next reconcile)."}, compactionLabels),
	segments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_compaction_segments_total",
		Help: "Sealed segments merged and deleted."}, compactionLabels),
	writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_compaction_writes_total",
		Help: "API writes of merges: base Updates, journal Updates and segment deletions."}, compactionLabels),
	bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_compaction_bytes_written_total",
		Help: "Bytes of base data sent in merges."}, compactionLabels),
}

func init() {
	metrics.Registry.MustRegister(compactions.passes, compactions.failures, compactions.segments, compactions.writes, compactions.bytes)
}

func (m compactionMetrics) record(h configmap.Policy, res configmap.CompactResult, err error) {
	policy := h.Owner.String()
	m.passes.WithLabelValues(policy).Inc()
	if err != nil {
		m.failures.WithLabelValues(policy).Inc()
	}
	m.segments.WithLabelValues(policy).Add(float64(res.Segments))
	m.writes.WithLabelValues(policy).Add(float64(res.Writes))
	m.bytes.WithLabelValues(policy).Add(float64(res.BytesWritten))
}
