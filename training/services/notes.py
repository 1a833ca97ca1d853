"""The owner's tags and note on a run: what the runs table filters by and shows beside the results."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.db import transaction
from django.utils.translation import gettext as _

from training.models import Run, RunTag
from training.services.lifecycle import RunRefused

TAG_MAX_LENGTH = 32  # RunTag.name's column
TAGS_PER_RUN = 10
NOTE_MAX_LENGTH = 2000
# Letters of any script (Korean tags too), digits, and - _ . : one word a tag, nothing to escape in a URL's
# query beyond what the browser does anyway.
TAG_PATTERN = re.compile(r"^[\w.\-]+$")


def tags_parse(text: str) -> list[str]:
    """Tags as a person types them in one field: separated by commas or spaces."""
    return [t for t in re.split(r"[,\s]+", text) if t]


def _clean_tags(tags: Iterable[object]) -> list[str]:
    cleaned: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not TAG_PATTERN.match(tag.strip()):
            raise RunRefused(
                "invalid",
                _("A tag is one word: letters, digits, - _ or . (no spaces)."),
                field="tags",
            )
        name = tag.strip().lower()
        if len(name) > TAG_MAX_LENGTH:
            raise RunRefused(
                "invalid",
                _("A tag has at most %(n)s characters.") % {"n": TAG_MAX_LENGTH},
                field="tags",
            )
        if name not in cleaned:
            cleaned.append(name)
    if len(cleaned) > TAGS_PER_RUN:
        raise RunRefused("invalid", _("A run has at most %(n)s tags.") % {"n": TAGS_PER_RUN}, field="tags")
    return cleaned


def run_label(*, run: Run, tags: Iterable[object] | None = None, note: object = None) -> Run:
    """Replace the run's tags (when ``tags`` is given) and its note (when ``note`` is given).

    Any run status: a label says something about the run, it changes nothing the worker writes.
    Tags are lower-cased and kept once each; a refused value changes nothing (``RunRefused``)."""
    cleaned = _clean_tags(tags) if tags is not None else None
    if note is not None:
        if not isinstance(note, str):
            raise RunRefused("invalid", _("The note is text."), field="note")
        if len(note) > NOTE_MAX_LENGTH:
            raise RunRefused(
                "invalid",
                _("The note has at most %(n)s characters.") % {"n": NOTE_MAX_LENGTH},
                field="note",
            )
    with transaction.atomic():
        if note is not None:
            Run.objects.filter(pk=run.pk).update(note=note.strip())
        if cleaned is not None:
            RunTag.objects.filter(run=run).exclude(name__in=cleaned).delete()
            have = set(RunTag.objects.filter(run=run).values_list("name", flat=True))
            RunTag.objects.bulk_create([RunTag(run=run, name=n) for n in cleaned if n not in have])
    run.refresh_from_db()
    return run
