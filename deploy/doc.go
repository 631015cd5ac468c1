// Package deploy holds deployment files; its tests check them. deploy/lint
// validates the manifests with the validators of the tools that consume
// them, and requires every NATS configuration to carry authorization
// (accounts with nkey users, no anonymous user, TLS on the client and
// route ports, authorized routes, monitoring on loopback, nothing of the
// log exported to another account: subscribers get only the feed of
// public facts that tokend writes) and the NATS pods to be guarded by a
// NetworkPolicy. The loopback tests run the cluster of loopback/run.sh
// and check the same authorization with real clients, including a
// resource server that reads the feed through the consumer named after
// its key and finds no log event there.
package deploy
