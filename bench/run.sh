#!/usr/bin/env bash
# The benchmark of SPEC section 11, in one run on one machine: the shipped stack in a temp state
# dir, the gateway's single-hop rate (GET /healthz) and the full-saga rate (POST /orders), both
# with wrk at concurrency 32, their ratio, latency, confirmed vs failed, `up -d` and `down`
# times, and each service's resident memory idle and after the load.
#
# Usage: bench/run.sh            (DURATION=10s CONNECTIONS=32 ROUNDS=3 bench/run.sh to change the run)
# Writes bench/results.json and prints a markdown summary.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-10s}"
connections="${CONNECTIONS:-32}"
if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
fi
cargo build --release --quiet
bin="$PWD/target/release/shop"
state="$(mktemp -d)"
work="$(mktemp -d)"
shop() { "$bin" --file stack.yaml --state-dir "$state" "$@"; }
trap 'shop down -q >/dev/null 2>&1 || true; rm -rf "$state" "$work"' EXIT

ms() { echo $(( $(date +%s%N) / 1000000 )); }
rss() { # "service=KB ..." for every instance
  shop ps --json | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    kb, pid, name = 0, r["pid"], r["instance"]
    try:
        for line in open("/proc/%s/status" % pid):
            if line.startswith("VmRSS:"): kb = int(line.split()[1])
    except Exception: pass
    print("%s=%d" % (name, kb))'
}

t0=$(ms); shop up -d -q >/dev/null; t1=$(ms)
up_ms=$((t1 - t0))
sleep 1
rss > "$work/rss_idle"

cat > "$work/order.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"items":[{"product_id":"sku-load","quantity":1}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer dev-token-alice"
LUA
wrk -t1 -c"$connections" -d2s http://127.0.0.1:8080/healthz >/dev/null   # warm-up
# Each measure runs ROUNDS times (default 3) and the median round is reported: the machine is
# shared, and one round can be off by 15% either way.
rounds="${ROUNDS:-3}"
median() { # $1 = prefix: copies the round with the median rate to $1.txt
  for f in "$1".*.txt; do echo "$(grep -oP 'Requests/sec:\s+\K[\d.]+' "$f") $f"; done | sort -n | awk -v n="$rounds" 'NR == int((n + 1) / 2) {print $2}' | xargs -I{} cp {} "$1.txt"
}
for i in $(seq "$rounds"); do
  wrk -t1 -c"$connections" -d"$duration" --latency http://127.0.0.1:8080/healthz > "$work/healthz.$i.txt"
done
median "$work/healthz"
wrk -t1 -c"$connections" -d2s -s "$work/order.lua" http://127.0.0.1:8080/orders >/dev/null   # warm-up
before=$(python3 -c "import sqlite3; print(sqlite3.connect('file:$state/data/order.db?mode=ro', uri=True).execute('select count(*) from orders').fetchone()[0])")
for i in $(seq "$rounds"); do
  wrk -t1 -c"$connections" -d"$duration" --latency -s "$work/order.lua" http://127.0.0.1:8080/orders > "$work/orders.$i.txt"
done
median "$work/orders"
rss > "$work/rss_load"
bench/wire.sh "$bin" "$state" | tee "$work/wire.md"   # SPEC 13: proxy overhead per hop, same run
shop inspect invariants --settle 30s --json > "$work/invariants.json" || true
t2=$(ms); shop down -q; t3=$(ms)
down_ms=$((t3 - t2))

python3 - "$work" "$state" "$up_ms" "$down_ms" "$before" "$connections" "$duration" <<'PY'
import json, re, sqlite3, sys, platform, os
work, state, up_ms, down_ms, before, conns, duration = sys.argv[1:]
def wrk(path):
    text = open(path).read()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    def ms(v, unit):
        return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    pct = {m.group(1): ms(m.group(2), m.group(3)) for m in re.finditer(r"\s(50|75|90|99)%\s+([\d.]+)(us|ms|s)", text)}
    mx = re.search(r"Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {"rate_per_s": rate, "p50_ms": pct.get("50"), "p90_ms": pct.get("90"), "p99_ms": pct.get("99"),
            "max_ms": ms(*mx.groups()) if mx else None, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1).strip() if errors else ""}
def rss(path):
    return {k: int(v) // 1024 for k, v in (l.strip().split("=") for l in open(path) if "=" in l)}
db = sqlite3.connect(f"file:{state}/data/order.db?mode=ro", uri=True)
by_status = dict(db.execute("select status, count(*) from orders group by status").fetchall())
total = sum(by_status.values()) - int(before)  # all rounds
healthz, orders = wrk(f"{work}/healthz.txt"), wrk(f"{work}/orders.txt")
inv = json.load(open(f"{work}/invariants.json")) if os.path.getsize(f"{work}/invariants.json") else {"ok": False}
result = {
    "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
    "connections": int(conns), "duration": duration,
    "healthz": healthz, "orders": orders,
    "saga_to_hop_ratio": round(orders["rate_per_s"] / healthz["rate_per_s"], 4),
    "orders_in_run": total, "orders_by_status_all": by_status,
    "invariants_ok": inv.get("ok"),
    "up_ms": int(up_ms), "down_ms": int(down_ms),
    "rss_mb_idle": rss(f"{work}/rss_idle"), "rss_mb_after_load": rss(f"{work}/rss_load"),
}
json.dump(result, open("bench/results.json", "w"), indent=2)
print(f"machine: {result['machine']}")
print(f"| measure | value |\n|---|---|")
print(f"| GET /healthz (1 hop), c={conns} | {healthz['rate_per_s']:.0f} req/s, p50 {healthz['p50_ms']} ms, p99 {healthz['p99_ms']} ms |")
print(f"| POST /orders (full saga), c={conns} | {orders['rate_per_s']:.0f} orders/s, p50 {orders['p50_ms']} ms, p99 {orders['p99_ms']} ms, max {orders['max_ms']} ms |")
print(f"| saga / hop ratio | {result['saga_to_hop_ratio']} |")
print(f"| orders in the measured rounds | {total} ({by_status}), non-2xx in the median round {orders['non_2xx']} |")
print(f"| invariants after the run | {'PASS' if inv.get('ok') else 'FAIL'} |")
print(f"| up -d to all healthy / down | {up_ms} ms / {down_ms} ms |")
print(f"| resident memory idle (MB) | {result['rss_mb_idle']} |")
print(f"| resident memory after load (MB) | {result['rss_mb_after_load']} |")
PY
