"""The workers' side of the metrics: their own Prometheus endpoint, their messages, and a heartbeat
that says each worker process is alive (and how busy its GPUs are) to the web's ``/metrics`` and to the
admin's health page.

Metrics. A worker runs several processes (``rundramatiq --processes N``) and each writes its metrics
in prometheus_client's multiprocess mode to ``PROMETHEUS_MULTIPROC_DIR`` (set in the worker's
environment, one empty folder per worker container: a tmpfs in docker-compose.yml). One more process,
forked by Dramatiq's command beside the workers (``WorkerMetrics.forks``), serves them on
``WORKER_METRICS_PORT``, summed over the processes by prometheus_client's ``MultiProcessCollector``,
with the same access rule as the web's ``/metrics``. This is what Dramatiq's own Prometheus middleware
does; ours also carries BuildX's metrics (runs, LLM calls) and the access rule, and sets nothing in the
environment after prometheus_client is imported (Django imports it first, through django-prometheus).

Heartbeats. Every worker process writes ``{host, pid, queues, threads, seen, gpus}`` every
``WORKER_HEARTBEAT_SECONDS`` into a Redis hash (one field per process; in the embedded mode, this
process's memory). The web reads them at scrape time: ``buildx_worker_heartbeat_age_seconds`` per
process, and GPU utilisation and memory from NVML where the ``pynvml`` module and a driver are present
(otherwise the metrics are declared with no series).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.conf import settings
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from buildx.metrics import scrape_allowed

logger = logging.getLogger(__name__)

HEARTBEATS_KEY = "buildx:workers"
MESSAGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)

MESSAGES = Counter(
    "buildx_worker_messages_total",
    "Messages a worker finished, by queue, actor and outcome (ok, failed, skipped).",
    ["queue", "actor", "outcome"],
)
MESSAGE_DURATION = Histogram(
    "buildx_worker_message_duration_seconds",
    "Time a worker spent on one message.",
    ["queue", "actor"],
    buckets=MESSAGE_BUCKETS,
)

_embedded_heartbeats: dict[str, str] = {}  # the embedded mode's workers live in the web process


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)


def heartbeats_write(worker: str, record: dict) -> None:
    text = json.dumps(record)
    if settings.REDIS_URL:
        client = _redis()
        try:
            client.hset(HEARTBEATS_KEY, worker, text)
        finally:
            client.close()
    else:
        _embedded_heartbeats[worker] = text


def heartbeats_remove(worker: str) -> None:
    if settings.REDIS_URL:
        client = _redis()
        try:
            client.hdel(HEARTBEATS_KEY, worker)
        finally:
            client.close()
    else:
        _embedded_heartbeats.pop(worker, None)


def heartbeats_read() -> list[dict]:
    """Every worker process's last heartbeat, with ``age_s``; those silent for longer than
    ``WORKER_FORGET_SECONDS`` are dropped (a worker that is gone, not one that is late)."""
    if settings.REDIS_URL:
        client = _redis()
        try:
            raw = {k.decode(): v.decode() for k, v in client.hgetall(HEARTBEATS_KEY).items()}
            now = time.time()
            out = []
            for worker, text in raw.items():
                record = json.loads(text)
                if now - record["seen"] > settings.WORKER_FORGET_SECONDS:
                    client.hdel(HEARTBEATS_KEY, worker)
                    continue
                out.append({**record, "worker": worker, "age_s": now - record["seen"]})
            return sorted(out, key=lambda r: r["worker"])
        finally:
            client.close()
    now = time.time()
    records = [{**json.loads(t), "worker": w} for w, t in list(_embedded_heartbeats.items())]
    return sorted(({**r, "age_s": now - r["seen"]} for r in records), key=lambda r: r["worker"])


def gpu_stats() -> list[dict]:
    """Utilisation (0..1) and memory of each GPU this process sees, from NVML; [] without one."""
    try:
        import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py (requirements.txt): no stubs
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(
                {
                    "gpu": str(i),
                    "utilization": util.gpu / 100,
                    "memory_used": memory.used,
                    "memory_total": memory.total,
                }
            )
        return out
    except Exception:  # pynvml.NVMLError: no driver, no device
        return []


class WorkerHeartbeatCollector(Collector):
    """The workers' heartbeats and GPUs, read by the web process at scrape time."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        for name in (
            "buildx_worker_heartbeat_age_seconds",
            "buildx_gpu_utilization_ratio",
            "buildx_gpu_memory_used_bytes",
            "buildx_gpu_memory_total_bytes",
        ):
            yield GaugeMetricFamily(name, "", labels=["worker"])

    def collect(self) -> Iterable[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "buildx_worker_heartbeat_age_seconds",
            "Seconds since a worker process last said it was alive.",
            labels=["worker", "queues"],
        )
        util = GaugeMetricFamily(
            "buildx_gpu_utilization_ratio", "GPU utilisation (0..1), from NVML.", labels=["worker", "gpu"]
        )
        used = GaugeMetricFamily(
            "buildx_gpu_memory_used_bytes", "GPU memory in use.", labels=["worker", "gpu"]
        )
        total = GaugeMetricFamily("buildx_gpu_memory_total_bytes", "GPU memory.", labels=["worker", "gpu"])
        try:
            records = heartbeats_read()
        except Exception:  # Redis away
            records = []
        for record in records:
            age.add_metric([record["worker"], ",".join(record["queues"])], record["age_s"])
            for gpu in record.get("gpus", []):
                labels = [record["worker"], gpu["gpu"]]
                util.add_metric(labels, gpu["utilization"])
                used.add_metric(labels, gpu["memory_used"])
                total.add_metric(labels, gpu["memory_total"])
        # Always declared (HELP and TYPE), with series only for GPUs NVML reported: no GPU, no series.
        yield from (age, util, used, total)


class WorkerMetrics(Middleware):
    """Counts and times messages, beats the worker's heartbeat, and forks the metrics endpoint."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.stopping = threading.Event()
        self.worker_name = ""

    @property
    def forks(self):
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and settings.WORKER_METRICS_PORT:
            return [serve_worker_metrics]
        return []

    def after_worker_boot(self, broker, worker) -> None:
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "threads": worker.worker_threads,
            "started": time.time(),
        }
        self.stopping.clear()
        threading.Thread(
            target=self._beat, args=(record,), name="buildx-worker-heartbeat", daemon=True
        ).start()

    def _beat(self, record: dict) -> None:
        while True:
            try:
                heartbeats_write(self.worker_name, {**record, "seen": time.time(), "gpus": gpu_stats()})
            except Exception:
                logger.warning("Worker heartbeat could not be written", exc_info=True)
            if self.stopping.wait(settings.WORKER_HEARTBEAT_SECONDS):
                return

    def before_worker_shutdown(self, broker, worker) -> None:
        self.stopping.set()
        try:
            heartbeats_remove(self.worker_name)  # a worker stopped on purpose is not a dead one
        except Exception:
            logger.warning("Worker heartbeat could not be removed", exc_info=True)

    def before_process_message(self, broker, message) -> None:
        self.started[message.message_id] = time.monotonic()

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        self._done(message, "failed" if exception is not None else "ok")

    def after_skip_message(self, broker, message) -> None:
        self._done(message, "skipped")

    def _done(self, message, outcome: str) -> None:
        MESSAGES.labels(queue=message.queue_name, actor=message.actor_name, outcome=outcome).inc()
        started = self.started.pop(message.message_id, None)
        if started is not None:
            MESSAGE_DURATION.labels(queue=message.queue_name, actor=message.actor_name).observe(
                time.monotonic() - started
            )


def serve_worker_metrics() -> int:
    """The worker's metrics endpoint (a process of its own, forked by Dramatiq's command): every worker
    process's metrics, summed, for a request that passes the web's access rule."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    token = os.environ.get("METRICS_TOKEN", "")
    networks = [n.strip() for n in os.environ.get("METRICS_ALLOWED_NETWORKS", "").split(",") if n.strip()]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            allowed = scrape_allowed(
                authorization=self.headers.get("Authorization", ""),
                address=self.client_address[0],
                token=token,
                networks=networks,
            )
            if not allowed:
                self._answer(403, b"Forbidden\n", "text/plain")
            elif self.path.split("?")[0] != "/metrics":
                self._answer(404, b"Not found\n", "text/plain")
            else:
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # Prometheus scrapes every few seconds: no line each time

    host = os.environ.get("WORKER_METRICS_HOST", "0.0.0.0")  # noqa: S104 - a container's own interface
    port = int(os.environ.get("WORKER_METRICS_PORT", "9191"))
    server = ThreadingHTTPServer((host, port), Handler)
    logger.info("Worker metrics on http://%s:%d/metrics", host, port)
    server.serve_forever()
    return 0
