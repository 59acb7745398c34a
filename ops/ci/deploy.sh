#!/usr/bin/env bash
# The deployment files are checked as their tools check them:
# - the systemd unit (and its low-ports drop-in) with `systemd-analyze verify`, ExecStart
#   pointed at the binary this build made; any complaint (an unknown key, a bad value) fails;
# - the Kubernetes manifests against the Kubernetes 1.30 and 1.37 schemas, strict (an
#   unknown field fails), with kubernetes-validate (PyPI);
# - the ConfigMap's config is ops/examples/kubernetes.yaml exactly, and its connector passes
#   `mallgate connector check`.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VALIDATE_VERSION=1.37.0
binary=${MALLGATE:-target/debug/mallgate}
[[ -x "$binary" ]] || { echo "no $binary: build it first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "systemd-analyze verify ops/deploy/systemd/mallgate.service (+ mallgate.service.d/)"
sed "s#/usr/local/bin/mallgate#$PWD/$binary#g" ops/deploy/systemd/mallgate.service >"$work/mallgate.service"
cp -r ops/deploy/systemd/mallgate.service.d "$work/"
if ! systemd-analyze verify "$work/mallgate.service" >"$work/verify.log" 2>&1 || [[ -s "$work/verify.log" ]]; then
  cat "$work/verify.log" >&2
  echo "systemd-analyze verify complained" >&2
  exit 1
fi

if ! python3 -m kubernetes_validate --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
for version in 1.30.0 1.37.0; do
  echo "kubernetes-validate --strict -k $version ops/deploy/kubernetes/*.yaml"
  python3 -m kubernetes_validate --strict --quiet -k "$version" ops/deploy/kubernetes/*.yaml
done

python3 - "$work" <<'PY'
import pathlib, sys, yaml
work = pathlib.Path(sys.argv[1])
docs = list(yaml.safe_load_all(pathlib.Path("ops/deploy/kubernetes/configmap.yaml").read_text()))
maps = {d["metadata"]["name"]: d["data"] for d in docs}
example = pathlib.Path("ops/examples/kubernetes.yaml").read_text()
if maps["mallgate-config"]["config.yaml"] != example:
    raise SystemExit("the mallgate-config ConfigMap is not ops/examples/kubernetes.yaml")
for name, text in maps["mallgate-connectors"].items():
    (work / name).write_text(text)
PY
echo "mallgate connector check (the ConfigMap's connectors)"
"$binary" connector check "$work"/*.yaml
