"""Request latency of the platform's bones, through the real server (`manage.py serve`, Daphne).

    python bench/foundation.py [--requests 200] [--metrics on|off|compare] [--rounds 2]

Uses DATABASE_URL / REDIS_URL when set (the database must be migrated); otherwise a fresh SQLite
file in a temporary folder and the embedded mode. Prints p50 / p95 / mean in milliseconds for
sequential requests from one client on this machine. ``--metrics compare`` measures the cost of the
Prometheus metrics (django-prometheus's middleware and database wrapper, BuildX's request line): the
same requests with METRICS_ENABLED on and off, alternately, and the ratio.
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


def timed(label: str, count: int, call) -> tuple[float, float, float]:
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
    return statistics.median(samples), p95, statistics.fmean(samples)


def measure(env: dict, n: int) -> dict[str, tuple[float, float, float]]:
    """Start the server with ``env``, time each endpoint, stop it: {label: (p50, p95, mean)}."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--no-worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, tuple[float, float, float]] = {}
    try:
        deadline = time.monotonic() + 120  # a loaded machine starts Daphne (and Django) slowly
        while True:
            try:
                request(base + "/healthz")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        login = json.loads(
            request(
                base + "/api/auth/app/v1/auth/login",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"email": EMAIL, "password": PASSWORD}).encode(),
            )
        )
        bearer = {"Authorization": "Bearer " + login["meta"]["access_token"]}
        results["GET /healthz"] = timed("GET /healthz", n, lambda: request(base + "/healthz"))
        results["GET /readyz"] = timed("GET /readyz", n, lambda: request(base + "/readyz"))
        results["GET / (anonymous home page)"] = timed(
            "GET / (anonymous home page)", n, lambda: request(base + "/")
        )
        results["GET /accounts/login/"] = timed(
            "GET /accounts/login/", n, lambda: request(base + "/accounts/login/")
        )
        results["GET /api/v1/me/ (JWT)"] = timed(
            "GET /api/v1/me/ (JWT)", n, lambda: request(base + "/api/v1/me/", headers=bearer)
        )
        results["POST headless login (password hash)"] = timed(
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
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--metrics",
        choices=("on", "off", "compare"),
        default="on",
        help="compare: the same requests with METRICS_ENABLED=1 and =0, alternately, and their ratio",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of on/off with --metrics compare")
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
    mode = "PostgreSQL" if env.get("DATABASE_URL") else "SQLite"
    mode += " + Redis" if env.get("REDIS_URL") else " + embedded"
    print(f"BuildX foundation latency, {mode}, {os.cpu_count()} CPUs, Daphne, one client")
    try:
        if args.metrics != "compare":
            env["METRICS_ENABLED"] = "1" if args.metrics == "on" else "0"
            print(f"metrics {args.metrics}")
            measure(env, args.requests)
            return
        # Alternate on and off so that the machine's load drifts over both alike.
        on: list[dict] = []
        off: list[dict] = []
        for i in range(args.rounds):
            for enabled, into in (("1", on), ("0", off)):
                print(f"round {i + 1}, metrics {'on' if enabled == '1' else 'off'}")
                into.append(measure({**env, "METRICS_ENABLED": enabled}, args.requests))
        print("cost of metrics (on / off, median of the rounds' p50 and mean):")
        for label in on[0]:
            p50_on = statistics.median(r[label][0] for r in on)
            p50_off = statistics.median(r[label][0] for r in off)
            mean_on = statistics.median(r[label][2] for r in on)
            mean_off = statistics.median(r[label][2] for r in off)
            print(
                f"{label:<36} p50 {p50_on:7.2f} / {p50_off:7.2f} ms = {p50_on / p50_off:5.3f}   "
                f"mean {mean_on:7.2f} / {mean_off:7.2f} ms = {mean_on / mean_off:5.3f}"
            )
    finally:
        tmp.cleanup()


if __name__ == "__main__":
    main()
