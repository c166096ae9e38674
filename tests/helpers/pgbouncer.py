"""A PgBouncer of a test's own: transaction pooling on a free port, in front of the test database.

    with PgBouncer() as bouncer:          # Debian's pgbouncer (APT_PACKAGES in .ci/run)
        url = bouncer.url                 # postgresql://postgres@127.0.0.1:PORT/test
        bouncer.restart()                 # SIGTERM (every client connection drops), start again

Its config and auth file (``auth_type = trust``) go to a temporary directory; as root it runs as
the ``postgres`` user, since PgBouncer refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.helpers.ports import free_port

UPSTREAM = "host=127.0.0.1 port=5432 dbname=test"
READY_S = 10


class PgBouncer:
    def __init__(self) -> None:
        self.binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/test"
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.config = self.dir / "pgbouncer.ini"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> PgBouncer:
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        run_as = "user = postgres\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"[databases]\ntest = {UPSTREAM}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'users.txt'}\n"
            "pool_mode = transaction\ndefault_pool_size = 5\n"
            "ignore_startup_parameters = extra_float_digits\n" + run_as
        )
        if run_as:
            postgres = pwd.getpwnam("postgres")
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self) -> None:
        with (self.dir / "pgbouncer.log").open("a") as log:
            self.process = subprocess.Popen([self.binary, str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + READY_S
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (self.dir / "pgbouncer.log").read_text()[-2000:]
                    raise RuntimeError(f"pgbouncer did not start: {log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """SIGTERM is PgBouncer's immediate shutdown: every client connection is closed."""
        self.stop()
        self.start()
