"""What a finished run keeps: the script, both checkpoints of its last epoch, and the trained model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_safetensors

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
    # the sandbox's sweep of links.
    best_epoch = stored["checkpoint_best"].epoch
    assert 1 <= best_epoch <= 3
    assert json.loads(stored["checkpoint_best_meta"].file.read())["epoch"] == best_epoch
    # The model is the weights as train() left them (what the test metrics measure): the last epoch's.
    model = load_safetensors(stored["model"].file.read())
    last = load_safetensors(stored["checkpoint_last"].file.read())
    assert stored["model"].epoch == 3
    assert model.keys() == {k.removeprefix("model.") for k in last if k.startswith("model.")}
    assert all(torch.equal(v, last[f"model.{k}"]) for k, v in model.items())
    assert run.metrics_source == Run.MetricsSource.PLATFORM and run.metrics["samples"] > 0
