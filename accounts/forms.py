from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


class JoinCourseForm(forms.Form):
    code = forms.CharField(
        label=_("Course code"),
        max_length=32,
        help_text=_("Your instructor gives it to you, for example ABCD-EFGH."),
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}
        ),
    )
