#!/usr/bin/env bash
# Three failover drills against the demo, end to end, as an SRE would run them the day
# before a peak: the demo (simulated partners on loopback), a bounded load of fresh
# searches, then `mallgate drill run` with blackhole, error and latency faults on
# Voltmart's primary endpoint (Voltmart has a primary and a warm standby). Each report is
# printed and its HTML page kept in $OUT (default ${TMPDIR:-/tmp}/mallgate-drills).
#
#   ops/drills/demo.sh                      # uses target/release/mallgate, else target/debug
#   MALLGATE_BIN=path DURATION=20s ops/drills/demo.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${MALLGATE_BIN:-}
if [[ -z $bin ]]; then
  if [[ -x target/release/mallgate ]]; then bin=target/release/mallgate; else bin=target/debug/mallgate; fi
fi
duration=${DURATION:-15s}
out=${OUT:-${TMPDIR:-/tmp}/mallgate-drills}
mkdir -p "$out"
log="$out/demo.log"

"$bin" demo >"$log" 2>&1 &
demo=$!
loads=()
cleanup() {
  for pid in "${loads[@]}"; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  kill "$demo" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 1 300); do
  curl -fs localhost:8080/readyz >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs localhost:8080/readyz >/dev/null || { echo "the demo did not become ready; see $log" >&2; exit 1; }
# shellcheck disable=SC1091
source "${TMPDIR:-/tmp}/mallgate-demo/tokens.env"
export MALLGATE_OPERATOR_TOKEN

# Bounded load: four loops of fresh searches (nothing cached), at most 20,000 requests.
loads=()
for w in 1 2 3 4; do
  (for i in $(seq 1 5000); do
     curl -s -o /dev/null "localhost:8080/v1/products?q=drill$w-$i&limit=3" || true
   done) &
  loads+=($!)
done
sleep 2

primary=http://127.0.0.1:18101/
status=0
for drill in "blackhole" "error" "latency --latency 400ms"; do
  name=${drill%% *}
  echo "== $name on voltmart's primary ($primary) for $duration"
  # shellcheck disable=SC2086
  "$bin" drill run --admin http://127.0.0.1:9090 --token env:MALLGATE_OPERATOR_TOKEN \
    --target voltmart --endpoint "$primary" --fault $drill --duration "$duration" \
    --expect-max-errors 0 --html "$out/$name.html" || status=$?
  echo
done
echo "reports: $out/*.html"
exit "$status"
