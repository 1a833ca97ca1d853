"""What carol does with her students' runs in the admin: read them, cancel them, export them, overview."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group, Permission

from accounts.tests.conftest import make_run
from buildx.test import make_user
from training.admin import LOG_TAIL
from training.models import Run


def post_action(client, url: str, action: str, pks: list[int], *, follow: bool = True):
    return client.post(url, {"action": action, ACTION_CHECKBOX_NAME: pks, "index": 0}, follow=follow)


@pytest.mark.django_db
def test_the_run_list_shows_status_accuracy_dataset_device_duration_student_and_design(
    carol_client, alice, courses
):
    make_run(
        alice, design_name="Alicenet", accuracy=0.9123, dataset="digits", device="cuda:0", run_seconds=125
    )
    response = carol_client.get("/admin/training/run/")
    row = response.context["cl"].result_list[0]
    body = response.content.decode()
    assert row.test_accuracy == pytest.approx(0.9123)
    for shown in ["91.2%", "digits", "cuda:0", "2 min 05 s", "Alice", "Alicenet v1", "Succeeded"]:
        assert shown in body, shown


@pytest.mark.django_db
def test_the_run_list_sorts_by_accuracy_and_searches_by_student_and_design(carol_client, alice, courses):
    low = make_run(alice, design_name="Lownet", accuracy=0.40)
    high = make_run(alice, design_name="Highnet", accuracy=0.95)
    failed = make_run(alice, design_name="Brokennet", status=Run.Status.FAILED)
    accuracy_column = carol_client.get("/admin/training/run/").context["cl"].list_display.index("accuracy")
    response_column = carol_client.get("/admin/training/run/", {"o": f"-{accuracy_column}"})
    ordered = [run.pk for run in response_column.context["cl"].result_list]
    assert ordered.index(high.pk) < ordered.index(low.pk)
    assert failed.pk in ordered

    assert [
        r.pk for r in carol_client.get("/admin/training/run/", {"q": "Highnet"}).context["cl"].result_list
    ] == [high.pk]
    assert {
        r.pk for r in carol_client.get("/admin/training/run/", {"q": "Alice"}).context["cl"].result_list
    } == {
        low.pk,
        high.pk,
        failed.pk,
    }
    failed_only = (
        carol_client.get("/admin/training/run/", {"status__exact": "failed"}).context["cl"].result_list
    )
    assert [r.pk for r in failed_only] == [failed.pk]


@pytest.mark.django_db
def test_the_run_page_shows_every_epoch_the_log_tail_and_links_to_the_live_page(carol_client, alice, courses):
    run = make_run(alice, design_name="Alicenet", accuracy=0.9, epochs=3, log_lines=LOG_TAIL + 10)
    response = carol_client.get(f"/admin/training/run/{run.pk}/change/")
    assert response.status_code == 200
    body = response.content.decode()
    # The tail: the last LOG_TAIL events, oldest first; nothing before them.
    tail = [event.seq for event in response.context["inline_admin_formsets"][1].formset.queryset]
    assert tail == list(range(11, LOG_TAIL + 11))
    assert f"Alicenet line {LOG_TAIL + 10}<" in body
    assert "Alicenet line 10<" not in body
    epochs = [m.epoch for m in response.context["inline_admin_formsets"][0].formset.queryset]
    assert epochs == [1, 2, 3]
    assert f'href="/runs/{run.pk}/"' in body
    # Read-only: no save button, nothing to edit.
    assert 'name="_save"' not in body


@pytest.mark.django_db
def test_carol_cancels_her_students_runs_through_the_runs_service(carol_client, alice, bob, courses):
    queued = make_run(alice, design_name="Queuednet", status=Run.Status.QUEUED)
    running = make_run(alice, design_name="Runningnet", status=Run.Status.RUNNING)
    done = make_run(alice, design_name="Donenet", accuracy=0.8)
    bobs = make_run(bob, design_name="Bobnet", status=Run.Status.QUEUED)

    response = post_action(
        carol_client, "/admin/training/run/", "cancel_runs", [queued.pk, running.pk, done.pk, bobs.pk]
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "2 runs cancelled" in body
    assert "1 run had already finished" in body

    for run in (queued, running, done, bobs):
        run.refresh_from_db()
    assert queued.status == Run.Status.CANCELLED
    assert queued.events.filter(kind="run.done").exists()
    assert running.status == Run.Status.RUNNING and running.stop_requested  # the worker stops it
    assert done.status == Run.Status.SUCCEEDED
    assert bobs.status == Run.Status.QUEUED  # not carol's student: untouched


@pytest.mark.django_db
def test_staff_without_the_cancel_permission_are_not_offered_the_action(client, alice, course_a):
    erin = make_user("erin@example.com", is_staff=True)
    from accounts.models import Membership

    Membership.objects.create(course=course_a, user=erin, role=Membership.Role.INSTRUCTOR)
    erin.user_permissions.add(Permission.objects.get(codename="view_run"))
    run = make_run(alice, design_name="Queuednet", status=Run.Status.QUEUED)
    client.force_login(erin)
    response = client.get("/admin/training/run/")
    assert "cancel_runs" not in response.content.decode()
    post_action(client, "/admin/training/run/", "cancel_runs", [run.pk])
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED


@pytest.mark.django_db
def test_the_course_overview_lists_students_runs_and_best_accuracy(carol_client, alice, course_a, bob_run):
    from accounts import services

    erin = make_user("erin@example.com", first_name="Erin", last_name="Ng")
    services.course_join(user=erin, code=course_a.join_code)
    make_run(alice, design_name="Alicenet", accuracy=0.81)
    make_run(alice, design_name="Alicenet 2", accuracy=0.93)
    make_run(alice, design_name="Alicenet 3", status=Run.Status.FAILED)

    response = carol_client.get(f"/admin/accounts/course/{course_a.pk}/overview/")
    assert response.status_code == 200
    rows = {s.email: (s.run_count, s.succeeded_count, s.best_accuracy) for s in response.context["students"]}
    assert rows == {"alice@example.com": (3, 2, pytest.approx(0.93)), "erin@example.com": (0, 0, None)}
    body = response.content.decode()
    assert "93.0%" in body
    assert "Erin Ng" in body
    assert "Bobnet" not in body
    assert len(response.context["runs"]) == 3

    csv_body = carol_client.get(f"/admin/accounts/course/{course_a.pk}/results.csv").content.decode(
        "utf-8-sig"
    )
    rows = list(csv.reader(io.StringIO(csv_body)))
    assert rows[1][3:7] == ["alice@example.com", "3", "2", "0.9300"]
    assert rows[2][2:7] == ["Erin Ng", "erin@example.com", "0", "0", ""]


@pytest.mark.django_db
def test_accuracy_a_script_reported_itself_is_not_in_the_overview_or_the_csv(carol_client, alice, course_a):
    make_run(alice, design_name="Measured", accuracy=0.81)
    make_run(alice, design_name="Self-reported", accuracy=1.0, metrics_source=Run.MetricsSource.SCRIPT)

    response = carol_client.get(f"/admin/accounts/course/{course_a.pk}/overview/")
    [alice_row] = [s for s in response.context["students"] if s.email == "alice@example.com"]
    assert alice_row.best_accuracy == pytest.approx(0.81)
    assert {r.design_version.design.name: r.test_accuracy for r in response.context["runs"]} == {
        "Measured": pytest.approx(0.81),
        "Self-reported": None,
    }
    assert "100.0%" not in response.content.decode()
    csv_body = carol_client.get(f"/admin/accounts/course/{course_a.pk}/results.csv").content.decode(
        "utf-8-sig"
    )
    assert list(csv.reader(io.StringIO(csv_body)))[1][6] == "0.8100"


@pytest.mark.django_db
def test_a_csv_cell_that_looks_like_a_formula_is_defused(carol_client, alice, courses):
    make_run(alice, design_name='=HYPERLINK("http://evil")', accuracy=0.5)
    response = post_action(
        carol_client, "/admin/training/run/", "export_csv", list(Run.objects.values_list("pk", flat=True))
    )
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[1][3] == '\'=HYPERLINK("http://evil")'


@pytest.mark.django_db
def test_adding_an_instructor_in_the_admin_gives_them_the_instructors_group(client, carol, alice):
    root = make_user("root@example.com", is_staff=True, is_superuser=True)
    client.force_login(root)
    response = client.post(
        "/admin/accounts/course/add/",
        {
            "name": "Deep Learning 201",
            "term": "Fall",
            "memberships-TOTAL_FORMS": "2",
            "memberships-INITIAL_FORMS": "0",
            "memberships-0-user": carol.pk,
            "memberships-0-role": "instructor",
            "memberships-1-user": alice.pk,
            "memberships-1-role": "student",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    carol.refresh_from_db()
    alice.refresh_from_db()
    assert carol.is_staff
    assert carol.groups.filter(name="Instructors").exists()
    assert carol.has_perm("training.cancel_run")
    assert carol.has_perm("feedback.view_feedback")
    assert not alice.is_staff
    # 11 + feedback.view_feedback + library.view_dataset
    assert Group.objects.get(name="Instructors").permissions.count() == 13


@pytest.mark.django_db
def test_a_superuser_renames_a_design_whose_versions_show_read_only(client, alice_run):
    root = make_user("root@example.com", is_staff=True, is_superuser=True)
    client.force_login(root)
    design = alice_run.design_version.design
    url = f"/admin/designs/design/{design.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    assert "Object (" not in page.content.decode() and "object (" not in page.content.decode()
    response = client.post(
        url,
        {
            "owner": design.owner_id,
            "name": "Alicenet renamed",
            "description": "",
            "starter": "",
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "0",
            "versions-0-id": alice_run.design_version_id,
            "versions-0-design": design.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    design.refresh_from_db()
    assert design.name == "Alicenet renamed"
    assert design.versions.count() == 1


@pytest.mark.django_db
def test_carol_reads_her_students_code_with_its_indentation(carol_client, alice, courses):
    run = make_run(alice, design_name="Alicenet")
    run.code_artifact.code = "def f():\n    return '<b>'\n"
    run.code_artifact.save()
    body = carol_client.get(f"/admin/designs/codeartifact/{run.code_artifact_id}/change/").content.decode()
    assert '<pre class="code-artifact">def f():\n    return &#x27;&lt;b&gt;&#x27;\n</pre>' in body


@pytest.mark.django_db
def test_an_active_runs_page_refreshes_itself_and_a_finished_ones_does_not(carol_client, alice, courses):
    running = make_run(alice, design_name="Runningnet", status=Run.Status.RUNNING)
    done = make_run(alice, design_name="Donenet", accuracy=0.8)
    running_page = carol_client.get(f"/admin/training/run/{running.pk}/change/").content.decode()
    done_page = carol_client.get(f"/admin/training/run/{done.pk}/change/").content.decode()
    assert 'data-admin-refresh="5"' in running_page
    assert "data-admin-refresh" not in done_page
    assert "/static/js/training-admin-refresh.js" in running_page
