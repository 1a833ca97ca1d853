"""Joining a course with its code; the instructor renews the code and removes students."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from accounts import services
from accounts.models import Course, Membership
from accounts.tests.conftest import make_run
from training.models import Run


@pytest.mark.django_db
def test_alice_joins_carols_course_with_its_code_typed_loosely(client, alice, carol):
    course = services.course_create(name="Deep Learning 101", term="Spring", instructors=[carol])
    client.force_login(alice)
    typed = f"{course.join_code[:4].lower()}-{course.join_code[4:].lower()} "
    response = client.post("/courses/join/", {"code": typed}, follow=True)
    assert response.redirect_chain == [("/courses/", 302)]
    body = response.content.decode()
    assert "You joined Deep Learning 101 (Spring)." in body
    assert "Deep Learning 101" in body
    assert Membership.objects.get(course=course, user=alice).role == Membership.Role.STUDENT
    assert not alice.is_staff

    # Joining twice changes nothing.
    response = client.post("/courses/join/", {"code": course.join_code}, follow=True)
    assert "You are already in Deep Learning 101 (Spring)." in response.content.decode()
    assert Membership.objects.filter(course=course, user=alice).count() == 1


@pytest.mark.django_db
def test_an_unknown_code_is_refused_with_what_to_do(alice_client, alice):
    response = alice_client.post("/courses/join/", {"code": "NOPE1234"})
    assert response.status_code == 400
    assert "No course has this code" in response.content.decode()
    assert not Membership.objects.filter(user=alice).exists()


@pytest.mark.django_db
def test_an_instructor_cannot_join_their_own_course_as_a_student(client, carol, course_a):
    client.force_login(carol)
    response = client.post("/courses/join/", {"code": course_a.join_code})
    assert response.status_code == 400
    assert "You teach this course" in response.content.decode()
    assert Membership.objects.get(course=course_a, user=carol).role == Membership.Role.INSTRUCTOR


@pytest.mark.django_db
def test_carol_renews_the_code_and_the_old_one_stops_working(carol_client, course_a, bob):
    old = course_a.join_code
    response = carol_client.post(f"/courses/{course_a.pk}/rotate-code/", follow=True)
    course_a.refresh_from_db()
    assert course_a.join_code != old
    assert len(course_a.join_code) == 8
    assert course_a.join_code in response.content.decode()
    assert "alice@example.com" in response.content.decode()  # alice is still in

    with pytest.raises(services.CourseRefused):
        services.course_join(user=bob, code=old)
    services.course_join(user=bob, code=course_a.join_code)
    assert course_a.students.filter(pk=bob.pk).exists()


@pytest.mark.django_db
def test_carol_removes_alice_whose_work_stays_hers(carol_client, course_a, alice):
    run = make_run(alice, design_name="Alicenet", accuracy=0.9)
    response = carol_client.post(f"/courses/{course_a.pk}/students/{alice.pk}/remove/", follow=True)
    assert "is no longer in Deep Learning 101" in response.content.decode()
    assert not course_a.students.filter(pk=alice.pk).exists()
    assert Run.objects.filter(pk=run.pk, owner=alice).exists()
    # And carol no longer sees alice's run in the admin.
    assert carol_client.get(f"/admin/training/run/{run.pk}/change/").status_code == 302


@pytest.mark.django_db
def test_only_the_courses_instructors_manage_it(client, alice, dave, course_a, carol):
    other_course_admin = Course.objects.get(pk=course_a.pk)
    for person in (alice, dave):
        client.force_login(person)
        assert client.get(f"/courses/{other_course_admin.pk}/").status_code == 404
        assert client.post(f"/courses/{course_a.pk}/rotate-code/").status_code == 404
        assert client.post(f"/courses/{course_a.pk}/students/{alice.pk}/remove/").status_code == 404
    assert course_a.students.filter(pk=alice.pk).exists()
    # dave cannot remove his own student through carol's course either, nor carol someone not in it.
    client.force_login(carol)
    assert client.post(f"/courses/{course_a.pk}/students/{dave.pk}/remove/").status_code == 404


@pytest.mark.django_db
def test_the_courses_page_lists_taught_and_taken_courses(client, carol, alice, courses):
    client.force_login(alice)
    body = client.get("/courses/").content.decode()
    assert "Deep Learning 101" in body and "Vision Lab" not in body
    assert 'name="code"' in body
    client.force_login(carol)
    body = client.get("/courses/").content.decode()
    assert f'href="/courses/{courses[0].pk}/"' in body
    assert "1 student" in body


@pytest.mark.django_db
def test_the_courses_pages_need_a_login(client, course_a):
    assert client.get("/courses/")["Location"].startswith("/accounts/login/")
    assert client.post("/courses/join/", {"code": course_a.join_code})["Location"].startswith(
        "/accounts/login/"
    )


@pytest.mark.django_db
def test_a_fresh_database_has_the_instructors_group_and_the_command_repairs_it():
    group = Group.objects.get(name="Instructors")
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert {"view_run", "view_runevent", "view_epochmetric", "view_design", "cancel_run"} <= codenames
    assert not any(name.startswith(("add_", "change_", "delete_")) for name in codenames)

    group.permissions.clear()
    call_command("setup_instructors", stdout=io.StringIO())
    assert set(group.permissions.values_list("codename", flat=True)) == codenames


@pytest.mark.django_db
def test_the_courses_pages_obey_the_content_security_policy(client, carol, course_a):
    from buildx.tests.test_pages_csp import assert_csp_clean

    client.force_login(carol)
    assert_csp_clean(client.get("/courses/"))
    assert_csp_clean(client.get(f"/courses/{course_a.pk}/"))
