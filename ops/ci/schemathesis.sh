#!/usr/bin/env bash
# Property-based API conformance: schemathesis (PyPI) generates requests from the served
# /openapi.json against the demo (debug build) and fails on any undocumented status (a 500
# included), content type, header or body that violates the document. Documented 503/429
# answers are fine. Bounded: a fixed seed and example count, a request timeout, and the
# whole run under `timeout`. One worker: with threads, CPython 3.11's `ast.parse` (used by
# hypothesis to describe filters) can fail with "AST constructor recursion depth mismatch".
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
LISTEN=127.0.0.1:18080
EXAMPLES=${EXAMPLES:-25}

if ! python3 -m schemathesis.cli --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked -p mallgate
target/debug/mallgate demo --listen "$LISTEN" >target/schemathesis-demo.log 2>&1 &
demo=$!
trap 'kill "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true' EXIT

python3 - "$LISTEN" <<'PY'
import sys, time, urllib.request
url = f"http://{sys.argv[1]}/readyz"
for _ in range(300):
    try:
        if urllib.request.urlopen(url, timeout=1).status == 200:
            sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(f"the demo did not become ready at {url}")
PY

timeout --kill-after=10s 15m python3 -m schemathesis.cli run "http://$LISTEN/openapi.json" \
  --checks status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$EXAMPLES" \
  --seed 1 \
  --request-timeout 10 \
  --workers 1
