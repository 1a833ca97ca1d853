"""Courses for the personas: carol teaches alice (course A), dave teaches bob (course B).

Runs are written as rows here, as the worker would leave them: the admin reads runs, it does not make
them, and a real training per test would cost seconds of a shared CPU for nothing the admin shows.
"""

from __future__ import annotations

import itertools

import pytest

from accounts import services, sms
from designs.models import CodeArtifact, Design, DesignVersion
from training.models import EpochMetric, Run, RunEvent

_hashes = itertools.count(1)


def make_run(
    owner,
    *,
    design_name: str,
    design: Design | None = None,
    status: str = Run.Status.SUCCEEDED,
    accuracy: float | None = None,
    dataset: str = "digits",
    device: str = "cpu",
    run_seconds: float = 42.0,
    epochs: int = 2,
    log_lines: int = 3,
    metrics_source: str = Run.MetricsSource.PLATFORM,
) -> Run:
    """A run with its design, version, code, epoch metrics and ``log_lines`` log events."""
    if design is None:
        design = Design.objects.create(owner=owner, name=design_name)
    number = design.versions.count() + 1
    version = DesignVersion.objects.create(
        design=design, number=number, spec={"dataset": dataset}, spec_hash=f"{next(_hashes):064x}", report={}
    )
    artifact = CodeArtifact.objects.create(
        version=version,
        source=CodeArtifact.Source.COMPILED,
        status=CodeArtifact.Status.READY,
        code="# script",
    )
    finished = status in Run.FINISHED
    run = Run.objects.create(
        owner=owner,
        design_version=version,
        code_artifact=artifact,
        dataset=dataset,
        status=status,
        epochs=epochs,
        epoch=epochs if finished else 0,
        device=device,
        run_seconds=run_seconds,
        metrics={"accuracy": accuracy, "f1": accuracy} if accuracy is not None else {},
        metrics_source=metrics_source if accuracy is not None else "",
        last_seq=log_lines,
        log_lines=log_lines,
    )
    if finished:
        EpochMetric.objects.bulk_create(
            EpochMetric(
                run=run, epoch=e, train_loss=1.0 / e, train_acc=0.5, val_loss=1.1 / e, val_acc=0.5, lr=0.001
            )
            for e in range(1, epochs + 1)
        )
    RunEvent.objects.bulk_create(
        RunEvent(run=run, seq=seq, kind=RunEvent.Kind.LOG, payload={"line": f"{design_name} line {seq}"})
        for seq in range(1, log_lines + 1)
    )
    return run


@pytest.fixture
def course_a(carol, alice):
    course = services.course_create(name="Deep Learning 101", term="Spring", instructors=[carol])
    services.course_join(user=alice, code=course.join_code)
    return course


@pytest.fixture
def course_b(dave, bob):
    course = services.course_create(name="Vision Lab", term="Spring", instructors=[dave])
    services.course_join(user=bob, code=course.join_code)
    return course


@pytest.fixture
def courses(course_a, course_b):
    return course_a, course_b


@pytest.fixture
def alice_run(alice, courses):
    return make_run(alice, design_name="Alicenet", accuracy=0.912, dataset="digits", log_lines=5)


@pytest.fixture
def bob_run(bob, courses):
    return make_run(bob, design_name="Bobnet", accuracy=0.734, dataset="CIFAR10", device="cuda", log_lines=5)


@pytest.fixture
def carol_client(client, carol, courses):
    client.force_login(carol)
    return client


@pytest.fixture
def sms_outbox(settings):
    """Texts kept in memory (accounts.sms.outbox), emptied before and after the test."""
    settings.SMS_BACKEND = "locmem"
    sms.outbox.clear()
    yield sms.outbox
    sms.outbox.clear()
