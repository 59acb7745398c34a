#!/usr/bin/env bash
# Mapping cost per record: decode + map + validate of a 100-item Voltmart catalog page in
# its JSON and XML dialects, the connector's jq against a hand-written mapping of the same
# page, measured in the same run (release profile, one thread). Prints a Markdown table and
# JSON lines; with --json only the JSON lines.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(cargo bench -q -p mallgate-connectors --bench mapping 2>/dev/null)
if [[ "${1:-}" == "--json" ]]; then
  grep '^{' <<<"$out"
else
  echo "$out"
fi
