"""A throwaway PostgreSQL server for the tests and benchmarks: initdb in a temporary directory,
``postgres`` on a free loopback port, stopped and deleted after.

The binaries are found on the PATH, else in Debian's ``/usr/lib/postgresql/<version>/bin``
(``scripts/install-postgres`` installs them). PostgreSQL refuses to run as root; as root, the
server runs as ``nobody`` (``runuser``) in a directory handed to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

__all__ = ["PostgresServer", "find_bin_dir"]

RUN_AS_WHEN_ROOT = "nobody"


def find_bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on the PATH, else the newest Debian one."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL server; :meth:`database` makes a fresh, empty database and its URL."""

    def __init__(self, *, durable: bool = False) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL's initdb/pg_ctl are not on the PATH nor in /usr/lib/postgresql/*/bin;"
                " run `bash scripts/install-postgres`"
            )
        self.bin_dir = bin_dir
        self.durable = durable  # fsync on (benchmarks) or off (tests: faster, same semantics)
        self.root = Path(tempfile.mkdtemp(prefix="flamewatch-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, RUN_AS_WHEN_ROOT)
            self._as_user = ["runuser", "-u", RUN_AS_WHEN_ROOT, "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> str:
        command = [*self._as_user, str(self.bin_dir / tool), *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, cwd=self.root
        )
        if done.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}\n{tail}")
        return done.stdout

    def start(self) -> None:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        log = str(self.root / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", " ".join(options), "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def database(self) -> str:
        """A new empty database on this server; its URL."""
        import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            quick = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f"CREATE DATABASE {name}{quick}")
        return self.url_of(name)

    def url_of(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def drop(self, url: str) -> None:
        """Drop a database made by :meth:`database` (its connections are ended)."""
        import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
