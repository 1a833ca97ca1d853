"""Feedback notes become codes: ``llm_note`` held a sentence in the language of the worker that wrote it
(English, so the Korean interface showed English); it now holds a code, with ``llm_note_params``, that
the page renders in the viewer's language. Existing sentences are turned back into their codes."""

import re

from django.conf import settings
from django.db import migrations, models
from django.utils import translation

# The sentences as they were stored, by the code that replaces them (copied here: a migration must not
# change when the messages do). %(name)s is a parameter to recover.
SENTENCES = {
    "no_llm": "No language model is configured on this server: the findings above are the feedback.",
    "ungrounded": "The written feedback quoted numbers that are not from this run, so it is not shown.",
    "not_configured": (
        "No AI model is configured on this BuildX server, so this feature is off. Everything else "
        "(the compiled code, training and the rule-based feedback) works without it. An administrator "
        "can set OPENAI_API_KEY, or OPENAI_BASE_URL for a local model server."
    ),
    "budget_exceeded": (
        "You have used this hour's AI allowance (%(used)s of %(budget)s tokens). Try again in about "
        "%(minutes)s minutes; the compiled code and the rule-based feedback work in the meantime."
    ),
    "timeout": "The AI model did not answer within %(seconds)s seconds. Try again later.",
    "unreachable": "The AI model's server cannot be reached. Try again later.",
    "rate_limited": "The AI model is busy (rate limited). Try again in a few minutes.",
    "server_error": "The AI model's server had an error (%(status)s). Try again later.",
    "bad_key": "The AI model's server refused BuildX's API key. An administrator needs to check OPENAI_API_KEY.",
    "unknown_model": (
        "The AI model's server does not know the configured model. An administrator needs to check OPENAI_MODEL."
    ),
    "refused": "The AI model's server refused the request (HTTP %(status)s).",
    "empty_answer": "The AI model sent an empty answer. Try again later.",
    "unreadable": "The AI model sent an answer BuildX cannot read.",
}
_PARAM = re.compile(r"%\((\w+)\)s")


def _pattern(sentence: str) -> re.Pattern:
    parts, last = [], 0
    for match in _PARAM.finditer(sentence):
        parts.append(re.escape(sentence[last : match.start()]))
        parts.append(f"(?P<{match.group(1)}>.+?)")
        last = match.end()
    parts.append(re.escape(sentence[last:]))
    # Notes were cut at 255 characters: a stored prefix of a long sentence is that sentence too.
    return re.compile("".join(parts) + r"\Z")


def _patterns() -> list[tuple[str, re.Pattern, str]]:
    out = []
    for code, sentence in SENTENCES.items():
        for language, _name in settings.LANGUAGES:
            with translation.override(language):
                out.append((code, _pattern(translation.gettext(sentence)), translation.gettext(sentence)))
    return out


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def sentences_to_codes(apps, schema_editor):
    Feedback = apps.get_model("feedback", "Feedback")
    patterns = _patterns()
    for feedback in Feedback.objects.exclude(llm_note="").only("pk", "llm_note"):
        raw = feedback.llm_note
        for code, pattern, sentence in patterns:
            match = pattern.match(raw.strip())
            cut = len(raw) == 255 and sentence.startswith(raw) and not _PARAM.search(sentence)
            if match or cut:
                params = {k: _number(v) for k, v in (match.groupdict() if match else {}).items()}
                Feedback.objects.filter(pk=feedback.pk).update(llm_note=code, llm_note_params=params)
                break


def codes_to_sentences(apps, schema_editor):
    Feedback = apps.get_model("feedback", "Feedback")
    for feedback in Feedback.objects.filter(llm_note__in=list(SENTENCES)):
        values = {
            k: feedback.llm_note_params.get(k, "?") for k in _PARAM.findall(SENTENCES[feedback.llm_note])
        }
        Feedback.objects.filter(pk=feedback.pk).update(llm_note=(SENTENCES[feedback.llm_note] % values)[:255])


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0004_llm_call_moves_to_buildx"),
    ]

    operations = [
        migrations.AddField(
            model_name="feedback",
            name="llm_note_params",
            field=models.JSONField(blank=True, default=dict, verbose_name="LLM note parameters"),
        ),
        migrations.RunPython(sentences_to_codes, codes_to_sentences),
    ]
