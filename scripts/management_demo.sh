#!/usr/bin/env bash
# Runs the curl session of docs/management.md against a fresh reference server on a free
# loopback port and a temporary database, printing each command and its real output.
#
#   bash scripts/management_demo.sh > /tmp/session.md
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --example server
tmp=$(mktemp -d)
log="$tmp/server.log"
KEYGATE_DB="$tmp/keygate.db" KEYGATE_ADDR=127.0.0.1:0 \
  KEYGATE_ADMIN_PASSWORD='correct horse battery staple' RUST_LOG=info \
  target/debug/examples/server >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
  grep -q 'reference server on' "$log" 2>/dev/null && break
  sleep 0.1
done
KG=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1)
export KG
PASS='correct horse battery staple'

run() {
  # Prints the command as typed (with $KG, $TOKEN, … unexpanded), then its output.
  printf '$ %s\n' "$1"
  eval "$1"
  printf '\n\n'
}

echo "KG=$KG"
echo
created=$(curl -sS -i -u "admin@example.com:$PASS" -d 'description=My automation script' "$KG/api/v1/tokens")
printf '$ curl -sS -i -u '\''admin@example.com:%s'\'' -d '\''description=My automation script'\'' $KG/api/v1/tokens\n%s\n\n' "$PASS" "$created"
TOKEN=$(tail -1 <<<"$created" | jq -r .token); ID=$(tail -1 <<<"$created" | jq -r .id)
export TOKEN ID
printf '$ TOKEN=%s\n$ ID=%s\n\n' "${TOKEN:0:12}…" "$ID"
run "curl -sS -H \"Authorization: Bearer \$TOKEN\" \$KG/api/v1/me"
run "curl -sS -H \"Authorization: Bearer \$TOKEN\" \$KG/api/v1/apps"
run "curl -sS -i -H \"Authorization: Bearer \$TOKEN\" -d 'description=From a token' \$KG/api/v1/tokens"
run "curl -sS -i -u 'admin@example.com:wrong' -d 'description=x' \$KG/api/v1/tokens"
run "curl -sS -H \"Authorization: Bearer \$TOKEN\" \$KG/api/v1/tokens"
rotated=$(curl -sS -i -u "admin@example.com:$PASS" -d 'grace_seconds=60' "$KG/api/v1/tokens/$ID/rotate")
printf '$ curl -sS -i -u '\''admin@example.com:%s'\'' -d '\''grace_seconds=60'\'' $KG/api/v1/tokens/$ID/rotate\n%s\n\n' "$PASS" "$rotated"
NEW_TOKEN=$(tail -1 <<<"$rotated" | jq -r .token); NEW_ID=$(tail -1 <<<"$rotated" | jq -r .id)
export NEW_TOKEN NEW_ID
run "curl -sS -o /dev/null -w '%{http_code}\n' -H \"Authorization: Bearer \$TOKEN\" \$KG/api/v1/me"
run "curl -sS -o /dev/null -w '%{http_code}\n' -H \"Authorization: Bearer \$NEW_TOKEN\" \$KG/api/v1/me"
run "curl -sS -i -u 'admin@example.com:$PASS' -X DELETE \$KG/api/v1/tokens/\$NEW_ID"
run "curl -sS -i -H \"Authorization: Bearer \$NEW_TOKEN\" \$KG/api/v1/me"
run "curl -sS -i -u 'admin@example.com:$PASS' -X DELETE \$KG/api/v1/tokens/\$NEW_ID"
run "curl -sS -u 'admin@example.com:$PASS' \$KG/api/v1/tokens"
kill -TERM "$server"; wait "$server" || true
echo '# server log:'
sed 's/\x1b\[[0-9;]*m//g' "$log"
