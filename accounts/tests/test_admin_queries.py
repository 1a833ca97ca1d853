"""The admin's lists and course overview cost the same number of queries for 2 runs or 38.

Counts, not timings: they do not depend on the machine. A query per row would show up as a
difference of (at least) the number of added rows.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import services
from accounts.tests.conftest import make_run
from buildx.test import make_user
from training.models import Run

PAGES = [
    "/admin/training/run/",
    "/admin/training/run/?course={course}",
    "/admin/training/run/?q=net",
    "/admin/training/runevent/",
    "/admin/training/epochmetric/",
    "/admin/designs/design/",
    "/admin/designs/designversion/?course={course}",
    "/admin/designs/codeartifact/",
    "/admin/accounts/user/?course={course}",
    "/admin/accounts/course/",
    "/admin/accounts/membership/",
    "/admin/accounts/course/{course}/overview/",
]


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def add_students_with_runs(course, *, students: int, runs_each: int) -> None:
    for i in range(students):
        student = make_user(f"student{course.pk}-{Run.objects.count()}-{i}@example.com", first_name=f"S{i}")
        services.course_join(user=student, code=course.join_code)
        for j in range(runs_each):
            status = [Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.RUNNING][j % 3]
            make_run(student, design_name=f"net {i}-{j}", status=status, accuracy=0.5 + j / 100, log_lines=2)


@pytest.mark.django_db
def test_run_list_and_course_overview_queries_do_not_grow_with_the_runs(carol_client, course_a):
    add_students_with_runs(course_a, students=1, runs_each=2)
    urls = [url.format(course=course_a.pk) for url in PAGES]
    few = {url: count_queries(carol_client, url) for url in urls}

    add_students_with_runs(course_a, students=6, runs_each=6)  # 38 runs now, all on the first page
    assert Run.objects.count() == 38
    many = {url: count_queries(carol_client, url) for url in urls}

    print("queries per page (2 runs -> 38 runs):", few)
    assert many == few
    # And the numbers themselves stay small: session, user, permissions, counts, rows, filters.
    assert few["/admin/training/run/"] <= 16, few
