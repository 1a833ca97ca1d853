"""What the run's log says between Train and the first epoch's line, about a Stop, and about a resume."""

from __future__ import annotations

import pytest

from training import services
from training.models import Run, RunEvent
from training.services import sink as sink_module
from training.tests.conftest import make_design, wait_for


def _lines(run: Run, stream: str | None = None) -> list[str]:
    lines = []
    for event in RunEvent.objects.filter(run=run, kind="run.log").order_by("seq"):
        if stream is None or event.payload["stream"] == stream:
            lines += event.payload["lines"]
    return lines


@pytest.mark.django_db(transaction=True)
def test_the_log_says_what_happens_before_the_first_epoch_ends(alice, run_storage, tmp_path, monkeypatch):
    monkeypatch.setattr(sink_module, "PROGRESS_LOG_EVERY_S", 0.0)
    version, artifact = make_design(alice, epochs=3)
    run = services.run_claim(run_id=services.run_create(owner=alice, version=version, artifact=artifact).pk)
    assert run is not None
    sink = services.EventSink(run=run, attempt=run.attempt, run_dir=tmp_path)
    sink.handle({"kind": "status", "status": "running", "device": "cpu", "torch": "2", "params": 6090})
    for batch in (0, 10, 20):
        sink.handle({"kind": "progress", "epoch": 1, "epochs": 3, "batch": batch, "batches": 51})
    sink.handle({"kind": "stopped", "epoch": 0})
    sink.close()

    assert _lines(run, "platform") == [
        "The data is loaded: building the model (6,090 parameters) on cpu.",
        "Epoch 1/3 started: 51 batches.",
        "Epoch 1/3: batch 10 of 51.",
        "Epoch 1/3: batch 20 of 51.",
        "Stopped after 0 completed epoch(s); Resume continues from there.",
    ]


@pytest.mark.django_db
def test_a_stop_is_logged_once_when_asked(alice, run_storage):
    version, artifact = make_design(alice, epochs=3)
    running = services.run_claim(
        run_id=services.run_create(owner=alice, version=version, artifact=artifact).pk
    )
    assert running is not None
    services.run_stop(run=running)
    services.run_stop(run=running)  # a second click: already asked
    assert _lines(running) == [
        "Stop requested: the run stops at its next batch and keeps a checkpoint of its last completed epoch."
    ]
    running.refresh_from_db()
    assert running.stop_requested and running.log_lines == 1

    # A queued run stops at once: its run.done (cancelled) says so; it has no log to speak in.
    queued = services.run_create(owner=alice, version=version, artifact=artifact)
    services.run_stop(run=queued)
    kinds = list(RunEvent.objects.filter(run=queued).order_by("seq").values_list("kind", flat=True))
    assert kinds == ["run.status", "run.done"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_logs_its_start_its_stop_and_one_resume_line(alice, workers):
    version, artifact = make_design(alice, epochs=30)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    workers.start()

    def stop_after_an_epoch(after: int) -> int:
        wait_for(
            lambda: Run.objects.filter(pk=run.pk, epoch__gt=after, status=Run.Status.RUNNING).exists(),
            timeout=120,
            what=f"an epoch after {after}",
        )
        services.run_stop(run=Run.objects.get(pk=run.pk))
        wait_for(lambda: Run.objects.get(pk=run.pk).is_finished(), timeout=120, what="the stop")
        stopped = Run.objects.get(pk=run.pk)
        assert stopped.status == Run.Status.CANCELLED, stopped.error
        return stopped.epoch

    stopped_at = stop_after_an_epoch(0)
    services.run_resume(run=Run.objects.get(pk=run.pk))
    stop_after_an_epoch(stopped_at)

    events = list(RunEvent.objects.filter(run=run).order_by("seq"))
    first_epoch = next(e.seq for e in events if e.kind == "run.epoch")
    before = [
        line for e in events if e.kind == "run.log" and e.seq < first_epoch for line in e.payload["lines"]
    ]
    assert any(line.startswith("Preparing the data (digits)") for line in before), before
    assert any("building the model" in line for line in before), before
    assert "Epoch 1/30 started" in " ".join(before), before
    lines = _lines(run)
    assert len([line for line in lines if line.startswith("Stop requested")]) == 2
    resumed = [line for line in lines if line.startswith("Resum")]
    assert resumed == [f"Resuming from the checkpoint of epoch {stopped_at}."], resumed
