"""Moving stores: upgrade a schema explicitly, copy a store between SQLite and PostgreSQL.

``copy`` reads the source in one snapshot and writes the target in one transaction, table by
table in the order the migrations create them (so references always point backwards), in
batches of :data:`BATCH_ROWS` rows: memory stays flat, and an interrupted copy leaves the
target as it was. Ids are kept as they are -- the target must be empty, so no id can clash
and every reference (and an outlier's number in ``flamewatch profile ID``) stays valid; a
PostgreSQL target's identity sequences are then moved past the copied ids. The latency
histograms (keyed by their columns, no id) are copied like any table, with how far their
backfill is (:mod:`flamewatch.sampler.store.backfill`).
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import click

from flamewatch.sampler.storable import DEFAULT_HISTOGRAM_GROUPS
from flamewatch.sampler.store import (
    SCHEMA_VERSION,
    StoreError,
    is_postgres,
    make_store,
    resolve_database,
)
from flamewatch.sampler.store.backfill import (
    BACKFILL_TO,
    BACKFILLED,
    backfill_histograms,
    backfill_state,
    pending_rows,
)
from flamewatch.sampler.store.connection import (
    StoreConnection,
    connection_of,
    driver_errors,
    open_connection,
    sqlite_file,
)
from flamewatch.sampler.store.schema import MIGRATIONS
from flamewatch.sampler.store.sqlite import connect_sqlite, migrate

__all__ = [
    "BATCH_ROWS",
    "Copied",
    "build_histograms",
    "copy_store",
    "migrate_store",
    "store_tables",
]

BATCH_ROWS = 5000
_CREATE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)


def store_tables() -> list[str]:
    """The store's tables in the order the migrations create them, ``meta`` left out."""
    names: dict[str, None] = {}
    for statements in MIGRATIONS:
        for statement in statements:
            created = _CREATE.match(statement.strip())
            if created is not None and created.group(1) != "meta":
                names[created.group(1)] = None
    return list(names)


def migrate_store(database: str) -> tuple[int, int]:
    """Bring a store's schema to the current version; return (version before, after)."""
    if is_postgres(database):
        import psycopg  # noqa: PLC0415 -- optional: only for a PostgreSQL store

        from flamewatch.sampler.store.postgres import (  # noqa: PLC0415 -- as psycopg
            connect_postgres,
            migrate_postgres,
        )

        try:
            conn = connect_postgres(_url(database))
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect: {exc}") from None
        try:
            return migrate_postgres(conn), SCHEMA_VERSION
        finally:
            conn.close()
    path = sqlite_file(database)
    if not path.is_file():
        raise StoreError(f"no flamewatch store at {str(path)!r}")
    try:
        conn_sqlite = connect_sqlite(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {str(path)!r}: {exc}") from None
    try:
        return migrate(conn_sqlite), SCHEMA_VERSION
    except sqlite3.Error as exc:
        raise StoreError(f"{str(path)!r} is not a flamewatch store: {exc}") from None
    finally:
        conn_sqlite.close()


def build_histograms(
    database: str,
    *,
    quiet: bool = False,
    histogram_groups: int = DEFAULT_HISTOGRAM_GROUPS,
    migrate: bool = True,
) -> int:
    """Give a store the latency histograms of the rows written before them, if it lacks any:
    its schema migrated first (unless ``migrate`` is false: then an old schema is an error),
    then the backfill, with a progress bar on standard error unless ``quiet``. Returns how
    many rows were folded. Nothing is written when nothing is pending."""
    try:
        conn = open_connection(database, readonly=True)
        try:
            state = backfill_state(conn)
        finally:
            conn.close()
        if not state.pending:
            return 0
        if state.old_schema:
            if not migrate:
                raise StoreError(
                    f"the store's schema predates the latency histograms; run `flamewatch"
                    f" migrate --database {database}` first"
                )
            migrate_store(database)
        conn = open_connection(database, readonly=False)
        try:
            total = pending_rows(conn)
            with _rows_bar(total, quiet) as advance:
                backfill_histograms(conn, histogram_groups=histogram_groups, progress=advance)
        finally:
            conn.close()
    except driver_errors() as exc:  # a read-only file or role, a lost server...
        raise StoreError(
            f"cannot build the latency histograms of the rows stored before them ({exc});"
            f" run `flamewatch migrate --database {database}` where the store can be written"
            " (the batches already folded are kept)"
        ) from None
    return total


@contextmanager
def _rows_bar(total: int, quiet: bool) -> Iterator[Callable[[int], None]]:
    if quiet or not total:
        yield lambda rows: None
        return
    label = "Building the latency histograms of the rows stored before them"
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def _url(database: str) -> str:
    try:
        return resolve_database(database, ".")
    except ValueError as exc:
        raise StoreError(f"{database}: {exc}") from None


@dataclass
class Copied:
    """Rows copied per table, in copy order."""

    rows: dict[str, int] = field(default_factory=dict)


def copy_store(
    source: str, target: str, *, progress: Callable[[str, int], None] | None = None
) -> Copied:
    """Copy every row of ``source`` into the empty store ``target`` (created if missing)."""
    src = open_connection(source, readonly=True)
    try:
        found = int(
            src.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        )
        if found != SCHEMA_VERSION:
            raise StoreError(
                f"the source's schema is version {found}, this flamewatch writes {SCHEMA_VERSION};"
                f" run `flamewatch migrate --database {source}` first"
            )
        if not src.is_postgres:
            src.execute("BEGIN")  # one snapshot of the source (WAL): writers go on meanwhile
        store = make_store(_url(target))
        store.open()  # creates or migrates the target's schema
        try:
            return _copy_tables(src, connection_of(store), progress)
        except driver_errors() as exc:
            raise StoreError(f"the copy failed and wrote nothing: {exc}") from None
        finally:
            store.close()
    finally:
        src.close()


def _copy_tables(
    src: StoreConnection, dst: StoreConnection, progress: Callable[[str, int], None] | None
) -> Copied:
    present = src.tables()
    tables = [t for t in store_tables() if t in present]
    for table in tables:
        if dst.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            raise StoreError(
                f"the target store already holds rows (table {table}); copy only into an empty"
                " store (a new SQLite file or an empty PostgreSQL database), so that no row is"
                " written twice"
            )
    copied = Copied()
    with dst.transaction():
        for table in tables:
            copied.rows[table] = _copy_table(src, dst, table)
            if progress is not None:
                progress(table, copied.rows[table])
        _copy_backfill_state(src, dst)
        if dst.is_postgres:
            for table in tables:
                if "id" in _columns(dst, table):  # the histograms are keyed by their columns
                    dst.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id))"
                        f" FROM {table} HAVING max(id) IS NOT NULL"
                    )
    return copied


def _copy_backfill_state(src: StoreConnection, dst: StoreConnection) -> None:
    """Carry how far the histograms' backfill is: rows keep their ids, so the target folds
    exactly the rows the source had yet to fold (``meta`` is not copied otherwise)."""
    for key, value in src.execute(
        "SELECT key, value FROM meta WHERE key IN (?, ?)", (BACKFILL_TO, BACKFILLED)
    ).fetchall():
        dst.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _copy_table(src: StoreConnection, dst: StoreConnection, table: str) -> int:
    columns = _columns(src, table)
    names = ", ".join(columns)
    total = 0
    if "id" in columns:  # keyset pages: each batch a short indexed read
        last = None
        while True:
            where = "" if last is None else " WHERE id > ?"
            rows = src.execute(
                f"SELECT {names} FROM {table}{where} ORDER BY id LIMIT {BATCH_ROWS}",
                () if last is None else (last,),
            ).fetchall()
            if not rows:
                return total
            dst.insert_many(table, columns, [_plain(row) for row in rows])
            total += len(rows)
            last = rows[-1][columns.index("id")]
    batch: list[tuple[object, ...]] = []
    for row in src.stream(f"SELECT {names} FROM {table}", size=BATCH_ROWS):
        batch.append(_plain(row))
        if len(batch) >= BATCH_ROWS:
            dst.insert_many(table, columns, batch)
            total, batch = total + len(batch), []
    if batch:
        dst.insert_many(table, columns, batch)
    return total + len(batch)


def _columns(conn: StoreConnection, table: str) -> list[str]:
    if conn.is_postgres:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [name for (name,) in rows]
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()]


def _plain(row: tuple[object, ...]) -> tuple[object, ...]:
    """Row values as both drivers take them (PostgreSQL may give a memoryview for bytes)."""
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
