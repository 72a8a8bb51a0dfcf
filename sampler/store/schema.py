"""The store's schema and its migrations, shared by every backend.

The schema version lives in ``meta``; :data:`MIGRATIONS` holds, for each version, the
statements that bring a store from the previous version to it. A store newer than this code
is refused rather than misread. Types are written so that SQLite and PostgreSQL accept them
(the PostgreSQL backend maps ``INTEGER PRIMARY KEY`` to an identity column).
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1 = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS versions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS endpoints (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        monitored INTEGER NOT NULL DEFAULT 1,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        last_accessed REAL
    )""",
    """CREATE TABLE IF NOT EXISTS rules (
        id INTEGER PRIMARY KEY,
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        rule TEXT NOT NULL,
        methods TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        UNIQUE (endpoint_id, rule)
    )""",
    """CREATE TABLE IF NOT EXISTS user_groups (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    )""",
    """CREATE TABLE IF NOT EXISTS processes (
        id INTEGER PRIMARY KEY,
        hostname TEXT NOT NULL,
        pid INTEGER NOT NULL,
        version_id INTEGER NOT NULL REFERENCES versions (id),
        agent TEXT NOT NULL,
        started_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        dropped INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS requests (
        id INTEGER PRIMARY KEY,
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        rule_id INTEGER REFERENCES rules (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        group_id INTEGER REFERENCES user_groups (id),
        process_id INTEGER NOT NULL REFERENCES processes (id),
        method TEXT NOT NULL,
        status INTEGER NOT NULL,
        started_at REAL NOT NULL,
        duration_ms REAL NOT NULL,
        client_ip TEXT,
        is_outlier INTEGER NOT NULL DEFAULT 0,
        threshold_ms REAL
    )""",
    "CREATE INDEX IF NOT EXISTS requests_endpoint_version ON requests (endpoint_id, version_id)",
    "CREATE INDEX IF NOT EXISTS requests_started_at ON requests (started_at)",
)

_V2 = (
    # outliers captured with their facts, load and profile (one row per captured outlier)
    """CREATE TABLE IF NOT EXISTS outliers (
        id INTEGER PRIMARY KEY,
        request_id INTEGER NOT NULL UNIQUE REFERENCES requests (id),
        request_json TEXT NOT NULL,
        resources_json TEXT NOT NULL,
        threshold_stack_json TEXT,
        profile BLOB,
        profile_bytes INTEGER NOT NULL DEFAULT 0,
        sample_count INTEGER NOT NULL DEFAULT 0,
        note TEXT
    )""",
)

#: statements taking a store from version ``n - 1`` to ``n``, at index ``n - 1``
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)

SCHEMA_VERSION = len(MIGRATIONS)
