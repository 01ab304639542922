// Package bench is tokenwarden's load tool: it starts a real control plane and the controller, runs the
// production binary's issuer replicas as separate processes on loopback, preloads live sessions, drives
// bounded scenarios (login, refresh, introspection, mixed) at several concurrencies and algorithms, and
// reports throughput, latency percentiles, errors by kind, API writes and bytes per refresh, conflicts,
// issuer CPU per operation and peak memory, each beside its bound: the same crypto behind a bare net/http
// handler in the same run; and the refresh scenario on two and three replicas (each request to one at
// random, as a Service spreads many clients) against one. Only cmd/tokenwarden-dev links it.
package bench
