"""Reading what flamewatch stored, straight from the SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask


def flush(app: Flask) -> None:
    """Wait for the app's writer; fail if the store could not be written."""
    assert app.extensions["flamewatch"].flush(timeout=30), "flush failed"


def rows(db_path: Path, sql: str = "SELECT * FROM requests", *args: Any) -> list[sqlite3.Row]:
    """Read rows from a real store file (a fresh connection, closed at once)."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


REQUESTS_SQL = """
SELECT r.*, e.name AS endpoint, ru.rule AS rule, v.name AS version, g.name AS grp,
       p.hostname AS hostname, p.pid AS pid
FROM requests r
JOIN endpoints e ON e.id = r.endpoint_id
LEFT JOIN rules ru ON ru.id = r.rule_id
JOIN versions v ON v.id = r.version_id
LEFT JOIN user_groups g ON g.id = r.group_id
JOIN processes p ON p.id = r.process_id
ORDER BY r.id
"""


def stored(db_path: Path) -> list[sqlite3.Row]:
    """Every stored request with its names resolved, oldest first."""
    return rows(db_path, REQUESTS_SQL)


def group_from_header(request: Any) -> str:
    """A group_by callable named by import path in a test."""
    return f"team-{request.headers['X-Team']}"
