"""What the feedback says, as a viewer reads it: evidence in sentences and small tables in English and
Korean (never a raw key or a Python value), and notes stored as codes, rendered in the viewer's language."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import translation

from buildx.testing.openai_server import Reply
from feedback import services
from feedback.actors import feedback_run
from feedback.models import Feedback
from feedback.tests.test_feedback import finished_run
from feedback.texts import show

# Seven epochs still improving on validation, test accuracy 0.9: "still_improving" with a gain of 5.0 points.
IMPROVING = [
    (1.6, 0.50, 1.62, 0.49),
    (1.2, 0.62, 1.22, 0.61),
    (0.9, 0.72, 0.93, 0.71),
    (0.7, 0.80, 0.72, 0.79),
    (0.55, 0.86, 0.58, 0.85),
    (0.45, 0.89, 0.47, 0.872),
    (0.38, 0.91, 0.40, 0.90),
]
# What the issue saw: Python values and keys where a sentence belongs (acc_gain 0.028, validation True,
# pairs [{'a': '1', ...}]).
RAW = re.compile(r"\b(True|False|None|nan)\b|\w+_\w+|\[\{|\{'")


def confused_feedback(run) -> Feedback:
    """The stored findings of a model that mixes up 3 and 8 (as the diagnosis stores them)."""
    pair = {"a": "3", "b": "8", "a_as_b": 6, "b_as_a": 4, "a_as_b_rate": 0.1667, "b_as_a_rate": 0.1111}
    evidence = {"pairs": [pair], "a": "3", "b": "8", "count": 10, "accuracy": 0.91, "overfitting": False}
    finding = {"code": "confused_classes", "severity": "info", "evidence": evidence, "suggestions": []}
    return Feedback.objects.create(run=run, status="ready", findings=[finding])


def panel(html: str) -> str:
    return html[html.index('id="feedback"') : html.index("</section>", html.index('id="feedback"'))]


def visible(html: str) -> str:
    """The findings' text as a reader sees it (no tags, no attributes). The Apply buttons are left out:
    they name a setting as the editor names it ("Set weight_decay to 0.0005")."""
    html = re.sub(r'<ul class="suggestions">.*?</ul>', "", html[html.index(">") + 1 :], flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_run_page_gives_the_evidence_as_labelled_facts_without_keys_or_python_values(alice, alice_client):
    run = finished_run(alice, curves=IMPROVING)
    services.feedback_diagnose(run=run)

    page = panel(alice_client.get(f"/runs/{run.pk}/").content.decode())

    assert 'data-code="still_improving"' in page
    assert (
        '<tr data-key="acc_gain"><th scope="row">Validation accuracy, last two epochs</th>'
        "<td>+5.0 percentage points, to 90.0%</td></tr>"
    ) in page
    assert "Over the last two epochs validation accuracy rose by 5.0 percentage points to 90.0%" in page
    assert not RAW.search(visible(page)), RAW.search(visible(page))


def test_the_run_page_gives_the_evidence_in_korean_to_a_korean_viewer(alice, alice_client):
    run = finished_run(alice)  # overfits
    services.feedback_diagnose(run=run)

    page = panel(alice_client.get(f"/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode())

    assert "모델이 과적합되고 있습니다" in page
    assert '<tr data-key="train_acc"><th scope="row">학습 정확도</th><td>100.0%</td></tr>' in page
    assert (
        '<tr data-key="gap"><th scope="row">둘의 차이</th><td>29.0%p (처음 에포크들: 8.0%p)</td></tr>' in page
    )
    assert "Training accuracy" not in page and "percentage points" not in page
    assert not RAW.search(visible(page)), RAW.search(visible(page))


def test_confused_classes_are_a_small_table_not_a_list_of_dicts(alice, alice_client):
    run = finished_run(alice)
    confused_feedback(run)

    page = panel(alice_client.get(f"/runs/{run.pk}/").content.decode())
    korean = panel(alice_client.get(f"/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode())

    assert "<caption>Test images taken for another class</caption>" in page
    assert "<tr><td>3</td><td>8</td><td>6</td><td>16.7%</td></tr>" in page
    assert "<tr><td>8</td><td>3</td><td>4</td><td>11.1%</td></tr>" in page
    assert "3 taken for 8 6 times, 8 for 3 4 times" in page
    assert "<caption>다른 클래스로 잘못 본 테스트 이미지</caption>" in korean
    assert not RAW.search(visible(page)) and not RAW.search(visible(korean))


def test_the_api_keeps_the_stored_evidence_and_adds_it_in_the_viewers_words(alice, alice_client):
    run = finished_run(alice, curves=IMPROVING)
    services.feedback_diagnose(run=run)

    english = alice_client.get(f"/api/v1/runs/{run.pk}/feedback/").json()
    korean = alice_client.get(f"/api/v1/runs/{run.pk}/feedback/", HTTP_ACCEPT_LANGUAGE="ko").json()

    (finding,) = [f for f in english["findings"] if f["code"] == "still_improving"]
    assert finding["evidence"]["acc_gain"] == 0.05 and finding["evidence"]["validation"] is True
    facts = {fact["key"]: (fact["label"], fact["value"]) for fact in finding["facts"]}
    assert facts["acc_gain"] == ("Validation accuracy, last two epochs", "+5.0 percentage points, to 90.0%")
    (ko,) = [f for f in korean["findings"] if f["code"] == "still_improving"]
    ko_facts = {fact["key"]: (fact["label"], fact["value"]) for fact in ko["facts"]}
    assert ko_facts["acc_gain"] == ("검증 정확도, 마지막 두 에포크", "+5.0%p, 90.0%까지")
    assert ko["title"] == "마지막 에포크에서도 계속 나아지고 있습니다"
    assert ko["evidence"] == finding["evidence"]  # stored once, rendered per viewer


@pytest.mark.parametrize(
    "evidence",
    [
        {},  # an empty (or foreign) evidence: nothing to show, nothing breaks
        {"train_acc": None, "val_acc": "n/a", "gap": float("nan")},
    ],
)
def test_a_finding_with_missing_numbers_shows_question_marks_not_none_or_a_crash(evidence):
    with translation.override("en"):
        shown = show("overfitting", evidence)
    assert "None" not in shown.explanation and "nan" not in shown.explanation
    assert shown.facts == []


# --- notes --------------------------------------------------------------------------------------------


def test_the_no_llm_note_is_stored_as_a_code_and_read_in_korean_below_the_findings(
    alice, alice_client, llm_off
):
    run = finished_run(alice)

    feedback_run(run.pk)

    feedback = Feedback.objects.get(run=run)
    assert (feedback.llm_note, feedback.llm_note_params) == ("no_llm", {})
    page = panel(alice_client.get(f"/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode())
    assert "이 서버에는 언어 모델이 설정되어 있지 않습니다. 위의 진단 결과가 피드백입니다." in page
    assert "No language model" not in page
    # "the findings above": the note comes after them.
    assert page.index('class="findings"') < page.index('id="feedback-note"')
    body = alice_client.get(f"/api/v1/runs/{run.pk}/feedback/", HTTP_ACCEPT_LANGUAGE="ko").json()
    assert body["llm_note_code"] == "no_llm" and body["llm_note"].startswith("이 서버에는 언어 모델이")


def test_an_unreachable_llm_is_stored_as_its_reason_and_shown_in_the_viewers_language(
    alice, alice_client, llm_server, settings
):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing answers
    settings.LLM_MAX_RETRIES = 0
    run = finished_run(alice)

    feedback_run(run.pk)

    feedback = Feedback.objects.get(run=run)
    assert (feedback.llm_note, feedback.llm_note_params) == ("unreachable", {})
    english = panel(alice_client.get(f"/runs/{run.pk}/").content.decode())
    korean = panel(alice_client.get(f"/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode())
    assert "The AI model&#x27;s server cannot be reached. Try again later." in english
    assert "AI 모델 서버에 연결할 수 없습니다. 잠시 후 다시 시도하세요." in korean
    assert "cannot be reached" not in korean


def test_a_server_error_keeps_its_status_code_for_the_sentence(alice, alice_client, llm_server):
    llm_server.script(*[Reply(status=503)] * 5)
    run = finished_run(alice)

    feedback_run(run.pk)

    feedback = Feedback.objects.get(run=run)
    assert (feedback.llm_note, feedback.llm_note_params) == ("server_error", {"status": 503})
    korean = alice_client.get(f"/api/v1/runs/{run.pk}/feedback/", HTTP_ACCEPT_LANGUAGE="ko").json()
    assert korean["llm_note"] == "AI 모델 서버에 오류가 발생했습니다(503). 잠시 후 다시 시도하세요."


# --- the migration that turned stored sentences into codes ---------------------------------------------

BEFORE = [("feedback", "0004_llm_call_moves_to_buildx")]
AFTER = [("feedback", "0005_llm_note_codes")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_notes_stored_as_english_sentences_become_codes_with_their_numbers(alice):
    run_ids = [finished_run(alice).pk for _ in range(4)]
    old = migrate(BEFORE)
    OldFeedback = old.get_model("feedback", "Feedback")
    notes = [
        "No language model is configured on this server: the findings above are the feedback.",
        "The AI model's server cannot be reached. Try again later.",
        "The AI model did not answer within 90 seconds. Try again later.",
        "Something this version never wrote.",
    ]
    for run_id, note in zip(run_ids, notes, strict=True):
        OldFeedback.objects.create(run_id=run_id, status="ready", llm_note=note)
    try:
        new = migrate(AFTER)
        stored = {
            f.run_id: (f.llm_note, f.llm_note_params)
            for f in new.get_model("feedback", "Feedback").objects.all()
        }
        assert [stored[r] for r in run_ids] == [
            ("no_llm", {}),
            ("unreachable", {}),
            ("timeout", {"seconds": 90}),
            ("Something this version never wrote.", {}),  # unknown: shown as it is
        ]
    finally:
        executor = MigrationExecutor(connection)
        migrate(executor.loader.graph.leaf_nodes())
    with translation.override("ko"):
        assert services.note_text(code="timeout", params={"seconds": 90}) == (
            "AI 모델이 90초 안에 답하지 않았습니다. 잠시 후 다시 시도하세요."
        )
        assert services.note_text(code="Something this version never wrote.") == (
            "Something this version never wrote."
        )
