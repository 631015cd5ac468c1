// Command lint checks tokend's container manifests with the validators of
// the tools that consume them, since no container runtime or cluster is at
// hand to try them:
//
//   - k8s/*.yaml: decoded strictly into the typed objects of k8s.io/api
//     (an unknown or misspelt field, a duplicate key or a wrong type is an
//     error), defaulted and validated by the API server's own validation
//     (k8s.io/kubernetes/pkg/apis/.../validation, as kubectl apply would
//     meet it), checked against the Pod Security Standards "restricted"
//     profile (k8s.io/pod-security-admission), plus the references no
//     validator follows: selectors match their pods, probe and Service
//     target ports exist, volumes, ConfigMaps and the headless Service
//     exist, the NATS configuration parses (nats-server's own parser) and
//     its routes and tokend's NATS_URL name every StatefulSet pod.
//   - compose.yaml: loaded by compose-go (the Compose JSON schema and its
//     consistency checks), with the same NATS checks.
//   - Dockerfile: parsed and linted by BuildKit (the rules of
//     docker build --check), base images taken as known without pulling.
//   - nats-feed.json: the feed admin's stream mirrors or sources the feed
//     only, never the log's stream or subjects.
//
// In every NATS configuration no account may export the log: its
// subjects, the families bucket's, or the JetStream API on its stream
// (checkLogExports), since its events carry secret hashes and sealed
// private keys; only the feed leaves tokend's account.
//
// Usage:
//
//	lint DIR
//	lint -nats-config FILE...
//
// DIR is the deploy directory. The second form checks the authorization of
// nats-server configuration files (those deploy/loopback/run.sh writes):
// parsed by nats-server, clients authenticate (no no_auth_user), every
// user has an nkey or permissions, TLS on the client and route ports,
// routes authorized, monitoring on loopback, nothing of the log exported.
// Every finding is printed as "file: message"; the exit status is 1 if
// there is one, 2 on a usage error.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// report collects findings.
type report struct{ findings []string }

func (r *report) addf(where, format string, args ...any) {
	r.findings = append(r.findings, where+": "+fmt.Sprintf(format, args...))
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-nats-config" {
		r := &report{}
		for _, f := range os.Args[2:] {
			lintNATSFile(r, f)
		}
		exit(r, fmt.Sprintf("lint: the %d NATS configurations are authorized", len(os.Args)-2))
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: lint DIR (the deploy directory) | lint -nats-config FILE...")
		os.Exit(2)
	}
	dir := os.Args[1]
	r := &report{}
	ctx := context.Background()
	lintKubernetes(r, dir)
	lintCompose(ctx, r, dir)
	lintDockerfile(ctx, r, dir)
	lintFeedStream(r, dir)
	exit(r, fmt.Sprintf("lint: %s, %s, %s and %s are clean",
		filepath.Join(dir, "k8s"), filepath.Join(dir, "compose.yaml"), filepath.Join(dir, "Dockerfile"), filepath.Join(dir, "nats-feed.json")))
}

// exit prints the findings and exits 1, or prints clean and exits 0.
func exit(r *report, clean string) {
	sort.Strings(r.findings)
	for _, f := range r.findings {
		fmt.Println(f)
	}
	if len(r.findings) > 0 {
		fmt.Fprintf(os.Stderr, "lint: %d findings\n", len(r.findings))
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, clean)
	os.Exit(0)
}
