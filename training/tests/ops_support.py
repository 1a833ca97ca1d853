"""Real worker processes for the operations tests: `manage.py rundramatiq` with several processes, its
metrics endpoint (prometheus_client's multiprocess mode) and JSON logs in a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

METRICS_TOKEN = "metrics-canary-token-5d1e0c2a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT'] or 5432}/{s['NAME']}"


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted (label, value) pairs: value}}, read by prometheus_client's parser."""
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def wait_for(predicate, *, timeout: float = 120, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


class WorkerGroup:
    """One `rundramatiq --processes N` (Redis and PostgreSQL only), as a worker container runs it."""

    def __init__(
        self, tmp: Path, *, processes: int, queues: list[str], extra_env: dict[str, str] | None = None
    ):
        self.tmp = tmp
        self.port = free_port()
        self.metrics_dir = tmp / "prometheus"
        self.metrics_dir.mkdir()
        self.log_path = tmp / "worker.log"
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "BUILDX_DATA_DIR": str(settings.DATA_DIR),
            "PYTHONUNBUFFERED": "1",
            "BUILDX_SANDBOX_THREADS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "WORKER_METRICS_PORT": str(self.port),
            "WORKER_METRICS_HOST": "127.0.0.1",
            "METRICS_TOKEN": METRICS_TOKEN,
            "WORKER_HEARTBEAT_SECONDS": "0.5",
            # One message at a time per process (a trainer's setting, docker-compose.yml): a process busy
            # training holds no second run that an idle one could take.
            "dramatiq_queue_prefetch": "1",
            "LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [
            sys.executable,
            "manage.py",
            "rundramatiq",
            "--processes",
            str(processes),
            "--threads",
            "1",
        ]
        self.proc = subprocess.Popen(
            [*command, "--queues", *queues],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self) -> set[int]:
        return set(descendants(self.proc.pid)) | {self.proc.pid}

    def scrape(self, token: str | None = METRICS_TOKEN) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, ""
        except OSError:
            return 0, ""

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


# --- An S3-compatible server: moto's server mode, a real HTTP server speaking S3 ---------------------------

S3_KEY_ID, S3_SECRET = "test-key-id", "test-secret-canary-4e2b"


class S3Server:
    """`moto_server` on a free local port, started once per test session."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "moto.log", "wb")  # noqa: SIM115 - closed in stop()
        executable = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, timeout=60, what="moto's S3 server")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            if self.proc.poll() is not None:
                raise AssertionError("moto_server exited") from None
            return False

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )

    def storage_url(self, bucket: str, prefix: str) -> str:
        return f"s3://{bucket}/{prefix}?endpoint_url={self.endpoint}&region=us-east-1"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def use_bucket(settings, monkeypatch, server: S3Server, *, bucket: str, prefix: str) -> None:
    """Point this process's settings at a bucket of the server, as STORAGE_URL would."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.AWS_LOCATION = prefix
    settings.AWS_S3_ENDPOINT_URL = server.endpoint
    settings.AWS_S3_REGION_NAME = "us-east-1"
    settings.USES_OBJECT_STORAGE = True
    # Last: changing STORAGES makes Django build its default storage again, from the settings above.
    settings.STORAGES = {
        "default": {"BACKEND": "storages.backends.s3.S3Storage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
