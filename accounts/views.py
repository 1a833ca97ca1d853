from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django.views.i18n import set_language as django_set_language

from accounts import services
from accounts.auth import signed_in_user
from accounts.forms import JoinCourseForm
from accounts.models import Course, Membership


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """The language switcher: Django's cookie, plus the account's preference when logged in.

    The preference follows the user to other browsers: the login sets the cookie from it.
    """
    response = django_set_language(request)
    if request.user.is_authenticated:
        services.user_set_language(user=request.user, language=request.POST.get("language", ""))
    return response


# --- Courses ---------------------------------------------------------------------------------------


def _courses_page(request: HttpRequest, form: JoinCourseForm, *, status: int = 200) -> HttpResponse:
    memberships = (
        Membership.objects.filter(user=signed_in_user(request))
        .select_related("course")
        .annotate(
            student_count=Count(
                "course__memberships", filter=Q(course__memberships__role=Membership.Role.STUDENT)
            )
        )
        .order_by("course__name", "course__term")
    )
    return render(request, "accounts/courses.html", {"form": form, "memberships": memberships}, status=status)


@login_required
def course_list(request: HttpRequest) -> HttpResponse:
    """My courses (taught and taken) and the form to join one with its code."""
    return _courses_page(request, JoinCourseForm())


@login_required
@require_POST
def course_join(request: HttpRequest) -> HttpResponse:
    form = JoinCourseForm(request.POST)
    if form.is_valid():
        try:
            course, joined = services.course_join(
                user=signed_in_user(request), code=form.cleaned_data["code"]
            )
        except services.CourseRefused as exc:
            form.add_error("code", exc.message)
        else:
            if joined:
                messages.success(request, _("You joined %(course)s.") % {"course": course})
            else:
                messages.info(request, _("You are already in %(course)s.") % {"course": course})
            return redirect("courses")
    return _courses_page(request, form, status=400)


def _taught_course(request: HttpRequest, pk: int) -> Course:
    # A course you do not teach is a 404: its students are not yours to see.
    return get_object_or_404(services.courses_taught(user=signed_in_user(request)), pk=pk)


@login_required
def course_detail(request: HttpRequest, pk: int) -> HttpResponse:
    course = _taught_course(request, pk)
    students = (
        Membership.objects.filter(course=course, role=Membership.Role.STUDENT)
        .select_related("user")
        .order_by("user__last_name", "user__first_name", "user__email")
    )
    instructors = course.instructors.order_by("email")
    return render(
        request,
        "accounts/course_detail.html",
        {"course": course, "students": students, "instructors": instructors},
    )


@login_required
@require_POST
def course_rotate_code(request: HttpRequest, pk: int) -> HttpResponse:
    course = _taught_course(request, pk)
    code = services.course_rotate_code(course=course)
    messages.success(
        request,
        _("The new join code is %(code)s. The old one no longer works; students already in stay in.")
        % {"code": code},
    )
    return redirect("course_detail", pk=course.pk)


@login_required
@require_POST
def course_remove_student(request: HttpRequest, pk: int, user_id: int) -> HttpResponse:
    course = _taught_course(request, pk)
    student = get_object_or_404(course.students, pk=user_id)
    services.course_remove_student(course=course, user=student)
    messages.success(
        request,
        _("%(student)s is no longer in %(course)s. Their designs and runs stay theirs.")
        % {"student": student.display_name, "course": course},
    )
    return redirect("course_detail", pk=course.pk)
