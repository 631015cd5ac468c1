#!/bin/sh
# Signing with the local backend in the two builds of tokend (issue 16,
# part 2): Go's own crypto (CGO_ENABLED=0) against Go's BoringCrypto module
# (CGO_ENABLED=1 GOEXPERIMENT=boringcrypto). Both test binaries of
# signing/local's BenchmarkSign are built first, then run in turn, ROUNDS
# times, so neighbours on a shared machine weigh on both alike. Prints, per
# benchmark, ops/s of each round and the median of the per-round ratios
# boring / pure Go.
#
#   test/peers/boring.sh [ROUNDS [BENCHTIME]]      (make bench-boring)
set -eu
GO=${GO:-go}
ROUNDS=${1:-3}
BENCHTIME=${2:-1s}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
CGO_ENABLED=0 GOEXPERIMENT= "$GO" test -c -o "$dir/purego.test" ./signing/local/
CGO_ENABLED=1 GOEXPERIMENT=boringcrypto "$GO" test -c -o "$dir/boring.test" ./signing/local/
"$GO" version "$dir/boring.test"
echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
	for b in purego boring; do
		"$dir/$b.test" -test.run '^$' -test.bench '^BenchmarkSign$' -test.benchtime "$BENCHTIME" |
			awk -v b="$b" -v r="$r" '/ops\/s/ { for (i = 1; i <= NF; i++) if ($i == "ops/s") print r, b, $1, $(i-1) }' >>"$dir/results"
	done
	r=$((r + 1))
done
# round build benchmark ops/s -> one line per benchmark.
awk '
	{ name = $3; sub(/-[0-9]+$/, "", name); sub(/^BenchmarkSign\//, "", name)
	  v[name, $1, $2] = $4; if (!(name in seen)) { seen[name] = 1; order[++n] = name } if ($1 > rounds) rounds = $1 }
	END {
		print "| benchmark | pure Go ops/s per round | boring ops/s per round | boring ÷ pure Go (median) |"
		print "|---|---|---|---|"
		for (k = 1; k <= n; k++) {
			name = order[k]; p = ""; q = ""; m = 0
			for (r = 1; r <= rounds; r++) {
				p = p (r > 1 ? " / " : "") sprintf("%.0f", v[name, r, "purego"])
				q = q (r > 1 ? " / " : "") sprintf("%.0f", v[name, r, "boring"])
				if (v[name, r, "purego"] > 0) ratio[++m] = v[name, r, "boring"] / v[name, r, "purego"]
			}
			# insertion sort of the m ratios, then the median
			for (i = 2; i <= m; i++) { x = ratio[i]; j = i - 1; while (j > 0 && ratio[j] > x) { ratio[j+1] = ratio[j]; j-- } ratio[j+1] = x }
			med = (m % 2) ? ratio[(m+1)/2] : (ratio[m/2] + ratio[m/2+1]) / 2
			printf "| %s | %s | %s | %.2f |\n", name, p, q, med
		}
	}' "$dir/results"
