package configmap

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
)

// Metrics counts what the store sends to the API server.
type Metrics struct {
	Writes       prometheus.Counter
	Conflicts    prometheus.Counter
	Failures     prometheus.Counter
	BytesWritten prometheus.Counter
	Operations   prometheus.Counter
	Seals        prometheus.Counter
	BatchSize    prometheus.Histogram
	WriteLatency prometheus.Histogram
}

// NewMetrics creates the store's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Writes: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_store_writes_total",
			Help: "Shard Updates sent to the API server, conflicts included."}),
		Conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_store_conflicts_total",
			Help: "Shard Updates refused for a stale resourceVersion, each followed by a fresh read and new decisions."}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_store_commit_failures_total",
			Help: "Batches that could not be committed; their operations failed closed."}),
		BytesWritten: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_store_bytes_written_total",
			Help: "Bytes of journal and segment data sent in writes (keys and values; a write sends the whole object)."}),
		Seals: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_store_seals_total",
			Help: "Journals sealed into a new segment."}),
		Operations: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_store_operations_total",
			Help: "Operations (refresh, revoke) committed or decided without a write."}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tokenwarden_store_batch_size",
			Help: "Operations per journal commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		WriteLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tokenwarden_store_commit_seconds",
			Help: "Time to commit one batch, conflicts included.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
	}
	reg.MustRegister(m.Writes, m.Conflicts, m.Failures, m.BytesWritten, m.Operations, m.Seals, m.BatchSize, m.WriteLatency)
	return m
}

func (m *Metrics) commit(ops, writes int, written *corev1.ConfigMap, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.Operations.Add(float64(ops))
	m.BatchSize.Observe(float64(ops))
	m.WriteLatency.Observe(took.Seconds())
	m.updates(writes, written, err)
}

// updates counts the Updates of one compare-and-swap: the last one wrote written, the others conflicted.
func (m *Metrics) updates(writes int, written *corev1.ConfigMap, err error) {
	if m == nil {
		return
	}
	m.Writes.Add(float64(writes))
	m.Conflicts.Add(float64(max(writes-1, 0)))
	switch {
	case err != nil:
		m.Failures.Inc()
	case writes > 0:
		m.BytesWritten.Add(float64(writes * dataSize(written.Data)))
	}
}

// seal counts the Create of one segment.
func (m *Metrics) seal(segment *corev1.ConfigMap, err error) {
	if m == nil {
		return
	}
	m.Writes.Inc()
	if err != nil {
		m.Failures.Inc()
		return
	}
	m.Seals.Inc()
	m.BytesWritten.Add(float64(dataSize(segment.Data)))
}
