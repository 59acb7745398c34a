#!/usr/bin/env bash
# A real Prometheus (Debian's `prometheus`) scrapes the demo's /metrics on the admin
# listener with the demo's operator token, and `promtool query instant` must return the
# gateway's series: the scrape config, the token, the exposition and the names agree.
# Bounded: everything under `timeout`, both processes stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

LISTEN=127.0.0.1:18081
PROM=127.0.0.1:19091
work=$(mktemp -d)
target/debug/mallgate demo --listen "$LISTEN" >target/prometheus-demo.log 2>&1 &
demo=$!
prom=""
cleanup() {
  [[ -n "$prom" ]] && kill "$prom" 2>/dev/null || true
  kill "$demo" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

for _ in $(seq 300); do
  curl -fs "http://$LISTEN/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://$LISTEN/readyz" >/dev/null
# Traffic, so the request and source families have series.
curl -fs "http://$LISTEN/v1/products?q=headphones&limit=5" >/dev/null
# The demo writes its fresh tokens here (see `mallgate demo`'s banner).
source "${TMPDIR:-/tmp}/mallgate-demo/tokens.env"
printf '%s' "$MALLGATE_OPERATOR_TOKEN" >"$work/token"
cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$PWD/ops/alerts/mallgate.rules.yml"]
scrape_configs:
  - job_name: mallgate
    metrics_path: /metrics
    authorization: {credentials_file: $work/token}
    static_configs: [{targets: ["127.0.0.1:9090"]}]
YAML
promtool check config "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="$PROM" >"$work/prometheus.log" 2>&1 &
prom=$!

query() { timeout 10s promtool query instant "http://$PROM" "$1" 2>/dev/null || true; }
for _ in $(seq 60); do
  if query 'up{job="mallgate"} == 1' | grep -q '=> 1'; then break; fi
  sleep 1
done
for q in 'up{job="mallgate"} == 1' \
         'mallgate_build_info' \
         'sum by (partner) (mallgate_source_calls_total)' \
         'http_server_request_duration_seconds_count{http_route="/v1/products"}' \
         'mallgate_endpoint_available'; do
  out=$(query "$q")
  if [[ -z "$out" ]]; then
    echo "no series for: $q"; tail -20 "$work/prometheus.log"; tail -20 target/prometheus-demo.log; exit 1
  fi
  echo "$q -> $(wc -l <<<"$out") series"
done
# The alert rules load in a real Prometheus (not only in promtool's unit tests).
curl -fs "http://$PROM/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") not in ("ok", "unknown")]
assert rules and not bad, f"rules: {len(rules)}, unhealthy: {bad}"
print(f"{len(rules)} alert rules loaded")'
