"""What the browser tests share: Debian's chromium for Playwright, and a server started on a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

from django.db.backends.base.creation import TEST_DATABASE_PREFIX

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download does not work here; these flags keep Debian's chromium quiet offline.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    """Wait for ``url`` to answer 200; fail with the end of the server's log if it exits or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the server did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serve_on_test_database(*, tmp: Path, django_db_blocker, env: dict | None = None) -> Iterator[str]:
    """Run `manage.py serve` (web + worker) on pytest-django's test database; yields its base URL.

    The server connects to the test database itself (by name on PostgreSQL, by its file on SQLite), so
    what a transactional test writes, the server sees. Only an in-memory SQLite test database, which
    no other process can open, is copied to a file once (what the test writes later is not seen).
    """
    from django.conf import settings
    from django.db import connection

    env = {**os.environ, "DEBUG": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
    # pytest-django sets the test database up only for tests that ask for it: without, the server
    # would run on the developer's own database. The test database's name: TEST's, or "test_<name>".
    test_name = connection.settings_dict["TEST"].get("NAME") or TEST_DATABASE_PREFIX + unquote(
        urlparse(settings.DATABASE_URL).path.lstrip("/")
    )
    if str(connection.settings_dict["NAME"]) != str(test_name):
        raise RuntimeError("no test database is set up: mark the module django_db(transaction=True)")
    if settings.DATABASE_URL:
        with django_db_blocker.unblock():
            db_name = connection.settings_dict["NAME"]
        env["DATABASE_URL"] = urlunparse(urlparse(settings.DATABASE_URL)._replace(path=f"/{db_name}"))
    else:
        with django_db_blocker.unblock():
            connection.ensure_connection()
            name = str(connection.settings_dict["NAME"])
            if connection.is_in_memory_db():  # type: ignore[attr-defined]
                path = tmp / "browser.sqlite3"
                target = sqlite3.connect(path)
                connection.connection.backup(target)
                target.close()
                name = str(path)
        env["SQLITE_PATH"] = name
    port = free_port()
    log = tmp / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", proc, log)
        yield base
    finally:
        proc.terminate()  # serve stops its worker on the way out
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        # Anything left of the server's session (a worker process whose master was killed mid-shutdown)
        # would keep its database connections, and the test database, open.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()


@contextlib.contextmanager
def chromium_browser() -> Iterator:
    """Debian's chromium through Playwright's sync API.

    That API keeps an event loop running in this thread; Django would then refuse the test's own
    database work (flushing tables) as "async". Nothing here is async, so allow it meanwhile.
    """
    from django.db import connections
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
                # The test's code here runs in Playwright's greenlet, whose context has its own Django
                # connections: one it opened (a force_login, a query) is checked out of the psycopg pool
                # and, left open, outlives pytest-django's close of the test's own connection, so the
                # test database cannot be dropped ("being accessed by other users"). Give them back.
                connections.close_all()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
