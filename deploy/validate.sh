#!/usr/bin/env bash
# Offline checks of deploy/: the Dockerfile (statically: no Docker engine is needed) and the
# Kubernetes manifests (rendered with kubectl kustomize when present and with a built-in renderer,
# validated strictly against the Kubernetes schemas of `kubernetes-validate`, plus the properties
# and container commands DistributedMQ relies on). Installs what it needs from PyPI, once.
#
#   bash deploy/validate.sh                 # base, Kubernetes 1.30 and 1.37 schemas
#   K8S_VERSIONS="1.32.0" bash deploy/validate.sh
#   RENDERED=/tmp/dmq.yaml bash deploy/validate.sh   # also keep the rendered manifests
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PY=${PYTHON:-python3}
KV_VERSION=1.37.0 # kubernetes-validate: ships the schemas up to Kubernetes 1.37

if ! "$PY" -c 'import yaml, kubernetes_validate' 2>/dev/null; then
    echo "== pip install kubernetes-validate==$KV_VERSION pyyaml"
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" pyyaml
fi

bash deploy/check-dockerfile.sh

versions=()
for v in ${K8S_VERSIONS:-1.30.0 1.37.0}; do versions+=(--k8s-version "$v"); done
out=()
[ -n "${RENDERED:-}" ] && out=(--out "$RENDERED")
"$PY" deploy/validate_manifests.py deploy/k8s/base "${versions[@]}" "${out[@]}"
echo "deploy/validate.sh: passed in $(( $(date +%s) - start )) s"
