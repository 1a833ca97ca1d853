"""Request latency of the platform's bones, through the real server (`manage.py serve`, Daphne).

    python bench/foundation.py [--requests 200] [--metrics on|off|compare|cpu] [--rounds 2]

Uses DATABASE_URL / REDIS_URL when set (the database must be migrated); otherwise a fresh SQLite
file in a temporary folder and the embedded mode. Prints p50 / p95 / mean in milliseconds for
sequential requests from one client on this machine. ``--metrics compare`` measures the cost of the
Prometheus metrics (django-prometheus's middleware and database wrapper, BuildX's request line): the
same requests with METRICS_ENABLED on and off, alternately, and the ratio. Through Daphne on a shared
machine that ratio drowns in the server's and the client's scheduling noise; ``--metrics cpu`` measures
what the metrics cost the server itself: each request is handled in-process (Django's test client calls
the WSGI handler in the same thread, no socket) and timed by the thread's CPU clock, in a fresh process
per setting (the database wrapper is chosen at start-up), alternately on and off, and the difference.
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
sys.path.insert(0, str(ROOT))  # --child-cpu imports the project
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


CPU_PATHS = ("/healthz", "/api/v1/me/", "/dashboard/", "/runs/")  # signed in: pages with queries


def child_cpu(n: int) -> None:
    """In this process (METRICS_ENABLED from the environment): server CPU microseconds per request."""
    import django

    django.setup()
    from django.test import Client

    from accounts.models import User

    client = Client()
    client.force_login(User.objects.get(email=EMAIL))
    out = {}
    for path in CPU_PATHS:
        for _ in range(20):  # warm up: imports, template loading, the first query's connection
            assert client.get(path).status_code == 200, path
        samples = []
        for _ in range(n):
            start = time.thread_time_ns()
            client.get(path)
            samples.append((time.thread_time_ns() - start) / 1000)
        out[path] = (statistics.median(samples), statistics.fmean(samples))
    print(json.dumps(out))


def measure_cpu(env: dict, n: int) -> dict[str, tuple[float, float]]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child-cpu", str(n)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return {path: tuple(v) for path, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


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
        choices=("on", "off", "compare", "cpu"),
        default="on",
        help="compare: the same requests with METRICS_ENABLED=1 and =0, alternately, and their ratio; "
        "cpu: the server's CPU time per request, in-process, on and off",
    )
    parser.add_argument("--child-cpu", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of on/off with --metrics compare")
    args = parser.parse_args()
    if args.child_cpu:
        child_cpu(args.child_cpu)
        return

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
    how = "in-process" if args.metrics == "cpu" else "Daphne, one client"
    print(f"BuildX foundation latency, {mode}, {os.cpu_count()} CPUs, {how}")
    try:
        if args.metrics == "cpu":
            print("server CPU time per request, in-process (thread CPU clock), metrics on / off")
            cpu_on: list[dict] = []
            cpu_off: list[dict] = []
            for i in range(args.rounds):
                for enabled, into in (("1", cpu_on), ("0", cpu_off)):
                    into.append(measure_cpu({**env, "METRICS_ENABLED": enabled}, args.requests))
                    print(f"round {i + 1}, metrics {'on' if enabled == '1' else 'off'}: " + "   ".join(
                        f"{path} {into[-1][path][0]:.0f} us" for path in CPU_PATHS))  # fmt: skip
            print("cost of metrics (median of the rounds' median CPU us per request, on / off):")
            for path in CPU_PATHS:
                c_on = statistics.median(r[path][0] for r in cpu_on)
                c_off = statistics.median(r[path][0] for r in cpu_off)
                print(
                    f"{path:<20} {c_on:8.0f} / {c_off:8.0f} us = {c_on / c_off:5.3f}   "
                    f"(+{c_on - c_off:.0f} us per request, n={args.requests} x {args.rounds} rounds)"
                )
            return
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
