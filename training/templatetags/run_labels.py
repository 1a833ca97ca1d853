"""``{% load run_labels %}{% run_label_form run %}``: the owner's tags-and-note form of a run, the same
HTML as each row of the runs table writes (training.run_table.label_form_html)."""

from __future__ import annotations

from django import template
from django.template.backends.utils import csrf_input
from django.utils.safestring import SafeString

from training.models import Run
from training.run_table import label_form_html

register = template.Library()


@register.simple_tag(takes_context=True)
def run_label_form(context: template.Context, run: Run, next_url: str = "") -> SafeString:
    return label_form_html(run, next_url=next_url, csrf_input=csrf_input(context["request"]))
