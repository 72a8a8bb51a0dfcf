"""The store failing under load: refused records, a deleted directory, a full disk, a lock
held past the busy timeout, PostgreSQL restarted, and secrets in URLs.

In each the app's responses are unchanged, every record is stored or counted as dropped (and
the drops are logged, with their counts), and the writer recovers without a restart.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from flask import Flask
from helpers import Database, fetch_concurrently, rows
from pgserver import PostgresServer

from flamewatch.flask_plugin import ConfigError, Flamewatch
from flamewatch.sampler import OutlierRule
from flamewatch.sampler.inflight import DURATION, GROUP, STATUS, Queued, new_record
from flamewatch.sampler.recorder import Recorder
from flamewatch.sampler.store import ProcessInfo, make_store
from flamewatch.sampler.store import sqlite as sqlite_store
from flamewatch.sampler.store.failures import is_store_away
from flamewatch.sampler.writer import Writer

_LOSS = re.compile(r"^flamewatch: (\d+) records? ")


def _losses(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The log's lines about lost records."""
    return [r.getMessage() for r in caplog.records if _LOSS.match(r.getMessage())]


def _dropped_logged(lines: list[str]) -> int:
    """How many records the log says were dropped, in all."""
    return sum(int(m.group(1)) for line in lines if (m := _LOSS.match(line)) and "dropped" in line)


def _queued(status: int, group: str, client_ip: str | None) -> Queued:
    """A finished request as the request thread queues it (flamewatch.sampler.inflight)."""
    record = new_record("ep", "/ep", time.perf_counter_ns(), 0, None, client_ip=client_ip)
    record[STATUS], record[DURATION], record[GROUP] = status, 1_000_000, group
    return tuple(record)


def test_a_batch_with_a_record_the_store_refuses_stores_all_the_others(
    store_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The second wall: a value no sanitising catches (a status beyond 64 bits) fails its
    batch; the writer halves it until the one record is set aside, counted and logged."""
    recorder = Recorder(50_000, lambda endpoint: True)
    process = ProcessInfo("host", 1, "v1", "test", time.time(), "test")
    url = store_db if isinstance(store_db, str) else f"sqlite:///{store_db}"
    writer = Writer(make_store(url), recorder, OutlierRule(), process, flush_interval=0.05)
    secret = "do-not-log-me"
    for i in range(5000):
        status = 2**70 if i == 1234 else 200
        recorder.queue.append(_queued(status, f"{secret}-{i}", "127.0.0.1"))
    with caplog.at_level(logging.DEBUG, logger="flamewatch"):
        writer.start()
        assert writer.flush(timeout=60)
        # later records are written as usual
        recorder.queue.append(_queued(200, "later", None))
        assert writer.flush(timeout=60)
        assert writer.stop(10)
    ((stored,),) = rows(store_db, "SELECT count(*) FROM requests")
    assert stored == 5000
    assert recorder.dropped == writer.refused == 1
    ((dropped,),) = rows(store_db, "SELECT dropped FROM processes")
    assert dropped == 1
    refused = [m for m in _losses(caplog) if "refused by the store" in m]
    assert len(refused) == 1, refused
    assert refused[0].startswith("flamewatch: 1 record refused by the store")
    assert secret not in caplog.text  # the reason, never the record's content
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors  # the store was never taken for away


def test_store_away_errors_are_told_from_refused_batches() -> None:
    assert is_store_away(sqlite3.OperationalError("database is locked"))
    assert is_store_away(sqlite3.OperationalError("database or disk is full"))
    assert is_store_away(sqlite3.DatabaseError("file is not a database"))
    assert is_store_away(OSError(28, "No space left on device"))
    assert not is_store_away(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not is_store_away(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert not is_store_away(OverflowError("Python int too large to convert to SQLite INTEGER"))


def _app(database: Database, instance: Path, **options: object) -> Flask:
    app = Flask("faults", instance_path=str(instance))

    @app.get("/r/<int:n>")
    def answer(n: int) -> str:
        return f"answer {n}"

    Flamewatch(app, database=str(database), version="v1", flush_interval=0.05, **options)
    return app


def _load(app: Flask, start: int, n: int) -> None:
    paths = [f"/r/{i}" for i in range(start, start + n)]
    bodies = fetch_concurrently(app, paths, clients=8)
    assert bodies == [f"answer {i}".encode() for i in range(start, start + n)]  # unchanged


def test_a_deleted_store_directory_is_noticed_and_recreated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data"
    database = folder / "store.sqlite3"
    app = _app(database, tmp_path)
    agent = app.extensions["flamewatch"]
    with caplog.at_level(logging.INFO, logger="flamewatch"):
        _load(app, 0, 300)
        assert agent.flush(timeout=30)
        shutil.rmtree(folder)  # under the writer's open connection
        _load(app, 300, 500)
        assert agent.flush(timeout=30)
        _load(app, 800, 200)
        assert agent.flush(timeout=30)
    assert database.exists()
    ((stored,),) = rows(database, "SELECT count(*) FROM requests")
    # every request served after the deletion is in the new file, or counted as dropped
    assert stored + agent.recorder.dropped == 700
    assert agent.recorder.dropped == 0
    assert "is not the one this process opened: its file was deleted" in caplog.text
    ((endpoints,),) = rows(database, "SELECT count(*) FROM endpoints WHERE name = 'answer'")
    assert endpoints == 1  # the schema and the routes were written anew
    agent.close()


def test_a_lock_held_past_the_busy_timeout_drops_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    database = tmp_path / "store.sqlite3"
    app = _app(database, tmp_path, queue_size=100)
    agent = app.extensions["flamewatch"]
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="flamewatch"):
        for i in range(50):
            assert client.get(f"/r/{i}").text == f"answer {i}"
        assert agent.flush(timeout=30)
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock for longer than the timeout
        try:
            for i in range(50, 1050):
                assert client.get(f"/r/{i}").text == f"answer {i}"
            assert not agent.flush(timeout=2)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert agent.flush(timeout=60)
        for i in range(1050, 1100):
            assert client.get(f"/r/{i}").text == f"answer {i}"
        assert agent.flush(timeout=30)
        assert agent.close()  # what the last minute's report held back is said now
    ((stored,),) = rows(database, "SELECT count(*) FROM requests")
    dropped = agent.recorder.dropped
    assert dropped > 0
    assert stored + dropped == 1100
    assert _dropped_logged(_losses(caplog)) == dropped  # every drop logged, with its count
    assert "writable again" in caplog.text


def test_postgresql_restarted_drops_are_counted_and_logged(
    pg_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    app = _app(pg_url, tmp_path, queue_size=200)
    agent = app.extensions["flamewatch"]
    with caplog.at_level(logging.INFO, logger="flamewatch"):
        _load(app, 0, 100)
        assert agent.flush(timeout=30)
        postgres_server.stop("fast")
        try:
            _load(app, 100, 1000)
            assert not agent.flush(timeout=2)
        finally:
            postgres_server.start()
        assert agent.flush(timeout=60)
        _load(app, 1100, 100)
        assert agent.flush(timeout=30)
        assert agent.close()  # what the last minute's report held back is said now
    ((stored,),) = rows(pg_url, "SELECT count(*) FROM requests")
    dropped = agent.recorder.dropped
    assert dropped > 0
    assert stored + dropped == 1200
    assert _dropped_logged(_losses(caplog)) == dropped


_DISK_FULL = textwrap.dedent(
    """
    import json, logging, resource, signal, sys
    from pathlib import Path
    from flask import Flask
    from flamewatch.flask_plugin import Flamewatch

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    logging.getLogger("flamewatch").addHandler(Keep())
    logging.getLogger("flamewatch").setLevel(logging.INFO)
    database = Path(sys.argv[1])
    app = Flask("full")
    fw = Flamewatch(app, database=str(database), version="v1", flush_interval=0.05,
                    queue_size=200, sampler=False)

    @app.get("/r/<int:n>")
    def answer(n):
        return f"answer {n}"

    client = app.test_client()
    ok = True
    for i in range(100):
        ok &= client.get(f"/r/{i}").text == f"answer {i}"
    assert fw.flush(timeout=30)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # no file grows past 8 KiB any more (the WAL is rewritten from its start): the disk is full
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
    for i in range(100, 5100):
        ok &= client.get(f"/r/{i}").text == f"answer {i}"
    full_flush = fw.flush(timeout=2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    recovered = fw.flush(timeout=60)
    for i in range(5100, 5200):
        ok &= client.get(f"/r/{i}").text == f"answer {i}"
    recovered &= fw.flush(timeout=30)
    agent = app.extensions["flamewatch"]
    dropped = agent.recorder.dropped
    fw.close()
    print(json.dumps({"ok": ok, "full_flush": full_flush, "recovered": recovered,
                      "dropped": dropped, "lines": lines}))
    """
)


def test_a_full_disk_keeps_serving_counts_and_logs_drops_and_recovers(tmp_path: Path) -> None:
    """The disk fills (RLIMIT_FSIZE in a subprocess: a write past it fails as on a full disk)."""
    database = tmp_path / "store.sqlite3"
    done = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(database)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"]  # every response unchanged
    assert not result["full_flush"]
    assert result["recovered"]
    ((stored,),) = rows(database, "SELECT count(*) FROM requests")
    assert result["dropped"] > 0
    assert stored + result["dropped"] == 5200
    lines: list[str] = result["lines"]
    assert any("cannot write to the store" in line for line in lines), lines
    assert _dropped_logged(lines) == result["dropped"]
    assert any("writable again" in line for line in lines)


# -- secrets -------------------------------------------------------------------------------------


def test_the_postgresql_password_is_in_no_log_error_or_repr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "S3cr3tPW"
    with caplog.at_level(logging.DEBUG):
        # a mistyped parameter, a password libpq cannot parse, a server that is not there
        for url in (
            f"postgresql://fw:{secret}@127.0.0.1:1/fw?sslmod=require",
            f"postgresql://fw:{secret}%zz@127.0.0.1:1/fw",
            f"postgresql://fw@127.0.0.1:1/fw?password={secret}&sslmod=x",
        ):
            app = Flask("secret", instance_path=str(tmp_path))
            with pytest.raises(ConfigError) as refused:
                Flamewatch(app, database=url)
            assert secret not in str(refused.value)
        app = Flask("secret", instance_path=str(tmp_path))
        fw = Flamewatch(app, database=f"postgresql://fw:{secret}@127.0.0.1:1/fw", version="v1")
        client = app.test_client()
        assert client.get("/nothing").status_code == 404
        agent = app.extensions["flamewatch"]
        agent.start()
        assert not agent.flush(timeout=10)  # the server is not there: said once, in the log
        shown = [repr(agent.settings), repr(agent._writer.store), agent._writer.store.url]
        fw.close()
    assert "cannot open the store" in caplog.text
    assert "fw:***@127.0.0.1:1/fw" in caplog.text
    assert secret not in caplog.text
    assert secret not in capsys.readouterr().err
    assert all(secret not in text for text in shown)
