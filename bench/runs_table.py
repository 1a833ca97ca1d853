"""The runs table at 10,000 runs: time and queries of a page of 50, on the page and through the API.

    DATABASE_URL=postgres://... python bench/runs_table.py [--runs 10000] [--repeat 30]

Everything goes into a throwaway database (Django's test database: ``test_<name>``, created and migrated
here, dropped at the end; a file under var/ on SQLite). alice, a student of carol's course, owns every
run (varied hyperparameters, statuses, results, five epochs of metrics, a tag on a third); requests
go through Django's test client as alice (her own table) and as carol (``?scope=students``). Prints
p50 / p95 milliseconds and the number of queries of each request (the same every time), and the p50
of the CPU time the request took in this process (the Python side; wall time on a busy machine also
counts the waits for a core).

Before the requests the process's heap is frozen, as a server's is once started (designs.apps.freeze_heap:
Daphne and `manage.py serve` do it after the validation warm-up). Without it the collector's full passes
over Django's and torch's objects (230-380 ms each, about one per 40 requests here) fell on whichever
requests were running, which no server of the platform sees: they decided the p95 of the views they hit.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from accounts import services  # noqa: E402
from accounts.models import User  # noqa: E402
from designs.apps import freeze_heap  # noqa: E402
from designs.models import CodeArtifact, Design, DesignVersion  # noqa: E402
from training.models import EpochMetric, Run, RunTag  # noqa: E402
from training.services.events import best_val_acc_stored  # noqa: E402

QUERIES = {
    "newest first": "",
    "sort by learning rate": "sort=hp.learning_rate",
    "sort by test accuracy": "sort=-test",
    "sort by best val. accuracy": "sort=-best",
    "lr 0.001..0.1, by test acc.": "hp.learning_rate.min=0.001&hp.learning_rate.max=0.1&sort=-test",
    "tag, by batch size": "tag=baseline&sort=-hp.batch_size",
    "succeeded, sgd, page 5": "status=succeeded&hp.optimizer=sgd&page=5",
}


def populate(*, runs: int) -> tuple[User, User]:
    rng = random.Random(17)
    alice = User.objects.create_user(email="bench-alice@example.com", password="x")
    carol = User.objects.create_user(email="bench-carol@example.com", password="x")
    course = services.course_create(name="Bench course", instructors=[carol])
    services.course_join(user=alice, code=course.join_code)
    designs = Design.objects.bulk_create(Design(owner=alice, name=f"net {i}") for i in range(20))
    versions = DesignVersion.objects.bulk_create(
        DesignVersion(design=design, number=1, spec={}, spec_hash=f"{design.pk:064x}") for design in designs
    )
    artifacts = CodeArtifact.objects.bulk_create(
        CodeArtifact(version=version, source="compiled", status="ready", code="#") for version in versions
    )
    statuses = [Run.Status.SUCCEEDED] * 6 + [Run.Status.FAILED, Run.Status.CANCELLED]
    made = Run.objects.bulk_create(
        (
            Run(
                owner=alice,
                design_version=versions[i % 20],
                code_artifact=artifacts[i % 20],
                dataset=["digits", "shapes", "mnist"][i % 3],
                hyperparameters={
                    "epochs": 5,
                    "batch_size": rng.choice([16, 32, 64, 128]),
                    "learning_rate": 10 ** rng.uniform(-5, 0),
                    "optimizer": rng.choice(["sgd", "adam", "adamw"]),
                    "weight_decay": rng.choice([0, 1e-4, 1e-3]),
                    "seed": 42,
                },
                status=statuses[i % len(statuses)],
                epochs=5,
                epoch=5,
                device="cpu",
                run_seconds=rng.uniform(5, 300),
                metrics={"accuracy": rng.random()} if i % 8 < 6 else {},
                metrics_source="platform" if i % 8 < 6 else "",
            )
            for i in range(runs)
        ),
        batch_size=1000,
    )
    EpochMetric.objects.bulk_create(
        (
            EpochMetric(
                run=run, epoch=e, val_acc=rng.random(), val_loss=rng.random(), train_loss=rng.random()
            )
            for run in made
            for e in range(1, 6)
        ),
        batch_size=5000,
    )
    # What events_append keeps beside the epochs it stores: each run's best validation accuracy.
    Run.objects.filter(owner=alice).update(best_val_acc=best_val_acc_stored())
    RunTag.objects.bulk_create((RunTag(run=run, name="baseline") for run in made[::3]), batch_size=5000)
    if connection.vendor == "postgresql":
        # What autovacuum does on a live database within a minute of such a load (PostgreSQL 13+ also
        # vacuums after many inserts): statistics, without which the planner takes the fresh tables for
        # empty ones, and the visibility map, without which an index-only scan still reads the rows.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    return alice, carol


def measure(client: Client, url: str, repeat: int) -> tuple[float, float, int, float]:
    """p50 and p95 wall milliseconds, the queries, and the p50 of this process's CPU milliseconds (the
    Python side of a request, less sensitive than wall time to other work on the machine)."""
    client.get(url)  # warm the templates and the database's cache
    times = []
    cpu = []
    queries = 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            start, start_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, queries, statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.DEBUG = False
    if connection.vendor == "sqlite":  # the throwaway database is a file, not the default in-memory one
        connection.settings_dict["TEST"]["NAME"] = str(
            Path(settings.BASE_DIR) / "var" / "bench-runs-table.sqlite3"
        )
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        start = time.perf_counter()
        alice, carol = populate(runs=args.runs)
        print(
            f"database: {connection.vendor}; {args.runs} runs (one owner), "
            f"{EpochMetric.objects.count()} epoch rows; populated in {time.perf_counter() - start:.1f} s; "
            f"{args.repeat} requests each"
        )
        freeze_heap()  # what is loaded now stays, as in a server that has started
        for who, user, scope in (("alice", alice, ""), ("carol, students", carol, "scope=students&")):
            client = Client()
            client.force_login(user)
            for name, query in QUERIES.items():
                for door, path in (("page", "/runs/"), ("API", "/api/v1/runs/")):
                    p50, p95, queries, cpu = measure(client, f"{path}?{scope}{query}", args.repeat)
                    print(
                        f"{who:16s} {door:4s} {name:30s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   "
                        f"{queries} queries   python cpu p50 {cpu:6.1f} ms"
                    )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
