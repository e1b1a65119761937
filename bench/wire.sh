#!/usr/bin/env bash
# What a wire-fault proxy with no toxic adds per hop (SPEC section 13: at most 100 µs p50):
# wrk at one connection on payment's GET /healthz straight to payment, then through the proxy
# of `shop chaos net payment latency --delay 0ms` (a toxic that does nothing), in the same run.
# Called by bench/run.sh with the running stack: bench/wire.sh BIN STATE_DIR; prints one row.
set -euo pipefail
bin="$1"; state="$2"; duration="${DURATION:-10s}"
shop() { "$bin" --file stack.yaml --state-dir "$state" "$@"; }
addr() { shop ps --json | python3 -c "import json,sys; print([r['address'] for r in json.load(sys.stdin) if r['instance']=='$1'][0])"; }
direct="$(addr payment)"; registry="$(addr registry)"
shop chaos net payment latency --delay 0ms -q >/dev/null
# Any named caller is handed the proxy of a fault without --from.
proxy="$(curl -s "http://$registry/v1/instances?caller=bench" | python3 -c "import json,sys; print([r['address'] for r in json.load(sys.stdin) if r['instance']=='payment'][0])")"
out="$(mktemp -d)"
wrk -t1 -c1 -d"$duration" --latency "http://$direct/healthz" > "$out/direct.txt"
wrk -t1 -c1 -d"$duration" --latency "http://$proxy/healthz" > "$out/proxy.txt"
shop chaos clear -q >/dev/null
python3 - "$out" <<'PY'
import re, sys
def pct(path):
    text = open(path).read()
    us = lambda v, u: float(v) * {"us": 1, "ms": 1000, "s": 1e6}[u]
    return {m.group(1): us(m.group(2), m.group(3)) for m in re.finditer(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", text)}
d, p = pct(sys.argv[1] + "/direct.txt"), pct(sys.argv[1] + "/proxy.txt")
print(f"| wire proxy, no toxic, per hop (c=1) | p50 +{p['50'] - d['50']:.0f} µs, p99 +{p['99'] - d['99']:.0f} µs "
      f"(direct p50 {d['50']:.0f} µs / p99 {d['99']:.0f} µs; via proxy {p['50']:.0f} / {p['99']:.0f} µs) |")
PY
rm -rf "$out"
