"""The SQL that ranks requests in the database, for :mod:`.aggregate`.

Everything here reads :data:`DURATIONS`, a narrow temporary copy of ``requests`` made by
:func:`durations_table` -- endpoint ``e``, version ``v``, group ``g`` (``-1`` for none),
duration ``d`` -- with one index on ``(e, v, d)``. Sorting is what ranking costs; the index
sorts once what the version boxes and the version comparisons need (their windows then read it
in order), and narrow rows make every other pass cheaper than on ``requests`` itself.

* :func:`boxes` -- a box plot per partition (endpoint, endpoint x version, ...) in **one
  pass**: ``ROW_NUMBER()`` and ``COUNT(*)`` over a window partitioned by the grouping and
  ordered by duration, keeping only the rows at the ranks a box needs (nearest-rank quantiles,
  min, max, optionally the bounds of the median's confidence interval). A second pass finds the
  Tukey whiskers: per-partition search bounds go into a temporary table joined back, and only
  the rows between a bound ``q1 - 1.5 IQR`` / ``q3 + 1.5 IQR`` and the nearest order statistic
  already known reach the ``GROUP BY`` -- usually none, rarely a few percent.
* :func:`rank_sums` -- Mann-Whitney rank sums, one small query per pair of versions of an
  endpoint (two index ranges, ranked together: ``RANK()`` and a peer-inclusive ``COUNT(*)``
  give a value's average rank over ties).

The SQL is standard -- window functions, subqueries, temporary tables and indexes, integer
division -- so that a PostgreSQL backend can run it (with its own parameter style).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .model import Box
from .stats_tests import QUANTILES, median_ci_sql, nearest_rank

__all__ = [
    "DURATIONS",
    "NO_GROUP",
    "Grouping",
    "Key",
    "Ranked",
    "boxes",
    "durations_table",
    "rank_sums",
    "temp_table",
]

Key = tuple[int, ...]
DURATIONS = "flamewatch_durations"
NO_GROUP = -1  # the group of requests with a NULL group_id (ids are positive)
_BOUNDS = "flamewatch_bounds"


@contextmanager
def durations_table(conn: sqlite3.Connection) -> Iterator[None]:
    """:data:`DURATIONS` while the block runs: what ranking needs of every request."""
    columns = "e INTEGER NOT NULL, v INTEGER NOT NULL, g INTEGER NOT NULL, d REAL NOT NULL"
    with temp_table(conn, DURATIONS, columns, ()):
        conn.execute(
            f"INSERT INTO {DURATIONS} (e, v, g, d) SELECT endpoint_id, version_id,"
            f" COALESCE(group_id, {NO_GROUP}), duration_ms FROM requests"
        )
        conn.execute(f"CREATE INDEX {DURATIONS}_evd ON {DURATIONS} (e, v, d)")
        yield


@dataclass(frozen=True)
class Grouping:
    """How requests are partitioned for a set of boxes: integer key expressions over
    :data:`DURATIONS` (as ``r``) and any tables in ``joins`` (e.g. ``LEFT JOIN t ON ...``)."""

    keys: tuple[str, ...]
    joins: str = ""
    median_ci: bool = False  # also fetch the ranks of the median's confidence interval


@dataclass(frozen=True)
class Ranked:
    """A partition's box and the order statistics it was built from (value by rank)."""

    box: Box
    at: dict[int, float]


def boxes(conn: sqlite3.Connection, grouping: Grouping) -> dict[Key, Ranked]:
    """A box per partition of ``grouping``: one ranking pass, then one pass for whiskers."""
    width = len(grouping.keys)
    parts: dict[Key, tuple[int, float, dict[int, float]]] = {}
    for row in conn.execute(_rank_sql(grouping)):
        key, (n, total, rank, duration) = tuple(row[:width]), row[width:]
        part = parts.get(key)
        if part is None:
            part = parts[key] = (n, total, {})
        part[2][rank] = duration
    searches = {key: _whisker_search(n, at) for key, (n, _, at) in parts.items()}
    found = _search_whiskers(conn, grouping, searches)
    result = {}
    for key, (n, total, at) in parts.items():
        (lower, upper), _ = searches[key]
        lower, upper = found.get(key, (lower, upper))
        assert lower is not None, "the lower whisker was not found"
        assert upper is not None, "the upper whisker was not found"
        result[key] = Ranked(_box(n, total, at, lower, upper), at)
    return result


def _rank_sql(grouping: Grouping) -> str:
    keys = ", ".join(grouping.keys)
    named = ", ".join(f"{expr} AS k{i}" for i, expr in enumerate(grouping.keys))
    wanted = ["rn = 1", "rn = n", *(f"rn = ({a} * n + {b - 1}) / {b}" for a, b in _LADDER)]
    if grouping.median_ci:
        wanted.append(median_ci_sql("rn", "n"))
    return (
        f"SELECT {_columns('', len(grouping.keys))}, n, total, rn, d FROM ("
        f"SELECT {named}, r.d AS d, ROW_NUMBER() OVER w AS rn,"
        " COUNT(*) OVER whole AS n, SUM(r.d) OVER whole AS total"
        f" FROM {DURATIONS} r {grouping.joins}"
        f" WINDOW w AS (PARTITION BY {keys} ORDER BY r.d),"
        " whole AS (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
        f") ranked WHERE {' OR '.join(wanted)}"
    )


_LADDER = tuple(QUANTILES.values())
_Fences = tuple[float | None, float | None]  # lower, upper whisker, when already known
_Search = tuple[float | None, float | None, float | None, float | None]  # lo_a, lo_b, hi_a, hi_b


def _whisker_search(n: int, at: dict[int, float]) -> tuple[_Fences, _Search]:
    """The whiskers known from the order statistics at hand, and where to look for the others.

    The lower whisker is the smallest value >= ``q1 - 1.5 IQR``: if the first known order
    statistic at or above that bound is the minimum, or directly follows a known one below it,
    it is the whisker; otherwise the whisker lies between the bound and it. The same, mirrored,
    for the upper whisker.
    """
    q1, q3 = at[nearest_rank(QUANTILES["q1"], n)], at[nearest_rank(QUANTILES["q3"], n)]
    low_bound, high_bound = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    known = sorted(at.items())
    i = next(i for i, (_, value) in enumerate(known) if value >= low_bound)
    j = max(j for j, (_, value) in enumerate(known) if value <= high_bound)
    lower = upper = lo_a = lo_b = hi_a = hi_b = None
    if i == 0 or known[i - 1][0] == known[i][0] - 1:
        lower = known[i][1]
    else:
        lo_a, lo_b = low_bound, known[i][1]
    if j == len(known) - 1 or known[j + 1][0] == known[j][0] + 1:
        upper = known[j][1]
    else:
        hi_a, hi_b = known[j][1], high_bound
    return (lower, upper), (lo_a, lo_b, hi_a, hi_b)


def _search_whiskers(
    conn: sqlite3.Connection, grouping: Grouping, searches: dict[Key, tuple[_Fences, _Search]]
) -> dict[Key, _Fences]:
    """The whiskers not known yet, from one pass joined to a temporary table of bounds."""
    width = len(grouping.keys)
    rows = [(*key, *search) for key, (_, search) in searches.items() if search != (None,) * 4]
    if not rows:
        return {}
    keys = _columns("", width)
    columns = (
        ", ".join(f"k{i} INTEGER" for i in range(width))
        + f", lo_a REAL, lo_b REAL, hi_a REAL, hi_b REAL, PRIMARY KEY ({keys})"
    )
    d = "r.d"
    low, high = f"({d} >= b.lo_a AND {d} <= b.lo_b)", f"({d} >= b.hi_a AND {d} <= b.hi_b)"
    joined = " AND ".join(f"b.k{i} = {expr}" for i, expr in enumerate(grouping.keys))
    # CROSS JOIN keeps the durations the outer loop in SQLite: one scan, a key lookup per row
    sql = (
        f"SELECT {_columns('b.', width)}, MIN(CASE WHEN {low} THEN {d} END),"
        f" MAX(CASE WHEN {high} THEN {d} END) FROM {DURATIONS} r {grouping.joins}"
        f" CROSS JOIN {_BOUNDS} b WHERE {joined} AND ({low} OR {high})"
        f" GROUP BY {_columns('b.', width)}"
    )
    found: dict[Key, _Fences] = {}
    with temp_table(conn, _BOUNDS, columns, rows):
        for row in conn.execute(sql):
            key, (lower, upper) = tuple(row[:width]), row[width:]
            (known_lower, known_upper), _ = searches[key]
            found[key] = (
                known_lower if lower is None else lower,
                known_upper if upper is None else upper,
            )
    return found


def _box(n: int, total: float, at: dict[int, float], lower: float, upper: float) -> Box:
    def q(name: str) -> float:
        return at[nearest_rank(QUANTILES[name], n)]

    return Box(
        count=n,
        mean=total / n,
        minimum=at[1],
        q1=q("q1"),
        median=q("median"),
        q3=q("q3"),
        maximum=at[n],
        lower_fence=lower,
        upper_fence=upper,
        p90=q("p90"),
        p99=q("p99"),
    )


def _columns(prefix: str, width: int) -> str:
    return ", ".join(f"{prefix}k{i}" for i in range(width))


_RANK_SUMS_SQL = f"""
SELECT SUM(CASE WHEN is_new = 1 THEN first_rank + last_rank ELSE 0 END),
       SUM(CASE WHEN rn = first_rank THEN (last_rank - first_rank + 1)
           * (last_rank - first_rank + 1) * (last_rank - first_rank + 1)
           - (last_rank - first_rank + 1) ELSE 0 END)
FROM (
    SELECT CASE WHEN v = ? THEN 1 ELSE 0 END AS is_new, ROW_NUMBER() OVER w AS rn,
           RANK() OVER w AS first_rank, COUNT(*) OVER w AS last_rank
    FROM {DURATIONS} WHERE e = ? AND v IN (?, ?)
    WINDOW w AS (ORDER BY d)
) ranked
WHERE is_new = 1 OR last_rank > first_rank
"""
# RANK() is the first rank of a value's ties, the peer-inclusive running COUNT(*) the last, so
# their sum is twice the average rank; each group of t ties has one row with rn = RANK() and
# adds t^3 - t there. Only the new version's rows and tied rows reach the sums.


def rank_sums(
    conn: sqlite3.Connection, pairs: Sequence[tuple[int, int, int]]
) -> list[tuple[float, int]]:
    """For each (endpoint, old version, new version): the new version's rank sum among both
    versions' durations (ties at their average rank) and the tie term sum(t^3 - t).

    One query per pair, each reading two ranges of the ``(e, v, d)`` index: measured faster
    in SQLite than ranking all pairs in one window over a join (which sorts every request
    twice, once per pair it is in).
    """
    sums = []
    for e, old, new in pairs:
        twice_rank_sum, tie_term = conn.execute(_RANK_SUMS_SQL, (new, e, old, new)).fetchone()
        sums.append((twice_rank_sum / 2, tie_term))
    return sums


@contextmanager
def temp_table(
    conn: sqlite3.Connection, name: str, columns: str, rows: Sequence[tuple[Any, ...]]
) -> Iterator[None]:
    """A temporary table holding ``rows`` while the block runs (a read-only connection may
    write its temporary tables); a transaction this opened is committed afterwards."""
    began = conn.in_transaction
    conn.execute(f"CREATE TEMP TABLE {name} ({columns})")
    try:
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
        yield
    finally:
        conn.execute(f"DROP TABLE {name}")
        if conn.in_transaction and not began:
            conn.commit()
