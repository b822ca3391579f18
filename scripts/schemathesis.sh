#!/usr/bin/env bash
# Runs schemathesis (every check: `[checks] enabled = true` in scripts/schemathesis.toml, the
# stateful phase on, a fixed seed and a bounded number
# of examples) against `keygate serve` on a temporary SQLite database and a loopback port,
# signed in with Basic credentials and, where a route takes one, a bearer token (and, on
# `POST /api/v1/leaks`, served for the run, a reporter key). Exits
# non-zero on any finding. The server is stopped on the way out, whatever happens.
#
#   bash scripts/schemathesis.sh            # uses target/debug/keygate (cargo build first)
#   KEYGATE_BIN=path/to/keygate bash scripts/schemathesis.sh
#
# Settings: SCHEMATHESIS_VERSION (the pinned version checked for), SCHEMATHESIS_EXAMPLES
# (per operation, default 30), SCHEMATHESIS_SEED (default 19), SCHEMATHESIS_TIMEOUT (the
# longest the run may take, in seconds, default 240; a run takes about one minute), KEYGATE_FUZZ_PORT (default: a free one).
set -euo pipefail

cd "$(dirname "$0")/.."

version="${SCHEMATHESIS_VERSION:-4.32.5}"
bin="${KEYGATE_BIN:-target/debug/keygate}"
# A free loopback port, unless one is given.
port="${KEYGATE_FUZZ_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
examples="${SCHEMATHESIS_EXAMPLES:-30}"
seed="${SCHEMATHESIS_SEED:-19}"
limit="${SCHEMATHESIS_TIMEOUT:-240}"

if [ "$(schemathesis --version 2>/dev/null)" != "schemathesis, version $version" ]; then
    echo "installing schemathesis $version"
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi
[ -x "$bin" ] || { echo "no keygate binary at $bin: run cargo build --features server" >&2; exit 1; }

dir="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

export KEYGATE_DB="$dir/keygate.db"
export KEYGATE_FUZZ_EMAIL="admin@example.com"
KEYGATE_FUZZ_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
export KEYGATE_FUZZ_PASSWORD

# The bearer token belongs to an account of its own, with every permission.
printf '%s\n' "$KEYGATE_FUZZ_PASSWORD" |
    "$bin" user add --password-stdin --permissions '*' bearer@example.com >/dev/null
KEYGATE_FUZZ_TOKEN="$("$bin" token create --owner bearer@example.com --name fuzz --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
export KEYGATE_FUZZ_TOKEN
# Leak reports are served too (they are off by default): a reporter key of this run's own.
KEYGATE_FUZZ_REPORTER_KEY="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
export KEYGATE_FUZZ_REPORTER_KEY

# The failure and rate limits are raised out of the way: the run sends thousands of
# requests, many with wrong credentials on purpose, from one address, and a 429 would
# hide every answer after it. Every other setting is the default.
KEYGATE_ADDR="127.0.0.1:$port" \
    KEYGATE_ADMIN_EMAIL="$KEYGATE_FUZZ_EMAIL" \
    KEYGATE_ADMIN_PASSWORD="$KEYGATE_FUZZ_PASSWORD" \
    KEYGATE_FAILURE_LIMIT=1000000 \
    KEYGATE_RATE_LIMIT=1000000 \
    KEYGATE_LOG_FORMAT=json \
    KEYGATE_LEAK_REPORTER_KEY="$KEYGATE_FUZZ_REPORTER_KEY" \
    "$bin" serve >"$dir/server.log" 2>&1 &
server=$!

for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
        break
    fi
    kill -0 "$server" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "keygate serve did not become ready" >&2; cat "$dir/server.log" >&2; exit 1; }

started=$SECONDS
status=0
config="$PWD/scripts/schemathesis.toml"
# Run from the temporary directory: schemathesis keeps a cache (.schemathesis/) where it runs.
(cd "$dir" && timeout "$limit" schemathesis --config-file "$config" run \
    "http://127.0.0.1:$port/api/v1/openapi.json" \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 1 \
    --no-color) || status=$?
echo "schemathesis: exit $status in $((SECONDS - started)) s"
if [ "$status" -ne 0 ]; then
    echo "--- last lines of the server log ---"
    tail -n 40 "$dir/server.log"
fi
exit "$status"
