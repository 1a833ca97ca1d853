"""allauth's login forms with BuildX's rules (``ACCOUNT_FORMS``).

Apart from accounts.forms: allauth imports that module (``ACCOUNT_SIGNUP_FORM_CLASS``) while it
defines its own forms, so it cannot import them back.
"""

from __future__ import annotations

from allauth.account.fields import EmailField
from allauth.account.forms import LoginForm, RequestLoginCodeForm
from django.utils.translation import gettext_lazy as _


class EmailLoginForm(LoginForm):
    """allauth's login form with the email as the only identifier: phone numbers log in by code."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["login"] = EmailField(label=_("Email"))
        self.fields["login"].widget.attrs.update({"autocomplete": "email", "placeholder": _("Email address")})
        self.order_fields(["login", "password", "remember"])


class PhoneLoginCodeForm(RequestLoginCodeForm):
    """The page that sends a login code asks for a phone number only (email accounts have passwords)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields.pop("email", None)
        self.fields["phone"].required = True
        self.fields["phone"].help_text = _("We text you a six-digit code. Standard message rates may apply.")
