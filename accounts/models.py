from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from phonenumber_field.modelfields import PhoneNumberField


class UserManager(DjangoUserManager):
    """Users log in with their email; the username is kept (Django's admin wants one) and filled from it."""

    def _create_user(self, username, email, password, **extra_fields):
        # Django's would store a missing email as "": NULL instead, as many users may have none.
        email = self.normalize_email(email) or None
        user = self.model(
            username=self.model.normalize_username(username or email), email=email, **extra_fields
        )
        user.password = make_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, username=None, email=None, password=None, **extra_fields):
        return super().create_user(username, email, password, **extra_fields)

    def create_superuser(self, username=None, email=None, password=None, **extra_fields):
        return super().create_superuser(username, email, password, **extra_fields)


class User(AbstractUser):
    # Null, not blank, for people who signed up with a phone number: unique ignores NULLs.
    # (The stubs type AbstractUser.email as str; here it may be None.)
    email = models.EmailField(_("email address"), unique=True, null=True, blank=True)  # type: ignore[assignment]
    # E.164 ("+821012345678"). A number is the user's only once verified by a code: only verified numbers
    # are unique, log in, or block another account from claiming them.
    phone_number = PhoneNumberField(_("phone number"), blank=True)
    # A default in the database too: rows written by code that predates the column (an older migration's
    # model, a raw INSERT) are unverified, not an error.
    phone_verified = models.BooleanField(_("phone number verified"), default=False, db_default=False)
    preferred_language = models.CharField(
        _("preferred language"), max_length=8, choices=settings.LANGUAGES, blank=True
    )

    objects: ClassVar[UserManager] = UserManager()

    # People log in with their email everywhere: the site, the API, `createsuperuser`, the admin.
    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta(AbstractUser.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["phone_number"],
                condition=Q(phone_verified=True),
                name="unique_verified_phone",
                violation_error_code="phone_taken",
                violation_error_message=_("This phone number is already verified on another account."),
            ),
            models.CheckConstraint(
                condition=Q(phone_verified=False) | ~Q(phone_number=""),
                name="verified_phone_has_number",
                violation_error_code="phone_missing",
                violation_error_message=_("Only a number can be verified: enter the phone number."),
            ),
        ]

    def __str__(self) -> str:
        # Never the phone number: instructors see students by this name.
        return self.email or self.username

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.email or self.username


JOIN_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
JOIN_CODE_LENGTH = 8


def new_join_code() -> str:
    """Eight characters from an alphabet without look-alikes (no 0/O, 1/I/L): read out in class, typed by hand."""
    import secrets

    return "".join(secrets.choice(JOIN_CODE_ALPHABET) for _ in range(JOIN_CODE_LENGTH))


class Course(models.Model):
    """A class that students join with its code; its instructors follow them in the admin."""

    name = models.CharField(_("name"), max_length=120)
    term = models.CharField(_("term"), max_length=60, blank=True, help_text=_("For example: Spring 2027."))
    join_code = models.CharField(_("join code"), max_length=16, unique=True, default=new_join_code)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="courses", verbose_name=_("members")
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["name", "term"]
        verbose_name = _("course")
        verbose_name_plural = _("courses")

    def __str__(self) -> str:
        return f"{self.name} ({self.term})" if self.term else self.name

    @property
    def instructors(self) -> models.QuerySet[User]:
        return User.objects.filter(memberships__course=self, memberships__role=Membership.Role.INSTRUCTOR)

    @property
    def students(self) -> models.QuerySet[User]:
        return User.objects.filter(memberships__course=self, memberships__role=Membership.Role.STUDENT)


class Membership(models.Model):
    """One person in one course, as an instructor or a student (never both in the same course)."""

    class Role(models.TextChoices):
        INSTRUCTOR = "instructor", _("Instructor")
        STUDENT = "student", _("Student")

    course = models.ForeignKey(
        Course, on_delete=models.CASCADE, related_name="memberships", verbose_name=_("course")
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships", verbose_name=_("user")
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.STUDENT)
    joined_at = models.DateTimeField(_("joined"), auto_now_add=True)

    class Meta:
        ordering = ["course", "role", "user__email"]
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [models.UniqueConstraint(fields=["course", "user"], name="one_membership_per_course")]
        indexes = [models.Index(fields=["user", "role"], name="membership_user_role")]

    def __str__(self) -> str:
        return f"{self.user} · {self.course} ({self.get_role_display()})"
