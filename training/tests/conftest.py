"""Fixtures for the runs tests: a tiny digits design with its code, real workers, WebSocket clients."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from designs.models import CodeArtifact, DesignVersion
from training.tests.ops_support import database_url, descendants, wait_for  # noqa: F401 - wait_for: the tests' import

TINY_SCRIPT = '''"""Tiny: a test design."""

from __future__ import annotations

import torch
from torch import nn

import buildx_runtime as rt

DATASET = "digits"
INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
TRAIN_TRANSFORM = rt.Compose([rt.Normalize((0.5,), (0.5,))])
EVAL_TRANSFORM = rt.Compose([rt.Normalize((0.5,), (0.5,))])

EPOCHS = {epochs}
BATCH_SIZE = 32
LEARNING_RATE = 0.01
SEED = 42
VAL_SPLIT = 0.1


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)  # (B, 8, 8, 8)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2)  # (B, 8, 4, 4)
        self.flatten = nn.Flatten()  # (B, 128)
        self.fc1 = nn.Linear(128, 10)  # (B, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        return self.fc1(self.flatten(x))


def build_model() -> nn.Module:
    return Tiny()


def train(model: nn.Module, data: rt.Data) -> None:
    rt.seed_everything(SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    start_epoch = rt.resume(model=model, optimizer=optimizer)
    for epoch in range(start_epoch + 1, EPOCHS + 1):
        model.train()
        total_loss = torch.zeros(())
        correct = torch.zeros(())
        for x, y in data.train.batches(BATCH_SIZE, shuffle=True, transform=TRAIN_TRANSFORM):
            {extra}
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        val_loss, val_acc = rt.evaluate(model, data.val, loss_fn=loss_fn, batch_size=BATCH_SIZE, transform=EVAL_TRANSFORM)
        rt.report_epoch(epoch=epoch, epochs=EPOCHS, train_loss=total_loss.item() / len(data.train),
                        train_acc=correct.item() / len(data.train), val_loss=val_loss, val_acc=val_acc,
                        lr=optimizer.param_groups[0]["lr"])
        rt.save_checkpoint(model=model, optimizer=optimizer, epoch=epoch, metric=val_acc)


if __name__ == "__main__":
    rt.main(build_model, train, dataset=DATASET, eval_transform=EVAL_TRANSFORM, val_split=VAL_SPLIT, seed=SEED)
'''
TINY_PARAMS = 8 * 9 + 8 + 128 * 10 + 10


def make_design(owner, *, epochs: int = 3, name: str = "Tiny") -> tuple[DesignVersion, CodeArtifact]:
    """The digits starter with fewer epochs, saved and compiled by the designs app."""
    from designs import services as design_services

    starter = design_services.starter_get(slug="tiny_cnn_digits")
    assert starter is not None
    spec = copy.deepcopy(starter["spec"])
    spec["hyperparameters"]["epochs"] = epochs
    design = design_services.design_create(owner=owner, name=name, spec=spec)
    version = design.versions.get()
    return version, design_services.artifact_compile(version=version)


def make_written_design(owner, *, epochs: int = 3, extra: str = "pass") -> tuple[DesignVersion, CodeArtifact]:
    """A hand-written script (as the assistant would write one) with ``extra`` run on every batch."""
    version, _compiled = make_design(owner, epochs=epochs, name="Written")
    version.report = {
        **version.report,
        "totals": {**version.report["totals"], "params": TINY_PARAMS},
        "output_shape": [10],
    }
    version.save(update_fields=["report"])
    artifact = CodeArtifact.objects.create(
        version=version,
        source=CodeArtifact.Source.LLM,
        status=CodeArtifact.Status.READY,
        code=TINY_SCRIPT.format(epochs=epochs, extra=extra),
    )
    return version, artifact


# Small liveness windows so the fault tests take seconds.
FAST_ENV = {
    "RUNS_HEARTBEAT_INTERVAL": "0.5",
    "RUNS_HEARTBEAT_TIMEOUT": "3",
    "RUNS_STALE_CHECK_INTERVAL": "0.5",
    # One math thread: on this shared 2-core machine two OpenMP threads per child spin against each
    # other and an epoch of the digits takes 40x longer.
    "BUILDX_SANDBOX_THREADS": "1",
}


@pytest.fixture
def fast_liveness(settings):
    settings.RUNS_HEARTBEAT_INTERVAL = 0.5
    settings.RUNS_HEARTBEAT_TIMEOUT = 3
    settings.RUNS_STALE_CHECK_INTERVAL = 0.5
    settings.BUILDX_SANDBOX_THREADS = 1


@pytest.fixture
def run_storage(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return tmp_path


class Workers:
    """Real Dramatiq workers: `manage.py rundramatiq` processes on Redis, or in-process threads embedded."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.embedded: list = []

    def start(self, *, redis_url: str | None = None) -> object:
        if settings.EMBEDDED:
            import dramatiq

            import training.actors  # noqa: F401 - declares the actor on the broker

            worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=1, worker_timeout=100)
            worker.start()
            self.embedded.append(worker)
            return worker
        env = {
            **os.environ,
            **FAST_ENV,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url or settings.REDIS_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "BUILDX_DATA_DIR": str(settings.DATA_DIR),
            "PYTHONUNBUFFERED": "1",
        }
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "rundramatiq",
                "--processes",
                "1",
                "--threads",
                "1",
                "--queues",
                "training",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker's whole process group and its training children: a machine dying."""
        pids = descendants(proc.pid)
        for pid in [proc.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for worker in self.embedded:
            worker.stop(timeout=10_000)
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def workers(transactional_db, run_storage, fast_liveness, tmp_path):
    import dramatiq

    import training.actors  # noqa: F401 - declares the training queue on the broker

    dramatiq.get_broker().flush("training")  # messages left by earlier tests (only our own Redis db)
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


async def ws_connect(user):
    """A WebSocket client through the real ASGI stack (origin check, session auth), logged in as ``user``."""
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.test import Client

    from buildx.asgi import application

    def login_cookie() -> str:
        client = Client()
        client.force_login(user)
        return client.cookies[settings.SESSION_COOKIE_NAME].value

    cookie = await database_sync_to_async(login_cookie)()
    communicator = WebsocketCommunicator(
        application,
        "/ws/",
        headers=[
            (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
            (b"origin", b"http://testserver"),
            (b"host", b"testserver"),
        ],
    )
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return communicator


def as_events(frame) -> list[dict]:
    """A WebSocket frame holds one message or an array of consecutive run events."""
    return frame if isinstance(frame, list) else [frame]


async def receive_until_done(communicator, run_id: int, *, timeout: float = 90) -> list[dict]:
    """Every message for ``run_id`` up to and including its run.done."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no run.done within {timeout}s; got {[m.get('type') for m in got]}"
        for message in as_events(await communicator.receive_json_from(timeout=remaining)):
            if message.get("run") != run_id or "seq" not in message:
                continue
            got.append(message)
            if message["type"] == "run.done":
                return got
