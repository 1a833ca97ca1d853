"""`manage.py train DESIGN.json --follow`: the same path as the Train button, from a terminal."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from django.conf import settings
from django.core.management import call_command

from designs import services as design_services
from training.models import Run
from training.services import sweeps

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_it_trains_a_design_file_and_streams_the_log_to_the_end(workers, tmp_path, monkeypatch):
    # The last thing a run's execution does, after its end is in the log, made slow: in embedded mode the
    # command must still wait for it (leaving earlier killed that work with the process).
    finished_with: list[int] = []
    trial_finished = sweeps.trial_finished

    def slow_trial_finished(*, run: Run) -> None:
        time.sleep(3)
        trial_finished(run=run)
        finished_with.append(run.pk)

    monkeypatch.setattr(sweeps, "trial_finished", slow_trial_finished)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(design_services.starter_get(slug="tiny_cnn_digits")))
    if not settings.EMBEDDED:
        workers.start()
    out = io.StringIO()
    call_command("train", str(path), "--follow", "--epochs", "2", "--user", "alice@example.com", stdout=out)
    text = out.getvalue()
    run = Run.objects.get()
    assert run.status == Run.Status.SUCCEEDED and run.epochs == 2
    assert f"Run #{run.pk} queued" in text
    assert "Epoch 2/2" in text and "epoch 2/2" in text  # the log line and the progress bar
    assert "Run succeeded" in text and "Test accuracy" in text
    if settings.EMBEDDED:  # the run trained in a thread of the command, which is done with it on return
        assert finished_with == [run.pk]
        assert [t.name for t in threading.enumerate() if t.name == f"train-run-{run.pk}"] == []
