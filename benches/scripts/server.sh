# Sourced by the bench scripts: one userdir server at a time, on a free
# port, with an operator key made for it.
#
#   start_server BIN URL SCHEMA LOG   starts it (PG schema may be empty),
#                                     waits until it answers; sets SERVER_PID,
#                                     SERVER (its URL), and KEY (its operator key)
#   stop_server                       stops it
#   create_tenant ID                  creates a tenant through it
# Needs GRPCURL (grpcurl or the shared wrapper).

SERVER_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SERVER=http://127.0.0.1:$SERVER_PORT

start_server() {
  local bin=$1 url=$2 schema=$3 log=$4 keys
  if [ -z "${KEY:-}" ] || [ "${KEY_BIN:-}" != "$bin" ]; then
    keys=$("$bin" keys generate 2>/dev/null)
    KEY=$(sed -n 1p <<< "$keys"); KEY_HASH=$(sed -n 2p <<< "$keys"); KEY_BIN=$bin
  fi
  USERDIR_LISTEN=127.0.0.1:$SERVER_PORT USERDIR_DATABASE_URL="$url" USERDIR_PG_SCHEMA="$schema" \
    USERDIR_OPERATOR_KEY=$KEY_HASH RUST_LOG=warn "$bin" serve > "$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do "$bin" health --server "$SERVER" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the server did not start; its log:" >&2; cat "$log" >&2; return 1
}

stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
}

create_tenant() {
  bash "$GRPCURL" -plaintext -H "authorization: Bearer $KEY" \
    -d "{\"tenant_id\":\"$1\",\"tenant\":{\"display_name\":\"$1\"}}" "127.0.0.1:$SERVER_PORT" \
    userdir.v1.TenantAdmin/CreateTenant >/dev/null
}
