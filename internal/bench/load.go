package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// result is what one scenario measured.
type result struct {
	ops       int
	elapsed   time.Duration
	latencies []time.Duration
	errors    map[string]int
}

func (r *result) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func (r *result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.latencies)-1) * p)
	return r.latencies[i]
}

func (r *result) errorText() string {
	if len(r.errors) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(r.errors))
	for k := range r.errors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, r.errors[k]))
	}
	return strings.Join(parts, " ")
}

// op is one request of a scenario, made by worker w; it returns "" on success or an error kind.
type op func(ctx context.Context, w int) string

// drive runs op from concurrency workers until duration has passed (or maxOps were done), and returns
// every latency, sorted.
func drive(ctx context.Context, concurrency int, duration time.Duration, maxOps int, f op) *result {
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var mu sync.Mutex
	res := &result{errors: map[string]int{}}
	var wg sync.WaitGroup
	start := time.Now()
	var issued int
	for w := range concurrency {
		wg.Go(func() {
			var lat []time.Duration
			errs := map[string]int{}
			for ctx.Err() == nil {
				mu.Lock()
				if maxOps > 0 && issued >= maxOps {
					mu.Unlock()
					break
				}
				issued++
				mu.Unlock()
				t := time.Now()
				kind := f(ctx, w)
				if ctx.Err() != nil && kind != "" {
					break // cut off by the end of the scenario, not a failure
				}
				lat = append(lat, time.Since(t))
				if kind != "" {
					errs[kind]++
				}
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			for k, v := range errs {
				res.errors[k] += v
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(res.latencies)
	slices.Sort(res.latencies)
	return res
}

// httpClient posts forms over keep-alive connections.
type httpClient struct {
	http *http.Client
}

func newClient(concurrency int) *httpClient {
	tr := &http.Transport{MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2, IdleConnTimeout: time.Minute}
	return &httpClient{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// post sends a form and decodes a JSON answer; kind is "" for a 200, else the error code or status.
func (c *httpClient) post(ctx context.Context, u string, form url.Values, header http.Header) (map[string]any, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, "request"
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "transport"
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "transport"
	}
	out := map[string]any{}
	_ = json.Unmarshal(body, &out)
	if resp.StatusCode != http.StatusOK {
		if code, ok := out["error"].(string); ok {
			return out, fmt.Sprintf("%d %s", resp.StatusCode, code)
		}
		return out, fmt.Sprintf("%d", resp.StatusCode)
	}
	return out, ""
}
