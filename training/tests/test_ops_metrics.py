"""Metrics after real runs through real workers: two worker processes of one worker train a run each;
the worker's endpoint sums their metrics, the web's /metrics reads the database and the queues, and the
values match the database (issue 18)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random

import dramatiq
import pytest
from django.conf import settings
from prometheus_client.multiprocess import MultiProcessCollector

from buildx.test import make_user
from training.models import Run
from training.tests.conftest import make_design, receive_until_done, ws_connect
from training.tests.ops_support import METRICS_TOKEN, WorkerGroup, parse, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not settings.REDIS_URL, reason="worker processes need Redis and PostgreSQL"),
]


@pytest.fixture
def queues():
    import feedback.actors  # noqa: F401 - declares the default queue on the broker
    import training.actors  # noqa: F401 - declares the training queue on the broker

    broker = dramatiq.get_broker()
    for queue in ("training", "default"):
        broker.flush(queue)  # left by earlier tests (our own Redis database only)
    yield broker
    for queue in ("training", "default"):
        broker.flush(queue)


@pytest.fixture
def two_process_worker(transactional_db, settings, tmp_path, queues):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    group = WorkerGroup(tmp_path, processes=2, queues=["training"])
    yield group
    group.stop()


def at(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_runs_through_two_worker_processes_are_counted_once_each_and_match_the_database(
    two_process_worker, client, queues
):
    worker = two_process_worker
    # An id of its own: Redis pub/sub is shared by every database number, and other suites on this
    # Redis publish to their own user 1.
    alice = make_user("alice@example.com", id=random.randrange(10**6, 10**7))
    from buildx.worker_metrics import heartbeats_read

    # Both processes are consuming (their heartbeat is written after their consumers start).
    def worker_processes() -> set[int]:
        return {r["pid"] for r in heartbeats_read()} & worker.pids()

    pids = wait_for(lambda: len(worker_processes()) == 2 and worker_processes(), what="two worker processes")
    wait_for(
        lambda: worker.scrape()[0] == 200, what=f"the worker's metrics endpoint\n{worker.log_text()[-3000:]}"
    )
    assert worker.scrape(token=None)[0] == 403
    assert worker.scrape(token="wrong")[0] == 403

    web_before = parse(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode())
    client.force_login(alice)
    ids = []
    for _ in range(2):
        version, artifact = make_design(alice, epochs=1)
        response = client.post(
            "/api/v1/runs/",
            {"design_version": version.pk, "code_artifact": artifact.pk},
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])

    async def watch(run_id: int) -> list[dict]:
        communicator = await ws_connect(alice)
        try:
            await communicator.send_json_to({"type": "watch", "run": run_id, "after_seq": 0})
            return await receive_until_done(communicator, run_id, timeout=1200)
        finally:
            await communicator.disconnect()

    # The live stream through this (web) process, watched while the runs train.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        watching = pool.submit(asyncio.run, watch(ids[0]))
        wait_for(
            lambda: Run.objects.filter(pk__in=ids, status__in=Run.FINISHED).count() == 2,
            timeout=900,  # conditional: two runs at once on a loaded two-core machine
            what=f"both runs to finish\n{worker.log_text()[-3000:]}",
        )
        assert Run.objects.filter(pk__in=ids, status=Run.Status.SUCCEEDED).count() == 2, worker.log_text()[
            -3000:
        ]
        watched = watching.result(timeout=300)
    assert watched[-1]["type"] == "run.done" and watched[-1]["data"]["status"] == "succeeded"
    runs = list(Run.objects.filter(pk__in=ids).order_by("pk"))
    ran_on = {int(run.worker_id.split(":")[1]) for run in runs}
    assert ran_on == pids, "each process trained one run"

    # The worker's endpoint: both processes' metrics, summed; a message is counted once its actor returned.
    def scraped_when_both_messages_are_done() -> dict | None:
        status, text = worker.scrape()
        assert status == 200
        summed = parse(text)
        done = at(summed, "buildx_worker_messages_total", queue="training", actor="train_run", outcome="ok")
        return summed if done == 2 else None

    summed = wait_for(scraped_when_both_messages_are_done, what="both messages done")
    assert at(summed, "buildx_run_duration_seconds_count", status="succeeded") == 2
    assert at(summed, "buildx_run_duration_seconds_sum", status="succeeded") == pytest.approx(
        sum(run.run_seconds for run in runs)
    )
    assert at(summed, "buildx_run_queue_wait_seconds_count") == 2
    assert at(summed, "buildx_run_queue_wait_seconds_sum") == pytest.approx(
        sum(run.timings["queue_s"] for run in runs)
    )
    assert at(summed, "buildx_runs_ended_total", status="succeeded", cause="") == 2
    # ... and each process's own files hold one run each: the sum is of two, not one counted twice.
    for pid in pids:
        own = parse_collected(MultiProcessCollector.merge(list(worker.metrics_dir.glob(f"*_{pid}.db"))))
        assert at(own, "buildx_run_duration_seconds_count", status="succeeded") == 1

    # The web's /metrics: runs by status from the database, the queues from Redis, the stream histogram.
    assert client.get("/metrics").status_code == 403  # a session is not a scrape token
    web = parse(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode())
    for status_ in Run.Status.values:
        assert at(web, "buildx_runs", status=status_) == Run.objects.filter(status=status_).count()
    assert at(web, "buildx_queue_messages", queue="training") == 0
    assert at(web, "buildx_queue_oldest_message_age_seconds", queue="training") == 0
    # Each finished run queued its feedback on the default queue, which no worker here consumes.
    feedback_waiting = queues.client.llen(f"{queues.namespace}:default")
    assert feedback_waiting == 2
    assert at(web, "buildx_queue_messages", queue="default") == feedback_waiting
    assert at(web, "buildx_queue_oldest_message_age_seconds", queue="default") > 0
    stream_batches = at(web, "buildx_stream_latency_seconds_count") - at(
        web_before, "buildx_stream_latency_seconds_count"
    )
    assert stream_batches >= 1
    assert at(web, "buildx_stream_latency_seconds_sum") / at(web, "buildx_stream_latency_seconds_count") < 60
    ages = {dict(k)["worker"]: v for k, v in web["buildx_worker_heartbeat_age_seconds"].items()}
    for pid in pids:
        assert any(name.endswith(f":{pid}") and age < 60 for name, age in ages.items())


def parse_collected(families) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in families:
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out
