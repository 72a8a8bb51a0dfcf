"""A store seen through two of its versions, so that the report compares exactly those two.

The report (:class:`~.aggregate.ReportData`) compares each endpoint's consecutive versions in
deployment order. ``flamewatch check`` compares any two: a pull request's test run with the
main branch's, or a test run with a production deployment. Rather than a second comparison,
the connection gets temporary views that shadow the store's tables: ``versions`` holds the two
versions, the baseline first in deployment order and both of the checked version's kind
(test run or deployment, which the report compares only with their own kind), and every table
with a ``version_id`` column holds their rows only. The report's code reads the store as
ever, and its one comparison per endpoint is the one asked for -- whatever tables a later
schema adds, as long as they name their version by ``version_id``.

Temporary views live in the connection's own temporary schema (SQLite's ``temp``,
PostgreSQL's ``pg_temp``, both searched before the store's tables): the store is never
written, and the views go with the connection.
"""

from __future__ import annotations

from flamewatch.sampler.store.connection import StoreConnection

__all__ = ["VersionRef", "restrict_to_pair", "versions_in_order"]

VersionRef = tuple[int, str, str, float]  # id, name, source, first seen


def versions_in_order(conn: StoreConnection) -> list[VersionRef]:
    """The store's versions in deployment order, as the report orders them."""
    return [
        (int(i), name, source, float(first_seen))
        for i, name, source, first_seen in conn.execute(
            "SELECT id, name, source, first_seen FROM versions ORDER BY first_seen, id"
        ).fetchall()
    ]


def restrict_to_pair(conn: StoreConnection, baseline: VersionRef, version: VersionRef) -> None:
    """Make ``conn`` show only ``baseline`` and ``version``, ``baseline`` deployed first.

    On PostgreSQL the connection must not be read-only yet (a read-only transaction creates
    nothing, not even a temporary view); the caller makes it read-only afterwards.
    """
    if baseline[0] == version[0]:
        raise ValueError("a version cannot be compared with itself")
    schema = _schema(conn)
    ids = f"{baseline[0]:d}, {version[0]:d}"
    first, second = sorted((baseline[3], version[3]))
    for table, columns in sorted(_columns(conn).items()):
        if table == "versions":
            shown = [
                f"CASE WHEN id = {baseline[0]:d} THEN {first!r} ELSE {second!r} END AS first_seen"
                if column == "first_seen"
                else f"{_literal(version[2])} AS source"  # one kind: compared (see aggregate)
                if column == "source"
                else _quoted(column)
                for column in columns
            ]
            where = f"id IN ({ids})"
        elif "version_id" in columns:
            shown, where = ["*"], f"version_id IN ({ids})"
        else:
            continue  # read from the store's own table
        conn.execute(
            f"CREATE TEMPORARY VIEW {_quoted(table)} AS SELECT {', '.join(shown)}"
            f" FROM {_quoted(schema)}.{_quoted(table)} WHERE {where}"
        )


def _schema(conn: StoreConnection) -> str:
    if conn.is_postgres:
        (name,) = conn.execute("SELECT current_schema()").fetchone()
        return str(name)
    return "main"


def _columns(conn: StoreConnection) -> dict[str, list[str]]:
    """Each table of the store with its columns, in their order."""
    if conn.is_postgres:
        found: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ).fetchall():
            found.setdefault(str(table), []).append(str(column))
        return found
    return {
        table: [
            str(row[1])
            for row in conn.execute(f"PRAGMA main.table_info({_quoted(table)})").fetchall()
        ]
        for table in sorted(conn.tables())
        if not table.startswith("sqlite_")
    }


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
