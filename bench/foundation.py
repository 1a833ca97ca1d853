"""Request latency of the platform's bones, through the real server (`manage.py serve`, Daphne).

    python bench/foundation.py [--requests 200]

Uses DATABASE_URL / REDIS_URL when set (the database must be migrated); otherwise a fresh SQLite
file in a temporary folder and the embedded mode. Prints p50 / p95 / mean in milliseconds for
sequential requests from one client on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMAIL, PASSWORD = "bench@buildx.local", "bench-passphrase-for-latency-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, *, headers: dict | None = None, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as response:
        return response.read()


def timed(label: str, count: int, call) -> None:
    call()  # warm up
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p95 = samples[int(len(samples) * 0.95) - 1]
    print(
        f"{label:<36} p50 {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms   "
        f"mean {statistics.fmean(samples):7.2f} ms   (n={count})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    env = dict(os.environ, DJANGO_SETTINGS_MODULE="buildx.settings")
    tmp = tempfile.TemporaryDirectory()
    if not env.get("DATABASE_URL"):
        env["SQLITE_PATH"] = str(Path(tmp.name) / "bench.sqlite3")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    create_user = (
        "import django; django.setup()\n"
        "from accounts.models import User\n"
        f"User.objects.filter(email={EMAIL!r}).delete()\n"
        f"User.objects.create_user(email={EMAIL!r}, password={PASSWORD!r})\n"
    )
    subprocess.run([sys.executable, "-c", create_user], cwd=ROOT, env=env, check=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--no-worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                request(base + "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        login = json.loads(
            request(
                base + "/api/auth/app/v1/auth/login",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"email": EMAIL, "password": PASSWORD}).encode(),
            )
        )
        bearer = {"Authorization": "Bearer " + login["meta"]["access_token"]}
        mode = "PostgreSQL" if env.get("DATABASE_URL") else "SQLite"
        mode += " + Redis" if env.get("REDIS_URL") else " + embedded"
        print(f"BuildX foundation latency, {mode}, {os.cpu_count()} CPUs, Daphne, one client")
        n = args.requests
        timed("GET /healthz", n, lambda: request(base + "/healthz"))
        timed("GET /readyz", n, lambda: request(base + "/readyz"))
        timed("GET / (anonymous home page)", n, lambda: request(base + "/"))
        timed("GET /accounts/login/", n, lambda: request(base + "/accounts/login/"))
        timed("GET /api/v1/me/ (JWT)", n, lambda: request(base + "/api/v1/me/", headers=bearer))
        timed(
            "POST headless login (password hash)",
            max(5, n // 20),
            lambda: request(
                base + "/api/auth/app/v1/auth/login",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"email": EMAIL, "password": PASSWORD}).encode(),
            ),
        )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        tmp.cleanup()


if __name__ == "__main__":
    main()
