"""The worker's event sink: an epoch's metrics and its checkpoint are stored together, or not at all."""

from __future__ import annotations

import json
import time

import pytest

from training import services
from training.models import EpochMetric, RunArtifact, RunEvent
from training.tests.conftest import make_design, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sink(alice, run_storage, settings, tmp_path):
    settings.RUNS_CHECKPOINT_WAIT = 1.0
    version, artifact = make_design(alice, epochs=3)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    run = services.run_claim(run_id=run.pk)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    sink = services.EventSink(run=run, attempt=run.attempt, run_dir=run_dir)
    yield sink
    sink.close()


def _epoch(n: int) -> dict:
    return {"kind": "epoch", "epoch": n, "epochs": 3, "train_loss": 1.0, "train_acc": 0.5,
            "val_loss": 1.1, "val_acc": 0.4, "lr": 0.01, "seconds": 1.0}  # fmt: skip


def _save(sink, epoch: int) -> None:
    folder = sink.run_dir / "checkpoints"
    (folder / "last.safetensors").write_bytes(b"weights of epoch %d" % epoch)
    (folder / "last.json").write_text(json.dumps({"epoch": epoch}))
    sink.handle({"kind": "checkpoint", "name": "last", "epoch": epoch, "metric": 0.4})


def _stored_epochs(run) -> list[int]:
    return [e.payload["epoch"] for e in RunEvent.objects.filter(run=run, kind="run.epoch").order_by("seq")]


def test_an_epoch_waits_for_its_checkpoint_and_both_are_committed_together(sink):
    sink.handle(_epoch(1))
    sink.handle({"kind": "log", "stream": "stdout", "line": "Epoch 1/3 ..."})
    time.sleep(0.4)  # several flush intervals: a worker killed now would have stored neither
    assert not EpochMetric.objects.filter(run=sink.run).exists()
    assert not RunArtifact.objects.filter(run=sink.run, kind=RunArtifact.Kind.CHECKPOINT_LAST).exists()

    _save(sink, 1)
    assert list(EpochMetric.objects.filter(run=sink.run).values_list("epoch", flat=True)) == [1]
    stored = RunArtifact.objects.get(run=sink.run, kind=RunArtifact.Kind.CHECKPOINT_LAST)
    assert stored.epoch == 1 and stored.file.read() == b"weights of epoch 1"
    assert _stored_epochs(sink.run) == [1]
    sink.run.refresh_from_db()
    assert sink.run.checkpoint_epoch == 1

    # The next epoch replaces the checkpoint; the previous file goes once the new one is committed.
    old_name = stored.file.name
    sink.handle(_epoch(2))
    _save(sink, 2)
    stored.refresh_from_db()
    assert stored.epoch == 2 and stored.file.read() == b"weights of epoch 2"
    assert not stored.file.storage.exists(old_name)


def test_an_epoch_without_a_checkpoint_goes_out_when_the_script_moves_on(sink):
    sink.handle(_epoch(1))
    sink.handle({"kind": "progress", "epoch": 2, "epochs": 3, "batch": 1, "batches": 10})
    wait_for(lambda: _stored_epochs(sink.run) == [1], timeout=0.5, what="epoch 1 stored")


def test_an_epoch_without_a_checkpoint_goes_out_after_the_wait(sink):
    sink.handle(_epoch(1))
    wait_for(lambda: _stored_epochs(sink.run) == [1], timeout=3, what="epoch 1 stored")
    assert list(EpochMetric.objects.filter(run=sink.run).values_list("epoch", flat=True)) == [1]


def test_a_language_models_sample_is_stored_and_published_as_run_sample(sink):
    sink.handle({"kind": "sample", "epoch": 1, "prompt": "12+35=", "text": "12+35=047\n03+04=007"})
    sink.flush()

    stored = RunEvent.objects.get(run=sink.run, kind="run.sample")
    assert stored.payload == {"epoch": 1, "prompt": "12+35=", "text": "12+35=047\n03+04=007"}
