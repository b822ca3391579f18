#!/usr/bin/env bash
# End-to-end load test: how many requests a second does a server lose when keygate's
# AuthLayer is on? Goal: with auth (every policy on), at least 95 % of the requests/s
# without.
#
#   bash scripts/load.sh                       # off / all, alternating, 3 rounds
#   MODES="off on all" ROUNDS=5 bash scripts/load.sh
#
# Builds examples/load_target.rs in release once, then for ROUNDS rounds runs it in each
# of MODES in turn (alternating), each time: pinned to CPU 0 (a single-threaded runtime),
# on loopback only, checked with curl (auth on: no token is 401, the token is 200; auth
# off: both are 200), then loaded with wrk pinned to CPU 1 after a short warm-up. wrk
# sends the same `Authorization: Bearer` header in every mode, so the layer is the only
# difference. The modes are those of the load target: `off` (no layer), `on` (keygate's
# layer alone), `all` (the layer with every per-request policy: rate limit, failure limit,
# allow-list, audit to /dev/null, metrics), `noop` (a layer that does nothing). Prints a
# markdown table (median and best requests/s over the rounds, median p50/p99 latency,
# non-2xx responses, socket errors) and each mode's ratio to `off`, then exits (the server
# is stopped after each run, and on exit or interrupt). Installs wrk from Debian's
# packages when it is missing. On a single CPU, nothing is pinned.
#
# Knobs: MODES ("off all"; the first is the reference), ROUNDS (3), DURATION (10s per
# measured run), WARMUP (2s), THREADS (1), CONNECTIONS (32), PORT (3900). With the
# defaults the runs take about a minute and a half, after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

MODES=${MODES:-off all}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-3900}
# Loopback only: the server never listens on another interface.
ADDR=127.0.0.1:$PORT
URL=http://$ADDR/hello

log() { echo "load.sh: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

case $ROUNDS in '' | *[!0-9]* | 0) die "ROUNDS must be a positive integer, not '$ROUNDS'" ;; esac
read -r -a modes <<<"$MODES"
[ "${#modes[@]}" -ge 2 ] || die "MODES needs at least two modes (the first is the reference), not '$MODES'"
for mode in "${modes[@]}"; do
  case $mode in off | on | all | noop) ;; *) die "unknown mode '$mode' (off, on, all, noop)" ;; esac
done
reference=${modes[0]}
command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install -y curl)"

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    die "wrk is missing and this user can neither install it (not root) nor use sudo; install the Debian package 'wrk'"
  fi
  command -v apt-get >/dev/null 2>&1 || die "wrk is missing and there is no apt-get to install it with; install wrk"
  log "installing wrk (apt-get install -y wrk)"
  if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; then
    log "retrying after apt-get update"
    "${as_root[@]}" apt-get update -qq >/dev/null || true
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
      die "could not install wrk with apt-get; install it by hand and run again"
  fi
  command -v wrk >/dev/null 2>&1 || die "apt-get finished but wrk is still not on PATH"
fi

cpus=$(nproc)
if [ "$cpus" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  server_pin=(taskset -c 0)
  client_pin=(taskset -c 1)
  pinning="server on CPU 0, wrk on CPU 1"
else
  server_pin=()
  client_pin=()
  pinning="none (a single CPU, or no taskset)"
fi

log "building the load target (release)"
cargo build --release --example load_target
bin=${CARGO_TARGET_DIR:-target}/release/examples/load_target
[ -x "$bin" ] || die "built, but found no executable at $bin"

tmp=$(mktemp -d)
chmod 700 "$tmp"
server=
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=
  fi
}
cleanup() {
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

answers() { curl -s -o /dev/null --max-time 1 "$URL"; }

# Starts the server in mode $1 and waits until it answers; sets $server and $token.
start_server() {
  local mode=$1
  if answers; then
    die "something already answers on $ADDR; stop it or pick another PORT"
  fi
  "${server_pin[@]}" "$bin" "$mode" "$ADDR" >"$tmp/out" 2>"$tmp/err" &
  server=$!
  local _
  for _ in $(seq 100); do
    answers && break
    kill -0 "$server" 2>/dev/null || die "the load target (auth $mode) exited: $(cat "$tmp/err")"
    sleep 0.1
  done
  answers || die "the load target (auth $mode) did not answer on $ADDR within 10 s"
  token=$(sed -n 's/^token: //p' "$tmp/out")
  [ -n "$token" ] || die "the load target printed no 'token: ' line"
}

# The HTTP status of GET /hello, with the token when $1 is "token".
status() {
  local auth=()
  [ "$1" = token ] && auth=(-H "Authorization: Bearer $token")
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${auth[@]}" "$URL"
}

check_server() {
  local mode=$1 without with
  without=$(status none)
  with=$(status token)
  if [ "$mode" = on ] || [ "$mode" = all ]; then
    [ "$without" = 401 ] || die "auth $mode: a request without a token got $without, not 401"
  else
    [ "$without" = 200 ] || die "auth $mode: a request without a token got $without, not 200"
  fi
  [ "$with" = 200 ] || die "auth $mode: a request with the token got $with, not 200"
}

# wrk's latency with its unit (e.g. 812.00us, 1.20ms, 2.00s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000
    printf "%.3f", n
  }'
}

run_wrk() { # $1: duration; wrk's report on stdout
  "${client_pin[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" --latency \
    -H "Authorization: Bearer $token" "$URL"
}

# One measured run in mode $1; appends "rps p50_ms p99_ms non2xx socket_errors" to $tmp/$1.
measure() {
  local mode=$1 report rps p50 p99 non2xx errors
  start_server "$mode"
  check_server "$mode"
  run_wrk "$WARMUP" >/dev/null
  report=$(run_wrk "$DURATION")
  stop_server
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$report")
  [ -n "$rps" ] || die "could not read wrk's report: $report"
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$report")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$report")")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$report")
  errors=$(awk '/Socket errors:/ {
    s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s }' <<<"$report")
  echo "$rps $p50 $p99 ${non2xx:-0} ${errors:-0}" >>"$tmp/$mode"
  log "auth $mode: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx ${non2xx:-0}, socket errors ${errors:-0}"
}

median() { # column $1 of file $2
  awk -v c="$1" '{print $c}' "$2" | sort -g | awk '{v[NR] = $1} END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
best() { awk -v c="$1" '$c > m {m = $c} END {print m}' "$2"; }
total() { awk -v c="$1" '{s += $c} END {print s + 0}' "$2"; }

log "CPUs: $cpus, pinning: $pinning, load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
for round in $(seq "$ROUNDS"); do
  for mode in "${modes[@]}"; do
    log "round $round/$ROUNDS, auth $mode"
    measure "$mode"
  done
done

echo "GET /hello, wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up), rounds: $ROUNDS, alternating ${modes[*]}; pinning: $pinning; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
echo
echo "| auth | req/s (median) | req/s (best) | p50 ms (median) | p99 ms (median) | non-2xx | socket errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for mode in "${modes[@]}"; do
  printf '| %s | %.0f | %.0f | %.3f | %.3f | %d | %d |\n' "$mode" \
    "$(median 1 "$tmp/$mode")" "$(best 1 "$tmp/$mode")" \
    "$(median 2 "$tmp/$mode")" "$(median 3 "$tmp/$mode")" \
    "$(total 4 "$tmp/$mode")" "$(total 5 "$tmp/$mode")"
done
echo
for mode in "${modes[@]:1}"; do
  awk -v m="$mode" -v ref="$reference" \
    -v on="$(median 1 "$tmp/$mode")" -v off="$(median 1 "$tmp/$reference")" \
    -v bon="$(best 1 "$tmp/$mode")" -v boff="$(best 1 "$tmp/$reference")" 'BEGIN {
    r = 100 * on / off
    printf "%s/%s: %.1f %% (median), %.1f %% (best); goal >= 95 %%: %s\n", m, ref, r,
      100 * bon / boff, (r >= 95 ? "met" : "NOT met")
  }'
done

bad=0
for mode in "${modes[@]}"; do
  bad=$((bad + $(total 4 "$tmp/$mode")))
done
if [ "$bad" -gt 0 ]; then
  die "$bad responses were not 2xx: the numbers above are not a measurement of /hello"
fi
