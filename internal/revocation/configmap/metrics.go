package configmap

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/tokenwarden/tokenwarden/internal/revocation"
)

// Metrics counts what the store sends to the API server.
type Metrics struct {
	Writes       prometheus.Counter
	Conflicts    prometheus.Counter
	Failures     prometheus.Counter
	BytesWritten prometheus.Counter
	Operations   prometheus.Counter
	Folds        prometheus.Counter
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
			Help: "Bytes of shard data sent in Updates (keys and values; the whole shard is sent each time)."}),
		Folds: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_store_folds_total",
			Help: "Journals folded into their shard's base."}),
		Operations: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_store_operations_total",
			Help: "Operations (refresh, revoke) committed or decided without a write."}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tokenwarden_store_batch_size",
			Help: "Operations per shard commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		WriteLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tokenwarden_store_commit_seconds",
			Help: "Time to commit one batch, conflicts included.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
	}
	reg.MustRegister(m.Writes, m.Conflicts, m.Failures, m.BytesWritten, m.Operations, m.Folds, m.BatchSize, m.WriteLatency)
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
	m.Writes.Add(float64(writes))
	m.Conflicts.Add(float64(max(writes-1, 0)))
	switch {
	case err != nil:
		m.Failures.Inc()
	case writes > 0:
		m.BytesWritten.Add(float64(writes * dataSize(written.Data)))
	}
}

// fold counts one of a fold's two writes (the base's, then the journal's).
func (m *Metrics) fold(writes int, written *corev1.ConfigMap, err error) {
	if m == nil {
		return
	}
	m.updates(writes, written, err)
	if err == nil && writes > 0 && !strings.HasSuffix(written.Name, revocation.JournalSuffix) {
		m.Folds.Inc()
	}
}
