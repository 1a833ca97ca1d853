from __future__ import annotations

import logging
import secrets

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from allauth.core import context, ratelimit
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.contrib import messages
from django.contrib.sites.requests import RequestSite
from django.contrib.sites.shortcuts import get_current_site
from django.db import transaction
from django.http import HttpResponse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts import sms
from accounts.models import User
from accounts.phone import PhoneField, normalize_phone

logger = logging.getLogger(__name__)


class AccountAdapter(DefaultAccountAdapter):
    error_messages = {
        **DefaultAccountAdapter.error_messages,
        "phone_password_login": _(
            "A phone number logs in with a code sent by text message, not with a password."
        ),
    }

    def send_mail(self, template_prefix: str, email: str, ctx: dict) -> None:
        """allauth's mail, naming the site as the request reached it (``example.org``), not the Site row's
        domain (``buildx.local`` from the first migration): the links in the mail go there too."""
        request = context.request
        if request is not None:
            site = RequestSite(request)
            site.name = get_current_site(request).name  # "BuildX"
            ctx = {**ctx, "current_site": site}
        super().send_mail(template_prefix, email, ctx)

    def populate_username(self, request, user) -> None:
        # Users log in by email or phone; the username mirrors the email so the admin and __str__ stay
        # readable. Without an email it is random, never the phone number: instructors see usernames.
        if not user.username:
            user.username = (user.email or "")[:150] or new_username()

    def save_user(self, request, user, form, commit: bool = True):
        user = super().save_user(request, user, form, commit=False)
        if not user.email:
            user.email = None  # unique: many phone-only users, one NULL each
        if commit:
            user.save()
        return user

    def post_login(self, request, user, **kwargs) -> HttpResponse:
        response = super().post_login(request, user, **kwargs)
        # The language the user chose last time, in any browser, comes back with the login.
        language = getattr(user, "preferred_language", "")
        if language and language in dict(settings.LANGUAGES):
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME,
                language,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                path=settings.LANGUAGE_COOKIE_PATH,
                domain=settings.LANGUAGE_COOKIE_DOMAIN,
                secure=settings.LANGUAGE_COOKIE_SECURE,
                httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
                samesite=settings.LANGUAGE_COOKIE_SAMESITE,
            )
        return response

    def get_login_stages(self) -> list[str]:
        return [
            "accounts.stages.SignupPhoneVerificationStage"
            if stage == "allauth.account.stages.PhoneVerificationStage"
            else stage
            for stage in super().get_login_stages()
        ]

    def authenticate(self, request, **credentials):
        # A phone number is a login by code only (README, "Phone numbers"): as an identifier with a
        # password it would be a short, guessable name, and allauth's failed-login limit keys on email
        # or username alone. A logged-in user confirming their password (reauthentication) may use it.
        identified_by_phone_only = credentials.get("phone") and not (
            credentials.get("email") or credentials.get("username")
        )
        if identified_by_phone_only and not (request and request.user.is_authenticated):
            raise self.validation_error("phone_password_login")
        return super().authenticate(request, **credentials)

    # --- Phone numbers (allauth's phone API) -------------------------------------------------------

    def phone_form_field(self, **kwargs) -> PhoneField:
        return PhoneField(**kwargs)

    def get_phone(self, user) -> tuple[str, bool] | None:
        if not user.phone_number:
            return None
        return str(user.phone_number), user.phone_verified

    def set_phone(self, user, phone: str, verified: bool) -> None:
        if verified:
            self.set_phone_verified(user, phone)
            return
        user.phone_number = phone
        user.phone_verified = False
        if user.pk is not None:  # save_user(commit=False) sets it on a user not saved yet
            user.save(update_fields=["phone_number", "phone_verified"])

    def set_phone_verified(self, user, phone: str) -> None:
        with transaction.atomic():
            # Whoever else typed this number without proving it loses it: it is proven to be this user's.
            User.objects.filter(phone_number=phone, phone_verified=False).exclude(pk=user.pk).update(
                phone_number=""
            )
            user.phone_number = phone
            user.phone_verified = True
            user.save(update_fields=["phone_number", "phone_verified"])

    def get_user_by_phone(self, phone: str):
        # allauth passes numbers as typed on some paths ("010-1234-5678"); only a verified number counts.
        number = normalize_phone(phone)
        if number is None:
            return None
        return User.objects.filter(phone_number=number, phone_verified=True).first()

    def send_verification_code_sms(self, user, phone: str, code: str, **kwargs) -> None:
        minutes = max(1, settings.PHONE_CODE_TIMEOUT_S // 60)
        text = gettext("BuildX code: %(code)s. It expires in %(minutes)s minutes. Never share it.") % {
            "code": code,
            "minutes": minutes,
        }
        self._send_sms(phone, text)

    def send_unknown_account_sms(self, phone: str, **kwargs) -> None:
        # No account has this number: nothing is sent (a stranger's phone is not ours to text), but it
        # counts against the number's limit all the same, so the answers cannot tell the two apart.
        self._consume_sms_limit(phone)

    def send_account_already_exists_sms(self, phone: str) -> None:
        text = gettext(
            "Someone tried to sign up to BuildX with this number, which already has an account. "
            "To log in, ask for a code on the login page."
        )
        self._send_sms(phone, text)

    def _consume_sms_limit(self, phone: str) -> None:
        request = context.request
        if request is not None:
            ratelimit.consume(
                request, action="sms", key=normalize_phone(phone) or phone, raise_exception=True
            )

    def _send_sms(self, phone: str, text: str) -> None:
        self._consume_sms_limit(phone)
        try:
            sms.send_sms(to=phone, text=text)
        except sms.SMSDeliveryError as exc:
            logger.error("SMS to %s not sent: %s", sms.mask(phone), exc)
            request = context.request
            if request is not None:
                self.add_message(
                    request,
                    messages.ERROR,
                    message=gettext("We could not send the text message. Try again in a minute."),
                )


def new_username() -> str:
    while True:
        username = f"user-{secrets.token_hex(4)}"
        if not User.objects.filter(username=username).exists():
            return username


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def populate_user(self, request, sociallogin, data):
        user = super().populate_user(request, sociallogin, data)
        if not user.username:
            user.username = (user.email or "")[:150] or new_username()
        return user

    def authenticate_by_email(self, sociallogin):
        """A Google login reaches an existing account only through an email that account verified.

        allauth also matches addresses nobody verified (and wipes the password it finds there): that
        would let whoever typed an address first, or anyone who can add one to their account, receive
        its owner's Google login. Unverified here means a new account (allauth asks for another email).
        """
        for address in sociallogin.email_addresses:
            if not address.verified or not self.can_authenticate_by_email(sociallogin, address.email):
                continue
            local = (
                EmailAddress.objects.filter(email__iexact=address.email, verified=True)
                .select_related("user")
                .first()
            )
            if local is not None and local.user.is_active:
                return local.user, address.email
        return None
