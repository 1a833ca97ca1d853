"""`manage.py serve` (what `make run` starts): Daphne plus the worker, up and down in one command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from django.conf import settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


# serve started as a script's background job is: with SIGINT ignored, which exec() keeps. Its stop must not
# depend on how it was started (it did: CI jobs started in the background saw serve ignore the tests'
# SIGINT and run on until the 180 s ran out, while the same tests passed from a terminal).
SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def start_serve(port: int, env: dict[str, str]) -> subprocess.Popen:
    """`manage.py serve` on the port, its output (text) on a pipe, in a session of its own, with SIGINT
    ignored when it starts (as a background job's is)."""
    return subprocess.Popen(
        [sys.executable, "-c", SIGINT_IGNORED, "manage.py", "serve", "--port", str(port)],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stopped_output(process: subprocess.Popen, *, marker: str) -> str:
    """Serve's output to its end, once it has stopped. The 180 s only bound a hang (the stop takes seconds);
    a hang fails with what is still running: serve itself, or a process it started that holds its output
    (every one carries `marker` in its environment)."""
    try:
        return process.communicate(timeout=180)[0]
    except subprocess.TimeoutExpired as expired:
        alive = []
        for pid in processes_with(marker):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
                alive.append(f"pid {pid} (group {os.getpgid(pid)}): {command}")
            except OSError:
                continue
        state = "has exited" if process.poll() is not None else "is still running"
        for pid in [process.pid, *processes_with(marker)]:  # nothing of a failed run lingers on
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=10)
        raise AssertionError(
            f"serve {state} 180 s after SIGINT; still running: {alive}; output: {expired.output!r}"
        ) from None


@pytest.mark.slow
def test_serve_runs_web_and_worker_and_stops_them_together(tmp_path):
    """Embedded (no REDIS_URL): a worker inside the process. With REDIS_URL: a separate worker process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SQLITE_PATH"] = str(tmp_path / "serve.sqlite3")  # the page and checks below need no tables
    env["DEBUG"] = "1"  # as `make run`
    env.pop("BUILDX_VALIDATION_WARMUP", None)
    process = start_serve(port, env)
    try:
        assert json.loads(wait_for(f"http://127.0.0.1:{port}/healthz", process)) == {"status": "ok"}
        ready = json.loads(wait_for(f"http://127.0.0.1:{port}/readyz", process))
        assert ready["status"] == "ready"
        home = wait_for(f"http://127.0.0.1:{port}/", process).decode()
        assert "/accounts/signup/" in home
        css = wait_for(f"http://127.0.0.1:{port}/static/css/site.css", process).decode()
        assert ":root" in css
    finally:
        process.send_signal(signal.SIGINT)
        # The stop waits for the validation warm-up (importing torch): room for a busy machine.
        output = stopped_output(process, marker=env["SQLITE_PATH"])
    assert process.returncode == 0, output
    # The editor's first check does not wait for torch under `make run` either: the server warmed the
    # validation up in the background (a stop during the warm-up waits for it: the line is always there).
    assert "Validation warmed up in" in output, output
    if env.get("REDIS_URL"):
        assert ready["checks"]["broker"]["kind"] == "RedisBroker"
        match = re.search(r"Worker process started \(pid (\d+)\)", output)
        assert match, output
        with pytest.raises(ProcessLookupError):  # stopped and reaped with the server
            os.kill(int(match.group(1)), 0)
    else:
        assert "Embedded mode: in-process worker" in output
        assert "worker (in-process)" in ready["embedded"]
        assert "Worker has been shut down." in output


def processes_with(marker: str) -> list[int]:
    """The live processes whose environment holds `marker` (everything serve started inherits it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if marker.encode() in environ.read():
                        found.append(int(entry))
            except OSError:  # gone, or a zombie's
                continue
    return found


@pytest.mark.slow
def test_a_stop_while_the_worker_boots_stops_everything_serve_started(tmp_path):
    """Ctrl+C right after the worker process started (it is still importing): serve stops cleanly and no
    process it started runs on. Before, the worker outlived serve and kept its output open."""
    port = free_port()
    marker = str(tmp_path / "serve-boot.sqlite3")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SQLITE_PATH"] = marker
    env["DEBUG"] = "1"
    process = start_serve(port, env)
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:  # until the worker has started (or the embedded one)
            seen.append(line)
            if "Worker process started" in line or "Embedded mode" in line:
                break
        process.send_signal(signal.SIGINT)
        output = "".join(seen) + stopped_output(process, marker=marker)
        assert process.returncode == 0, output
        assert processes_with(marker) == [], output
    finally:
        for pid in processes_with(marker):  # a failed run leaves nothing behind either
            os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
