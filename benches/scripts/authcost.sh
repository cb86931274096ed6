#!/usr/bin/env bash
# The cost of authentication: GetUser at 16 in flight against a userdir
# build from before API keys (BASE_BIN, e.g. 0f24be5) and one that checks
# them (NEW_BIN, sent a key), interleaved round by round on fresh SQLite
# files, with loadgen (LOADGEN; build it from ../shared/tools/loadgen with
# LOADGEN_PROTO_DIR=proto cargo build --release). JSON lines in $OUT.
set -euo pipefail
: "${BASE_BIN:?a release userdir without authentication}" "${NEW_BIN:?a release userdir with it}" "${LOADGEN:?loadgen}"
LG=$LOADGEN
OUT=${OUT:-/tmp/authcost.jsonl}; : > "$OUT"
KEY=$("$NEW_BIN" keys generate 2>/dev/null | head -1)
run() { # label bin header...
  local label=$1 bin=$2; shift 2
  local dir; dir=$(mktemp -d); local port=$((52000 + RANDOM % 1000))
  USERDIR_OPERATOR_KEY=$KEY $bin serve --listen 127.0.0.1:$port --database-url "sqlite://$dir/u.db?mode=rwc" > $dir/log 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  $LG setup --target http://127.0.0.1:$port --tenant bench --users 2000 --concurrency 32 --names $dir/names "$@" > /dev/null
  $LG get --target http://127.0.0.1:$port --names $dir/names --concurrency 16 --duration 10 --warmup 2 --server-pid $pid --label "$label" --json-out $OUT "$@" | grep -v '^{'
  kill $pid; wait $pid 2>/dev/null || true; rm -rf $dir
}
for round in $(seq "${ROUNDS:-3}"); do
  run "base-r$round" "$BASE_BIN"
  run "auth-r$round" "$NEW_BIN" --header "authorization=Bearer $KEY"
done
