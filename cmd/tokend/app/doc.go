// Package app assembles tokend: it reads the configuration, builds the
// parts (event log, projections, keyring, issuer, RPC handler), runs them
// and shuts them down in reverse order. It is the only package that reads
// the environment; end-to-end tests and benchmarks drive it in process.
//
// # Lifecycle
//
// Every long-lived component is a Run(ctx) error, run by one group
// (group.go) in this order: the caller policy and TLS certificate
// watchers, the projection runner, the families projector, the feed
// writer, the crypto service's certificate watcher, the PKCS#11
// reconciler, the keyring (which records fallback_engaged), the key
// lifecycle ticker (which also finishes a key compromise another replica
// left part-way), the server and the metrics listener. Their contexts keep Start's values but not its deadline. Close
// stops them in reverse order, each one finished before the previous one
// is asked to stop (a listener drains its calls first, bounded by Close's
// context), then closes the HSM, the tracer, NATS and the embedded server.
//
// Components recover from transient failures themselves and report them
// through their hooks (OnError, the log's OnReadError), which tokend logs.
// A component that returns while the service runs, with an error or
// without one, has stopped doing its work: tokend logs it once, with the
// component's name, and delivers it on Main.Err, and cmd/tokend then
// closes and exits with status 1, so that a supervisor restarts it.
// Serving on with a stopped projection, feed or key rotation would answer
// from stale state without anyone knowing; a restart rebuilds every part
// from the log. An error a component returns while Close stops it is
// returned by Close.
//
// Logs go to stdout and, with LOGGING_SERVICE_ADDRESS, to an OTLP/gRPC
// receiver too (logexport.go): a request only enqueues its records in a
// bounded queue, so a logging outage loses records and never holds a
// request or the shutdown.
package app
