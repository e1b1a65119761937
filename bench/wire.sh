#!/usr/bin/env bash
# What a wire-fault proxy with no toxic adds per hop (SPEC section 13: at most 100 µs p50):
# wrk at one connection on payment's GET /healthz straight to payment, then through the proxy
# of `shop chaos net payment latency --delay 0ms --toxicity 0` (a toxic that applies to no
# connection, so the proxy relays plainly), in the same run against the same process.
#
# Usage:
#   bench/wire.sh                        builds the release binary (honors CARGO_TARGET_DIR),
#                                        starts its own stack in a temp dir, measures, stops it
#   bench/wire.sh BIN STATE_DIR [FILE]   measures on a running stack (bench/run.sh does this)
#   DURATION=10s                         how long each wrk run lasts
# Either way it prints one markdown row and writes the figures into bench/results.json under
# `proxy_hop` (the other keys are kept).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
duration="${DURATION:-10s}"
own=""
if [ $# -ge 2 ]; then
  bin="$1"; state="$2"; file="${3:-stack.yaml}"
else
  cargo build --release --quiet --bin shop
  target="${CARGO_TARGET_DIR:-target}"
  case "$target" in /*) ;; *) target="$repo/$target" ;; esac
  bin="$target/release/shop"
  own="$(mktemp -d)"; state="$own/state"; file="$own/stack.yaml"
  # Port 0 for the gateway and registry: another stack may hold 8080 or 7070.
  sed -e "s|port: 8080|port: 0|" -e "s|port: 7070|port: 0|" -e "s|fixtures: fixtures/|fixtures: $repo/fixtures/|" \
    stack.yaml > "$file"
fi
shop() { "$bin" --file "$file" --state-dir "$state" "$@"; }
out="$(mktemp -d)"
cleanup() {
  shop chaos clear -q >/dev/null 2>&1 || true
  if [ -n "$own" ]; then shop down -q >/dev/null 2>&1 || true; rm -rf "$own"; fi
  rm -rf "$out"
}
trap cleanup EXIT
[ -n "$own" ] && shop up -d -q >/dev/null

addr() { shop ps --json | python3 -c "import json,sys; print([r['address'] for r in json.load(sys.stdin) if r['instance']=='$1'][0])"; }
direct="$(addr payment)"; registry="$(addr registry)"
shop chaos net payment latency --delay 0ms --toxicity 0 -q >/dev/null
# Any named caller is handed the proxy of a fault without --from.
proxy="$(curl -s "http://$registry/v1/instances?caller=bench" | python3 -c "import json,sys; print([r['address'] for r in json.load(sys.stdin) if r['instance']=='payment'][0])")"
if [ "$proxy" = "$direct" ]; then echo "bench/wire.sh: the registry handed out no proxy for payment" >&2; exit 1; fi
wrk -t1 -c1 -d"$duration" --latency "http://$direct/healthz" > "$out/direct.txt"
wrk -t1 -c1 -d"$duration" --latency "http://$proxy/healthz" > "$out/proxy.txt"
shop chaos clear -q >/dev/null
python3 - "$out" "$repo/bench/results.json" "$duration" <<'PY'
import json, os, re, sys
out, results, duration = sys.argv[1:]
def pct(path):
    text = open(path).read()
    us = lambda v, u: float(v) * {"us": 1, "ms": 1000, "s": 1e6}[u]
    return {m.group(1): us(m.group(2), m.group(3)) for m in re.finditer(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", text)}
d, p = pct(out + "/direct.txt"), pct(out + "/proxy.txt")
hop = {
    "what": "payment GET /healthz, wrk -t1 -c1, straight vs through a wire proxy with no toxic acting",
    "duration": duration,
    "added_p50_us": round(p["50"] - d["50"], 1), "added_p99_us": round(p["99"] - d["99"], 1),
    "direct_p50_us": d["50"], "direct_p99_us": d["99"], "proxy_p50_us": p["50"], "proxy_p99_us": p["99"],
    "target_p50_us": 100, "meets_target": p["50"] - d["50"] <= 100,
}
# Read-modify-write: bench/run.sh owns the other keys.
data = json.load(open(results)) if os.path.exists(results) and os.path.getsize(results) else {}
data["proxy_hop"] = hop
with open(results + ".tmp", "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
os.replace(results + ".tmp", results)
print(f"| wire proxy, no toxic, per hop (c=1) | p50 {hop['added_p50_us']:+.0f} µs, p99 {hop['added_p99_us']:+.0f} µs "
      f"(direct p50 {d['50']:.0f} µs / p99 {d['99']:.0f} µs; via proxy {p['50']:.0f} / {p['99']:.0f} µs) |")
PY
