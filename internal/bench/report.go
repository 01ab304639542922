package bench

import (
	"fmt"
	"io"
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
}
