"""A real PostgreSQL server on loopback for tests and demos: Debian's `postgresql` binaries
(`initdb`, `postgres`), password authentication (SCRAM) enforced, a free port, and a fresh
database per test in a few milliseconds.

    with PostgresServer.start(workdir) as pg:
        url = pg.create_database("audit_test")  # postgresql+psycopg://govlake:…@127.0.0.1:…/audit_test
        os.environ.update(pg.environment())     # GOVLAKE_DATABASE_URL for the `govlake` database
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from govlake.core.errors import GovlakeError
from govlake.core.net import free_port
from govlake_tools.loopback import LoopbackServer, end, spawn, wait_ready

#: The superuser the cluster is created with, and its first database.
USER = "govlake"
DATABASE = "govlake"
#: The account that runs the server when we are root: initdb and postgres refuse root.
SYSTEM_USER = "postgres"
#: Where Debian's `postgresql` package puts the server binaries, one folder per version.
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
#: Settings for a throw-away cluster: nothing survives a crash, so nothing is synced.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresServerError(GovlakeError, RuntimeError):
    """PostgreSQL could not be found, started or asked to create a database."""


def find_binaries() -> Path:
    """The folder holding `initdb` and `postgres`: the one of `initdb` on PATH, else the newest
    of Debian's `/usr/lib/postgresql/<version>/bin`."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(folder: str) -> tuple[int, ...]:
        found = re.search(r"/postgresql/([0-9.]+)/bin$", folder)
        return tuple(int(p) for p in found.group(1).split(".") if p) if found else ()

    candidates += [Path(d) for d in sorted(glob(DEBIAN_BINDIRS), key=version, reverse=True)]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "postgres")):
            return folder
    raise PostgresServerError(
        "the PostgreSQL server binaries (initdb, postgres) are missing: not on PATH nor in "
        f"{DEBIAN_BINDIRS}; install Debian's postgresql package "
        "(apt-get install --no-install-recommends postgresql)"
    )


def _as_server_user() -> list[str]:
    """The command prefix that runs the server's commands as `postgres` when we are root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresServerError(
            "running as root, and PostgreSQL refuses root: the runuser command (util-linux) "
            f"is missing to run it as {SYSTEM_USER}"
        )
    try:
        import pwd

        pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise PostgresServerError(
            f"running as root, and PostgreSQL refuses root: there is no {SYSTEM_USER} user to "
            "run it as; install Debian's postgresql package, which creates it"
        ) from exc
    return [runuser, "-u", SYSTEM_USER, "--"]


def _chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(Path(root) / name, user, user)


@dataclass
class PostgresServer(LoopbackServer):
    process: subprocess.Popen[bytes]
    port: int
    user: str
    password: str
    datadir: Path
    log: Path
    #: The folder made for the cluster outside `workdir` (root runs only), removed on stop.
    private: Path | None = None

    @classmethod
    def start(cls, workdir: Path, *, timeout: float = 60) -> PostgresServer:
        """initdb a new cluster, start it on a free loopback port and create `govlake`."""
        bindir = find_binaries()
        prefix = _as_server_user()
        workdir.mkdir(parents=True, exist_ok=True)
        private: Path | None = None
        if prefix:
            # The server runs as postgres, which cannot enter a root-only workdir (pytest's
            # tmp folders are 0700): the cluster gets its own folder, owned by postgres.
            private = Path(tempfile.mkdtemp(prefix="govlake-pg-"))
            home = private
        else:
            home = workdir
        datadir, sockets = home / "data", home / "socket"
        sockets.mkdir(exist_ok=True)
        password = secrets.token_hex(16)
        pwfile = home / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if private is not None:
            _chown_tree(private, SYSTEM_USER)
        log = workdir / "postgres.log"
        try:
            with log.open("ab") as out:
                initdb = subprocess.run(
                    [*prefix, str(bindir / "initdb"), "-D", str(datadir), f"--username={USER}",
                     f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                     "--no-locale", "--no-sync", "--no-instructions"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False,
                )  # fmt: skip
            pwfile.unlink()
            if initdb.returncode != 0:
                raise PostgresServerError(f"initdb failed ({initdb.returncode}); see {log}")
            port = free_port()
            command = [
                *prefix, str(bindir / "postgres"), "-D", str(datadir), "-p", str(port),
                "-k", str(sockets),
                *(arg for name, value in _SETTINGS.items() for arg in ("-c", f"{name}={value}")),
            ]  # fmt: skip
            process = spawn(command, log)
        except BaseException:
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)
            raise
        server = cls(process, port, USER, password, datadir, log, private)
        atexit.register(server.stop)
        return server.ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Wait until the server answers, then create the `govlake` database."""

        def answers() -> None:
            with self._admin():
                pass

        wait_ready(self.process, answers, log=self.log, timeout=timeout, pause=0.1,
                   starting=(psycopg.OperationalError,),  # not accepting connections yet
                   error=PostgresServerError, names=("postgres", "PostgreSQL"))  # fmt: skip
        self.create_database(DATABASE)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname="postgres", autocommit=True, connect_timeout=5,
        )  # fmt: skip

    def url_for(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of `database` on this server."""
        return URL.create(
            "postgresql+psycopg", username=self.user, password=self.password,
            host="127.0.0.1", port=self.port, database=database,
        ).render_as_string(hide_password=False)  # fmt: skip

    @property
    def url(self) -> str:
        """The URL of the `govlake` database."""
        return self.url_for(DATABASE)

    def environment(self) -> dict[str, str]:
        """`GOVLAKE_DATABASE_URL` for the `govlake` database."""
        return {"GOVLAKE_DATABASE_URL": self.url}

    def create_database(self, name: str) -> str:
        """Create an empty database `name` (lower-case letters, digits, `_`) and return its
        URL."""
        if not _NAME.fullmatch(name):
            raise PostgresServerError(f"database name {name!r}: use a-z, 0-9 and _, 63 at most")
        with self._admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop `name`, closing the connections still open to it."""
        with self._admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self, timeout: float = 20) -> None:
        """Fast shutdown (open sessions are ended), then remove a private cluster folder."""
        postmaster = self._postmaster_pid()
        groups = {self.process.pid}
        if postmaster is not None:
            # runuser may start postgres in a session of its own: signal it directly.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                groups.add(os.getpgid(postmaster))
                os.kill(postmaster, signal.SIGINT)
        if self.process.poll() is None:
            if postmaster is None:
                self.process.send_signal(signal.SIGINT)
            end(self.process, timeout)
        for group in groups - {os.getpgrp()}:  # anything left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        if self.private is not None:
            shutil.rmtree(self.private, ignore_errors=True)
        atexit.unregister(self.stop)
