#!/usr/bin/env bash
# Installs what the export tests validate with: kubernetes-validate (Kubernetes schemas,
# offline), jsonschema and pyyaml (the compose schema in tests/schemas/). Idempotent: pip
# skips what is already installed.
set -euo pipefail
if python3 -c 'import jsonschema, yaml' 2>/dev/null && command -v kubernetes-validate >/dev/null; then
    exit 0
fi
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    kubernetes-validate jsonschema pyyaml
