#!/usr/bin/env bash
# Runs the README's grpcurl examples, verbatim, against the built `userdir`
# binary with a real grpcurl 1.8.6, on a fresh SQLite file and (when
# USERDIR_SMOKE_PG_URL is set) on a fresh PostgreSQL schema.
# Usage: .ci/grpcurl-smoke.sh path/to/userdir
set -euo pipefail
BIN=${1:?usage: grpcurl-smoke.sh path/to/userdir}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORK=$(mktemp -d)
PORT=50051
SERVER_PID=
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$HERE/grpcurl.sh" -version >/dev/null 2>&1 || true   # fetch once
mkdir -p "$WORK/bin"
cat > "$WORK/bin/grpcurl" <<SH
#!/usr/bin/env bash
exec "$HERE/grpcurl.sh" "\$@"
SH
chmod +x "$WORK/bin/grpcurl"

# The README block between the markers, without the fence lines.
sed -n '/<!-- grpcurl-examples:start -->/,/<!-- grpcurl-examples:end -->/p' "$ROOT/README.md" \
  | grep -v -e '^<!--' -e '^```' > "$WORK/examples.sh"
[[ -s $WORK/examples.sh ]] || { echo "no grpcurl examples found in README.md"; exit 1; }

run_against() { # label database-url [pg-schema [operator-key-hash]]
  local label=$1 url=$2 schema=${3:-} operator=${4:-}
  echo "== grpcurl smoke test on $label"
  # On SQLite the first start saves its operator key in $WORK (beside the
  # database), where the README's examples read it; PostgreSQL is given
  # the hash of a key `userdir keys generate` made.
  env ${operator:+USERDIR_OPERATOR_KEY=$operator} USERDIR_LISTEN=127.0.0.1:$PORT USERDIR_DATABASE_URL=$url \
    USERDIR_PG_SCHEMA=$schema "$BIN" serve > "$WORK/server-$label.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if PATH="$WORK/bin:$PATH" grpcurl -plaintext 127.0.0.1:$PORT grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
      break
    fi
    sleep 0.1
  done
  (cd "$WORK" && PATH="$WORK/bin:$PATH" bash -x examples.sh) > "$WORK/out-$label.txt" 2>&1 || true
  cat "$WORK/out-$label.txt"
  local expect=(
    'userdir.v1.UserDirectory' 'userdir.v1.TenantAdmin' 'grpc.health.v1.Health'
    'grpc.reflection.v1alpha.ServerReflection' 'message User {' '"status": "SERVING"'
    '"name": "tenants/acme"' '"displayName": "山田 太郎"' '"email": "Taro.Yamada@example.com"'
    '"title": "Manager"' '"enabled": false' 'Code: InvalidArgument'
    '"field":"email"' '"field":"display_name"' '"reason":"INVALID_ARGUMENT"'
    '"outcome": "IMPORT_OUTCOME_CREATED"' '"state": "IMPORT_JOB_STATE_SUCCEEDED"'
  )
  local missing=0
  export USERDIR_API_KEY; USERDIR_API_KEY=$(cat "$WORK/userdir.operator-key")
  # Without a key: refused, and the key never appears in the server's log.
  if PATH="$WORK/bin:$PATH" grpcurl -plaintext -d '{}' 127.0.0.1:$PORT userdir.v1.TenantAdmin/ListTenants > "$WORK/nokey-$label.txt" 2>&1; then
    echo "a call without a key was served ($label)"; missing=1
  fi
  grep -q 'Unauthenticated' "$WORK/nokey-$label.txt" || { cat "$WORK/nokey-$label.txt"; echo "no UNAUTHENTICATED without a key ($label)"; missing=1; }
  for e in "${expect[@]}"; do
    grep -qF -- "$e" "$WORK/out-$label.txt" || { echo "MISSING in grpcurl output ($label): $e"; missing=1; }
  done
  # Exactly one call is meant to fail (the invalid email).
  local errors; errors=$(grep -c -e '^ERROR:' -e '^Error invoking' -e '^Failed to' "$WORK/out-$label.txt" || true)
  [[ $errors == 1 ]] || { echo "expected exactly 1 failed grpcurl call on $label, saw $errors"; missing=1; }
  # The operator's import: a Shift-JIS file with one bad row -> exit 2 and an errors file.
  python3 -c 'import sys; sys.stdout.buffer.write("name,email,custom_01\r\n髙橋 一郎,takahashi@example.jp,ソニー㈱\r\n①番,maru@example.jp,～\r\n壊れた,bad..@example.jp,x\r\n".encode("cp932"))' > "$WORK/sjis-$label.csv"
  local status=0
  "$BIN" import --server "http://127.0.0.1:$PORT" --tenant acme --mode upsert --encoding shift-jis "$WORK/sjis-$label.csv" > "$WORK/cli-$label.txt" 2>&1 || status=$?
  cat "$WORK/cli-$label.txt"
  [[ $status == 2 ]] || { echo "userdir import should exit 2 when a row fails, got $status"; missing=1; }
  grep -q 'created 2' "$WORK/cli-$label.txt" || { echo "userdir import did not create 2 users"; missing=1; }
  python3 -c 'import sys; t=open(sys.argv[1], encoding="cp932").read(); assert "壊れた" in t and "import_reason" in t, t' "$WORK/sjis-$label.errors.csv" \
    || { echo "the errors file is missing or wrong"; missing=1; }
  # The operator's export: Shift-JIS, trailer checked, and it imports back unchanged.
  "$BIN" export --server "http://127.0.0.1:$PORT" --tenant acme --encoding shift-jis -o "$WORK/export-$label.csv" \
    > "$WORK/export-$label.txt" 2>&1 || { cat "$WORK/export-$label.txt"; echo "userdir export failed"; missing=1; }
  cat "$WORK/export-$label.txt"
  grep -q 'verified' "$WORK/export-$label.txt" || { echo "userdir export did not verify its trailer"; missing=1; }
  "$BIN" import --server "http://127.0.0.1:$PORT" --tenant acme --mode upsert "$WORK/export-$label.csv" > "$WORK/reimport-$label.txt" 2>&1 \
    || { cat "$WORK/reimport-$label.txt"; echo "re-import of the export failed"; missing=1; }
  grep -q 'created 0  updated 0' "$WORK/reimport-$label.txt" || { cat "$WORK/reimport-$label.txt"; echo "the export did not import back unchanged"; missing=1; }
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || { echo "server did not exit cleanly on SIGTERM"; missing=1; }
  SERVER_PID=
  grep -q 'userdir stopped' "$WORK/server-$label.log" || { echo "no graceful stop in the server log"; missing=1; }
  grep -v '^  *udk_' "$WORK/server-$label.log" | grep -qF -- "${USERDIR_API_KEY:40}" \
    && { echo "the operator key's secret is in the server log beyond its one-time banner ($label)"; missing=1; }
  if [[ $missing != 0 ]]; then
    echo "--- server log ($label)"; cat "$WORK/server-$label.log"; exit 1
  fi
  echo "== grpcurl smoke test on $label: ok"
}

run_against sqlite "sqlite://$WORK/smoke.db?mode=rwc"
if [[ -n ${USERDIR_SMOKE_PG_URL:-} ]]; then
  schema="smoke_$$"
  psql "$USERDIR_SMOKE_PG_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
  "$BIN" keys generate > "$WORK/generated" 2>/dev/null
  head -1 "$WORK/generated" > "$WORK/userdir.operator-key"
  run_against postgres "$USERDIR_SMOKE_PG_URL" "$schema" "$(sed -n 2p "$WORK/generated")"
  psql "$USERDIR_SMOKE_PG_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE"
fi

# TLS: a CA and a server certificate made here with openssl, the server on
# TLS only, grpcurl with -cacert, the CLI with https:// and --ca-cert; a
# plaintext client gets nothing.
echo "== grpcurl smoke test over TLS"
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
    -days 1 -subj "/CN=userdir smoke CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
    -subj "/CN=userdir" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 \
    -extfile server.ext 2>/dev/null
)
USERDIR_LISTEN=127.0.0.1:$PORT USERDIR_DATABASE_URL="sqlite://$WORK/tls.db?mode=rwc" \
  "$BIN" serve --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" \
  --health-listen "127.0.0.1:$((PORT + 1))" --metrics-listen "127.0.0.1:$((PORT + 2))" > "$WORK/server-tls.log" 2>&1 &
SERVER_PID=$!
tls_ok=0
for _ in $(seq 1 100); do
  if PATH="$WORK/bin:$PATH" grpcurl -cacert "$WORK/ca.pem" 127.0.0.1:$PORT grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
    tls_ok=1; break
  fi
  sleep 0.1
done
failed=0
[[ $tls_ok == 1 ]] || { echo "grpcurl -cacert never saw SERVING"; failed=1; }
export USERDIR_API_KEY; USERDIR_API_KEY=$(cat "$WORK/userdir.operator-key")
PATH="$WORK/bin:$PATH" grpcurl -cacert "$WORK/ca.pem" 127.0.0.1:$PORT list | grep -q userdir.v1.UserDirectory \
  || { echo "grpcurl -cacert list failed"; failed=1; }
if PATH="$WORK/bin:$PATH" grpcurl -plaintext 127.0.0.1:$PORT list >/dev/null 2>&1; then
  echo "a plaintext grpcurl was served by the TLS listener"; failed=1
fi
PATH="$WORK/bin:$PATH" grpcurl -cacert "$WORK/ca.pem" -H "authorization: Bearer $USERDIR_API_KEY" -d '{"tenant_id": "acme", "tenant": {"display_name": "Acme"}}' \
  127.0.0.1:$PORT userdir.v1.TenantAdmin/CreateTenant > /dev/null || { echo "CreateTenant over TLS failed"; failed=1; }
"$BIN" export --server "https://127.0.0.1:$PORT" --ca-cert "$WORK/ca.pem" --tenant acme -o "$WORK/tls-export.csv" \
  > "$WORK/tls-export.txt" 2>&1 || { cat "$WORK/tls-export.txt"; echo "userdir export over TLS failed"; failed=1; }
if "$BIN" export --server "https://127.0.0.1:$PORT" --tenant acme -o "$WORK/untrusted.csv" > "$WORK/untrusted.txt" 2>&1; then
  echo "userdir export trusted a server its roots do not know"; failed=1
fi
# The plaintext health-only port for probes, and the Prometheus endpoint.
"$BIN" health --server "http://127.0.0.1:$((PORT + 1))" --service liveness > /dev/null \
  || { echo "no liveness on the health port"; failed=1; }
"$BIN" health --server "http://127.0.0.1:$((PORT + 1))" > /dev/null || { echo "userdir health on the health port failed"; failed=1; }
if PATH="$WORK/bin:$PATH" grpcurl -plaintext 127.0.0.1:$((PORT + 1)) list >/dev/null 2>&1; then
  echo "the health port serves reflection"; failed=1
fi
curl -sf "http://127.0.0.1:$((PORT + 2))/metrics" | grep -q '^rpc_server_call_duration_seconds_count{.*rpc_method="CreateTenant"' \
  || { echo "no CreateTenant in the Prometheus scrape"; failed=1; }
# A server that died early (a port taken, say) is not there to kill: its log says why.
kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" || true
SERVER_PID=
if [[ $failed != 0 ]]; then
  echo "--- server log (TLS)"; cat "$WORK/server-tls.log"; exit 1
fi
echo "== grpcurl smoke test over TLS: ok"
