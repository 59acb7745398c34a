#!/usr/bin/env bash
# A fleet of three gateways on one etcd (see fleet.py for what is measured): convergence
# of 100 changes and the partner's rate against a fleet-wide limit with 1, 2, 3 replicas.
# Needs Debian's etcd-server (installed here when missing) and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v etcd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends etcd-server
  service etcd stop >/dev/null 2>&1 || true
  pkill -x etcd >/dev/null 2>&1 || true
fi
cargo build --release --locked -p mallgate -p mallgate-partner-sim
exec python3 ops/bench/fleet.py "$@"
