"""`manage.py train DESIGN.json --follow`: the same path as the Train button, from a terminal."""

from __future__ import annotations

import io
import json
import threading

import pytest
from django.conf import settings
from django.core.management import call_command

from designs import services as design_services
from training.models import Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_it_trains_a_design_file_and_streams_the_log_to_the_end(workers, tmp_path):
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
    # Embedded mode trains in a thread of the command: it is done with the run when the command returns.
    assert [t.name for t in threading.enumerate() if t.name == f"train-run-{run.pk}"] == []
