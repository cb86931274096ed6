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
source "$HERE/server.sh"

run() { # bin label url schema
  local bin=$1 label=$2 url=$3 schema=$4
  rm -f "$WORK"/db.sqlite*
  if [ -n "$schema" ]; then psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null 2>&1; fi
  start_server "$bin" "$url" "$schema" "$WORK/server.log"
  create_tenant bench
  USERDIR_API_KEY=$KEY "$bin" import --tenant bench --mode upsert \
    --server "$SERVER" "$WORK/users.csv" 2>&1 | grep -E 'SUCCEEDED|FAILED|error' | sed "s/^/$label: /" || true
  stop_server
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
