"""The editor's first check after a server start, as `make run` serves it (DEBUG on, embedded worker).

    python bench/first_check.py [--delays 0,3] [--repeat 1]

For each delay, a fresh `manage.py serve` on a throw-away SQLite database, with the validation warm-up off
(BUILDX_VALIDATION_WARMUP=0: how `make run` served before) and on: once /healthz answers, the script
logs in through the API, waits `delay` seconds (a person opening the editor) and times the first
POST /api/v1/designs/validate/ (the digits starter, what "Checking..." waits for), then a second one.
Figures are wall-clock milliseconds through the network, on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from buildx.testing.browser import free_port, wait_until_up  # noqa: E402

EMAIL, PASSWORD = "bench@example.com", "a-long-bench-password-42"


def post_json(url: str, body: dict, token: str | None = None) -> tuple[int, dict, float]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        data = json.loads(response.read())
        return response.status, data, (time.perf_counter() - started) * 1000


def prepare_database(env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # fmt: skip
    create = (
        "from accounts.models import User; "
        f"User.objects.filter(email={EMAIL!r}).exists() or "
        f"User.objects.create_user(username={EMAIL!r}, email={EMAIL!r}, password={PASSWORD!r})"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", create], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # fmt: skip


def one_start(env: dict, *, warm_up: bool, delay: float, spec: dict, log: Path) -> tuple[float, float, float]:
    """(seconds until /healthz answered, first check ms, second check ms) of one fresh server."""
    port = free_port()
    env = {**env, "BUILDX_VALIDATION_WARMUP": "1" if warm_up else "0"}
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", proc, log, timeout=180)
        up = time.monotonic() - started
        _status, login, _ms = post_json(
            f"{base}/api/auth/app/v1/auth/login", {"email": EMAIL, "password": PASSWORD}
        )
        token = login["meta"]["access_token"]
        time.sleep(delay)
        status, _body, first = post_json(f"{base}/api/v1/designs/validate/", spec, token)
        assert status == 200
        _status, _body, second = post_json(f"{base}/api/v1/designs/validate/", spec, token)
        return up, first, second
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0,3", help="seconds between the server answering and the check")
    parser.add_argument("--repeat", type=int, default=1, help="fresh servers per row (the median is printed)")
    args = parser.parse_args()
    spec = json.loads((ROOT / "designs" / "starters" / "tiny_cnn_digits.json").read_text())["spec"]
    with tempfile.TemporaryDirectory(prefix="buildx-first-check-") as tmp:
        env = {
            **os.environ,
            "DEBUG": "1",  # as `make run`
            "SQLITE_PATH": str(Path(tmp) / "db.sqlite3"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        prepare_database(env)
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print("warm-up  delay  server up   first check   second check")
        for delay in [float(d) for d in args.delays.split(",")]:
            for warm_up in (False, True):
                rows = [
                    one_start(env, warm_up=warm_up, delay=delay, spec=spec, log=Path(tmp) / "serve.log")
                    for _ in range(args.repeat)
                ]
                up, first, second = (statistics.median(column) for column in zip(*rows, strict=True))
                print(
                    f"{'on ' if warm_up else 'off'}      {delay:4.1f} s  {up:6.1f} s  {first:9.0f} ms  {second:9.0f} ms"
                )


if __name__ == "__main__":
    main()
