"""Faults: a worker killed mid-epoch, Redis gone for a moment. Nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from django.conf import settings

from training import services
from training.models import EpochMetric, Run, RunArtifact, RunEvent
from training.tests.conftest import make_design, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _assert_complete_stream(run: Run, epochs: int) -> list[RunEvent]:
    events = list(RunEvent.objects.filter(run=run).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].kind == "run.done" and events[-1].payload["status"] == "succeeded"
    assert [m.epoch for m in EpochMetric.objects.filter(run=run).order_by("epoch")] == list(
        range(1, epochs + 1)
    )
    # The runs table's best validation accuracy is the stored epochs' (a resume drops and retrains some).
    stored = [m.val_acc for m in EpochMetric.objects.filter(run=run) if m.val_acc is not None]
    assert Run.objects.get(pk=run.pk).best_val_acc == (max(stored) if stored else None)
    return events


@pytest.mark.skipif(not settings.REDIS_URL, reason="embedded mode's worker is a thread of the test process")
def test_a_killed_worker_leaves_the_run_interrupted_and_another_worker_resumes_it(alice, workers):
    epochs = 12
    version, artifact = make_design(alice, epochs=epochs)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    first = workers.start()

    def checkpointed() -> bool:
        return RunArtifact.objects.filter(
            run=run, kind=RunArtifact.Kind.CHECKPOINT_LAST, epoch__gte=2
        ).exists()

    wait_for(checkpointed, timeout=120, what="a stored checkpoint of epoch 2")
    workers.kill(first)  # the worker and its training child, mid-epoch
    killed_at = time.monotonic()
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and run.epoch < epochs

    workers.start()  # another worker: its stale-run check notices the silent run

    def interrupted() -> bool:
        return RunEvent.objects.filter(run=run, kind="run.status", payload__status="interrupted").exists()

    wait_for(interrupted, timeout=60, what="the run to be marked interrupted")
    # Heartbeat timeout (3 s) + check interval (0.5 s) + the new worker's start-up.
    assert time.monotonic() - killed_at < settings.RUNS_HEARTBEAT_TIMEOUT + 30

    wait_for(lambda: Run.objects.get(pk=run.pk).is_finished(), timeout=180, what="the resumed run to finish")
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)
    assert run.attempt == 2 and run.auto_resumes == 1 and run.epoch == epochs
    events = _assert_complete_stream(run, epochs)
    reported = [e.payload["epoch"] for e in events if e.kind == "run.epoch"]
    resumed_from = next(
        e for e in events if e.kind == "run.log" and any("Resuming" in line for line in e.payload["lines"])
    )
    # Every epoch once; an epoch cut by the kill is reported once, after the resume.
    assert sorted(reported) == list(range(1, epochs + 1)), reported
    assert all(epoch > max(reported[: reported.index(epoch)] or [0]) for epoch in reported)
    assert resumed_from.seq > max(e.seq for e in events if e.kind == "run.epoch" and e.payload["epoch"] <= 2)


class FlakyRedis:
    """A TCP proxy to our Redis that can drop every connection and refuse new ones for a while."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.down = False
        self.writers: set = set()
        self.ready = threading.Event()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, reader, writer) -> None:
        if self.down:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def outage(self, seconds: float) -> None:
        def cut() -> None:
            self.down = True
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()

        self.loop.call_soon_threadsafe(cut)
        time.sleep(seconds)
        self.down = False

    @property
    def url(self) -> str:
        db = settings.REDIS_URL.rsplit("/", 1)[-1]
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.mark.skipif(not settings.REDIS_URL, reason="embedded mode has no Redis to lose")
def test_a_redis_outage_does_not_fail_the_run_and_every_event_is_stored(alice, workers):
    epochs = 6
    proxy = FlakyRedis()
    version, artifact = make_design(alice, epochs=epochs)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    workers.start(redis_url=proxy.url)
    wait_for(lambda: EpochMetric.objects.filter(run=run).exists(), timeout=120, what="the first epoch")
    proxy.outage(3.0)  # publishing fails (and the broker's connection drops) for 3 s

    wait_for(lambda: Run.objects.get(pk=run.pk).is_finished(), timeout=180, what="the run to finish")
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)
    assert run.attempt == 1
    _assert_complete_stream(run, epochs)
