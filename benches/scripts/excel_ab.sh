#!/usr/bin/env bash
# Excel against CSV through the real server and CLI, the same rows, one run:
# import of a CSV file, its export as CSV and as XLSX, then the import of
# that XLSX into an empty tenant. Each step runs on a server started for it
# (on the same database), so the peak RSS it reports (VmHWM) is that step's.
#
#   bash benches/scripts/excel_ab.sh [USERDIR_BIN] [ROWS] [sqlite|postgres]
set -euo pipefail
BIN=$(realpath "${1:-target/release/userdir}"); ROWS=${2:-100000}; BACKEND=${3:-sqlite}
HERE=$(cd "$(dirname "$0")" && pwd)
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
GRPCURL=${GRPCURL:-$HERE/../../../shared/tools/grpcurl.sh}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/excel-ab.XXXXXX")
SCHEMA=excel_ab
cleanup() {
  rm -rf "$WORK"
  if [ "$BACKEND" = postgres ]; then psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
python3 "$HERE/gen_users_csv.py" --rows "$ROWS" --out "$WORK/users.csv" >/dev/null
source "$HERE/server.sh"
if [ "$BACKEND" = postgres ]; then
  URL=$PG_URL; psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA" >/dev/null
else
  URL="sqlite://$WORK/db.sqlite?mode=rwc"; SCHEMA=""
fi

# step LABEL ROWS COMMAND...: runs COMMAND against a fresh server; prints
# the seconds, rows/s and the server's peak RSS.
step() {
  local label=$1 rows=$2; shift 2
  start_server "$BIN" "$URL" "$SCHEMA" "$WORK/server.log"
  local start end peak
  start=$(date +%s.%N)
  USERDIR_API_KEY=$KEY "$@" --server "$SERVER" > "$WORK/step.log" 2>&1 || { cat "$WORK/step.log"; stop_server; exit 1; }
  end=$(date +%s.%N)
  peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$SERVER_PID/status")
  stop_server
  python3 -c "s=$end-$start; print(f'| $label | {s:.1f} | {$rows/s:,.0f} | $peak |')"
}

start_server "$BIN" "$URL" "$SCHEMA" "$WORK/server.log"
create_tenant csv; create_tenant xlsx
stop_server
echo "$BACKEND, $ROWS users: one server per step"
echo "| step | s | rows/s | server peak RSS MiB |"
echo "|---|---|---|---|"
step "import CSV" "$ROWS" "$BIN" import --tenant csv --mode upsert "$WORK/users.csv"
step "export CSV" "$ROWS" "$BIN" export --tenant csv -o "$WORK/out.csv"
step "export XLSX" "$ROWS" "$BIN" export --tenant csv -o "$WORK/out.xlsx"
step "import XLSX" "$ROWS" "$BIN" import --tenant xlsx --mode upsert "$WORK/out.xlsx"
step "import the CSV export" "$ROWS" "$BIN" import --tenant csv --mode upsert --match-key user-id "$WORK/out.csv"
step "import the XLSX export" "$ROWS" "$BIN" import --tenant csv --mode upsert --match-key user-id "$WORK/out.xlsx"
ls -l "$WORK/users.csv" "$WORK/out.csv" "$WORK/out.xlsx" | awk '{print "  " $5 " bytes " $NF}'
