"""A private PostgreSQL for the tests: a fresh cluster in a temp folder, on a free port.

pytest-postgresql's process fixture was the first choice, but it cannot serve here: it runs
``pg_ctl initdb`` and ``pg_ctl start`` as the current user, which initdb refuses when that is
root (as on these machines), and it offers no way to switch accounts; its data folder sits under
pytest's base temp folder, which is private to root; and pg_ctl daemonizes the server, so it would
not be a child of the test run. So this starts ``postgres`` itself, in the foreground, as the
``postgres`` account when the tests run as root (see process.service_account).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests._services.process import (
    HOST,
    MissingBinary,
    ServiceFailed,
    as_account,
    private_dir,
    restartable_port,
    service_account,
    spawn,
    stop,
    wait_ready,
)

# Debian keeps the server programs out of PATH, one folder per major version.
VERSIONED_ROOTS = ("/usr/lib/postgresql",)
PROGRAMS = ("initdb", "postgres")
START_ATTEMPTS = 3
# Nothing in a throwaway cluster needs to survive a power cut: skip the disk flushes.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", folder.parent.name)) or (0,)


def find_bindir(path: str | None = None, roots: Sequence[str] | None = None) -> Path:
    """The folder of initdb and postgres: from PATH (``path`` overrides it), else the newest in ``roots``."""
    initdb = shutil.which("initdb", path=path)
    candidates = [Path(initdb).parent] if initdb else []
    for root in VERSIONED_ROOTS if roots is None else roots:
        candidates += sorted(Path(root).glob("*/bin"), key=_version_key, reverse=True)
    for folder in candidates:
        if all(os.access(folder / p, os.X_OK) and (folder / p).is_file() for p in PROGRAMS):
            return folder
    raise MissingBinary("PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql")


class PostgreSQL:
    """A PostgreSQL server of its own on a free port of 127.0.0.1, trust auth, with an empty database.

    close() stops it and removes its cluster.
    """

    def __init__(self, *, dbname: str = "test") -> None:
        self.bindir = find_bindir()
        self.host = HOST
        self.port = restartable_port()
        self.dbname = dbname
        self.superuser = "postgres"
        self._account = service_account("postgres")
        self.root = private_dir("ef-pg-", self._account)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # initdb wants a locale; C.UTF-8 exists on every modern glibc, whatever the caller's LANG says.
        self._env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        atexit.register(self.close)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the test database."""
        return f"postgresql+psycopg://{self.superuser}@{self.host}:{self.port}/{self.dbname}"

    def _conninfo(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={self.superuser} dbname={dbname} connect_timeout=2"

    def _initdb(self) -> None:
        command = [
            *as_account(self._account),
            str(self.bindir / "initdb"),
            f"--pgdata={self.data}",
            f"--username={self.superuser}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]
        done = subprocess.run(
            command, cwd=self.root, env=self._env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ServiceFailed(f"initdb failed with status {done.returncode}:\n{done.stdout}{done.stderr}")

    def _accepts_queries(self) -> bool:
        # The port opens before the server has finished starting ("the database system is starting up"),
        # so readiness is a session that logs in.
        import psycopg

        try:
            with psycopg.connect(self._conninfo("postgres")):
                return True
        except psycopg.OperationalError:
            return False

    def _spawn(self) -> subprocess.Popen[bytes]:
        settings = [f"listen_addresses={self.host}", f"unix_socket_directories={self.root}", *FAST_SETTINGS]
        command = [
            *as_account(self._account),
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
        ]
        for setting in settings:
            command += ["-c", setting]
        return spawn(command, self.log, self.root, self._env)

    def start(self) -> None:
        """Create the cluster, start the server, create the database; return once it answers."""
        import psycopg

        self._initdb()
        for attempt in range(START_ATTEMPTS):
            if attempt:
                self.port = restartable_port()
            self.proc = self._spawn()
            try:
                wait_ready(
                    self.proc, self._accepts_queries, f"PostgreSQL on {self.host}:{self.port}", self.log
                )
                break
            except ServiceFailed:
                stop(self.proc, signal.SIGKILL)
                if attempt == START_ATTEMPTS - 1:
                    raise
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are rolled back, where SIGTERM would wait for them to end."""
        if self.proc is not None:
            stop(self.proc, signal.SIGINT)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> PostgreSQL:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
