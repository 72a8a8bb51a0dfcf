"""The store's schema and its migrations, shared by every backend.

The schema version lives in ``meta``; :data:`MIGRATIONS` holds, for each version, the
statements that bring a store from the previous version to it. A store newer than this code
is refused rather than misread. Types are written so that SQLite and PostgreSQL accept them
(the PostgreSQL backend maps ``INTEGER PRIMARY KEY`` to an identity column).
"""

from __future__ import annotations

__all__ = [
    "INSERT_FRAME",
    "INSERT_STACK",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SELECT_FRAME",
    "SELECT_STACK",
    "UPSERT_PROFILE_STACK",
]

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

_V3 = (
    # aggregated profiles: functions, distinct stacks of them, and the time each endpoint's
    # requests (per version and group) spent in each stack -- rows grow with distinct stacks
    """CREATE TABLE IF NOT EXISTS frames (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        filename TEXT NOT NULL,
        first_line INTEGER NOT NULL,
        UNIQUE (name, filename, first_line)
    )""",
    # frame_ids: the stack's frame ids, root first, joined by commas
    """CREATE TABLE IF NOT EXISTS stacks (
        id INTEGER PRIMARY KEY,
        frame_ids TEXT NOT NULL UNIQUE
    )""",
    """CREATE TABLE IF NOT EXISTS profile_stacks (
        id INTEGER PRIMARY KEY,
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        group_name TEXT NOT NULL,
        stack_id INTEGER NOT NULL REFERENCES stacks (id),
        samples INTEGER NOT NULL,
        time_ms REAL NOT NULL,
        UNIQUE (endpoint_id, version_id, group_name, stack_id)
    )""",
)

_V4 = (
    # Mergeable latency histograms, written with the rows they summarise (same transaction), so
    # that every answer reads rows whose number grows with endpoints x versions x groups x hours,
    # never with requests. ``bucket`` is flamewatch.sampler.histogram.bucket_of(duration_ms), a
    # fixed log mapping (relative error 1 %): equal buckets of any processes, hosts and hours
    # merge by adding their counts (SUM ... GROUP BY bucket). Counts are BIGINT on both
    # backends (SQLite reads BIGINT as INTEGER).
    #
    # per endpoint, version and group, all time: the box plots per endpoint / version / group /
    # group x version, and the version comparisons. group_id: a user_groups id; 0 the requests
    # without a group; -1 the groups beyond the cap per (endpoint, version) ("others")
    """CREATE TABLE IF NOT EXISTS latency (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        group_id INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, version_id, group_id, bucket)
    )""",
    # per endpoint, version and UTC hour (Unix time of its start): durations over time
    """CREATE TABLE IF NOT EXISTS latency_hourly (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        hour BIGINT NOT NULL,
        bucket INTEGER NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, version_id, hour, bucket)
    )""",
    # per endpoint, method and status, all time, never pruned: the OpenMetrics histogram
    # (cumulative counters); sum_ms is the exact sum of the bucket's durations
    """CREATE TABLE IF NOT EXISTS latency_total (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        method TEXT NOT NULL,
        status INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        count BIGINT NOT NULL,
        sum_ms REAL NOT NULL,
        PRIMARY KEY (endpoint_id, method, status, bucket)
    )""",
    # counts per endpoint, version, process, UTC hour, method and status: hits (per day, per
    # hour of the week, recent), outliers, status classes, the host and process tables
    """CREATE TABLE IF NOT EXISTS traffic (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        process_id INTEGER NOT NULL REFERENCES processes (id),
        hour BIGINT NOT NULL,
        method TEXT NOT NULL,
        status INTEGER NOT NULL,
        hits BIGINT NOT NULL,
        outliers BIGINT NOT NULL,
        sum_ms REAL NOT NULL,
        PRIMARY KEY (endpoint_id, version_id, process_id, hour, method, status)
    )""",
    "CREATE INDEX IF NOT EXISTS traffic_hour ON traffic (hour)",
    "CREATE INDEX IF NOT EXISTS latency_hourly_hour ON latency_hourly (hour)",
)

_V5 = (
    # Coarser histograms and counts, so that the views read rows whose number grows with
    # endpoints x versions x days (x buckets), never with groups, processes or hours: the
    # writer upserts them with the others (same transaction). The migration fills each from
    # the v4 table it coarsens with one INSERT ... SELECT ... GROUP BY (never from raw rows;
    # a store still being backfilled gets the rest of its counts from the backfill). A day is
    # the Unix time of the start of a UTC day: ``hour / 86400 * 86400`` of its hours. In SQLite
    # the tables are WITHOUT ROWID, their rows stored in key order, so that one endpoint's (or
    # one version's) rows are read as one run of pages (PostgreSQL's translation drops it).
    #
    # ``latency`` summed over groups: the endpoint table, the boxes per endpoint and version,
    # every version comparison
    """CREATE TABLE IF NOT EXISTS latency_version (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        bucket INTEGER NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, version_id, bucket)
    ) WITHOUT ROWID""",
    "INSERT INTO latency_version (endpoint_id, version_id, bucket, count)"
    " SELECT endpoint_id, version_id, bucket, SUM(count) FROM latency"
    " GROUP BY endpoint_id, version_id, bucket",
    # ``latency`` without buckets: requests per endpoint, version and group (after the writer's
    # cap), so that the views of groups pick the groups they show by traffic and read only
    # their ``latency`` rows
    """CREATE TABLE IF NOT EXISTS group_hits (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        group_id INTEGER NOT NULL,
        hits BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, version_id, group_id)
    ) WITHOUT ROWID""",
    "INSERT INTO group_hits (endpoint_id, version_id, group_id, hits)"
    " SELECT endpoint_id, version_id, group_id, SUM(count) FROM latency"
    " GROUP BY endpoint_id, version_id, group_id",
    # ``latency_hourly`` per UTC day: the findings' durations over time, for versions that ran
    # longer than a few days
    """CREATE TABLE IF NOT EXISTS latency_daily (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        day BIGINT NOT NULL,
        bucket INTEGER NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, version_id, day, bucket)
    ) WITHOUT ROWID""",
    "INSERT INTO latency_daily (endpoint_id, version_id, day, bucket, count)"
    " SELECT endpoint_id, version_id, hour / 86400 * 86400, bucket, SUM(count)"
    " FROM latency_hourly GROUP BY endpoint_id, version_id, hour / 86400 * 86400, bucket",
    # ``traffic`` per endpoint, version and UTC day: hits, outliers and means per version
    """CREATE TABLE IF NOT EXISTS traffic_daily (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        day BIGINT NOT NULL,
        hits BIGINT NOT NULL,
        outliers BIGINT NOT NULL,
        sum_ms REAL NOT NULL,
        PRIMARY KEY (endpoint_id, version_id, day)
    ) WITHOUT ROWID""",
    "INSERT INTO traffic_daily (endpoint_id, version_id, day, hits, outliers, sum_ms)"
    " SELECT endpoint_id, version_id, hour / 86400 * 86400, SUM(hits), SUM(outliers),"
    " SUM(sum_ms) FROM traffic GROUP BY endpoint_id, version_id, hour / 86400 * 86400",
    # ``traffic`` per endpoint and UTC hour: hits per local day and hour of the week, recent hits
    """CREATE TABLE IF NOT EXISTS hits_hourly (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        hour BIGINT NOT NULL,
        hits BIGINT NOT NULL,
        outliers BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, hour)
    ) WITHOUT ROWID""",
    "INSERT INTO hits_hourly (endpoint_id, hour, hits, outliers)"
    " SELECT endpoint_id, hour, SUM(hits), SUM(outliers) FROM traffic GROUP BY endpoint_id, hour",
    # ``traffic`` per process and UTC day: the utilization page's process and host tables
    """CREATE TABLE IF NOT EXISTS process_hits (
        process_id INTEGER NOT NULL REFERENCES processes (id),
        day BIGINT NOT NULL,
        hits BIGINT NOT NULL,
        outliers BIGINT NOT NULL,
        PRIMARY KEY (process_id, day)
    ) WITHOUT ROWID""",
    "INSERT INTO process_hits (process_id, day, hits, outliers)"
    " SELECT process_id, hour / 86400 * 86400, SUM(hits), SUM(outliers) FROM traffic"
    " GROUP BY process_id, hour / 86400 * 86400",
    # ``latency`` itself stored in key order (SQLite: WITHOUT ROWID): the views of groups read
    # one endpoint's rows of a few groups at a time, a run of pages instead of a row lookup
    # each (PostgreSQL gets a plain copy of the table)
    """CREATE TABLE latency_by_key (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
        version_id INTEGER NOT NULL REFERENCES versions (id),
        group_id INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, version_id, group_id, bucket)
    ) WITHOUT ROWID""",
    "INSERT INTO latency_by_key (endpoint_id, version_id, group_id, bucket, count)"
    " SELECT endpoint_id, version_id, group_id, bucket, count FROM latency",
    "DROP TABLE latency",
    "ALTER TABLE latency_by_key RENAME TO latency",
    "CREATE INDEX IF NOT EXISTS latency_daily_day ON latency_daily (day)",
    "CREATE INDEX IF NOT EXISTS process_hits_day ON process_hits (day)",
    "CREATE INDEX IF NOT EXISTS traffic_daily_day ON traffic_daily (day)",
    "CREATE INDEX IF NOT EXISTS hits_hourly_hour ON hits_hourly (hour)",
)

#: statements taking a store from version ``n - 1`` to ``n``, at index ``n - 1``
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5)

SCHEMA_VERSION = len(MIGRATIONS)

# Statements of the aggregated profiles, in SQL that SQLite (>= 3.24) and PostgreSQL both run,
# with ``?`` placeholders (a backend whose driver wants ``%s`` replaces them).
INSERT_FRAME = (
    "INSERT INTO frames (name, filename, first_line) VALUES (?, ?, ?)"
    " ON CONFLICT (name, filename, first_line) DO NOTHING"
)
SELECT_FRAME = "SELECT id FROM frames WHERE name = ? AND filename = ? AND first_line = ?"
INSERT_STACK = "INSERT INTO stacks (frame_ids) VALUES (?) ON CONFLICT (frame_ids) DO NOTHING"
SELECT_STACK = "SELECT id FROM stacks WHERE frame_ids = ?"
UPSERT_PROFILE_STACK = (
    "INSERT INTO profile_stacks (endpoint_id, version_id, group_name, stack_id, samples, time_ms)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, version_id, group_name, stack_id)"
    " DO UPDATE SET samples = profile_stacks.samples + excluded.samples,"
    " time_ms = profile_stacks.time_ms + excluded.time_ms"
)
