#!/usr/bin/env bash
# Runs a 3-node NATS JetStream cluster and 3 tokend replicas on loopback,
# without containers, until Ctrl-C or SIGTERM; then stops every process it
# started (by PID) and exits. The cluster is configured as deploy/k8s and
# deploy/compose.yaml configure theirs: accounts (TOKENS for tokend,
# SUBSCRIBERS for resource servers, SYS), users by nkey only, no anonymous
# user, TLS on the client and route ports (routes authenticated by their
# certificate), monitoring on 127.0.0.1.
#
#   deploy/loopback/run.sh            run until interrupted (make cluster)
#   deploy/loopback/run.sh --check    start, check the cluster (curl, natstool), stop; exit 0 or 1
#
# Settings (environment; the defaults avoid make run's 50051 and 4222):
#   WORK_DIR                 state, logs, configs, binaries   (./data/loopback from the repo root; git ignores it)
#   NATS_CLIENT_PORT_BASE    nats client ports base..base+2    (14222)
#   NATS_CLUSTER_PORT_BASE   nats route ports base..base+2     (16222)
#   NATS_MONITOR_PORT_BASE   nats monitoring ports             (18222)
#   TOKEND_PORT_BASE         tokend ports base..base+2         (50061)
#   READY_TIMEOUT            seconds to wait for readiness     (120)
#   STOP_TIMEOUT             seconds a process gets to stop before SIGKILL (35: tokend's SHUTDOWN_TIMEOUT is 30)
#   LOOPBACK_CHECK=1         same as --check
#   GO                       the go command                    (go)
# Other tokend variables (JWT_ALGORITHM, LOG_LEVEL, ...) pass through to
# every replica.
# The encryption key is generated once into WORK_DIR/encryption.key and
# given to every replica (they must share it: it seals the signing keys in
# the log and keys the DPoP nonces). A throwaway CA and the servers'
# certificate (openssl) go to WORK_DIR/tls, the users' nkey seeds
# (deploy/loopback/natstool) to WORK_DIR/nkeys, each made once.
set -euo pipefail

die() { echo "loopback: $*" >&2; exit 1; }

check=${LOOPBACK_CHECK:-0}
case "${1:-}" in
--check) check=1 ;;
"") ;;
*) die "usage: $0 [--check]" ;;
esac
go=${GO:-go}
command -v "$go" >/dev/null || die "$go (Go 1.26) is required"
for tool in curl jq openssl; do
	command -v "$tool" >/dev/null || die "$tool is required (Debian: apt-get install $tool)"
done

cd "$(dirname "$0")/../.."
work=${WORK_DIR:-./data/loopback}
mkdir -p "$work"
work=$(cd "$work" && pwd)
client_base=${NATS_CLIENT_PORT_BASE:-14222}
cluster_base=${NATS_CLUSTER_PORT_BASE:-16222}
monitor_base=${NATS_MONITOR_PORT_BASE:-18222}
tokend_base=${TOKEND_PORT_BASE:-50061}
ready_timeout=${READY_TIMEOUT:-120}
stop_timeout=${STOP_TIMEOUT:-35}
n=3

pids=()   # every process started, in start order
names=()  # its name, for messages

# stop_all stops every started process, newest first: tokend replicas drain
# their calls before the servers they use go away. Bash reaps its finished
# children, so kill -0 fails once one has exited.
stop_all() {
	local i pid deadline
	((${#pids[@]})) || return 0
	echo "loopback: stopping ${#pids[@]} processes" >&2
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid=${pids[i]}
		kill -TERM "$pid" 2>/dev/null || continue
		deadline=$((SECONDS + stop_timeout))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			echo "loopback: ${names[i]} (pid $pid) did not stop in ${stop_timeout}s: SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	pids=()
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG CMD... runs CMD in the background and records its PID
# (also in WORK_DIR/pids, which the deploy test reads to check that every
# process stopped).
start() {
	local name=$1 log=$2
	shift 2
	"$@" >"$log" 2>&1 &
	pids+=("$!")
	names+=("$name")
	echo "$!" >>"$work/pids"
}

# alive_or_die fails with the log tail of a started process that exited.
alive_or_die() {
	local i
	for i in "${!pids[@]}"; do
		if ! kill -0 "${pids[i]}" 2>/dev/null; then
			echo "loopback: ${names[i]} exited; the end of its log:" >&2
			tail -n 20 "$work/${names[i]}.log" >&2 || true
			exit 1
		fi
	done
}

# wait_http URL NAME polls URL until it answers 2xx.
wait_http() {
	local url=$1 name=$2 deadline=$((SECONDS + ready_timeout))
	until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
		alive_or_die
		((SECONDS < deadline)) || die "$name: no answer from $url after ${ready_timeout}s (log: $work/$name.log)"
		sleep 0.2
	done
}

echo "loopback: building nats-server, tokend and natstool into $work/bin" >&2
"$go" build -o "$work/bin/nats-server" github.com/nats-io/nats-server/v2
"$go" build -o "$work/bin/tokend" ./cmd/tokend
"$go" build -o "$work/bin/natstool" ./deploy/loopback/natstool

if [[ ! -s "$work/encryption.key" ]]; then
	(umask 077 && head -c 32 /dev/urandom | base64 >"$work/encryption.key")
	echo "loopback: generated $work/encryption.key (shared by every replica)" >&2
fi
key=$(<"$work/encryption.key")
: >"$work/pids"

# accounts_conf prints the accounts, the same as deploy/k8s/nats.yaml's
# (see deploy/README.md, "NATS accounts"): TOKENS holds the log (token.>)
# and the feed tokend writes (stream TOKENS_FEED, tokenfeed.>: public facts
# only), and only tokend's user; it exports to SUBSCRIBERS only consumer
# creation on its TOKENS_FEED with the feed's filter in the subject, flow
# control and the deliveries, never anything of the log. SUBSCRIBERS holds
# a TOKENS_FEED that mirrors it (its admin creates it from
# deploy/nats-feed.json) and the users natstool subscriber-users writes
# into WORK_DIR/subscribers.conf, which the account includes:
# the admin, and resource servers that may only read the feed through the
# consumer named after their own public key. Nobody connects without an
# nkey: there is no no_auth_user.
accounts_conf() {
	cat <<EOF
system_account: SYS
accounts {
  SYS {
    users: [ { nkey: $sys_nkey } ]
  }
  TOKENS {
    jetstream: enabled
    users: [
      {
        nkey: $tokend_nkey
        permissions {
          publish { allow: ["token.>", "tokenfeed.>", "\$JS.API.>", "\$KV.TOKEN_FAMILIES.>", "\$O.TOKEN_CHECKPOINTS.>", "\$JS.ACK.>", "\$JS.FC.>", "_INBOX.>"] }
          subscribe { allow: ["_INBOX.>", "token.>", "\$KV.TOKEN_FAMILIES.>", "\$O.TOKEN_CHECKPOINTS.>"] }
        }
      }
    ]
    exports: [
      { service: "\$JS.API.CONSUMER.CREATE.TOKENS_FEED.*.tokenfeed.>", response_type: stream, accounts: [SUBSCRIBERS] }
      { service: "\$JS.FC.>", accounts: [SUBSCRIBERS] }
      { stream: "_TOKEND.FEED.>", accounts: [SUBSCRIBERS] }
    ]
  }
  SUBSCRIBERS {
    jetstream { max_streams: 1, max_consumers: 1000 }
    include "subscribers.conf"
    imports: [
      { service: { account: TOKENS, subject: "\$JS.API.CONSUMER.CREATE.TOKENS_FEED.*.tokenfeed.>" }, to: "_TOKEND.API.CONSUMER.CREATE.TOKENS_FEED.*.tokenfeed.>" }
      { service: { account: TOKENS, subject: "\$JS.FC.>" } }
      { stream: { account: TOKENS, subject: "_TOKEND.FEED.>" } }
    ]
  }
}
EOF
}

# A throwaway CA and one certificate for the three servers, valid for
# localhost and 127.0.0.1, for clients (tokend verifies it with
# NATS_CA_FILE) and for routes, which present it as a client certificate:
# a route is admitted only with a certificate of this CA whose DNS name is
# a host of the configured routes (verify_cert_and_check_known_urls), so
# the routes name localhost, not 127.0.0.1.
tls=$work/tls
if [[ ! -s $tls/server.pem ]] || ! openssl x509 -checkend 86400 -noout -in "$tls/server.pem" >/dev/null 2>&1; then
	mkdir -p "$tls"
	(
		umask 077
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
			-subj "/CN=tokend loopback NATS CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr"
		printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
			"extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$tls/server.ext"
		openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
			-days 30 -extfile "$tls/server.ext" -out "$tls/server.pem"
	) >/dev/null 2>"$work/openssl.log" || die "openssl failed: $(cat "$work/openssl.log")"
	echo "loopback: generated a CA and the servers' certificate in $tls" >&2
fi

# The users, by nkey: tokend (account TOKENS), one resource server
# (subscriber, whose consumer is named after its public key) and the
# feed's admin (account SUBSCRIBERS), an operator of the system account.
nkeys=$work/nkeys
tokend_nkey=$("$work/bin/natstool" nkey "$nkeys" tokend)
subscriber_nkey=$("$work/bin/natstool" nkey "$nkeys" subscriber)
feed_admin_nkey=$("$work/bin/natstool" nkey "$nkeys" feed-admin)
sys_nkey=$("$work/bin/natstool" nkey "$nkeys" sys)
"$work/bin/natstool" subscriber-users "$feed_admin_nkey" "$subscriber_nkey" >"$work/subscribers.conf"

routes=""
urls=""
for ((i = 1; i <= n; i++)); do
	routes+="    nats-route://localhost:$((cluster_base + i - 1))"$'\n'
	urls+="${urls:+,}nats://127.0.0.1:$((client_base + i - 1))"
done
for ((i = 1; i <= n; i++)); do
	mkdir -p "$work/nats-$i"
	cat >"$work/nats-$i.conf" <<EOF
# written by deploy/loopback/run.sh
server_name: loopback-$i
listen: 127.0.0.1:$((client_base + i - 1))
http: 127.0.0.1:$((monitor_base + i - 1))
tls {
  cert_file: "$tls/server.pem"
  key_file: "$tls/server.key"
  ca_file: "$tls/ca.pem"
  timeout: 5
}
jetstream {
  store_dir: "$work/nats-$i"
}
cluster {
  name: tokend-loopback
  listen: 127.0.0.1:$((cluster_base + i - 1))
  tls {
    cert_file: "$tls/server.pem"
    key_file: "$tls/server.key"
    ca_file: "$tls/ca.pem"
    verify_cert_and_check_known_urls: true
    timeout: 5
  }
  routes: [
$routes  ]
}
$(accounts_conf)
EOF
	"$work/bin/nats-server" -t -c "$work/nats-$i.conf" >/dev/null 2>&1 ||
		die "nats-server refuses $work/nats-$i.conf: $("$work/bin/nats-server" -t -c "$work/nats-$i.conf" 2>&1)"
done
for ((i = 1; i <= n; i++)); do
	start "nats-$i" "$work/nats-$i.log" "$work/bin/nats-server" -c "$work/nats-$i.conf"
done
# /healthz answers 200 once JetStream is up and the meta group has a leader.
for ((i = 1; i <= n; i++)); do
	wait_http "http://127.0.0.1:$((monitor_base + i - 1))/healthz" "nats-$i"
done
# On a restart the stream (from an earlier run) has no leader for a few
# seconds more, and a JetStream API request sent then goes unanswered: a
# replica would wait for its attempt to time out. Wait until every stream
# has a leader.
deadline=$((SECONDS + ready_timeout))
for ((i = 1; i <= n; i++)); do
	until curl -fsS --max-time 2 "http://127.0.0.1:$((monitor_base + i - 1))/jsz?streams=true" 2>/dev/null |
		jq -e '[.account_details[]?.stream_detail[]? | .cluster.leader // ""] | all(. != "")' >/dev/null; do
		alive_or_die
		((SECONDS < deadline)) || die "nats-$i: a stream has no leader after ${ready_timeout}s"
		sleep 0.2
	done
done

start_tokend() {
	start "tokend-$1" "$work/tokend-$1.log" env HOST=127.0.0.1 PORT=$((tokend_base + $1 - 1)) \
		NATS_URL="$urls" NATS_REPLICAS=3 NATS_NKEY_SEED="$nkeys/tokend.nk" NATS_CA_FILE="$tls/ca.pem" \
		ENCRYPTION_KEY="$key" DATA_DIR="$work/tokend-$1" \
		"$work/bin/tokend"
}
# tokend-1 creates the stream before the others start: replicas that race
# to create an R3 stream on a fresh cluster can wait for an API answer
# that never comes, until their attempt times out.
start_tokend 1
wait_http "http://127.0.0.1:$tokend_base/readyz" tokend-1
for ((i = 2; i <= n; i++)); do
	start_tokend "$i"
done
for ((i = 2; i <= n; i++)); do
	wait_http "http://127.0.0.1:$((tokend_base + i - 1))/readyz" "tokend-$i"
done

echo "loopback: ready in ${SECONDS}s"
for ((i = 1; i <= n; i++)); do
	echo "  tokend-$i  http://127.0.0.1:$((tokend_base + i - 1))   nats-$i  nats://127.0.0.1:$((client_base + i - 1))  (monitor http://127.0.0.1:$((monitor_base + i - 1)))"
done
echo "  NATS_URL=$urls NATS_CA_FILE=$tls/ca.pem"
echo "  nkey seeds: $nkeys/tokend.nk (account TOKENS), subscriber.nk (consumer $subscriber_nkey) and feed-admin.nk (SUBSCRIBERS), sys.nk (SYS)"
echo "  logs and state: $work"

# rpc PORT METHOD JSON calls a TokenService method with the Connect protocol
# and prints the response body; a non-200 answer fails.
rpc() {
	local out code
	out=$(curl -sS --max-time 10 -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
		"http://127.0.0.1:$1/token.v1.TokenService/$2" -d "$3") || return 1
	code=${out##*$'\n'}
	out=${out%$'\n'*}
	if [[ $code != 200 ]]; then
		echo "loopback: $2 on port $1: HTTP $code: $out" >&2
		return 1
	fi
	printf '%s\n' "$out"
}

fail() { echo "check: FAIL: $*"; exit 1; }

run_check() {
	local p1=$tokend_base p2=$((tokend_base + 1)) gen ref rt fid rt2 kid jwks etag first first_etag i out
	gen=$(rpc "$p1" GenerateTokens '{"subject":"loopback-check","client_id":"web","audience":["api"],"scopes":["openid","profile"]}') ||
		fail "GenerateTokens on tokend-1"
	rt=$(jq -er .refreshToken <<<"$gen") || fail "GenerateTokens: no refreshToken in $gen"
	fid=$(jq -er .familyId <<<"$gen") || fail "GenerateTokens: no familyId in $gen"
	kid=$(jq -er '.accessToken | split(".")[0] | gsub("-";"+") | gsub("_";"/") | . + ("=" * ((4 - length % 4) % 4)) | @base64d | fromjson | .kid' <<<"$gen") ||
		fail "GenerateTokens: access token without a readable kid"
	echo "check: GenerateTokens on tokend-1: family $fid, kid $kid"

	ref=$(rpc "$p2" RefreshTokens "$(jq -nc --arg rt "$rt" '{refresh_token:$rt,client_id:"web"}')") ||
		fail "RefreshTokens on tokend-2 of the token tokend-1 issued"
	rt2=$(jq -er .refreshToken <<<"$ref") || fail "RefreshTokens: no refreshToken in $ref"
	[[ $(jq -r .familyId <<<"$ref") == "$fid" ]] || fail "RefreshTokens: family $(jq -r .familyId <<<"$ref"), want $fid"
	[[ $rt2 != "$rt" ]] || fail "RefreshTokens returned the presented token"
	echo "check: RefreshTokens on tokend-2: rotated within family $fid"

	# The bodies are compared byte for byte, and so are the ETags.
	for ((i = 1; i <= n; i++)); do
		jwks=$(curl -fsS --max-time 5 -D "$work/jwks-$i.headers" "http://127.0.0.1:$((tokend_base + i - 1))/.well-known/jwks.json") ||
			fail "JWKS of tokend-$i"
		etag=$(tr -d '\r' <"$work/jwks-$i.headers" | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p')
		[[ -n $etag ]] || fail "tokend-$i's JWKS has no ETag"
		jq -e --arg kid "$kid" '[.keys[].kid] | index($kid) != null' <<<"$jwks" >/dev/null ||
			fail "tokend-$i's JWKS has no key $kid: $jwks"
		if ((i == 1)); then
			first=$jwks first_etag=$etag
		elif [[ $jwks != "$first" || $etag != "$first_etag" ]]; then
			fail "tokend-$i's JWKS (ETag $etag) differs from tokend-1's (ETag $first_etag): $jwks vs $first"
		fi
	done
	echo "check: JWKS identical on $n replicas (same bytes and ETag $first_etag; $(jq '.keys | length' <<<"$first") keys, the signing key $kid among them)"
	# Nobody appends to the log without tokend's nkey: a connection
	# without credentials is refused by every server.
	for ((i = 1; i <= n; i++)); do
		out=$("$work/bin/natstool" anonymous "nats://127.0.0.1:$((client_base + i - 1))" "$tls/ca.pem" "token.family.anonymous.issued") ||
			fail "nats-$i: $out"
	done
	echo "check: a connection without credentials is refused by the $n servers ($out)"
	# The feed admin creates the mirror of tokend's feed in SUBSCRIBERS;
	# after a revocation the resource server reads it there, through the
	# consumer named after its key, and finds nothing but feed messages.
	rpc "$p1" RevokeToken "$(jq -nc --arg fid "$fid" '{family_id:$fid,reason:"admin"}')" >/dev/null ||
		fail "RevokeToken on tokend-1"
	out=$("$work/bin/natstool" feed "nats://127.0.0.1:$client_base" "$tls/ca.pem" "$nkeys" deploy/nats-feed.json "$fid") ||
		fail "feed: $out"
	echo "check: $out"
	echo "check: ok"
}

if ((check)); then
	run_check
	exit 0
fi
echo "loopback: Ctrl-C stops everything"
# wait -n returns when one process exits (then we stop the rest) or when a
# signal arrives (then its trap exits).
wait -n "${pids[@]}" || true
alive_or_die
