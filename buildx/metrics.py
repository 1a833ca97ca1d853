"""BuildX's Prometheus metrics: the definitions, the collectors read at scrape time, and ``/metrics``.

Names follow Prometheus' conventions (``buildx_`` prefix, base units, ``_total`` for counters). Two
kinds live here:

- Observed where they happen (counters, histograms): run duration and queue wait, runs ended by cause,
  the live stream's latency and gaps, LLM calls, predictions, WebSockets open. On a worker they are
  written in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) and served, summed
  over the worker's processes, by ``buildx.worker_metrics``.
- Read at scrape time (collectors): runs by status (the database), queue depth and the age of the
  oldest message (the broker), the workers' heartbeats and GPUs (``buildx.worker_metrics``). They are
  registered by the web process only (``register_collectors``), so every worker does not repeat them.

Sandbox kills are counted by the sandbox layer itself (``sandbox.supervisor.SANDBOX_KILLS``), which
imports nothing of BuildX.

``/metrics`` is for Prometheus, not for people: it answers a request that carries
``Authorization: Bearer $METRICS_TOKEN``, or one from an address in ``METRICS_ALLOWED_NETWORKS``, and
refuses every other with 403 (nginx does not route it at all).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

# Seconds: from a second to the longest run a server allows (RUNS_MAX_WALL_SECONDS, an hour by default).
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
QUEUES = ("default", "training")  # DESIGN.md: LLM and feedback jobs; training runs
PREDICT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# --- Runs (observed on the worker that ran them) ---------------------------------------------------

RUN_DURATION = Histogram(
    "buildx_run_duration_seconds",
    "Wall time of one execution of a run on a worker, from its claim to its final status.",
    ["status"],
    buckets=RUN_BUCKETS,
)
RUN_QUEUE_WAIT = Histogram(
    "buildx_run_queue_wait_seconds",
    "Time a run waited in the training queue, from its creation to a worker's claim.",
    buckets=WAIT_BUCKETS,
)
RUNS_ENDED = Counter(
    "buildx_runs_ended_total",
    "Executions of runs that ended, by final status and cause (empty for a success).",
    ["status", "cause"],
)

# --- Live stream and WebSockets (the web process) ----------------------------------------------------

WEBSOCKETS_OPEN = Gauge(
    "buildx_websocket_connections", "WebSocket connections open on this process.", multiprocess_mode="livesum"
)
STREAM_LATENCY = Histogram(
    "buildx_stream_latency_seconds",
    "From a batch of run events stored in the database to its delivery to this process's sockets.",
    buckets=STREAM_BUCKETS,
)
STREAM_GAPS = Counter(
    "buildx_stream_gaps_total",
    "Run events missing from a socket's live stream (the channel layer dropped them); filled from the database.",
)

# --- LLM --------------------------------------------------------------------------------------------

LLM_CALLS = Counter(
    "buildx_llm_calls_total",
    "LLM calls by purpose and outcome (ok, cached, or the error's code).",
    ["purpose", "outcome"],
)
LLM_TOKENS = Counter("buildx_llm_tokens_total", "LLM tokens paid for.", ["purpose", "direction"])
LLM_COST = Counter("buildx_llm_cost_dollars_total", "LLM cost in US dollars.", ["purpose"])
LLM_LATENCY = Histogram(
    "buildx_llm_latency_seconds", "LLM call latency, retries included.", ["purpose"], buckets=LLM_BUCKETS
)

# --- Predictions (the web process) ------------------------------------------------------------------

PREDICTIONS = Counter("buildx_predictions_total", "Prediction requests by outcome.", ["outcome"])
PREDICTION_LATENCY = Histogram(
    "buildx_prediction_latency_seconds", "Latency of one prediction request.", buckets=PREDICT_BUCKETS
)


def observe_llm_call(
    *, purpose: str, outcome: str, tokens_in: int, tokens_out: int, cost: float, latency_s: float
) -> None:
    LLM_CALLS.labels(purpose=purpose, outcome=outcome).inc()
    if outcome != "cached":
        LLM_TOKENS.labels(purpose=purpose, direction="input").inc(tokens_in)
        LLM_TOKENS.labels(purpose=purpose, direction="output").inc(tokens_out)
        LLM_COST.labels(purpose=purpose).inc(cost)
    if latency_s > 0:
        LLM_LATENCY.labels(purpose=purpose).observe(latency_s)


# --- Read at scrape time -----------------------------------------------------------------------------


def queue_stats(broker: Any, queue: str) -> tuple[int, float | None]:
    """(messages waiting, age in seconds of the oldest one or None) of a Dramatiq queue.

    Redis: the queue is a list of message ids (oldest first) beside a hash of the messages; the
    in-memory broker of the embedded mode keeps encoded messages in a ``queue.Queue``."""
    now_ms = time.time() * 1000
    client = getattr(broker, "client", None)
    if client is not None:
        key = f"{broker.namespace}:{queue}"
        depth = int(client.llen(key))
        oldest = client.lindex(key, 0) if depth else None
        data = client.hget(f"{key}.msgs", oldest) if oldest else None
    else:
        q = broker.queues.get(queue)
        depth = q.qsize() if q is not None else 0
        data = q.queue[0] if depth else None
    if not data:
        return depth, None
    try:
        timestamp = json.loads(data)["message_timestamp"]
    except (ValueError, KeyError, TypeError):
        return depth, None
    return depth, max(0.0, (now_ms - timestamp) / 1000)


class QueueCollector(Collector):
    """Depth and oldest-message age of every declared Dramatiq queue (and its delay queue)."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily("buildx_queue_messages", "", labels=["queue"])
        yield GaugeMetricFamily("buildx_queue_oldest_message_age_seconds", "", labels=["queue"])

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "buildx_queue_messages", "Messages waiting in a Dramatiq queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "buildx_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting in a Dramatiq queue (0 when it is empty).",
            labels=["queue"],
        )
        broker = dramatiq.get_broker()
        # The platform's queues whether or not this process imported their actors, and any other declared.
        for queue in sorted({*QUEUES, *(q for q in broker.get_declared_queues() if not q.endswith(".DQ"))}):
            try:
                n, oldest = queue_stats(broker, queue)
            except Exception:  # Redis away: the scrape goes on; up{} and the alerts say the rest
                continue
            depth.add_metric([queue], n)
            age.add_metric([queue], oldest or 0.0)
        yield depth
        yield age


class GaugeCollector(Collector):
    """One gauge with one label, read at scrape time by a function of an app (runs by status, from
    training): ``read()`` returns {label value: number}."""

    def __init__(
        self, name: str, documentation: str, label: str, read: Callable[[], dict[str, float]]
    ) -> None:
        self.name, self.documentation, self.label, self.read = name, documentation, label, read

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Registering asks for the names: without this it would collect, a query before migrations.
        yield GaugeMetricFamily(self.name, self.documentation, labels=[self.label])

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, number in sorted(self.read().items()):
            family.add_metric([value], number)
        yield family


_registered: dict[str, Collector] = {}


def register_collector(name: str, collector: Collector) -> None:
    """Register a scrape-time collector once per process, whatever the number of calls."""
    if name not in _registered:
        REGISTRY.register(collector)
        _registered[name] = collector


def register_collectors() -> None:
    """The platform's scrape-time collectors (the queues, the workers' heartbeats)."""
    from buildx.worker_metrics import WorkerHeartbeatCollector  # the heartbeats module imports this one

    register_collector("queues", QueueCollector())
    register_collector("workers", WorkerHeartbeatCollector())


# --- Access ------------------------------------------------------------------------------------------


def scrape_allowed(*, authorization: str, address: str, token: str, networks: list[str]) -> bool:
    """A bearer token equal to ``token`` (METRICS_TOKEN), or an address in ``networks``
    (METRICS_ALLOWED_NETWORKS). Neither configured: nobody."""
    if token and authorization.startswith("Bearer "):
        if hmac.compare_digest(authorization[7:].strip().encode(), token.encode()):
            return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_ENABLED:
        return HttpResponse(status=404)
    if not scrape_allowed(
        authorization=request.headers.get("Authorization", ""),
        address=request.META.get("REMOTE_ADDR", ""),
        token=settings.METRICS_TOKEN,
        networks=settings.METRICS_ALLOWED_NETWORKS,
    ):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    register_collectors()
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
