#!/usr/bin/env bash
# Installs what the tests validate and drive with, pinned so a new release of a tool cannot turn
# CI red or green by itself. Idempotent: each step is skipped when its tools are already there.
#
# Debian: chromium (the HTML drill report in a headless browser), prometheus (promtool checks
# every service's /metrics), tmux (`shop top` in a real pseudo-terminal).
# PyPI: kubernetes-validate, jsonschema and pyyaml (export manifests), xmlschema (JUnit reports),
# opentelemetry-proto (the official OTLP protobufs), checkov (the exports' security scan),
# schemathesis (the gateway against its OpenAPI document).
set -euo pipefail

apt_packages=()
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v promtool >/dev/null || apt_packages+=(prometheus)
command -v tmux >/dev/null || apt_packages+=(tmux)
# chattr makes a database file immutable, even for root: the health tests' unwritable disk.
command -v chattr >/dev/null || apt_packages+=(e2fsprogs)
if [ ${#apt_packages[@]} -gt 0 ]; then
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
    # Debian starts the packaged Prometheus server; the tests only need promtool.
    $sudo_ systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

python_packages=(
    kubernetes-validate==1.37.0
    jsonschema==4.26.0
    pyyaml==6.0.3
    xmlschema==4.3.2
    opentelemetry-proto==1.45.2
    checkov==3.3.30
    schemathesis==4.32.5
)
if ! python3 - "${python_packages[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "${python_packages[@]}"
fi
