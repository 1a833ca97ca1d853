"""What a finished run keeps: the script, both checkpoints of its last epoch, and the trained model."""

from __future__ import annotations

import json

import pytest

from training import services
from training.models import Run, RunArtifact
from training.tests.conftest import make_design, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_finished_run_keeps_its_script_checkpoints_and_model(alice, workers):
    version, artifact = make_design(alice, epochs=3)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    workers.start()
    wait_for(lambda: Run.objects.get(pk=run.pk).is_finished(), timeout=120, what="the run to finish")
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)

    stored = {a.kind: a for a in RunArtifact.objects.filter(run=run)}
    assert stored["script"].file.read().decode() == artifact.code
    assert stored["checkpoint_last"].epoch == 3
    assert json.loads(stored["checkpoint_last_meta"].file.read())["epoch"] == 3
    # "best" is a second name for one epoch's "last" (a hard link in the run folder): it must survive
    # the sandbox's sweep of links, and so must the model taken from it at the end.
    best_epoch = stored["checkpoint_best"].epoch
    assert 1 <= best_epoch <= 3
    assert json.loads(stored["checkpoint_best_meta"].file.read())["epoch"] == best_epoch
    model = stored["model"].file.read()
    assert model == stored["checkpoint_best"].file.read() and len(model) > 1000
