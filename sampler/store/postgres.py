"""The shared store: one PostgreSQL database written by every worker of every server.

Same schema and migrations as SQLite (:data:`~.schema.MIGRATIONS`), translated by
:func:`~.dialect.translate` so that a migration written once applies to both. Each process's writer
thread holds **one connection**: the writer is one sequential consumer that writes a batch per
flush interval, so a pool would only add idle connections (N workers x pool size on the
server); when the server goes away the writer closes this store and reopens it with back-off,
which is the reconnect. Requests are written with ``COPY`` in one transaction per batch;
migrations run under a transaction-scoped advisory lock so that workers starting together
migrate once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flamewatch.sampler.storable import Limits

from .base import ProfileStack, RequestFields, RouteInfo, StoreError
from .dialect import pyformat, translate
from .histograms import upsert_histograms
from .schema import UPSERT_PROFILE_STACK
from .sql import BATCH_COLUMNS, REQUEST_COLUMNS, NewIds, SQLStore, apply_migrations, fetch_id
from .urls import safe_url, scrub_secrets

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MIGRATION_LOCK",
    "PostgresStore",
    "connect_postgres",
    "migrate_postgres",
    "translate",
]

#: the advisory lock key taken while the schema is created or migrated ("flamewat")
MIGRATION_LOCK = 0x666C616D65776174
CONNECT_TIMEOUT_S = 5


def connect_postgres(url: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection that gives up quickly when the server is away and notices a dead peer."""
    import psycopg  # noqa: PLC0415 -- optional (flamewatch[postgres])

    return psycopg.connect(
        url,
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="flamewatch",
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )


def migrate_postgres(conn: psycopg.Connection[Any]) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION` under the advisory lock; return the version
    found before. DDL is transactional here: a failed migration leaves nothing behind."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        return apply_migrations(conn, lambda statement: pyformat(translate(statement)))


class PostgresStore(SQLStore["psycopg.Connection[Any]", "psycopg.Cursor[Any]"]):
    """A :class:`Store` in a PostgreSQL database (``postgresql://user@host:port/dbname``)."""

    def __init__(self, url: str, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self.url = safe_url(url)  # what logs and pages show: never the password
        self._conninfo = url

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- connection, schema, transactions ----------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg  # noqa: PLC0415 -- optional (flamewatch[postgres])

        try:
            return connect_postgres(self._conninfo)
        except psycopg.Error as exc:
            reason = scrub_secrets(str(exc), self._conninfo)
            raise StoreError(f"cannot connect to {self.url}: {reason}".strip()) from exc

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        migrate_postgres(conn)

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            yield cur

    def _sql(self, statement: str) -> str:
        return pyformat(statement)

    def _insert_id(self, cur: psycopg.Cursor[Any], statement: str, params: Sequence[Any]) -> int:
        cur.execute(pyformat(statement) + " RETURNING id", params)
        return fetch_id(cur)

    # -- writing -----------------------------------------------------------------------------

    # Names (endpoints, rules, groups, frames, stacks) get their ids outside the batch's
    # transaction, on the connection's autocommit cursor, each insert committed at once: a
    # transaction holding new names' row locks while inserting others could wait in a cycle
    # with another worker's doing the same in another order.

    def write_requests(self, process_id: int, records: Sequence[RequestFields]) -> None:
        if not records:
            return
        new = NewIds()
        with self.conn.cursor() as names:  # autocommit: each new name committed on its own
            batch = self._request_rows(names, new, process_id, records)
        self._remember(new)
        with self._transaction() as cur:
            shared = (self._process_versions[process_id], process_id)
            columns = f"{REQUEST_COLUMNS}, {BATCH_COLUMNS}"
            with cur.copy(f"COPY requests ({columns}) FROM STDIN") as copy:
                for rows in batch.rows.values():  # one list: NULLs are not kept apart here
                    for row in rows:
                        copy.write_row(row + shared)
            self._insert_outliers(cur, process_id, batch.captured)
            # rows other workers write too: each table's in key order, the tables in one
            # order, endpoints and versions last -- workers writing together never wait in a
            # cycle
            upsert_histograms(cur, pyformat, batch.histograms, ordered=True)
            last_accessed = batch.last_accessed
            cur.executemany(
                "UPDATE endpoints SET last_accessed = %s WHERE id = %s"
                " AND (last_accessed IS NULL OR last_accessed < %s)",
                [(t, e, t) for e, t in sorted(last_accessed.items())],
            )
            newest = max(last_accessed.values())
            cur.execute(
                "UPDATE versions SET last_seen = %s WHERE id = %s AND last_seen < %s",
                (newest, self._process_versions[process_id], newest),
            )
        self._group_cap.commit(batch.admission)

    def write_profiles(self, process_id: int, stacks: Sequence[ProfileStack]) -> None:
        if not stacks:
            return
        new = NewIds()
        with self.conn.cursor() as names:  # autocommit: each new frame or stack on its own
            rows = self._profile_rows(names, new, process_id, stacks)
        self._remember(new)
        rows.sort()  # rows locked in one order by every worker: no cycle of waits
        with self._transaction() as cur:
            cur.executemany(pyformat(UPSERT_PROFILE_STACK), rows)

    def record_routes(
        self, routes: Sequence[RouteInfo], monitored_default: Callable[[str], bool], now: float
    ) -> None:
        new = NewIds()
        with self.conn.cursor() as cur:  # autocommit: one short transaction per row
            self._record_routes(cur, new, sorted(routes), monitored_default, now)
        self._remember(new)

    # -- names -------------------------------------------------------------------------------

    def _upsert_version(self, cur: psycopg.Cursor[Any], name: str, source: str, now: float) -> int:
        cur.execute(
            "INSERT INTO versions AS t (name, source, first_seen, last_seen)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE"
            " SET first_seen = LEAST(t.first_seen, excluded.first_seen),"
            " last_seen = GREATEST(t.last_seen, excluded.last_seen) RETURNING id",
            (name, source, now, now),
        )
        return fetch_id(cur)

    def _upsert_endpoint(
        self, cur: psycopg.Cursor[Any], name: str, monitored: bool, now: float
    ) -> int:
        cur.execute(
            "INSERT INTO endpoints AS t (name, monitored, first_seen, last_seen)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE"
            " SET last_seen = GREATEST(t.last_seen, excluded.last_seen) RETURNING id",
            (name, int(monitored), now, now),
        )
        return fetch_id(cur)

    def _upsert_rule(
        self,
        cur: psycopg.Cursor[Any],
        endpoint_id: int,
        rule: str,
        methods: tuple[str, ...],
        now: float,
    ) -> int:
        cur.execute(
            "INSERT INTO rules AS t (endpoint_id, rule, methods, first_seen, last_seen)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (endpoint_id, rule) DO UPDATE SET"
            " last_seen = GREATEST(t.last_seen, excluded.last_seen),"
            " methods = CASE WHEN excluded.methods = '' THEN t.methods ELSE excluded.methods END"
            " RETURNING id",
            (endpoint_id, rule, ",".join(sorted(methods)), now, now),
        )
        return fetch_id(cur)

    def _upsert_group(self, cur: psycopg.Cursor[Any], name: str) -> int:
        # DO NOTHING takes no lock on an existing row (DO UPDATE would, and wait for every
        # batch whose requests reference it); the id is then read
        cur.execute(
            "INSERT INTO user_groups (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id",
            (name,),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT id FROM user_groups WHERE name = %s", (name,))
            return fetch_id(cur)
        return int(row[0])
