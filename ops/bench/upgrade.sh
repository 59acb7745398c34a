#!/usr/bin/env bash
# Binary upgrades under load: the release gateway in front of the simulated fleet, a steady
# client (keep-alive and fresh connections at a constant rate) and sparse keep-alive clients,
# through N upgrades (`serve --upgrade` + SIGQUIT, as `systemctl reload` does) and N×100
# connector swaps; prints every error class and the partners' cold-start cost.
#
#   ops/bench/upgrade.sh [--upgrades N] [--swaps-per-upgrade N] [--rate RPS-PER-CLIENT]
#
# Loopback only; bounded (N rounds of ~10 s each) and it stops by itself. Exit 1 on any error.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p mallgate -p mallgate-chaos-tests --bin mallgate --bin upgrade-harness
exec timeout --kill-after=10s 15m target/release/upgrade-harness --binary target/release/mallgate "$@"
