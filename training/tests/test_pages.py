"""Run pages as a user sees them, rendered by the server."""

from __future__ import annotations

from training import services
from training.models import EpochMetric, Run
from training.tests.conftest import make_design


def _finished_run(owner) -> Run:
    version, artifact = make_design(owner)
    run = services.run_create(owner=owner, version=version, artifact=artifact)
    metrics = {
        "accuracy": 0.9,
        "precision": 0.8,
        "recall": 0.7,
        "f1": 0.75,
        "class_names": ["a", "<b>"],
        "per_class_accuracy": [1.0, 0.5],
        "confusion_matrix": [[5, 0], [3, 3]],
        "samples": 11,
    }
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.SUCCEEDED, metrics=metrics, metrics_source="platform", epoch=3, progress=1.0
    )
    for epoch in (1, 2, 3):
        EpochMetric.objects.create(
            run=run,
            epoch=epoch,
            train_loss=1 / epoch,
            val_loss=1.2 / epoch,
            train_acc=0.3 * epoch,
            val_acc=0.25 * epoch,
        )
    run.refresh_from_db()
    return run


def test_the_run_page_shows_results_and_a_confusion_heatmap_with_escaped_names(alice, alice_client):
    run = _finished_run(alice)
    page = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert "Succeeded" in page and '<dd id="test-accuracy">90.0%</dd>' in page
    assert '<td class="heat-9">5</td>' in page and '<td class="heat-4">3</td>' in page
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert 'id="run-epochs"' in page and "js/run-live.js" in page
    assert "<script>" not in page  # the CSP forbids inline scripts; data travels as JSON


def test_the_dashboard_lists_recent_runs_and_the_runs_page_filters(alice, alice_client):
    run = _finished_run(alice)
    assert f"/runs/{run.pk}/" in alice_client.get("/dashboard/").content.decode()
    assert f"/runs/{run.pk}/" in alice_client.get("/runs/?status=succeeded").content.decode()
    assert f"/runs/{run.pk}/" not in alice_client.get("/runs/?status=failed").content.decode()


def test_the_compare_page_shows_the_hyperparameters_that_differ(alice, alice_client):
    one, two = _finished_run(alice), _finished_run(alice)
    Run.objects.filter(pk=two.pk).update(hyperparameters={**two.hyperparameters, "learning_rate": 0.1})
    page = alice_client.get(f"/runs/compare/?ids={one.pk}&ids={two.pk}").content.decode()
    row = (
        '<tr class="differs" data-hyperparameter="learning_rate"><th scope="row">learning_rate '
        '<span class="diff-marker" title="differs between the runs">≠<span class="visually-hidden"> '
        "differs between the runs</span></span></th><td>0.01</td>"
        '<td class="cell-differs"><span class="diff-marker" aria-hidden="true">≠</span> '
        '<span class="visually-hidden">differs from the first run: </span>0.1</td></tr>'
    )
    assert row in page
    assert 'id="compare-series"' in page


def test_the_page_buttons_stop_a_queued_run(alice, alice_client):
    version, artifact = make_design(alice)
    response = alice_client.post("/runs/start/", {"design_version": version.pk})
    run = Run.objects.get(owner=alice)
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    alice_client.post(f"/runs/{run.pk}/stop/")
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED


def test_train_on_a_design_with_errors_says_to_fix_it_in_the_editor(alice, alice_client):
    from designs import services as design_services

    version, _artifact = make_design(alice)
    spec = {**version.spec, "layers": [dict(layer) for layer in version.spec["layers"]]}
    conv = next(layer for layer in spec["layers"] if layer["type"] == "Conv2d")
    conv["params"] = {**conv.get("params", {}), "in_channels": 7}  # the digits have 1 channel
    broken, _created = design_services.design_save_version(design=version.design, spec=spec)
    assert not broken.is_valid

    response = alice_client.post("/runs/start/", {"design_version": broken.pk}, follow=True)

    assert "its design has errors. Open it in the editor and fix them." in response.content.decode()
    assert not Run.objects.filter(owner=alice).exists()
