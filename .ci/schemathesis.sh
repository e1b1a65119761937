#!/usr/bin/env bash
# Runs Schemathesis against the gateway's own OpenAPI document on a throw-away stack (free
# ports, a temporary state dir), authenticated as a fixture user, with every check and every
# phase (examples, coverage, fuzzing, and stateful: orders placed, then read back through the
# links the document declares). A fixed seed and a bounded example count keep CI runs
# repeatable and short.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps.sh
# Absolute: the script changes directory before the last command and the clean-up use it.
bin="$(realpath "${SHOP_BIN:-target/debug/shop}")"
work="$(mktemp -d)"
# The shipped topology on free ports, with fixtures by absolute path.
sed -e "s#port: 7070#port: 0#" -e "s#port: 8080#port: 0#" -e "s#fixtures: fixtures/#fixtures: $PWD/fixtures/#" stack.yaml > "$work/stack.yaml"
shop() { "$bin" --file "$work/stack.yaml" --state-dir "$work/state" "$@"; }
trap 'shop down --purge -q >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
shop up -d -q >/dev/null
gateway="http://$(shop ps --json | python3 -c 'import json,sys; print(next(r["address"] for r in json.load(sys.stdin) if r["service"] == "gateway"))')"
# The document's `servers` names the gateway's real address, so no --url is needed. Run from
# the work dir: Schemathesis keeps its cache (.schemathesis/) in the current directory.
config="$PWD/.ci/schemathesis.toml"
cd "$work"
st --config-file "$config" run "$gateway/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    -H "Authorization: Bearer dev-token-alice" \
    --max-examples 50 --seed 20261127 --no-color
# Schemathesis placed real orders: they must leave the databases consistent too.
shop inspect invariants --settle 30s
