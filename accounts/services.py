from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from accounts.models import Course, Membership, User, new_join_code


def user_set_language(*, user: User, language: str) -> bool:
    """Remember the user's interface language. Returns False (and stores nothing) for an unknown code."""
    if language not in dict(settings.LANGUAGES):
        return False
    if user.preferred_language != language:
        user.preferred_language = language
        user.save(update_fields=["preferred_language"])
    return True


# --- Courses ---------------------------------------------------------------------------------------

INSTRUCTORS_GROUP = "Instructors"  # created by migration 0004_instructors_group

# What the Instructors group may do: read their students' work, cancel a run. The admin's scoping
# (accounts.admin_scoping) decides whose work; these decide which kinds of rows.
# (app_label, model, codename, name); keep in step with migration 0004 (and its successors).
INSTRUCTOR_PERMISSIONS = [
    ("accounts", "user", "view_user", "Can view user"),
    ("accounts", "course", "view_course", "Can view course"),
    ("accounts", "membership", "view_membership", "Can view membership"),
    ("designs", "design", "view_design", "Can view design"),
    ("designs", "designversion", "view_designversion", "Can view design version"),
    ("designs", "codeartifact", "view_codeartifact", "Can view code artifact"),
    ("training", "run", "view_run", "Can view run"),
    ("training", "runevent", "view_runevent", "Can view run event"),
    ("training", "epochmetric", "view_epochmetric", "Can view epoch metric"),
    ("training", "runartifact", "view_runartifact", "Can view run artifact"),
    ("training", "run", "cancel_run", "Can cancel run"),
    ("feedback", "feedback", "view_feedback", "Can view feedback"),  # feedback/migrations/0003
    ("library", "dataset", "view_dataset", "Can view dataset"),  # library/migrations/0002
]


def instructors_group_sync() -> Group:
    """The Instructors group with exactly its permissions, created where missing (idempotent).

    The migration creates it on a fresh database; this repairs a database where it was deleted or
    flushed (a test database after a transactional test keeps Django's permissions but not ours).
    """
    group, _created = Group.objects.get_or_create(name=INSTRUCTORS_GROUP)
    wanted = []
    for app_label, model, codename, name in INSTRUCTOR_PERMISSIONS:
        content_type, _ct_created = ContentType.objects.get_or_create(app_label=app_label, model=model)
        permission, _p_created = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        wanted.append(permission)
    group.permissions.set(wanted)
    return group


class CourseRefused(Exception):
    """A course action that cannot be done; ``message`` says why, for the person who asked."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalise_join_code(code: str) -> str:
    # People type codes from a projector: lower case, spaces and dashes ("abcd-efgh") all count.
    return "".join(ch for ch in code.upper() if ch.isalnum())


def course_create(*, name: str, term: str = "", instructors: Iterable[User] = ()) -> Course:
    with transaction.atomic():
        course = Course.objects.create(name=name, term=term)
        for user in instructors:
            course_add_instructor(course=course, user=user)
    return course


def instructor_grant(*, user: User) -> None:
    """Let ``user`` into the admin as an instructor: staff, in the Instructors group (idempotent)."""
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    # Synced each time (a dozen small queries, once per new instructor) so a group edited by hand
    # or lost in a flush is put right rather than silently leaving instructors blind.
    user.groups.add(instructors_group_sync())


def course_add_instructor(*, course: Course, user: User) -> Membership:
    """Make ``user`` an instructor of ``course`` (a student membership there becomes an instructor one)."""
    with transaction.atomic():
        membership, _ = Membership.objects.update_or_create(
            course=course, user=user, defaults={"role": Membership.Role.INSTRUCTOR}
        )
        instructor_grant(user=user)
    return membership


def course_join(*, user: User, code: str) -> tuple[Course, bool]:
    """Join the course whose join code is ``code`` as a student: (course, joined_now).

    Raises CourseRefused for an unknown code or for the course's own instructor.
    """
    course = Course.objects.filter(join_code=normalise_join_code(code)).first()
    if course is None:
        raise CourseRefused(
            "unknown_code",
            _("No course has this code. Check it with your instructor: codes change when renewed."),
        )
    membership, created = Membership.objects.get_or_create(
        course=course, user=user, defaults={"role": Membership.Role.STUDENT}
    )
    if membership.role == Membership.Role.INSTRUCTOR:
        raise CourseRefused("instructor", _("You teach this course, so you cannot join it as a student."))
    return course, created


def course_rotate_code(*, course: Course) -> str:
    """Give the course a new join code; the old one stops working at once. Students already in stay in."""
    for _attempt in range(5):
        code = new_join_code()
        # 31**8 codes: a clash is next to impossible, but a unique index would turn one into a 500.
        if not Course.objects.filter(join_code=code).exists():
            break
    Course.objects.filter(pk=course.pk).update(join_code=code)
    course.join_code = code
    return code


def course_remove_student(*, course: Course, user: User) -> bool:
    """Take a student out of a course. Their designs and runs stay theirs. False if they were not in it."""
    deleted, _ = Membership.objects.filter(course=course, user=user, role=Membership.Role.STUDENT).delete()
    return deleted > 0


def courses_taught(*, user: User) -> QuerySet[Course]:
    return Course.objects.filter(memberships__user=user, memberships__role=Membership.Role.INSTRUCTOR)
