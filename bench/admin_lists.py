"""The instructor's admin with thousands of runs: time and queries of the run list and the course overview.

    DATABASE_URL=postgres://... python bench/admin_lists.py [--runs 5000] [--students 50] [--repeat 10]

Everything is created inside one transaction that is rolled back at the end: the database is left as it
was. Requests go through Django's test client as carol (an instructor, not a superuser, so the scoping
subqueries are in every query). Prints p50 / max milliseconds and the number of queries per page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from accounts import services  # noqa: E402
from accounts.models import Membership, User  # noqa: E402
from designs.models import CodeArtifact, Design, DesignVersion  # noqa: E402
from training.models import Run  # noqa: E402


class Rollback(Exception):
    pass


def populate(*, runs: int, students: int):
    carol = User.objects.create_user(email="bench-carol@example.com", password="x")
    course = services.course_create(name="Bench course", instructors=[carol])
    people = User.objects.bulk_create(
        User(email=f"bench-student-{i}@example.com", username=f"bench-student-{i}@example.com")
        for i in range(students)
    )
    Membership.objects.bulk_create(Membership(course=course, user=user) for user in people)
    designs = Design.objects.bulk_create(Design(owner=user, name=f"net {user.pk}") for user in people)
    versions = DesignVersion.objects.bulk_create(
        DesignVersion(design=design, number=1, spec={}, spec_hash=f"{design.pk:064x}") for design in designs
    )
    artifacts = CodeArtifact.objects.bulk_create(
        CodeArtifact(version=version, source="compiled", status="ready", code="#") for version in versions
    )
    statuses = [Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.RUNNING, Run.Status.QUEUED]
    Run.objects.bulk_create(
        (
            Run(
                owner=people[i % students],
                design_version=versions[i % students],
                code_artifact=artifacts[i % students],
                dataset=["digits", "shapes", "MNIST"][i % 3],
                status=statuses[i % 4],
                device="cpu",
                run_seconds=i % 300,
                metrics={"accuracy": (i % 100) / 100},
            )
            for i in range(runs)
        ),
        batch_size=1000,
    )
    return carol, course


def measure(client: Client, url: str, repeat: int) -> tuple[float, float, int]:
    client.get(url)  # warm the templates
    times = []
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times), max(times), len(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--students", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    print(f"database: {connection.vendor}; {args.runs} runs of {args.students} students in one course")
    try:
        with transaction.atomic():
            carol, course = populate(runs=args.runs, students=args.students)
            client = Client()
            client.force_login(carol)
            pages = {
                "run list": "/admin/training/run/",
                "run list, course filter": f"/admin/training/run/?course={course.pk}",
                "run list, by accuracy": "/admin/training/run/?o=-5",
                "run list, search": "/admin/training/run/?q=net",
                "course overview": f"/admin/accounts/course/{course.pk}/overview/",
            }
            for name, url in pages.items():
                p50, worst, queries = measure(client, url, args.repeat)
                print(f"{name:26s} p50 {p50:7.1f} ms   max {worst:7.1f} ms   {queries} queries")
            raise Rollback
    except Rollback:
        pass


if __name__ == "__main__":
    main()
