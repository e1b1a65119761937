#!/usr/bin/env bash
# Runs Checkov (the security scanner Kubernetes users run on manifests) on both exports of the
# shipped stack and on the Dockerfile, offline (`--skip-download`): any failed check not in
# .ci/checkov-skip.txt fails CI. Exports both with and without `--namespace`, since the
# namespace object and its Pod Security label only exist with it.
#
# Checkov 3.3 has no rules for compose files: scanning the compose export checks nothing today
# (and will if a release adds rules); its hardening is pinned by tests/it/export.rs instead.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps.sh
bin="${SHOP_BIN:-target/debug/shop}"
# The ids of the skip list, comma-separated, comments and blank lines left out.
skip="$(sed -e 's/#.*//' .ci/checkov-skip.txt | awk 'NF { print $1 }' | paste -sd, -)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" -q -f stack.yaml export k8s -o "$work/k8s.yaml"
"$bin" -q -f stack.yaml export k8s --namespace shop -o "$work/k8s-namespace.yaml"
"$bin" -q -f stack.yaml export compose -o "$work/compose.yaml"
checkov() { command checkov --skip-download --quiet --compact --skip-check "$skip" "$@"; }
checkov --framework kubernetes -f "$work/k8s.yaml" -f "$work/k8s-namespace.yaml"
checkov -f "$work/compose.yaml"
checkov --framework dockerfile -f Dockerfile
