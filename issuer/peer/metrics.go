package peer

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what crosses the peer port; a nil *Metrics records nothing.
type Metrics struct {
	forwardedTotal *prometheus.CounterVec
	batches        prometheus.Histogram
	receivedTotal  prometheus.Counter
	refusedTotal   prometheus.Counter
}

// NewMetrics registers the peer metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		forwardedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwarden_peer_forwarded_total",
			Help: "Decisions sent to their journal's owner, by outcome: answered, unreachable, no_owner, no_key."}, []string{"outcome"}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tokenwarden_peer_batch_size",
			Help: "Decisions per request sent to an owner.", Buckets: prometheus.ExponentialBuckets(1, 2, 9)}),
		receivedTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_peer_received_total",
			Help: "Decisions received from other replicas, as their journal's owner."}),
		refusedTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwarden_peer_refused_total",
			Help: "Requests to the peer port refused for a missing, wrong or replayed credential."}),
	}
	reg.MustRegister(m.forwardedTotal, m.batches, m.receivedTotal, m.refusedTotal)
	return m
}

func (m *Metrics) forwarded(outcome string) {
	if m != nil {
		m.forwardedTotal.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) batch(n int) {
	if m != nil {
		m.batches.Observe(float64(n))
	}
}

func (m *Metrics) received(n int) {
	if m != nil {
		m.receivedTotal.Add(float64(n))
	}
}

func (m *Metrics) refused() {
	if m != nil {
		m.refusedTotal.Inc()
	}
}
