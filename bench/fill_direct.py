#!/usr/bin/env python3
"""Fills a stopped stack's databases with N copies of one real order, straight in SQLite.

For measuring what depends only on what is stored (`shop inspect invariants`, disk per order,
resident memory after opening big databases) at a million orders without running a million
sagas. Every row the saga wrote for the template order, in every database, is copied N times
with each id it carries (ord_, pay_, res_, evt_, ntf_, gw_ ULIDs, also inside JSON) renumbered
and its events pointing at their copy's order key,
and the product's stock columns are moved as the copies would have moved them, so the
invariants still hold.

Usage: bench/fill_direct.py DATA_DIR N [ORDER_ID]   (default template: the first CONFIRMED order)
"""
import os
import re
import sqlite3
import sys

ID = re.compile(r"\b(?:ord|pay|res|evt|ntf|gw)_[0-9A-HJKMNP-TV-Z]{26}\b")


def renumbered(value):
    """The SQL expression that rewrites every id in a text value, for copy number s.i."""
    if not isinstance(value, str):
        return None
    expr = "?"
    for tok in sorted(set(ID.findall(value))):
        expr = f"replace({expr}, '{tok}', '{tok[:-10]}' || printf('%010d', s.i))"
    return expr


def copy_rows(db, table, where, args, n, keys=None):
    """Copies the rows n times. An `id` column (the orders' integer key) is left to SQLite; with
    `keys` (the first new order key, minus one), an `order_key` column points at copy i's order."""
    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
    rows = db.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {where}", args).fetchall()
    for row in rows:
        exprs, params = [], []
        for c, v in zip(cols, row):
            e = renumbered(v)
            if c == "order_key" and keys is not None:
                exprs.append("? + s.i")
                params.append(keys)
            elif e is None or e == "?":
                if c == "idempotency_key":  # unique per user: made unique per copy
                    exprs.append("? || '-' || s.i")
                else:
                    exprs.append("?")
                params.append(v)
            else:
                exprs.append(e)
                params.append(v)
        db.execute(
            f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
            f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM s",
            params,
        )
    return len(rows)


USAGE = "usage: bench/fill_direct.py DATA_DIR N [ORDER_ID]"


def refuse(message):
    """Bad input: one line that says what was wrong, exit 2, nothing written."""
    print(f"fill_direct.py: {message}", file=sys.stderr)
    sys.exit(2)


def main():
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__.strip())
        return
    if len(sys.argv) not in (3, 4):
        refuse(USAGE)
    data, n = sys.argv[1], sys.argv[2]
    if not n.isdigit() or int(n) < 1:
        refuse(f"N is a whole number of copies, 1 or more, such as 1000000; got `{n}`")
    n = int(n)
    # Every database of a stack that has run; a missing one would be created empty by connect().
    for name in ("order", "payment", "inventory", "notification", "gateway"):
        if not os.path.isfile(f"{data}/{name}.db"):
            refuse(f"{data}/{name}.db does not exist: DATA_DIR is a stopped stack's data directory "
                   "(STATE_DIR/data), after it has run at least one order")
    order = sqlite3.connect(f"file:{data}/order.db?mode=rw", uri=True)
    # The template: the order named, or the first CONFIRMED one; its id, payment id and log key.
    template = "SELECT order_id, payment_id, id FROM orders WHERE status = 'CONFIRMED'"
    if len(sys.argv) > 3:
        found = order.execute(f"{template} AND order_id = ?", (sys.argv[3],)).fetchone()
        missing = f"no CONFIRMED order `{sys.argv[3]}` in {data}/order.db to copy"
    else:
        found = order.execute(f"{template} ORDER BY created_at LIMIT 1").fetchone()
        missing = f"{data}/order.db holds no CONFIRMED order to copy: place one first"
    if found is None:
        refuse(missing)
    oid, pay, key = found
    # The copies of the order row take the keys after the largest one, in copy order.
    (last,) = order.execute("SELECT max(id) FROM orders").fetchone()
    plan = [
        ("order", [("orders", "order_id = ?", oid), ("events", "order_key = ?", key),
                   ("outbox", "order_id = ?", oid)]),
        ("payment", [("payments", "order_id = ?", oid)]),
        ("inventory", [("reservations", "order_id = ?", oid), ("reservation_items", "order_id = ?", oid)]),
        ("notification", [("notifications", "order_id = ?", oid)]),
        ("gateway", [("accepted_orders", "order_id = ?", oid)]),
    ]
    for name, tables in plan:
        db = order if name == "order" else sqlite3.connect(f"{data}/{name}.db")
        db.execute("PRAGMA journal_mode = WAL")
        with db:
            for table, where, arg in tables:
                copied = copy_rows(db, table, where, (arg,), n, keys=last if table == "events" else None)
                print(f"{name}.{table}: {copied} row(s) x {n}", file=sys.stderr)
            if name == "inventory":
                for product, qty in db.execute(
                        "SELECT product_id, quantity FROM reservation_items WHERE order_id = ?", (oid,)).fetchall():
                    db.execute("UPDATE products SET initial = initial + ?1, sold = sold + ?1 WHERE product_id = ?2",
                               (qty * n, product))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert pay


if __name__ == "__main__":
    main()
