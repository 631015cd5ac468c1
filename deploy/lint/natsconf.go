package main

import (
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// natsExpect is what a NATS server configuration must say to fit its
// container: routes to every server of the cluster on the cluster port,
// the client and monitoring ports the container declares, JetStream on.
type natsExpect struct {
	routeHosts                           []string
	clusterPort, clientPort, monitorPort int32
	storeMounts                          []string // persistent mount paths; the store must be under one
}

// checkNATSConfig parses conf as nats-server -t would (unknown fields are
// errors), with env as the server's environment (a config refers to
// $SERVER_NAME), and compares it with want.
func checkNATSConfig(r *report, where, conf string, env map[string]string, want natsExpect) {
	for k, v := range env {
		prev, had := os.LookupEnv(k)
		os.Setenv(k, v)
		defer func() {
			if had {
				os.Setenv(k, prev)
			} else {
				os.Unsetenv(k)
			}
		}()
	}
	opts := &server.Options{CheckConfig: true}
	if err := opts.ProcessConfigString(conf); err != nil {
		r.addf(where, "nats-server refuses the configuration: %s", strings.TrimSpace(err.Error()))
		return
	}
	if opts.ServerName == "" {
		r.addf(where, "no server_name: a JetStream cluster needs stable server names")
	}
	if !opts.JetStream {
		r.addf(where, "JetStream is off")
	}
	if opts.Cluster.Name == "" {
		r.addf(where, "no cluster name")
	}
	for _, p := range []struct {
		name      string
		got, want int
	}{
		{"client (listen)", opts.Port, int(want.clientPort)},
		{"cluster listen", opts.Cluster.Port, int(want.clusterPort)},
		{"monitoring (http)", opts.HTTPPort, int(want.monitorPort)},
	} {
		if p.got != p.want {
			r.addf(where, "%s port %d, but the container's is %d", p.name, p.got, p.want)
		}
	}
	var hosts []string
	for _, u := range opts.Routes {
		if u.Port() != strconv.Itoa(int(want.clusterPort)) {
			r.addf(where, "route %s: not the cluster port %d", u, want.clusterPort)
		}
		hosts = append(hosts, u.Hostname())
	}
	slices.Sort(hosts)
	if w := slices.Sorted(slices.Values(want.routeHosts)); !slices.Equal(hosts, w) {
		r.addf(where, "routes name %q, want every server of the cluster %q", hosts, w)
	}
	underMount := slices.ContainsFunc(want.storeMounts, func(m string) bool {
		rel := path.Clean(opts.StoreDir)
		return rel == path.Clean(m) || len(rel) > len(m) && rel[:len(path.Clean(m))+1] == path.Clean(m)+"/"
	})
	if !underMount {
		r.addf(where, "JetStream store_dir %q is not on a persistent volume (%q)", opts.StoreDir, want.storeMounts)
	}
}
