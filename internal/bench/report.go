package bench

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"time"

	"github.com/tokenwarden/tokenwarden/api/v1alpha1"
)

// report prints the results as a Markdown table, the form docs/benchmarks.md keeps.
func report(w io.Writer, cfg Config, crypto cryptoBounds, bounds map[v1alpha1.SigningAlgorithm]*result, rows []row) {
	fmt.Fprintf(w, "\n## Results (%s, %d CPUs, %s per scenario)\n\n", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), cfg.Duration)
	fmt.Fprintln(w, "Bounds measured in the same run:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| bound | figure |")
	fmt.Fprintln(w, "| --- | --- |")
	for _, alg := range []v1alpha1.SigningAlgorithm{v1alpha1.EdDSA, v1alpha1.ES256, v1alpha1.HS256} {
		if d, ok := crypto.refresh[alg]; ok {
			fmt.Fprintf(w, "| one refresh's crypto alone (1 verify + 2 signs), %s, one goroutine | %s (%.0f/s per core) |\n", alg, d, 1/d.Seconds())
		}
		if b, ok := bounds[alg]; ok {
			fmt.Fprintf(w, "| bare net/http handler doing that crypto, %s, c64, same load generator | %.0f/s, p50 %s, p99 %s |\n", alg, b.rate(), ms(b.percentile(.5)), ms(b.percentile(.99)))
		}
	}
	fmt.Fprintf(w, "| bcrypt cost 10 alone, one goroutine | %s (%.1f/s per core) |\n\n", crypto.bcrypt, 1/crypto.bcrypt.Seconds())

	fmt.Fprintln(w, "| scenario | alg | conc | live sessions | replicas | ops/s | p50 | p90 | p99 | errors | API writes/op | bytes written/op | conflicts | issuer CPU s/1000 ops | API server + etcd CPU s/1000 ops | issuer peak RSS | vs bound |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		ratio := "-"
		if r.bound > 0 {
			ratio = fmt.Sprintf("%.2f of %.0f/s (%s)", r.res.rate()/r.bound, r.bound, r.boundKind)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %d | %.0f | %s | %s | %s | %s | %.4f | %.0f | %.0f | %.2f | %.2f | %.0f MiB | %s |\n",
			r.kind, r.alg, r.concurrency, count(r.sessions), r.replicas, r.res.rate(), ms(r.res.percentile(.5)), ms(r.res.percentile(.9)),
			ms(r.res.percentile(.99)), strings.ReplaceAll(r.res.errorText(), "|", "/"), r.writesPerOp, r.bytesPerOp, r.conflicts, r.cpuPer1000, r.apiCPUPer1000,
			float64(r.peakRSS)/(1<<20), ratio)
	}
	scaleOutReport(w, rows)
}

// Scale-out targets: a row on n replicas against the same scenario on one replica of the same run.
const (
	minThroughput   = 0.9  // x one replica's
	maxP99          = 1.5  // x
	maxIssuerCPU    = 1.25 // x, summed over the replicas
	maxAPICPU       = 1.25 // x
	maxConflictsPer = 0.01 // per refresh
	maxWritesPer    = 0.05 // per refresh
)

// scaleOutReport prints, for each row on several replicas, its figures relative to the same scenario on one
// replica; nothing when the run has no such pair.
func scaleOutReport(w io.Writer, rows []row) {
	type key struct {
		kind        string
		alg         v1alpha1.SigningAlgorithm
		concurrency int
		sessions    int
	}
	single := map[key]row{}
	for _, r := range rows {
		if r.replicas == 1 {
			single[key{r.kind, r.alg, r.concurrency, r.sessions}] = r
		}
	}
	header := false
	for _, r := range rows {
		base, ok := single[key{r.kind, r.alg, r.concurrency, r.sessions}]
		if r.replicas == 1 || !ok {
			continue
		}
		if !header {
			header = true
			fmt.Fprint(w, "\n## Scale-out\n\n")
			fmt.Fprintln(w, "Each row against the same scenario on one replica in this run; requests go to a replica at random, and")
			fmt.Fprintln(w, "the replicas that do not own the policy's journal forward its decisions to the one that does.")
			fmt.Fprintf(w, "Targets: throughput >= %.2gx, p99 <= %.2gx, issuer CPU (all replicas) <= %.3gx, API server + etcd CPU <= %.3gx,\n", minThroughput, maxP99, maxIssuerCPU, maxAPICPU)
			fmt.Fprintf(w, "conflicts <= %.2g and API writes <= %.2g per refresh, no errors; forwarded share (n-1)/n with one owner.\n\n", maxConflictsPer, maxWritesPer)
			fmt.Fprintln(w, "| scenario | replicas | throughput | p99 | issuer CPU s/1000 ops | API server + etcd CPU s/1000 ops | conflicts/refresh | API writes/refresh | forwarded share | errors | misses |")
			fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
		}
		throughput := ratio(r.res.rate(), base.res.rate())
		p99 := ratio(float64(r.res.percentile(.99)), float64(base.res.percentile(.99)))
		cpu := ratio(r.cpuPer1000, base.cpuPer1000)
		api := ratio(r.apiCPUPer1000, base.apiCPUPer1000)
		conflicts := r.conflicts / float64(max(r.res.ops-errorsTotal(r.res), 1))
		var misses []string
		for _, m := range []struct {
			name string
			miss bool
		}{
			{"throughput", throughput < minThroughput},
			{"p99", p99 > maxP99},
			{"issuer CPU", cpu > maxIssuerCPU},
			{"API CPU", api > maxAPICPU},
			{"conflicts", conflicts > maxConflictsPer},
			{"writes", r.writesPerOp > maxWritesPer},
			{"errors", errorsTotal(r.res) > 0},
		} {
			if m.miss {
				misses = append(misses, m.name)
			}
		}
		missed := "none"
		if len(misses) > 0 {
			missed = strings.Join(misses, ", ")
		}
		fmt.Fprintf(w, "| %s %s c%d %s | %d | %.2fx (%.0f vs %.0f/s) | %.2fx (%s vs %s) | %.2fx (%.2f vs %.2f) | %.2fx (%.2f vs %.2f) | %.4f | %.4f | %.2f of %.2f | %s | %s |\n",
			r.kind, r.alg, r.concurrency, count(r.sessions), r.replicas,
			throughput, r.res.rate(), base.res.rate(),
			p99, ms(r.res.percentile(.99)), ms(base.res.percentile(.99)),
			cpu, r.cpuPer1000, base.cpuPer1000,
			api, r.apiCPUPer1000, base.apiCPUPer1000,
			conflicts, r.writesPerOp, r.forwarded, float64(r.replicas-1)/float64(r.replicas),
			strings.ReplaceAll(r.res.errorText(), "|", "/"), missed)
	}
}

// ratio is a/b, or NaN when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}
