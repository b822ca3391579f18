#!/usr/bin/env bash
# Chaos under load: two `keygate serve` instances on a PostgreSQL and a Redis of their own,
# under a steady load of valid, invalid and revoked tokens while tokens are created and
# revoked, and while PostgreSQL is restarted, Redis is restarted, the revocation listeners'
# backends are ended (pg_terminate_backend) and one instance is killed (SIGKILL) and started
# again. Prints a report (a table and one JSON line) and exits 1 when a goal is missed:
# no 5xx other than 503, no token let in more than 1 s after its revoke returned, right
# answers again within 1 s of each service being back, no wrong answer outside the faults.
#
#   bash scripts/chaos.sh                 # the chaos run (about 75 s after the build)
#   MODE=soak MINUTES=10 bash scripts/chaos.sh   # the soak (what scripts/soak.sh runs)
#
# Builds `keygate` and the harness (examples/chaos.rs) in release, checks that nothing is
# left from an earlier run (a private PostgreSQL or Redis on its ports, a temporary
# directory), then runs the harness, which starts and stops everything itself. Needs
# PostgreSQL's server binaries (initdb, pg_ctl: PG_BIN, default /usr/lib/postgresql/15/bin),
# psql, redis-server and redis-cli. As root, PostgreSQL runs as the `postgres` user.
# Loopback only; the harness stops by itself (a deadline), stopping what it started.
#
# Knobs: MODE (chaos), RATE (300 requests a second over both instances), MINUTES (soak: 10),
# PG_PORT (55432), REDIS_PORT (56379), PORT (38080; the second instance on the next), PG_BIN,
# KEEP=1 (keep the temporary directory with every server's log).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-chaos}
RATE=${RATE:-300}
MINUTES=${MINUTES:-10}
PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}
PORT=${PORT:-38080}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

log() { echo "chaos.sh: $*" >&2; }
die() {
  log "error: $*"
  exit 2
}

case $MODE in chaos | soak) ;; *) die "MODE must be chaos or soak, not '$MODE'" ;; esac
for tool in "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/pg_isready" "$PG_BIN/psql"; do
  [ -x "$tool" ] || command -v "$(basename "$tool")" >/dev/null 2>&1 || die "$tool is missing (PostgreSQL's server package; set PG_BIN)"
done
for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done

# Leftovers of an interrupted run: the harness removes its directory and stops its servers,
# but a SIGKILLed harness cannot.
for dir in "${TMPDIR:-/tmp}"/keygate-chaos-*; do
  [ -d "$dir" ] || continue
  if [ -f "$dir/pg/postmaster.pid" ]; then
    log "stopping the PostgreSQL left in $dir"
    if [ "$(id -u)" -eq 0 ]; then
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
    else
      "$PG_BIN/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
  fi
  if [ -f "$dir/redis.pid" ]; then
    log "stopping the Redis left in $dir"
    kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  fi
  log "removing $dir"
  rm -rf "$dir"
done
for port in "$PG_PORT" "$REDIS_PORT" "$PORT" "$((PORT + 1))"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use (another run, or choose other ports)"
  fi
done

log "building keygate and the harness (release)"
cargo build --release --quiet --features server --bin keygate --example chaos

args=("$MODE" --bin target/release/keygate --rate "$RATE" --minutes "$MINUTES"
  --pg-port "$PG_PORT" --redis-port "$REDIS_PORT" --port "$PORT" --pg-bin "$PG_BIN")
[ "${KEEP:-0}" = 1 ] && args+=(--keep)
log "machine load before: $(cut -d' ' -f1-3 /proc/loadavg)"
exec target/release/examples/chaos "${args[@]}"
