"""Phone numbers as people type them ("010-1234-5678") in, E.164 ("+821012345678") out.

One parser for every door (sign-up, login by code, the account page, the API, the admin): numbers
without a country code are in ``PHONENUMBER_DEFAULT_REGION`` (Korea), and a refusal says what was
wrong with the number, in the user's language.
"""

from __future__ import annotations

import phonenumbers
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult

EXAMPLE = "010-1234-5678"

# Types that can receive a text message (some countries' plans cannot tell mobile from fixed).
SMS_CAPABLE = {
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.PAGER,
    PhoneNumberType.UNKNOWN,
}

PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: _(
        "Unknown country code. A number from abroad starts with + and its country code, "
        "for example +1 650 253 0000."
    ),
    NumberParseException.NOT_A_NUMBER: _(
        "This is not a phone number: type its digits, for example %(example)s."
    ),
    NumberParseException.TOO_SHORT_AFTER_IDD: _("This number is too short."),
    NumberParseException.TOO_SHORT_NSN: _("This number is too short."),
    NumberParseException.TOO_LONG: _("This number is too long."),
}


def parse_phone(value: str, *, region: str | None = None) -> str:
    """The number in E.164, or a ValidationError (code ``invalid_phone``) saying what is wrong."""
    region = region or settings.PHONENUMBER_DEFAULT_REGION
    text = (value or "").strip()
    if not text:
        raise ValidationError(
            _("Enter a phone number, for example %(example)s."), code="required", params={"example": EXAMPLE}
        )
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        message = PARSE_ERRORS.get(exc.error_type, PARSE_ERRORS[NumberParseException.NOT_A_NUMBER])
        raise ValidationError(message, code="invalid_phone", params={"example": EXAMPLE}) from None
    params: dict[str, object] = {"country_code": number.country_code}
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(invalid_reason(number), code="invalid_phone", params=params)
    if phonenumbers.number_type(number) not in SMS_CAPABLE:
        params["number"] = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
        raise ValidationError(
            _("%(number)s cannot receive text messages: enter a mobile number."),
            code="invalid_phone",
            params=params,
        )
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def invalid_reason(number: phonenumbers.PhoneNumber):
    """Why a parsed number is not valid, as a message: too short, too long, or wrong digits.

    libphonenumber's possible lengths are wide (a Korean "010-123" is "possible"), so the length is
    compared with the country's example mobile number when the number starts like one.
    """
    reason = phonenumbers.is_possible_number_with_reason(number)
    digits = phonenumbers.national_significant_number(number)
    region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    example_digits = phonenumbers.national_significant_number(example) if example else ""
    if example_digits and digits[:2] == example_digits[:2]:
        if len(digits) < len(example_digits):
            reason = ValidationResult.TOO_SHORT
        elif len(digits) > len(example_digits):
            reason = ValidationResult.TOO_LONG
    if reason in (ValidationResult.TOO_SHORT, ValidationResult.INVALID_LENGTH):
        return _("This number is too short for a number with country code +%(country_code)s.")
    if reason == ValidationResult.TOO_LONG:
        return _("This number is too long for a number with country code +%(country_code)s.")
    return _("This is not a valid number with country code +%(country_code)s: check the digits.")


def normalize_phone(value: str) -> str | None:
    """``parse_phone`` for lookups: the E.164 form, or None when it is not a usable number."""
    try:
        return parse_phone(value)
    except ValidationError:
        return None


def format_phone(e164: str) -> str:
    """How a number is shown to its owner: national form at home ("010-1234-5678"), else international."""
    try:
        number = phonenumbers.parse(str(e164), settings.PHONENUMBER_DEFAULT_REGION)
    except NumberParseException:
        return str(e164)
    region = phonenumbers.region_code_for_number(number)
    if region == settings.PHONENUMBER_DEFAULT_REGION:
        return phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)


class PhoneField(forms.CharField):
    """A phone number typed as people write it; cleans to E.164 (a plain str, as allauth expects)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("label", _("Phone number"))
        kwargs.setdefault("max_length", 32)
        kwargs.setdefault(
            "widget",
            forms.TextInput(
                attrs={
                    "type": "tel",
                    "autocomplete": "tel",
                    "inputmode": "tel",
                    "placeholder": EXAMPLE,
                }
            ),
        )
        super().__init__(*args, **kwargs)

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return value
        return parse_phone(value)
