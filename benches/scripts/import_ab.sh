#!/usr/bin/env bash
# Two builds of userdir importing the same CSV into fresh databases, in turn,
# in one run (the machine is noisy: compare rates from the same run only).
#
#   bash benches/scripts/import_ab.sh OLD_BIN NEW_BIN [ROWS] [ROUNDS]
#
# Backends: sqlite always; PostgreSQL too when PG_URL answers
# (default postgres://postgres@127.0.0.1:5432/test). Prints one line a run.
set -euo pipefail
OLD=$1; NEW=$2; ROWS=${3:-300000}; ROUNDS=${4:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
# grpcurl (to create the tenant): the one beside this checkout by default.
GRPCURL=${GRPCURL:-$HERE/../../../shared/tools/grpcurl.sh}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/import-ab.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
python3 "$HERE/gen_users_csv.py" --rows "$ROWS" --out "$WORK/users.csv" >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

run() { # bin label url schema
  local bin=$1 label=$2 url=$3 schema=$4
  rm -f "$WORK"/db.sqlite*
  if [ -n "$schema" ]; then psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null 2>&1; fi
  "$bin" keys generate > "$WORK/gen.txt" 2>/dev/null
  local key hash
  key=$(sed -n 1p "$WORK/gen.txt"); hash=$(sed -n 2p "$WORK/gen.txt")
  USERDIR_LISTEN=127.0.0.1:$PORT USERDIR_DATABASE_URL="$url" USERDIR_PG_SCHEMA="$schema" \
    USERDIR_OPERATOR_KEY=$hash RUST_LOG=warn "$bin" serve > "$WORK/server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do "$bin" health --server "http://127.0.0.1:$PORT" >/dev/null 2>&1 && break; sleep 0.1; done
  bash "$GRPCURL" -plaintext -H "authorization: Bearer $key" \
    -d '{"tenant_id":"bench","tenant":{"display_name":"Bench"}}' "127.0.0.1:$PORT" userdir.v1.TenantAdmin/CreateTenant >/dev/null
  USERDIR_API_KEY=$key "$bin" import --tenant bench --mode upsert \
    --server "http://127.0.0.1:$PORT" "$WORK/users.csv" 2>&1 | grep -E 'SUCCEEDED|FAILED|error' | sed "s/^/$label: /" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ -n "$schema" ]; then psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1; fi
}

for round in $(seq "$ROUNDS"); do
  run "$OLD" "sqlite old #$round" "sqlite://$WORK/db.sqlite?mode=rwc" ""
  run "$NEW" "sqlite new #$round" "sqlite://$WORK/db.sqlite?mode=rwc" ""
  if psql "$PG_URL" -q -c 'SELECT 1' >/dev/null 2>&1; then
    run "$OLD" "postgres old #$round" "$PG_URL" "import_ab_s"
    run "$NEW" "postgres new #$round" "$PG_URL" "import_ab_s"
  fi
done
