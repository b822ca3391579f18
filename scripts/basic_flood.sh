#!/usr/bin/env bash
# Measures how the reference server holds up under a flood of HTTP Basic requests (each one
# an argon2 verification): Basic requests per second it sustains, and the latency of bearer
# token requests (p50/p99) with and without the flood. Loopback only, bounded in count and
# time. Uses curl's --parallel (curl >= 7.66).
#
#   bash scripts/basic_flood.sh                 # debug build
#   PROFILE=release bash scripts/basic_flood.sh # optimised build
#
# Knobs: TOKEN_REQS (default 10000), TOKEN_PAR (4), FLOOD_PAR (32), FLOOD_SECS (10: how
# long the flood lasts; the token requests run inside it, starting after 1 s).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
TOKEN_REQS=${TOKEN_REQS:-10000}
TOKEN_PAR=${TOKEN_PAR:-4}
FLOOD_PAR=${FLOOD_PAR:-32}
FLOOD_SECS=${FLOOD_SECS:-10}

if [ "$PROFILE" = release ]; then
  cargo build --quiet --release --example server
  bin=target/release/examples/server
else
  cargo build --quiet --example server
  bin=target/debug/examples/server
fi

tmp=$(mktemp -d)
PASS='flood test password'
KEYGATE_DB="$tmp/keygate.db" KEYGATE_ADDR=127.0.0.1:0 KEYGATE_ADMIN_PASSWORD="$PASS" \
  RUST_LOG=warn "$bin" >"$tmp/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 200); do
  grep -q 'reference server on' "$tmp/server.log" 2>/dev/null && break
  sleep 0.1
done
KG=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/server.log" | head -1)
TOKEN=$(curl -sS -u "admin@example.com:$PASS" -d 'description=flood probe' "$KG/api/v1/tokens" \
  | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$TOKEN" ] || { echo "could not create a token" >&2; exit 1; }

# Token requests: TOKEN_REQS GETs of /api/v1/me, TOKEN_PAR at a time over kept-alive
# connections; prints "<http code> <seconds>" per request.
token_run() {
  curl -sS --no-progress-meter --parallel --parallel-max "$TOKEN_PAR" -H "Authorization: Bearer $TOKEN" \
    -o /dev/null -w '%{http_code} %{time_total}\n' "$KG/api/v1/me?i=[1-$TOKEN_REQS]"
}

summary() { # $1: file of "<code> <seconds>", $2: wall seconds
  python3 - "$1" "$2" <<'PY'
import sys
rows=[l.split() for l in open(sys.argv[1]) if len(l.split())==2]
wall=float(sys.argv[2])
lat=sorted(float(t)*1000 for c,t in rows if c=="200")
bad=sum(1 for c,_ in rows if c!="200")
q=lambda p: lat[min(len(lat)-1,int(p*len(lat)))]
print(f"  {len(lat)} ok, {bad} not 200, {len(lat)/wall:.0f} req/s; "
      f"p50 {q(.50):.2f} ms, p90 {q(.90):.2f} ms, p99 {q(.99):.2f} ms, max {lat[-1]:.2f} ms")
PY
}

now() { date +%s.%N; }

echo "server: $bin ($PROFILE), $(nproc) cores, default password-check concurrency"
echo "token requests: $TOKEN_REQS x GET /api/v1/me, $TOKEN_PAR in parallel"

token_run >/dev/null 2>&1 || true # warm-up
t0=$(now); token_run >"$tmp/base.txt"; t1=$(now)
echo "without flood:"
summary "$tmp/base.txt" "$(echo "$t1 - $t0" | bc)"

# The flood: Basic-authenticated GETs of /api/v1/tokens, FLOOD_PAR at a time, for
# FLOOD_SECS seconds (the request count is only an upper bound).
f0=$(now)
timeout "$FLOOD_SECS" stdbuf -oL curl -sS --no-progress-meter --parallel --parallel-max "$FLOOD_PAR" \
  -u "admin@example.com:$PASS" -o /dev/null -w '%{http_code} %{time_total}\n' \
  "$KG/api/v1/tokens?i=[1-1000000]" >"$tmp/flood.txt" 2>/dev/null &
flood=$!
sleep 1 # let the flood saturate the password checks
t0=$(now); token_run >"$tmp/during.txt"; t1=$(now)
wait "$flood" || true
f1=$(now)
echo "during the Basic flood ($FLOOD_PAR parallel Basic requests):"
summary "$tmp/during.txt" "$(echo "$t1 - $t0" | bc)"
python3 - "$tmp/flood.txt" "$(echo "$f1 - $f0" | bc)" <<'PY'
import sys, collections
rows=[l.split() for l in open(sys.argv[1]) if len(l.split())==2]
wall=float(sys.argv[2])
codes=collections.Counter(c for c,_ in rows)
ok=codes.get("200",0)
lat=sorted(float(t)*1000 for c,t in rows if c=="200")
p50=lat[len(lat)//2] if lat else 0
print(f"basic flood: {len(rows)} requests in {wall:.1f} s: {ok} ok = {ok/wall:.1f} Basic req/s "
      f"(p50 {p50:.0f} ms), status counts {dict(codes)}")
PY
