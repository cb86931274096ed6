#!/usr/bin/env bash
# The cost of acting for a user: GetUser at 16 in flight on one userdir
# release build (BIN), sent a key alone ("key") or a key that acts for a
# user with x-userdir-acting-user ("acting": one more indexed read of that
# user per call), interleaved round by round on fresh SQLite files, with
# loadgen (LOADGEN; build it from ../shared/tools/loadgen with
# LOADGEN_PROTO_DIR=proto cargo build --release). JSON lines in $OUT.
set -euo pipefail
: "${BIN:?a release userdir}" "${LOADGEN:?loadgen}"
OUT=${OUT:-/tmp/actingcost.jsonl}; : > "$OUT"
OPERATOR=$("$BIN" keys generate 2>/dev/null | head -1)
run() { # label acting?
  local label=$1 acting=$2
  local dir; dir=$(mktemp -d); local port=$((53000 + RANDOM % 1000))
  USERDIR_OPERATOR_KEY=$OPERATOR $BIN serve --listen 127.0.0.1:$port --database-url "sqlite://$dir/u.db?mode=rwc" > $dir/log 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  $LOADGEN setup --target http://127.0.0.1:$port --tenant bench --users 2000 --concurrency 32 --names $dir/names \
    --header "authorization=Bearer $OPERATOR" > /dev/null
  local key; key=$("$BIN" keys create --server http://127.0.0.1:$port --api-key "$OPERATOR" --name console \
    --tenant bench --scope read --act-as-users 2>/dev/null | grep -o 'udk_[A-Za-z0-9_-]*' | head -1)
  local headers=(--header "authorization=Bearer $key")
  if [ "$acting" = yes ]; then headers+=(--header "x-userdir-acting-user=$(head -1 $dir/names)"); fi
  $LOADGEN get --target http://127.0.0.1:$port --names $dir/names --concurrency 16 --duration 10 --warmup 2 \
    --server-pid $pid --label "$label" --json-out $OUT "${headers[@]}" | grep -v '^{'
  kill $pid; wait $pid 2>/dev/null || true; rm -rf $dir
}
for round in $(seq "${ROUNDS:-3}"); do
  run "key-r$round" no
  run "acting-r$round" yes
done
