#!/usr/bin/env bash
# What the database itself allows the events design, with no server at all:
# the same statements userdir sends, run by pgbench (PostgreSQL) and Python's
# sqlite3 (SQLite) against userdir's own schema, before events and with them.
#
#   bash benches/scripts/events_ceiling.sh [USERDIR_BIN]
#
# 1. One tenant, 16 clients creating users (the loadgen CreateUser shape),
#    each shape for 8 s, twice, in turn:
#      before  lock and take a seat; insert the user; commit (the build before events)
#      now     lock (read the last number); insert the user; insert its event;
#              move the number and the seats, NOTIFY; commit (today's statements)
#      merged  lock; one statement inserting the user and its event and moving
#              the number, NOTIFY; commit (the fewest statements with the lock first)
#      late    insert the user; one statement locking the tenant, taking the
#              seat, numbering and inserting the event, NOTIFY; commit (the
#              lock last: see docs/performance.md for why it is not taken)
# 2. 300,000 new users in one statement, alone and with one event each, on
#    PostgreSQL; in 1,000-row transactions on SQLite (WAL, synchronous=NORMAL).
set -euo pipefail
BIN=${1:-target/release/userdir}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
GRPCURL=${GRPCURL:-$(cd "$(dirname "$0")" && pwd)/../../../shared/tools/grpcurl.sh}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/events-ceiling.XXXXXX")
SCHEMA=events_ceiling
trap 'rm -rf "$WORK"; psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true' EXIT
source "$(cd "$(dirname "$0")" && pwd)/server.sh"

# The schema, made by the server itself, with one tenant.
schema() { # url schema
  start_server "$BIN" "$1" "$2" "$WORK/server.log"
  create_tenant bench
  stop_server
}

psql "$PG_URL" -q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA" >/dev/null 2>&1
schema "$PG_URL" "$SCHEMA"
schema "sqlite://$WORK/s.db?mode=rwc" ""

python3 - "$WORK" <<'PY'
import sys
w = sys.argv[1]
user = ("INSERT INTO users (id, tenant_id, email, email_key, display_name, enabled, status, create_time, update_time, revision) "
        "VALUES (gen_random_uuid(), 'bench', 'u' || :client_id || '-' || random() || '@example.com', "
        "'u' || :client_id || '-' || random() || '@example.com', 'User ' || random(), true, 'UNCONFIRMED', "
        "1796618836538514, 1796618836538514, 1)")
after = "'01a24ed3da3a7176a9d219e0fe5e5241 a@example.com A 1 UNCONFIRMED                        1796618836538514 1796618836538514 1 member 0 0'"
event = ("INSERT INTO events (tenant_id, api_key, request_id, seq, id, time, type, resource, revision, changed_paths, after) "
         "SELECT 'bench', gen_random_uuid(), gen_random_uuid()::text, u.seq, gen_random_uuid(), 1796618836538514, "
         "'user.created', 'tenants/bench/users/01a24ed3-da3a-7176-a9d2-19e0fe5e5241', 1, '', " + after +
         " FROM unnest(ARRAY[:seq + 1]::int8[]) AS u(seq)")
lock = "UPDATE tenants SET user_count = user_count WHERE id = 'bench' RETURNING event_seq AS seq \\gset"
number = ("UPDATE tenants SET event_seq = :seq + 1, user_count = user_count + 1 WHERE id = 'bench' AND event_seq = :seq "
          "RETURNING pg_notify('userdir_events', id)")
late = ("WITH t AS (UPDATE tenants SET event_seq = event_seq + 1, user_count = user_count + 1 WHERE id = 'bench' "
        "AND (seat_limit = 0 OR user_count < seat_limit) RETURNING event_seq, id), "
        "e AS (INSERT INTO events (tenant_id, api_key, request_id, seq, id, time, type, resource, revision, changed_paths, after) "
        "SELECT t.id, gen_random_uuid(), gen_random_uuid()::text, t.event_seq, gen_random_uuid(), 1796618836538514, "
        "'user.created', 'tenants/bench/users/01a24ed3-da3a-7176-a9d2-19e0fe5e5241', 1, '', " + after + " FROM t) "
        "SELECT pg_notify('userdir_events', id) FROM t")
shapes = {
    "before": ["UPDATE tenants SET user_count = user_count + 1 WHERE id = 'bench' AND (seat_limit = 0 OR user_count < seat_limit);", user + ";"],
    "now": [lock, user + ";", event + ";", number + ";"],
    "merged": [lock, "WITH u AS (" + user + "), e AS (" + event + ") " + number + ";"],
    "late": [user + ";", late + ";"],
}
for name, body in shapes.items():
    open(f"{w}/{name}.sql", "w").write("BEGIN;\n" + "\n".join(body) + "\nCOMMIT;\n")
PY

export PGOPTIONS="-c search_path=$SCHEMA"
echo "PostgreSQL, CreateUser shapes at 16 clients (transactions/s):"
for round in 1 2; do
  for shape in before now merged late; do
    tps=$(pgbench "$PG_URL" -n -c 16 -j 2 -T 8 -f "$WORK/$shape.sql" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "  #$round $shape $tps"
  done
done

echo "PostgreSQL, 300,000 new users (s):"
cat > "$WORK/bulk.sql" <<'SQL'
\timing on
INSERT INTO users (id, tenant_id, email, email_key, display_name, enabled, status, given_name, family_name, department, phone, create_time, update_time, revision) SELECT gen_random_uuid(), 'bench', 'bulk' || g || '@example.com', 'bulk' || g || '@example.com', 'ユーザー ' || g, true, 'UNCONFIRMED', '太郎', '山田', '営業部', '03-1234-5678', 1796618836538514, 1796618836538514, 1 FROM generate_series(1, 300000) g;
\timing off
DELETE FROM users WHERE email LIKE 'bulk%';
VACUUM users;
\timing on
BEGIN;
INSERT INTO users (id, tenant_id, email, email_key, display_name, enabled, status, given_name, family_name, department, phone, create_time, update_time, revision) SELECT gen_random_uuid(), 'bench', 'bulk' || g || '@example.com', 'bulk' || g || '@example.com', 'ユーザー ' || g, true, 'UNCONFIRMED', '太郎', '山田', '営業部', '03-1234-5678', 1796618836538514, 1796618836538514, 1 FROM generate_series(1, 300000) g;
INSERT INTO events (tenant_id, api_key, request_id, import_job, seq, id, time, type, resource, revision, import_line, changed_paths, after) SELECT 'bench', gen_random_uuid(), gen_random_uuid()::text, gen_random_uuid(), 1000000000 + g, gen_random_uuid(), 1796618836538514, 'user.created', 'tenants/bench/users/' || gen_random_uuid(), 1, g, '', gen_random_uuid()::text || E'\x1fbulk' || g || E'@example.com\x1fユーザー ' || g || E'\x1f1\x1fUNCONFIRMED\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f太郎\x1f山田\x1f\x1f営業部\x1f\x1f\x1f03-1234-5678\x1f\x1f\x1f\x1f1796618836538514\x1f1796618836538514\x1f1\x1fmember\x1f0\x1f0' FROM generate_series(1, 300000) g;
COMMIT;
\timing off
DELETE FROM users WHERE email LIKE 'bulk%';
DELETE FROM events WHERE seq > 1000000000;
VACUUM users; VACUUM events;
SQL
for round in 1 2; do
  psql "$PG_URL" -q -f "$WORK/bulk.sql" 2>&1 | awk -v r="$round" '/^Time/ {t[n++]=$2} END {printf "  #%s users alone %.2f s, users and events %.2f s: %.2fx\n", r, t[0]/1000, (t[1]+t[2]+t[3])/1000, t[0]/(t[1]+t[2]+t[3])}'
done
unset PGOPTIONS

echo "SQLite, 300,000 new users in 1,000-row transactions:"
python3 - "$WORK/s.db" <<'PY'
import shutil, sqlite3, sys, time, uuid
src, n, b = sys.argv[1], 300_000, 1_000
def run(events):
    shutil.copy(src, src + ".run")
    c = sqlite3.connect(src + ".run", isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
    t = time.perf_counter()
    for s in range(0, n, b):
        c.execute("BEGIN")
        rows = [(uuid.uuid4().bytes, "bench", f"user{g}@example.com", f"user{g}@example.com", f"ユーザー {g}", 1, "UNCONFIRMED",
                 "太郎", "山田", "営業部", "03-1234-5678", 1796618836538514, 1796618836538514, 1) for g in range(s, s + b)]
        c.executemany("INSERT INTO users (id, tenant_id, email, email_key, display_name, enabled, status, given_name, "
                      "family_name, department, phone, create_time, update_time, revision) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        if events:
            c.executemany("INSERT INTO events (tenant_id, seq, id, time, type, resource, revision, api_key, request_id, "
                          "import_job, import_line, changed_paths, after) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          [("bench", g + 2, uuid.uuid4().bytes, 1796618836538514, "user.created", "tenants/bench/users/" + r[0].hex(), 1,
                            uuid.uuid4().bytes, str(uuid.uuid4()), uuid.uuid4().bytes, g, "",
                            "\x1f".join([r[0].hex(), r[2], r[4], "1", "UNCONFIRMED"] + [""] * 12 + ["太郎", "山田", "", "営業部", "", "", "03-1234-5678"] + [""] * 4 + ["1796618836538514"] * 2 + ["1", "member", "0", "0"]))
                           for g, r in zip(range(s, s + b), rows)])
        c.execute("COMMIT")
    return time.perf_counter() - t
for r in (1, 2):
    alone, both = run(False), run(True)
    print(f"  #{r} users alone {n / alone:,.0f} rows/s, users and events {n / both:,.0f} rows/s: {alone / both:.2f}x")
PY
