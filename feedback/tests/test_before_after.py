"""Before and after an applied suggestion: where the new version came from, the editor's note, the links
between the two runs, and the compare page's design changes and test accuracies."""

from __future__ import annotations

import re

from designs.models import DesignVersion
from feedback import services
from feedback.models import Feedback
from feedback.tests.test_feedback import finished_run
from training import services as run_services
from training.models import EpochMetric, Run

HEALTHY = [(0.9, 0.7, 0.95, 0.68), (0.5, 0.85, 0.55, 0.83), (0.3, 0.9, 0.4, 0.86)]


def dropout_index(run) -> int:
    body = services.feedback_view(feedback=Feedback.objects.get(run=run))
    return next(
        s["index"]
        for f in body["findings"]
        for s in f["suggestions"]
        if s["suggestion"]["op"] == "insert_layer" and s["suggestion"]["layer"]["type"] == "Dropout"
    )


def applied(owner) -> tuple[Run, DesignVersion]:
    """alice's overfitting run (test accuracy 0.71) and the version made by applying its Dropout suggestion."""
    run = finished_run(owner)
    feedback = services.feedback_diagnose(run=run)
    version, created = services.suggestion_apply(feedback=feedback, index=dropout_index(run), user=owner)
    assert created
    return run, version


def trained(owner, version: DesignVersion, *, accuracy: float = 0.85) -> Run:
    """A finished run of ``version``, trained with its compiled code."""
    artifact = run_services.run_code(version=version)
    assert artifact is not None
    run = run_services.run_create(owner=owner, version=version, artifact=artifact)
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.SUCCEEDED,
        metrics={"accuracy": accuracy},
        metrics_source="platform",
        epoch=len(HEALTHY),
        progress=1.0,
    )
    for epoch, (tl, ta, vl, va) in enumerate(HEALTHY, start=1):
        EpochMetric.objects.create(run=run, epoch=epoch, train_loss=tl, train_acc=ta, val_loss=vl, val_acc=va)
    run.refresh_from_db()
    return run


def text(html: str) -> str:
    """The page as read: inline tags dropped, other tags a space, whitespace collapsed."""
    html = re.sub(r"</?(a|strong|del|ins|code|span)\b[^>]*>", "", html)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_applying_a_suggestion_records_the_run_and_the_suggestion_on_the_new_version(alice):
    run, version = applied(alice)

    version.refresh_from_db()
    assert version.derived_from_run == run
    assert version.applied_suggestion["suggestion"]["op"] == "insert_layer"
    assert version.applied_suggestion["label"]["en"] == "Add Dropout(p=0.3) after flatten"
    assert re.search("[가-힣]", version.applied_suggestion["label"]["ko"])
    assert run.design_version.derived_from_run is None  # the original is untouched


def test_applying_the_same_suggestion_again_keeps_the_versions_origin(alice):
    run, version = applied(alice)
    feedback = Feedback.objects.get(run=run)

    again, created = services.suggestion_apply(feedback=feedback, index=dropout_index(run), user=alice)

    assert not created and again.pk == version.pk
    again.refresh_from_db()
    assert again.derived_from_run == run


def test_the_editor_says_which_run_and_suggestion_the_version_came_from(alice, alice_client):
    run, version = applied(alice)

    page = alice_client.get(f"/designs/{version.design_id}/?version={version.number}").content.decode()

    assert 'id="version-origin"' in page
    assert f"Changed from run #{run.pk}: Add Dropout(p=0.3) after flatten" in text(page)
    assert f'href="/runs/{run.pk}/"' in page


def test_the_editor_says_it_in_korean_too(alice, alice_client):
    run, version = applied(alice)
    alice_client.cookies["django_language"] = "ko"

    page = text(alice_client.get(f"/designs/{version.design_id}/").content.decode())

    assert f"실행 #{run.pk}" in page
    assert version.applied_suggestion["label"]["ko"] in page


def test_the_original_runs_feedback_offers_to_train_the_changed_design_which_compiles_it(alice, alice_client):
    run, version = applied(alice)

    page = alice_client.get(f"/runs/{run.pk}/").content.decode()

    assert 'class="button primary feedback-train-changed">Train the changed design<' in page
    assert f'name="design_version" value="{version.pk}"' in page
    assert "Compare with before" not in page
    # The new version has no code yet: training it compiles it.
    response = alice_client.post("/runs/start/", {"design_version": version.pk})
    new_run = Run.objects.get(design_version=version)
    assert response.status_code == 302 and response["Location"] == f"/runs/{new_run.pk}/"
    assert new_run.code_artifact.source == "compiled" and "Dropout" in new_run.code_artifact.code


def test_once_the_changed_design_has_trained_both_run_pages_link_to_the_compare_page(alice, alice_client):
    run, version = applied(alice)
    after = trained(alice, version)
    compare = f"/runs/compare/?ids={run.pk}&amp;ids={after.pk}"

    feedback_page = alice_client.get(f"/runs/{run.pk}/").content.decode()
    after_page = alice_client.get(f"/runs/{after.pk}/").content.decode()

    assert compare in feedback_page and "feedback-train-changed" not in feedback_page
    assert compare in after_page and "Compare with before" in after_page
    assert f"Changed from run #{run.pk}: Add Dropout(p=0.3) after flatten" in text(after_page)


def test_the_compare_page_lists_the_change_and_both_accuracies(alice, alice_client):
    run, version = applied(alice)
    after = trained(alice, version, accuracy=0.85)

    page = text(alice_client.get(f"/runs/compare/?ids={after.pk}&ids={run.pk}").content.decode())

    assert f"Before: run #{run.pk} · after: run #{after.pk}" in page
    assert f"Suggestion applied from the feedback on run #{run.pk}: Add Dropout(p=0.3) after flatten" in page
    assert "Test accuracy before 71.0%" in page and "Test accuracy after 85.0%" in page
    assert "+14.0 percentage points: better" in page
    assert "Added layer dropout1 (Dropout) after flatten: p=0.3" in page
    assert "Removed layer" not in page and "Hyperparameter " not in page


def test_the_compare_page_speaks_korean(alice, alice_client):
    run, version = applied(alice)
    after = trained(alice, version, accuracy=0.85)
    alice_client.cookies["django_language"] = "ko"

    page = text(alice_client.get(f"/runs/compare/?ids={run.pk}&ids={after.pk}").content.decode())

    assert f"실행 #{run.pk}의 피드백에서 적용한 제안: {version.applied_suggestion['label']['ko']}" in page
    assert "+14.0%p: 좋아짐" in page
    assert "flatten 뒤에 레이어 dropout1 (Dropout) 추가: p=0.3" in page


def test_the_compare_page_shows_a_hyperparameter_change_before_and_after(alice, alice_client):
    run = finished_run(alice)
    feedback = services.feedback_diagnose(run=run)
    feedback.findings = [
        {
            "code": "learning_rate_high",
            "severity": "warning",
            "evidence": {},
            "suggestions": [{"op": "set_hyperparameter", "name": "learning_rate", "value": 0.0003}],
        }
    ]
    feedback.save()
    version, _created = services.suggestion_apply(feedback=feedback, index=0, user=alice)
    after = trained(alice, version, accuracy=0.6)

    page = text(alice_client.get(f"/runs/compare/?ids={run.pk}&ids={after.pk}").content.decode())

    assert "Hyperparameter learning_rate: 0.01 → 0.0003" in page
    assert "-11.0 percentage points: worse" in page
    assert "Added layer" not in page


def test_two_runs_of_the_same_design_say_that_only_the_run_differs(alice, alice_client):
    run = finished_run(alice)
    again = trained(alice, run.design_version, accuracy=0.71)

    page = text(alice_client.get(f"/runs/compare/?ids={run.pk}&ids={again.pk}").content.decode())

    assert "Both runs trained the same design" in page and "No change" in page
    assert "Suggestion applied" not in page


def test_another_users_runs_are_404_on_the_compare_page(alice, bob, client):
    run, version = applied(alice)
    after = trained(alice, version)
    mine = finished_run(bob)
    client.force_login(bob)

    assert client.get(f"/runs/compare/?ids={run.pk}&ids={after.pk}").status_code == 404
    assert client.get(f"/runs/compare/?ids={mine.pk}&ids={after.pk}").status_code == 404
    assert client.get(f"/runs/compare/?ids={mine.pk}&ids=999999").status_code == 404
