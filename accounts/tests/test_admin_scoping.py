"""carol teaches alice (course A); dave teaches bob (course B). carol must not see bob anywhere.

Every test reads through the admin as carol would, by URL, and checks for bob's traces: his email,
his design "Bobnet", his log lines, his course "Vision Lab". A positive control (alice is there)
keeps each test from passing on an empty page.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from accounts.models import Membership
from accounts.tests.conftest import make_run
from buildx.test import make_user
from training.models import Run

BOB_TRACES = ["bob@example.com", "Bobnet", "Vision Lab"]


def assert_no_bob(body: str) -> None:
    for trace in BOB_TRACES:
        assert trace not in body, trace


def assert_missing(response) -> None:
    """The admin answers a hidden object like a deleted one: a redirect to the index, or a 404."""
    assert response.status_code in (302, 404), response.status_code
    if response.status_code == 302:
        assert response["Location"] == "/admin/"
    assert_no_bob(response.content.decode())


def csv_rows(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


CHANGELISTS = [
    "/admin/training/run/",
    "/admin/training/runevent/",
    "/admin/training/epochmetric/",
    "/admin/designs/design/",
    "/admin/designs/designversion/",
    "/admin/designs/codeartifact/",
    "/admin/accounts/user/",
    "/admin/accounts/course/",
    "/admin/accounts/membership/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", CHANGELISTS)
def test_carols_change_lists_show_alices_work_and_nothing_of_bobs(carol_client, alice_run, bob_run, url):
    response = carol_client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert_no_bob(body)
    # Every list shows something of alice or of her course, so the page is not empty by accident.
    assert any(mark in body for mark in ["alice@example.com", "Alicenet", "Deep Learning 101"]), url


OUR_APPS = {"accounts", "library", "designs", "training", "feedback"}


def test_every_admin_of_our_apps_is_scoped_to_the_viewers_students():
    """A model admin added later without the scoping would show every student to every instructor."""
    from django.contrib import admin

    from accounts.admin import CourseAdmin, MembershipAdmin, MembershipInline
    from accounts.admin_scoping import StudentScopedMixin

    # Scoped by course rather than by owner: their get_queryset filters by the courses the viewer teaches.
    by_course = (CourseAdmin, MembershipAdmin, MembershipInline)
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in OUR_APPS:
            continue
        assert isinstance(model_admin, (StudentScopedMixin, *by_course)), model
        for inline in model_admin.inlines:
            assert issubclass(inline, (StudentScopedMixin, *by_course)), (model, inline)


@pytest.mark.django_db
def test_no_change_list_of_our_apps_shows_bob_to_carol(carol_client, alice_run, bob_run):
    from django.contrib import admin

    for model in admin.site._registry:
        if model._meta.app_label not in OUR_APPS:
            continue
        response = carol_client.get(f"/admin/{model._meta.app_label}/{model._meta.model_name}/")
        assert response.status_code in (200, 403), model  # 403: the Instructors group may not view it
        assert_no_bob(response.content.decode())


@pytest.mark.django_db
def test_carol_sees_exactly_alices_run_in_the_run_list(carol_client, alice_run, bob_run):
    response = carol_client.get("/admin/training/run/")
    assert [run.pk for run in response.context["cl"].result_list] == [alice_run.pk]
    assert response.context["cl"].full_result_count == 1


@pytest.mark.django_db
def test_carol_gets_nothing_of_bob_by_url(carol_client, bob, bob_run, course_b):
    version = bob_run.design_version
    event = bob_run.events.first()
    metric = bob_run.epoch_metrics.first()
    bob_membership = Membership.objects.get(user=bob, course=course_b)
    urls = [
        f"/admin/training/run/{bob_run.pk}/change/",
        f"/admin/training/run/{bob_run.pk}/history/",
        f"/admin/training/runevent/{event.pk}/change/",
        f"/admin/training/epochmetric/{metric.pk}/change/",
        f"/admin/designs/design/{version.design_id}/change/",
        f"/admin/designs/designversion/{version.pk}/change/",
        f"/admin/designs/codeartifact/{bob_run.code_artifact_id}/change/",
        f"/admin/accounts/user/{bob.pk}/change/",
        f"/admin/accounts/course/{course_b.pk}/change/",
        f"/admin/accounts/membership/{bob_membership.pk}/change/",
    ]
    for url in urls:
        assert_missing(carol_client.get(url))
    # Without delete permission the delete page is refused before any lookup: the same answer for any id.
    assert carol_client.get(f"/admin/training/run/{bob_run.pk}/delete/").status_code == 403
    assert carol_client.get("/admin/training/run/999999/delete/").status_code == 403
    # The course pages of the admin and the course's CSV are 404s.
    assert carol_client.get(f"/admin/accounts/course/{course_b.pk}/overview/").status_code == 404
    assert carol_client.get(f"/admin/accounts/course/{course_b.pk}/results.csv").status_code == 404


@pytest.mark.django_db
def test_carol_opens_alices_run_with_its_epochs_and_log_in_the_inlines(carol_client, alice_run, bob_run):
    response = carol_client.get(f"/admin/training/run/{alice_run.pk}/change/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Alicenet line 5" in body
    assert "91.2%" in body
    assert_no_bob(body)
    assert "Bobnet line" not in body


@pytest.mark.django_db
def test_the_membership_inline_on_a_students_page_hides_the_courses_carol_does_not_teach(
    carol_client, alice, course_a, course_b
):
    # alice also takes dave's course: carol sees alice, and only the course they share.
    Membership.objects.create(course=course_b, user=alice, role=Membership.Role.STUDENT)
    response = carol_client.get(f"/admin/accounts/user/{alice.pk}/change/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Deep Learning 101" in body
    assert "Vision Lab" not in body
    # Nor does carol see a student's password hash or permissions.
    assert "pbkdf2" not in body and "md5" not in body.lower()
    assert 'name="user_permissions"' not in body


@pytest.mark.django_db
def test_the_autocomplete_endpoint_finds_alice_but_not_bob_for_carol(carol_client, alice_run, bob_run):
    def search(app_label: str, model_name: str, field_name: str, term: str) -> list[str]:
        response = carol_client.get(
            "/admin/autocomplete/",
            {"app_label": app_label, "model_name": model_name, "field_name": field_name, "term": term},
        )
        assert response.status_code == 200
        return [result["text"] for result in response.json()["results"]]

    assert search("training", "run", "owner", "alice") == ["alice@example.com"]
    assert search("training", "run", "owner", "bob") == []
    assert search("training", "run", "owner", "") == ["alice@example.com"]
    assert search("designs", "designversion", "design", "net") == ["Alicenet"]
    assert search("accounts", "membership", "course", "") == ["Deep Learning 101 (Spring)"]


@pytest.mark.django_db
def test_list_filters_offer_only_carols_course_students_and_datasets(
    carol_client, alice_run, bob_run, course_a, course_b
):
    from accounts import services

    # A second student of carol's: Django hides a filter with a single choice.
    erin = make_user("erin@example.com")
    services.course_join(user=erin, code=course_a.join_code)
    make_run(erin, design_name="Erinnet", dataset="shapes")
    response = carol_client.get("/admin/training/run/")
    choices = {
        spec.title: [choice["display"] for choice in spec.choices(response.context["cl"])]
        for spec in response.context["cl"].filter_specs
    }
    assert choices["course"] == ["All", "Deep Learning 101 (Spring)"]
    assert choices["owner"] == ["All", "alice@example.com", "erin@example.com"]
    assert choices["dataset"] == ["All", "digits", "shapes"]
    assert_no_bob(response.content.decode())
    assert "CIFAR10" not in response.content.decode()

    # Asking by hand for bob's course or bob himself gives an empty list, not his runs.
    for query in [
        {"course": course_b.pk},
        {"owner__id__exact": bob_run.owner_id},
        {"q": "bob"},
        {"q": "Bobnet"},
    ]:
        response = carol_client.get("/admin/training/run/", query)
        assert response.status_code == 200
        assert list(response.context["cl"].result_list) == []


@pytest.mark.django_db
def test_the_csv_exports_leave_bob_out_even_when_his_rows_are_posted(
    carol_client, alice_run, bob_run, course_a, course_b
):
    runs = csv_rows(
        carol_client.post(
            "/admin/training/run/",
            {"action": "export_csv", ACTION_CHECKBOX_NAME: [alice_run.pk, bob_run.pk], "index": 0},
        )
    )
    assert runs[0][:3] == ["run", "student", "email"]
    assert [row[2] for row in runs[1:]] == ["alice@example.com"]
    assert "Bobnet" not in str(runs)

    results = csv_rows(
        carol_client.post(
            "/admin/accounts/course/",
            {"action": "export_results_csv", ACTION_CHECKBOX_NAME: [course_a.pk, course_b.pk], "index": 0},
        )
    )
    assert [(row[0], row[3], row[6]) for row in results[1:]] == [
        ("Deep Learning 101", "alice@example.com", "0.9120")
    ]


@pytest.mark.django_db
def test_carol_cannot_see_bobs_run_or_design_through_the_api_either(carol_client, alice_run, bob_run):
    assert carol_client.get(f"/api/v1/runs/{bob_run.pk}/").status_code == 404
    assert carol_client.get(f"/api/v1/runs/{bob_run.pk}/events/").status_code == 404
    assert carol_client.get(f"/api/v1/designs/{bob_run.design_version.design_id}/").status_code == 404
    # The API is the owner's door only: carol's lists are her own (empty), not her students'.
    assert carol_client.get("/api/v1/runs/").json()["results"] == []
    assert carol_client.get("/api/v1/designs/").json()["results"] == []


@pytest.mark.django_db
def test_dave_sees_bob_and_not_alice(client, dave, alice_run, bob_run):
    client.force_login(dave)
    response = client.get("/admin/training/run/")
    assert [run.pk for run in response.context["cl"].result_list] == [bob_run.pk]
    assert client.get(f"/admin/training/run/{alice_run.pk}/change/").status_code == 302


@pytest.mark.django_db
def test_a_superuser_sees_everyone(client, alice_run, bob_run):
    admin = make_user("root@example.com", is_staff=True, is_superuser=True)
    client.force_login(admin)
    response = client.get("/admin/training/run/")
    assert {run.pk for run in response.context["cl"].result_list} == {alice_run.pk, bob_run.pk}
    assert client.get(f"/admin/training/run/{bob_run.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_staff_who_teach_nothing_see_no_student_even_with_view_permissions(client, alice_run, bob_run):
    from django.contrib.auth.models import Group

    erin = make_user("erin@example.com", is_staff=True)
    erin.groups.add(Group.objects.get(name="Instructors"))
    client.force_login(erin)
    response = client.get("/admin/training/run/")
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []
    assert client.get(f"/admin/training/run/{alice_run.pk}/change/").status_code == 302


@pytest.mark.django_db
def test_a_student_in_two_of_carols_courses_is_listed_once(carol, alice, alice_run, carol_client):
    from accounts import services

    second = services.course_create(name="Deep Learning 102", instructors=[carol])
    services.course_join(user=alice, code=second.join_code)
    make_run(alice, design_name="Alicenet 2", accuracy=0.5)
    response = carol_client.get("/admin/training/run/")
    assert response.context["cl"].result_count == 2
    assert Run.objects.filter(owner=alice).count() == 2


@pytest.mark.django_db
def test_a_student_is_sent_to_the_login_from_every_admin_page(alice_client, alice_run, course_a):
    for url in ["/admin/", "/admin/training/run/", f"/admin/accounts/course/{course_a.pk}/overview/"]:
        response = alice_client.get(url)
        assert response.status_code == 302
        assert "login" in response["Location"]
