#!/usr/bin/env python3
"""How SQLite's own work on a bulk insert depends on the statement form and the
foreign key: the measurement behind `INSERT OR FAIL` and the unenforced
users -> tenants key (docs/performance.md, 2026-11-23).

Inserts the rows of a users CSV (bench/gen_users_csv.py) into the server's
schema in 5,000-row transactions of 500-row multi-row INSERTs, as the import
does, and prints rows/s and the CPU seconds spent (steadier than rows/s).

    python3 bench/gen_users_csv.py --rows 200000 --out /tmp/u.csv
    cargo run --release -- serve --database-url 'sqlite:///tmp/s.db?mode=rwc'   # once, then Ctrl-C
    sqlite3 /tmp/s.db .schema | grep -v -e seaql -e import_jobs > /tmp/schema.sql
    for v in plain orfail nofk nofk_orfail; do
        python3 bench/sqlite_insert_variants.py --csv /tmp/u.csv --schema /tmp/schema.sql --variant $v
    done

Variants: `plain` (INSERT, foreign keys on), `orfail` (INSERT OR FAIL),
`nofk` (foreign keys off), `nofk_orfail` (both: no statement journal).
`--page-size 1024|2048`, `--without-rowid` and `--txn-rows N` vary the file
format, the table's layout and the commit size (session 4's measurements);
`--cache-kib` the page cache, and `--sort email|name` inserts each
transaction's rows in that order (session 6: no gain).
"""

import argparse
import csv
import os
import shutil
import sqlite3
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--variant", default="plain")
    ap.add_argument("--page-size", type=int, default=4096, help="PRAGMA page_size of the new database")
    ap.add_argument("--without-rowid", action="store_true", help="make the users table WITHOUT ROWID")
    ap.add_argument("--txn-rows", type=int, default=5000, help="rows per transaction")
    ap.add_argument("--cache-kib", type=int, default=32768, help="PRAGMA cache_size, in KiB")
    ap.add_argument("--sort", choices=["none", "email", "name"], default="none",
                    help="insert each transaction's rows in this order instead of the file's")
    args = ap.parse_args()
    rows = list(csv.reader(open(args.csv, encoding="utf-8")))[1:]
    db = os.path.join(tempfile.mkdtemp(), "variants.db")
    c = sqlite3.connect(db, isolation_level=None)
    c.execute(f"PRAGMA page_size={args.page_size}")
    for pragma in ["journal_mode=WAL", "synchronous=NORMAL", f"cache_size=-{args.cache_kib}",
                   "wal_autocheckpoint=32768", "temp_store=memory"]:
        c.execute("PRAGMA " + pragma)
    c.execute("PRAGMA foreign_keys=" + ("OFF" if "nofk" in args.variant else "ON"))
    schema = open(args.schema).read()
    if args.without_rowid:
        schema = schema.replace('REFERENCES "tenants" ("id") );', 'REFERENCES "tenants" ("id") ) WITHOUT ROWID;')
    c.executescript(schema)
    c.execute("INSERT INTO tenants VALUES ('bench','Bench',0,0,'[]',0,0,0,NULL,NULL)")
    ms = int(time.time() * 1000)
    params = []
    for i, r in enumerate(rows):
        uid = ((ms << 80) | (0x7 << 76) | (i << 16)).to_bytes(16, "big")  # time-ordered, like UUIDv7
        now = int(time.time() * 1e6)
        params.append((uid, "bench", r[0], r[0].lower(), r[1], 1, "UNCONFIRMED", None,
                       *r[2:12], *([""] * 10), now, now, 1))
    verb = "INSERT OR FAIL" if "orfail" in args.variant else "INSERT"
    one = "(" + ",".join(["?"] * 31) + ")"
    t0, p0 = time.time(), time.process_time()
    for i in range(0, len(params), args.txn_rows):
        c.execute("BEGIN")
        c.execute("UPDATE tenants SET user_count = user_count + 1 WHERE id='bench'")
        txn = params[i:i + args.txn_rows]
        if args.sort != "none":
            txn = sorted(txn, key=lambda row: row[3] if args.sort == "email" else (row[4], row[0]))
        for j in range(0, len(txn), 500):
            chunk = txn[j:j + 500]
            sql = f"{verb} INTO users VALUES " + ",".join([one] * len(chunk))
            c.execute(sql, [v for row in chunk for v in row])
        c.execute("COMMIT")
    elapsed = time.time() - t0
    print(f"{args.variant}: {len(params) / elapsed:.0f} rows/s, cpu {time.process_time() - p0:.2f} s")
    c.close()
    shutil.rmtree(os.path.dirname(db))


if __name__ == "__main__":
    main()
