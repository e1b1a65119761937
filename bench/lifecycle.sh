#!/usr/bin/env bash
# Measures, for the shipped stack.yaml and a release build: the time from `shop up -d` to every
# service healthy, and the time `shop down` takes. Prints the median and worst of RUNS runs.
# Usage: bench/lifecycle.sh   (RUNS=20 bench/lifecycle.sh for more runs)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="$PWD/target/release/shop"
state="$(mktemp -d)"
trap '"$bin" --file stack.yaml --state-dir "$state" down --purge -q >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
runs="${RUNS:-10}"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
for _ in $(seq "$runs"); do
  t0=$(ms); "$bin" --file stack.yaml --state-dir "$state" up -d -q >/dev/null
  t1=$(ms); "$bin" --file stack.yaml --state-dir "$state" down -q
  t2=$(ms); echo "$((t1 - t0)) $((t2 - t1))"
done | python3 -c '
import statistics, sys
rows = [tuple(map(int, l.split())) for l in sys.stdin if l.strip()]
up, down = sorted(r[0] for r in rows), sorted(r[1] for r in rows)
print(f"runs: {len(rows)}")
print(f"up -d to all healthy: median {statistics.median(up):.0f} ms, worst {up[-1]} ms")
print(f"down:                 median {statistics.median(down):.0f} ms, worst {down[-1]} ms")
'
