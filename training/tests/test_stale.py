"""The stale check takes a silent run from a dead worker, never from a live heartbeat of its own process."""

from __future__ import annotations

import threading
from datetime import timedelta

from django.utils import timezone

from training import services
from training.models import Run
from training.services import lifecycle
from training.tests.conftest import make_design


def _silent_running_run(owner) -> Run:
    version, artifact = make_design(owner)
    run = services.run_create(owner=owner, version=version, artifact=artifact)
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, attempt=1, heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    return Run.objects.get(pk=run.pk)


def test_a_late_beat_of_a_heartbeat_alive_in_this_process_is_not_death(alice):
    run = _silent_running_run(alice)
    release = threading.Event()
    heartbeat = threading.Thread(target=release.wait, daemon=True)
    heartbeat.start()
    lifecycle.executing_add(run_id=run.pk, attempt=1, heartbeat=heartbeat)
    try:
        assert services.runs_check_stale() == []
        assert Run.objects.get(pk=run.pk).status == Run.Status.RUNNING
    finally:
        release.set()
        heartbeat.join()
    assert services.runs_check_stale() == [run.pk]  # its heartbeat thread ended: the run is taken
    lifecycle.executing_remove(run_id=run.pk, attempt=1)


def test_a_silent_run_of_another_process_is_marked_interrupted(alice):
    run = _silent_running_run(alice)
    assert services.runs_check_stale() == [run.pk]
    assert Run.objects.get(pk=run.pk).status in (Run.Status.INTERRUPTED, Run.Status.QUEUED)
