from __future__ import annotations

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _


class JoinCourseForm(forms.Form):
    code = forms.CharField(
        label=_("Course code"),
        max_length=32,
        help_text=_("Your instructor gives it to you, for example K7PM2QXA."),
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}
        ),
    )


# --- Sign-up and login (allauth's forms, with BuildX's rules) ------------------------------------


class SignupExtras(forms.Form):
    """The base of allauth's sign-up form and of its API input (``ACCOUNT_SIGNUP_FORM_CLASS``).

    allauth's fields are all optional here (``ACCOUNT_SIGNUP_FIELDS``): one sign-up takes an email and
    a password, or a phone number alone (its owner then logs in with codes sent to it).
    """

    first_name = forms.CharField(
        label=_("Your name (optional)"),
        max_length=150,
        required=False,
        help_text=_("Shown to your instructors instead of your phone number, which they never see."),
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )

    def clean(self) -> dict:
        super().clean()
        cleaned_data = self.cleaned_data
        if not getattr(settings, "PHONE_SIGNUP_ENABLED", True):
            return cleaned_data
        email = cleaned_data.get("email")
        phone = cleaned_data.get("phone")
        password_field = "password1" if "password1" in self.fields else "password"
        password = cleaned_data.get(password_field)
        if self.has_error("email") or self.has_error("phone"):
            return cleaned_data
        if not email and not phone:
            # The page shows one of the two (?by=phone): the error goes where the person can see it.
            typed_email, typed_phone = "email" in self.data, "phone" in self.data
            if typed_email and not typed_phone:
                self.add_error("email", _("Enter your email address."))
            elif typed_phone and not typed_email:
                self.add_error("phone", _("Enter your phone number, for example 010-1234-5678."))
            else:
                self.add_error(None, _("Enter an email address or a phone number."))
        elif email and not password and not self.has_error(password_field):
            self.add_error(password_field, _("Choose a password for your account."))
        elif phone and not email and password:
            self.add_error(
                password_field,
                _("An account made with a phone number has no password: it logs in with codes sent to it."),
            )
        return cleaned_data

    def signup(self, request, user) -> None:
        pass  # allauth saves first_name itself (adapter.save_user)
