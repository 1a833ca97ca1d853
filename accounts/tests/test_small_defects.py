"""Small things a newcomer and an instructor met (issue 14, "Pages and small defects"): the admin's Add
course form, its index and icon, its "view on site" links, the CSV's student column, the verification
mail's site, the course code's example, and the run page's note to an instructor."""

from __future__ import annotations

import csv
import io
import re
import uuid

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core import mail

from accounts import services
from accounts.forms import JoinCourseForm
from accounts.models import JOIN_CODE_ALPHABET, JOIN_CODE_LENGTH, Course
from accounts.tests.conftest import make_run
from buildx.test import PASSWORD, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    root = make_user("root@example.com", is_staff=True, is_superuser=True)
    client.force_login(root)
    return client


def test_the_add_course_form_saves_the_join_code_it_shows(admin_client):
    page = admin_client.get("/admin/accounts/course/add/").content.decode()
    shown = re.search(
        r'name="join_code"[^>]*value="([A-Z0-9]+)"|value="([A-Z0-9]+)"[^>]*name="join_code"', page
    )
    assert shown, page
    code = shown.group(1) or shown.group(2)
    assert len(code) == JOIN_CODE_LENGTH and set(code) <= set(JOIN_CODE_ALPHABET)

    response = admin_client.post(
        "/admin/accounts/course/add/",
        {
            "name": "Deep Learning 102",
            "term": "Fall",
            "join_code": code,
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Course.objects.get(name="Deep Learning 102").join_code == code
    # ... so the code a student types from that screen joins the course.
    student = make_user("newbie@example.com")
    course, _joined = services.course_join(user=student, code=code.lower())
    assert course.name == "Deep Learning 102"


def test_the_add_course_form_refuses_a_code_that_is_not_one(admin_client):
    response = admin_client.post(
        "/admin/accounts/course/add/",
        {
            "name": "Bad",
            "join_code": "O0I1",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "A join code is 8 letters and digits." in response.content.decode()
    assert not Course.objects.filter(name="Bad").exists()


def test_the_admin_index_has_one_accounts_section_and_the_admin_an_icon(admin_client, client):
    page = admin_client.get("/admin/").content.decode()
    captions = re.findall(r'<caption>\s*<a[^>]*class="section"[^>]*>([^<]+)</a>', page)
    assert captions, page[:3000]
    assert len(captions) == len(set(captions)), captions
    assert "Users and courses" in captions
    assert 'rel="icon"' in page and "img/favicon.svg" in page
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("img/favicon.svg")


def test_view_on_site_answers_404_not_500_for_every_content_type(admin_client, alice):
    from django_dramatiq.models import Task

    Task.tasks.create(
        id=uuid.uuid4(), status=Task.STATUS_DONE, message_data=b"{}", actor_name="a", queue_name="default"
    )
    for content_type in ContentType.objects.all():
        for object_id in ("1", "x", str(uuid.uuid4())):
            response = admin_client.get(f"/admin/r/{content_type.pk}/{object_id}/")
            assert response.status_code in (302, 404), (content_type, object_id, response.status_code)
    task_type = ContentType.objects.get_for_model(Task)
    assert admin_client.get(f"/admin/r/{task_type.pk}/1/").status_code == 404
    assert admin_client.get("/admin/r/999999/1/").status_code == 404


def test_view_on_site_stays_behind_the_admin_login(client):
    response = client.get("/admin/r/1/1/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_runs_csv_names_a_student_who_gave_no_name(carol_client, courses):
    newbie = make_user("newbie@example.com")
    services.course_join(user=newbie, code=courses[0].join_code)
    run = make_run(newbie, design_name="Newbienet", accuracy=0.5)
    response = carol_client.post(
        "/admin/training/run/", {"action": "export_csv", "_selected_action": [run.pk]}, follow=True
    )
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["run", "student", "email"]
    assert rows[1][:3] == [str(run.pk), "newbie@example.com", "newbie@example.com"]

    results = carol_client.get(f"/admin/accounts/course/{courses[0].pk}/results.csv").content.decode(
        "utf-8-sig"
    )
    newbie_row = next(r for r in csv.reader(io.StringIO(results)) if "newbie@example.com" in r)
    assert newbie_row[2] == "newbie@example.com"


def test_the_verification_mail_names_the_site_the_visitor_used(client, settings):
    settings.ALLOWED_HOSTS = ["school.example.org"]
    response = client.post(
        "/accounts/signup/",
        {"email": "erin@example.com", "password1": PASSWORD, "password2": PASSWORD},
        HTTP_HOST="school.example.org",
    )
    assert response.status_code == 302
    body = mail.outbox[-1].body
    assert "school.example.org" in body and "buildx.local" not in body
    assert mail.outbox[-1].subject.startswith("[BuildX] ")


def test_the_course_code_example_looks_like_a_real_code():
    help_text = str(JoinCourseForm().fields["code"].help_text)
    example = help_text.rsplit(" ", 1)[-1].rstrip(".")
    assert "-" not in example
    assert len(example) == JOIN_CODE_LENGTH and set(example) <= set(JOIN_CODE_ALPHABET)


def test_an_instructor_reads_whose_run_it_is_without_the_address_twice(carol_client, courses):
    newbie = make_user("newbie@example.com")
    services.course_join(user=newbie, code=courses[0].join_code)
    run = make_run(newbie, design_name="Newbienet", accuracy=0.5)
    page = carol_client.get(f"/runs/{run.pk}/").content.decode()
    assert "This run belongs to newbie@example.com." in page
    assert "(newbie@example.com)" not in page

    named = make_run(courses[0].members.get(email="alice@example.com"), design_name="Alicenet", accuracy=0.5)
    page = carol_client.get(f"/runs/{named.pk}/").content.decode()
    assert "This run belongs to Alice (alice@example.com)." in page
