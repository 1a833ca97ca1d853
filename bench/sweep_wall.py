"""A sweep's wall time against the same trials trained one after another, on real worker processes.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/sweep_wall.py [--trials 6] [--epochs 4]

Needs a migrated PostgreSQL database and Redis (the workers share the Optuna study through the database).
Starts one `rundramatiq --processes 2` on the training queue (one math thread per child, as in the
tests), then:

1. sweep:  a sweep over the learning rate of the digits starter (`--trials`, two at once; the first three
           points as in training/tests/test_sweeps_workers.py, lr 10 among them, so pruning takes part);
2. serial: the sweep's own trial versions again, each run created when the previous one has ended (no
           pruning: every trial trains all its epochs).

With --warmup, two runs of the starting design train first, untimed (one per worker process, as their
first runs pay for cold caches, which would otherwise be charged to the sweep).

Prints every run (status, epochs trained, seconds from created to finished) and both wall times. The
user, designs and runs it made are deleted at the end (the Optuna study stays in its tables).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")

import django  # noqa: E402

django.setup()

import dramatiq  # noqa: E402
from django.conf import settings  # noqa: E402

import training.actors  # noqa: E402, F401 - declares the training queue on the broker
from accounts.models import User  # noqa: E402
from buildx.worker_metrics import heartbeats_read  # noqa: E402
from designs import services as design_services  # noqa: E402
from training import services  # noqa: E402
from training.models import Run, Sweep  # noqa: E402
from training.services import sweeps  # noqa: E402
from training.tests.ops_support import WorkerGroup, wait_for  # noqa: E402


def show(label: str, runs: list[Run]) -> None:
    for run in runs:
        seconds = (run.finished_at - run.created_at).total_seconds()
        lr = run.hyperparameters.get("learning_rate")
        print(
            f"  {label} run {run.pk}: lr {lr:<8g} {run.status:<10} epochs {run.epoch}/{run.epochs}  {seconds:6.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="train the starting design twice, untimed, on both workers first",
    )
    args = parser.parse_args()
    if not settings.REDIS_URL or not os.environ.get("DATABASE_URL"):
        sys.exit("Needs DATABASE_URL (PostgreSQL, migrated) and REDIS_URL.")
    settings.RUNS_MAX_CONCURRENT_PER_USER = 2
    tmp = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    broker = dramatiq.get_broker()
    broker.flush("training")
    group = WorkerGroup(tmp, processes=2, queues=["training"])
    user = User.objects.create_user(email=f"bench-{uuid.uuid4().hex[:8]}@example.com", password=None)
    try:
        wait_for(
            lambda: len({r["pid"] for r in heartbeats_read()} & group.pids()) == 2,
            what="two worker processes",
        )
        starter = design_services.starter_get(slug="tiny_cnn_digits")
        assert starter is not None
        spec = copy.deepcopy(starter["spec"])
        spec["hyperparameters"].update(epochs=args.epochs, learning_rate=0.0003)
        design = design_services.design_create(owner=user, name="Sweep bench", spec=spec)
        version = design.versions.get()

        if args.warmup:  # each worker process's first run pays for cold caches: not the sweep's cost
            warm = [
                services.run_create(
                    owner=user, version=version, artifact=design_services.artifact_compile(version=version)
                )
                for _ in range(2)
            ]
            done = Run.objects.filter(pk__in=[r.pk for r in warm], status__in=Run.FINISHED)
            wait_for(lambda: done.count() == 2, timeout=1800, what="the warm-up runs")
            print(f"warm-up: {len(warm)} runs of the starting design, untimed")

        t0 = time.monotonic()
        sweep = sweeps.sweep_create(
            owner=user,
            version=version,
            space={"learning_rate": {"low": 0.0001, "high": 10.0, "log": True}},
            n_trials=args.trials,
            concurrency=2,
            first=[{"learning_rate": 0.003}, {"learning_rate": 0.03}, {"learning_rate": 10.0}],
        )
        wait_for(
            lambda: Sweep.objects.filter(pk=sweep.pk).exclude(status="running").exists(),
            timeout=3600,
            what="the sweep",
        )
        sweep_s = time.monotonic() - t0
        trials = list(sweep.trials.select_related("run__design_version").order_by("number"))
        print(f"sweep: {len(trials)} trials, two at once, {sweep_s:.1f} s wall")
        show("sweep ", [t.run for t in trials])

        t0 = time.monotonic()
        serial = []
        for trial in trials:
            trial_version = trial.run.design_version
            run = services.run_create(
                owner=user,
                version=trial_version,
                artifact=design_services.artifact_compile(version=trial_version),
            )
            finished = Run.objects.filter(pk=run.pk, status__in=Run.FINISHED)
            wait_for(finished.exists, timeout=1800)
            run.refresh_from_db()
            serial.append(run)
        serial_s = time.monotonic() - t0
        print(f"serial: the same {len(serial)} trials one after another, {serial_s:.1f} s wall")
        show("serial", serial)
        print(f"sweep / serial: {sweep_s / serial_s:.2f}")
    finally:
        group.stop()
        broker.flush("training")
        Run.objects.filter(owner=user).delete()
        user.delete()


if __name__ == "__main__":
    main()
