package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	natsconf "github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
)

// natsExpect is what a NATS server configuration must say to fit its
// container: routes to every server of the cluster on the cluster port,
// the client and monitoring ports the container declares, JetStream on.
type natsExpect struct {
	confDir                              string // the configuration's directory in the container, for includes
	routeHosts                           []string
	clusterPort, clientPort, monitorPort int32
	storeMounts                          []string // persistent mount paths; the store must be under one
	secretMounts                         []string // where Secrets are mounted; TLS files must be under one
}

// reInclude finds the files a configuration includes.
var reInclude = regexp.MustCompile(`(?m)^(\s*include\s+)"?([^"\s;]+)"?`)

// reTLSFile finds the files a tls block names.
var reTLSFile = regexp.MustCompile(`(?m)^(\s*(?:cert_file|key_file|ca_file)\s*[:=]\s*)"?([^"\s]+)"?`)

// checkNATSConfig parses conf as nats-server -t would (unknown fields are
// errors), with env as the server's environment (a config refers to
// $SERVER_NAME and the users' public nkeys), and compares it with want.
// The certificate files a tls block names must be on a mounted Secret;
// for the parse, which loads them, they are replaced by a throwaway pair.
//
// Then the authorization (issue 12: nobody appends to the log without
// the service's identity): clients must authenticate (users, no
// no_auth_user), every user has an nkey or permissions, the client and
// route ports speak TLS, routes are authorized (a user, or a certificate
// mapped or matched against the routes), the monitoring port listens
// on loopback only, and no account exports the log (checkLogExports).
func checkNATSConfig(r *report, where, conf string, env map[string]string, want natsExpect) {
	for _, m := range reTLSFile.FindAllStringSubmatch(conf, -1) {
		file := m[2]
		if !slices.ContainsFunc(want.secretMounts, func(d string) bool { return underDir(file, d) }) {
			r.addf(where, "TLS file %s is not on a mounted Secret (%q)", file, want.secretMounts)
		}
	}
	// An included file (the users of SUBSCRIBERS, which natstool
	// subscriber-users writes) comes from a Secret too; for the parse, a
	// sample of what natstool writes stands in.
	for _, m := range reInclude.FindAllStringSubmatch(conf, -1) {
		file := path.Join(want.confDir, m[2])
		if !slices.ContainsFunc(want.secretMounts, func(d string) bool { return underDir(file, d) }) {
			r.addf(where, "included file %s is not on a mounted Secret (%q)", file, want.secretMounts)
		}
	}
	if users, err := sampleSubscriberUsers(); err != nil {
		r.addf(where, "sample users for the parse: %v", err)
	} else {
		defer os.Remove(users)
		// nats-server resolves an include of a configuration given as a
		// string against the working directory.
		if wd, err := os.Getwd(); err == nil {
			if rel, err := filepath.Rel(wd, users); err == nil {
				users = rel
			}
		}
		conf = reInclude.ReplaceAllStringFunc(conf, func(s string) string {
			return reInclude.FindStringSubmatch(s)[1] + strconv.Quote(users)
		})
	}
	if pair, err := throwawayTLS(); err != nil {
		r.addf(where, "throwaway certificate for the parse: %v", err)
	} else {
		defer os.RemoveAll(pair.dir)
		conf = reTLSFile.ReplaceAllStringFunc(conf, func(s string) string {
			m := reTLSFile.FindStringSubmatch(s)
			f := pair.cert
			if strings.Contains(m[1], "key_file") {
				f = pair.key
			}
			return m[1] + strconv.Quote(f)
		})
	}
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
	if m, err := natsconf.Parse(conf); err != nil {
		r.addf(where, "nats-server's parser: %v", err)
	} else {
		checkLogExports(r, where, m)
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
	checkNATSAuthorization(r, where, opts)
}

// lintNATSFile checks the authorization of a configuration file as
// nats-server reads it (its certificate files must exist).
func lintNATSFile(r *report, file string) {
	opts := &server.Options{CheckConfig: true}
	if err := opts.ProcessConfigFile(file); err != nil {
		r.addf(file, "nats-server refuses the configuration: %s", strings.TrimSpace(err.Error()))
		return
	}
	if m, err := natsconf.ParseFile(file); err != nil {
		r.addf(file, "nats-server's parser: %v", err)
	} else {
		checkLogExports(r, file, m)
	}
	checkNATSAuthorization(r, file, opts)
}

// checkNATSAuthorization: see checkNATSConfig.
func checkNATSAuthorization(r *report, where string, opts *server.Options) {
	if opts.NoAuthUser != "" {
		r.addf(where, "no_auth_user %s: connections without credentials get in", opts.NoAuthUser)
	}
	if len(opts.Nkeys) == 0 && len(opts.Users) == 0 && opts.Username == "" && opts.Authorization == "" && len(opts.TrustedOperators) == 0 {
		r.addf(where, "no authorization: any client connects without credentials and can append to the log (declare accounts with nkey users)")
	}
	if opts.Username != "" || opts.Authorization != "" {
		r.addf(where, "a single user or token for every client: give tokend and subscribers users of their own accounts")
	}
	for _, u := range opts.Users {
		if u.Permissions == nil {
			r.addf(where, "user %s has a password and no permissions: give it permissions, or an nkey", u.Username)
		}
	}
	if opts.TLSConfig == nil {
		r.addf(where, "the client port has no TLS (a tls block with cert_file and key_file)")
	} else if opts.AllowNonTLS {
		r.addf(where, "allow_non_tls: clients may connect without TLS")
	}
	if opts.Cluster.Port != 0 {
		if opts.Cluster.TLSConfig == nil {
			r.addf(where, "the cluster (route) port has no TLS")
		}
		if opts.Cluster.Username == "" && !opts.Cluster.TLSMap && !opts.Cluster.TLSCheckKnownURLs {
			r.addf(where, "routes are not authorized: any server that reaches the route port joins the cluster (cluster authorization, or tls verify_cert_and_check_known_urls)")
		}
	}
	for _, l := range []struct {
		name string
		port int
	}{{"http", opts.HTTPPort}, {"https", opts.HTTPSPort}} {
		if l.port != 0 && !isLoopbackHost(opts.HTTPHost) {
			r.addf(where, "monitoring (%s) listens on %q: bind it to 127.0.0.1, it is not authenticated", l.name, opts.HTTPHost)
		}
	}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// underDir reports whether file is dir or under it.
func underDir(file, dir string) bool {
	f, d := path.Clean(file), path.Clean(dir)
	return f == d || strings.HasPrefix(f, d+"/")
}

type tlsPair struct{ dir, cert, key string }

// throwawayTLS writes a self-signed certificate and its key, which stands
// for every certificate and CA file of a configuration while it is parsed.
func throwawayTLS() (tlsPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lint"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, DNSNames: []string{"lint"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tlsPair{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tlsPair{}, err
	}
	dir, err := os.MkdirTemp("", "lint-tls-")
	if err != nil {
		return tlsPair{}, err
	}
	p := tlsPair{dir: dir, cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(p.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		os.RemoveAll(dir)
		return tlsPair{}, err
	}
	if err := os.WriteFile(p.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		os.RemoveAll(dir)
		return tlsPair{}, err
	}
	return p, nil
}

// sampleSubscriberUsers writes a file of the form natstool
// subscriber-users writes (the feed admin and one resource server, fresh
// keys) and returns its path.
func sampleSubscriberUsers() (string, error) {
	admin, err := newPublicUserKey()
	if err != nil {
		return "", err
	}
	rs, err := newPublicUserKey()
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "lint-users-*.conf")
	if err != nil {
		return "", err
	}
	_, werr := fmt.Fprintf(f, `users: [{nkey: %q, permissions: {publish: {allow: ["$JS.API.INFO", "$JS.API.STREAM.CREATE.TOKENS_FEED"]}, subscribe: {allow: ["_INBOX.>"]}}}, `+
		`{nkey: %q, permissions: {publish: {allow: ["$JS.API.STREAM.INFO.TOKENS_FEED", "$JS.API.CONSUMER.CREATE.TOKENS_FEED.%s.>"]}, subscribe: {allow: ["_INBOX.>"]}}}]`+"\n",
		admin, rs, rs)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return "", werr
	}
	return f.Name(), nil
}

// The log's names, tokend's defaults (NATS_STREAM, NATS_SUBJECT_PREFIX):
// a deployment that changes them changes these too.
const (
	logStream = "TOKENS"
	logPrefix = "token"
)

// logSubjects are subjects through which another account would read the
// log, the families bucket or the checkpoints (secret hashes, families'
// states, sealed private keys): the log's subjects, the bucket's, and the JetStream API
// on the log's stream (a consumer created with or without a filter in the
// subject, a durable, a pull, a message get). An export whose subject
// matches one of them lets the importing account source, mirror or read
// the log.
var logSubjects = []string{
	logPrefix + ".family.F.issued",
	logPrefix + ".key.K.generated",
	"$KV.TOKEN_FAMILIES.F",
	"$O.TOKEN_CHECKPOINTS.C.X",
	"$JS.API.CONSUMER.CREATE." + logStream,
	"$JS.API.CONSUMER.CREATE." + logStream + ".C",
	"$JS.API.CONSUMER.CREATE." + logStream + ".C." + logPrefix + ".family.F.revoked",
	"$JS.API.CONSUMER.CREATE." + logStream + ".C." + logPrefix + ".key.>",
	"$JS.API.CONSUMER.DURABLE.CREATE." + logStream + ".C",
	"$JS.API.CONSUMER.MSG.NEXT." + logStream + ".C",
	"$JS.API.STREAM.MSG.GET." + logStream,
	"$JS.API.DIRECT.GET." + logStream,
	"$JS.API.DIRECT.GET." + logStream + "." + logPrefix + ".family.F.issued",
	"$JS.API.STREAM.MSG.GET.KV_TOKEN_FAMILIES",
	"$JS.API.DIRECT.GET.KV_TOKEN_FAMILIES.$KV.TOKEN_FAMILIES.F",
}

// checkLogExports reports every export, of a service or a stream, whose
// subject reaches the log (logSubjects): the log's events carry secrets,
// and only the feed (tokend's TOKENS_FEED, tokenfeed.>) may leave its
// account. m is the configuration as nats-server's parser returns it.
func checkLogExports(r *report, where string, m map[string]any) {
	accounts, _ := m["accounts"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(accounts)) {
		acc, _ := accounts[name].(map[string]any)
		exports, _ := acc["exports"].([]any)
		for _, e := range exports {
			e, _ := e.(map[string]any)
			for _, kind := range []string{"service", "stream"} {
				subj, ok := e[kind].(string)
				if !ok {
					continue
				}
				for _, s := range logSubjects {
					if subjectsOverlap(subj, s) {
						r.addf(where, "account %s exports the %s %q, which reaches the log (%s): another account could source or read its secrets; export only the feed (TOKENS_FEED, tokenfeed.>)", name, kind, subj, s)
						break
					}
				}
			}
		}
	}
}

// subjectsOverlap reports whether a subject matches both the pattern and
// s, each of which may hold the wildcards * and >.
func subjectsOverlap(pattern, s string) bool {
	p, t := strings.Split(pattern, "."), strings.Split(s, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(t) > i
		}
		if i >= len(t) {
			return false
		}
		if t[i] == ">" {
			return true
		}
		if tok != "*" && t[i] != "*" && tok != t[i] {
			return false
		}
	}
	return len(p) == len(t)
}

// lintFeedStream checks the stream configuration the feed admin creates
// in SUBSCRIBERS (dir/nats-feed.json): it may mirror or source only the
// feed, never the log's stream or its subjects.
func lintFeedStream(r *report, dir string) {
	file := filepath.Join(dir, "nats-feed.json")
	b, err := os.ReadFile(file)
	if err != nil {
		r.addf(file, "%v", err)
		return
	}
	type origin struct {
		Name          string `json:"name"`
		FilterSubject string `json:"filter_subject"`
		Transforms    []struct {
			Source string `json:"src"`
		} `json:"subject_transforms"`
	}
	var cfg struct {
		Name     string   `json:"name"`
		Subjects []string `json:"subjects"`
		Mirror   *origin  `json:"mirror"`
		Sources  []origin `json:"sources"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&cfg); err != nil {
		r.addf(file, "%v", err)
		return
	}
	origins := cfg.Sources
	if cfg.Mirror != nil {
		origins = append(origins, *cfg.Mirror)
	}
	if len(origins) == 0 {
		r.addf(file, "stream %s neither mirrors nor sources the feed", cfg.Name)
	}
	for _, o := range origins {
		filters := []string{o.FilterSubject}
		for _, t := range o.Transforms {
			filters = append(filters, t.Source)
		}
		for _, f := range filters {
			if f == "" {
				f = ">"
			}
			if o.Name == logStream || subjectsOverlap(f, logPrefix+".>") {
				r.addf(file, "stream %s reads stream %s with the filter %q, which reaches the log: read only the feed (TOKENS_FEED, tokenfeed.>)", cfg.Name, o.Name, f)
			}
		}
	}
	for _, s := range cfg.Subjects {
		if subjectsOverlap(s, logPrefix+".>") {
			r.addf(file, "stream %s captures %q, the log's subjects", cfg.Name, s)
		}
	}
}
