"""The run, compare, card and predict pages' small things: the device, the design's link, Downloads,
ONNX's reason, one accuracy format, no Python values, separated thousands, the predict page's buttons."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from buildx.templatetags.buildx_format import percent, plain, thousands
from designs.models import CodeArtifact
from training import services
from training.models import Run, RunArtifact
from training.tests.conftest import make_design

pytestmark = pytest.mark.django_db


def _run(owner, **fields) -> Run:
    version, artifact = make_design(owner)
    run = services.run_create(owner=owner, version=version, artifact=artifact)
    Run.objects.filter(pk=run.pk).update(**fields)
    run.refresh_from_db()
    return run


def test_a_running_run_names_its_device_only_once_it_is_known(alice_client, alice):
    run = _run(alice, status=Run.Status.RUNNING)
    page = alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert 'id="run-where">digits<span id="run-device" hidden>' in page
    assert "digits ·" not in page

    Run.objects.filter(pk=run.pk).update(device="cpu")
    page = alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert 'id="run-where">digits<span id="run-device"> · cpu</span>' in page


def test_the_run_page_links_back_to_its_design_and_version(alice_client, alice):
    run = _run(alice)
    page = alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    design = run.design_version.design
    link = f'href="/designs/{design.pk}/?version={run.design_version.number}"'
    assert link in page
    assert f"Design “{design.name}”, version {run.design_version.number}" in page


def test_a_run_with_nothing_to_download_has_no_downloads_heading(alice_client, alice, run_storage):
    run = _run(alice, status=Run.Status.FAILED)
    page = alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert ">Downloads<" not in page

    services.artifact_store(run=run, kind=RunArtifact.Kind.SCRIPT, filename="script.py", content=b"x = 1\n")
    page = alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert ">Downloads<" in page and "The script that trained" in page


def test_a_run_of_ai_code_says_why_it_has_no_onnx(alice_client, alice, run_storage):
    run = _run(alice, status=Run.Status.SUCCEEDED, metrics={"accuracy": 0.5}, metrics_source="script")
    services.artifact_store(run=run, kind=RunArtifact.Kind.MODEL, filename="model.safetensors", content=b"0")
    llm = CodeArtifact.objects.create(
        version=run.design_version,
        source=CodeArtifact.Source.LLM,
        status=CodeArtifact.Status.READY,
        code="# ai",
    )
    Run.objects.filter(pk=run.pk).update(code_artifact=llm)
    page = alice_client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert 'id="onnx-unavailable"' in page and "No ONNX: this run trained code written by the AI" in page
    assert "export/onnx/" not in page
    exports = alice_client.get(reverse("api-run-exports", args=[run.pk])).json()
    assert "onnx" not in [e["kind"] for e in exports["exports"]]
    assert exports["onnx_unavailable"].startswith("No ONNX")

    compiled = _run(alice, status=Run.Status.SUCCEEDED, metrics={"accuracy": 0.5}, metrics_source="platform")
    page = alice_client.get(reverse("run-detail", args=[compiled.pk])).content.decode()
    assert "export/onnx/" in page and 'id="onnx-unavailable"' not in page


def test_accuracy_reads_the_same_on_every_page(alice_client, alice):
    one = _run(alice, status=Run.Status.SUCCEEDED, metrics={"accuracy": 0.864}, metrics_source="platform")
    two = _run(alice, status=Run.Status.SUCCEEDED, metrics={"accuracy": 0.8}, metrics_source="platform")
    pages = {
        "dashboard": alice_client.get(reverse("dashboard")).content.decode(),
        "runs": alice_client.get(reverse("run-list")).content.decode(),
        "run": alice_client.get(reverse("run-detail", args=[one.pk])).content.decode(),
        "compare": alice_client.get(f"{reverse('run-compare')}?ids={one.pk}&ids={two.pk}").content.decode(),
    }
    for name, page in pages.items():
        assert "86.4%" in page, name
        assert not re.search(r"\b0\.864\d*\b", page.split('id="run-epochs"')[0]), name
        assert "86%<" not in page, name


def test_the_compare_page_and_the_card_show_no_python_values(alice_client, alice):
    hp = {"epochs": 3, "lr_step_size": None, "use_cloud": False, "nesterov": False, "learning_rate": 0.01}
    one = _run(alice, status=Run.Status.SUCCEEDED, hyperparameters=hp, params=6090, metrics={"accuracy": 0.5})
    two = _run(alice, status=Run.Status.SUCCEEDED, hyperparameters={**hp, "learning_rate": 0.1})
    compare = alice_client.get(f"{reverse('run-compare')}?ids={one.pk}&ids={two.pk}").content.decode()
    table = compare.split('class="runs-table compare-table"')[1].split("</table>")[0]
    assert "None" not in table and "False" not in table and "True" not in table
    assert "use_cloud" not in table  # the original's flag: accepted, never acted on, so never shown
    assert '<th scope="row">lr_step_size</th><td>—</td><td>—</td>' in table
    assert '<th scope="row">nesterov</th><td>no</td><td>no</td>' in table

    card = alice_client.get(reverse("run-card", args=[one.pk])).content.decode()
    assert "<dd>6,090</dd>" in card
    facts = card.split(">Hyperparameters<")[1].split("</dl>")[0]
    assert "None" not in facts and "False" not in facts and "use_cloud" not in facts
    card_md = alice_client.get(reverse("api-run-export", args=[one.pk, "card"])).content.decode()
    hyper = card_md.split("## Hyperparameters")[1].split("##")[0]
    assert "None" not in hyper and "False" not in hyper and "- lr_step_size: –" in hyper


def test_the_formats_say_values_as_people_read_them():
    assert percent(0.864) == "86.4%" and percent(1) == "100.0%" and percent(None) == "—"
    assert percent(True) == "—"  # a flag is not an accuracy
    assert thousands(6090) == "6,090" and thousands(8009662123415) == "8,009,662,123,415"
    assert plain(None) == "—" and plain(False) == "no" and plain(True) == "yes" and plain([1, 2]) == "1, 2"


def test_the_predict_page_styles_clear_and_can_offer_to_invert(alice_client, alice, run_storage):
    run = _run(alice, status=Run.Status.SUCCEEDED, metrics={"accuracy": 0.5}, metrics_source="platform")
    services.artifact_store(run=run, kind=RunArtifact.Kind.MODEL, filename="model.safetensors", content=b"0")
    page = alice_client.get(reverse("run-predict", args=[run.pk])).content.decode()
    assert '<button type="button" id="predict-clear" class="button">' in page
    assert 'id="predict-invert" class="notice predict-invert" hidden' in page and "Invert?" in page
    assert 'data-light-on-dark="1"' in page  # digits: light strokes on black
