#!/usr/bin/env bash
# Gateway benchmarks against nginx, all in one run (see gateway.py for what is measured).
# Needs Debian's wrk and nginx (installed here when missing) and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo build --release --locked -p mallgate -p mallgate-partner-sim
exec python3 ops/bench/gateway.py "$@"
