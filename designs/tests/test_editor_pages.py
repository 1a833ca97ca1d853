"""The beginner's pages without a browser: dashboard, opening starters, import/export, diffs, sample images."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.urls import reverse
from PIL import Image

from designs import services
from designs.models import Design

# The original BuildX front end's format: ids instead of names, settings nested in "params",
# inputs by id, in_channels written out.
ORIGINAL_FORMAT = {
    "model_name": "FromOldBuildX",
    "dataset": "digits",
    "layers": [
        {"id": "conv-1", "type": "Conv2d", "params": {"in_channels": 1, "out_channels": 8, "kernel_size": 3}},
        {"id": "act-1", "type": "ReLU", "input": "conv-1"},
        {"id": "flat", "type": "Flatten"},
        {"id": "head", "type": "Linear", "params": {"out_features": 10}},
    ],
    "hyperparameters": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01, "use_cloud": False},
}


def _design_with_two_versions(owner) -> Design:
    design = services.design_create_from_starter(owner=owner, slug="tiny_cnn_digits")
    assert design.latest_version is not None
    spec = dict(design.latest_version.spec)
    spec["layers"] = [*spec["layers"][:-1], {**spec["layers"][-1], "out_features": 10}]
    spec["layers"].insert(2, {"type": "Dropout", "name": "drop1", "p": 0.25})
    spec["hyperparameters"] = {**spec["hyperparameters"], "epochs": 4}
    services.design_save_version(design=design, spec=spec)
    return design


def test_the_dashboard_offers_every_starter_design_to_open(alice_client):
    response = alice_client.get(reverse("dashboard"))
    assert response.status_code == 200
    page = response.content.decode()
    for starter in services.starter_list():
        assert f'name="starter" value="{starter["slug"]}"' in page
        assert starter["title"]["en"] in page
    assert "You have no designs yet" in page


def test_the_dashboard_speaks_korean(alice_client):
    response = alice_client.get(reverse("dashboard"), HTTP_ACCEPT_LANGUAGE="ko")
    page = response.content.decode()
    assert "대시보드" in page
    assert services.starter_list()[0]["title"]["ko"] in page


def test_opening_a_starter_creates_a_design_and_lands_in_the_editor(alice_client, alice):
    response = alice_client.post(reverse("design-new"), {"starter": "lenet5_mnist"})
    design = Design.objects.get(owner=alice)
    assert response.status_code == 302
    assert response["Location"] == reverse("design-editor", args=[design.pk])
    assert design.starter == "lenet5_mnist"
    assert design.versions.count() == 1

    page = alice_client.get(response["Location"]).content.decode()
    state = json.loads(
        re.search(r'<script id="editor-state" type="application/json">(.*?)</script>', page, re.S)[1]
    )
    assert state["spec"]["model_name"] == design.latest_version.spec["model_name"]
    assert state["version"]["number"] == 1
    assert state["urls"]["validate"] == "/api/v1/designs/validate/"
    # The CSP forbids inline scripts and style attributes: only JSON data blocks and files.
    assert not re.search(r"<script(?![^>]*(type=\"application/json\"|src=))", page)
    assert 'style="' not in page


def test_a_blank_design_opens_with_an_empty_column_for_digits_and_saves_nothing(alice_client, alice):
    # "New blank design" is a link: the editor opens on a design that exists only in the page until its
    # first save (which creates it through the API), so clicks that never save leave nothing behind.
    for _ in range(3):
        page = alice_client.get(reverse("design-new")).content.decode()
        assert '"layers": []' in page and '"dataset": "digits"' in page
        assert '"create": "/api/v1/designs/"' in page
    assert not Design.objects.filter(owner=alice).exists()
    # An old form that still posts without a starter creates nothing either.
    assert alice_client.post(reverse("design-new"))["Location"] == reverse("design-new")
    assert not Design.objects.filter(owner=alice).exists()


@pytest.mark.parametrize(
    ("lang", "button", "name"),
    [("en", "New language model", "My language model"), ("ko", "새 언어 모델", "내 언어 모델")],
)
def test_a_blank_language_model_opens_from_the_dashboard_on_the_addition_corpus(
    alice_client, alice, lang, button, name
):
    dashboard = alice_client.get(reverse("dashboard"), HTTP_ACCEPT_LANGUAGE=lang).content.decode()
    link = re.search(r'<a class="button" id="new-language-model" href="([^"]+)">([^<]+)</a>', dashboard)
    assert link and link[2] == button
    page = alice_client.get(link[1].replace("&amp;", "&"), HTTP_ACCEPT_LANGUAGE=lang).content.decode()
    state = _editor_state(page)
    assert state["spec"] == {
        "model_name": "MyGPT",
        "task": "language_model",
        "dataset": "addition",
        "preprocessing": [],
        "layers": [],
        "hyperparameters": {},
    }
    assert state["design"] == {"id": None, "name": name}
    # The editor's strings for a language model come translated with the page.
    strings = json.loads(
        re.search(r'<script id="editor-strings" type="application/json">(.*?)</script>', page, re.S)[1]
    )
    assert strings["data_title_lm"] == ("학습할 텍스트" if lang == "ko" else "Text to learn from")
    assert "%(task)s" in strings["task_switched_blocks"]
    assert not Design.objects.filter(owner=alice).exists()


def test_the_dashboard_shows_my_designs_and_not_another_users(alice_client, alice, bob):
    services.design_create(owner=alice, name="Alice's net")
    services.design_create(owner=bob, name="Bob's net")
    page = alice_client.get(reverse("dashboard")).content.decode()
    assert "Alice&#x27;s net" in page
    assert "Bob&#x27;s net" not in page


def test_another_users_design_is_not_found(alice_client, bob):
    design = services.design_create_from_starter(owner=bob, slug="tiny_cnn_digits")
    assert alice_client.get(reverse("design-editor", args=[design.pk])).status_code == 404
    assert alice_client.get(reverse("design-export", args=[design.pk])).status_code == 404
    assert alice_client.get(reverse("design-diff", args=[design.pk])).status_code == 404


def test_a_design_in_the_original_buildx_format_can_be_imported(alice_client, alice):
    upload = io.BytesIO(json.dumps(ORIGINAL_FORMAT).encode())
    upload.name = "old.json"
    response = alice_client.post(reverse("design-import"), {"file": upload})
    design = Design.objects.get(owner=alice)
    assert response["Location"] == reverse("design-editor", args=[design.pk])
    assert design.name == "FromOldBuildX"
    version = design.latest_version
    assert [layer["name"] for layer in version.spec["layers"]] == ["conv_1", "act_1", "flat", "head"]
    assert version.report["ready_to_train"] is True
    assert version.spec["hyperparameters"]["epochs"] == 3


def test_an_exported_design_imports_as_the_same_spec(alice_client, alice):
    design = services.design_create_from_starter(owner=alice, slug="tiny_cnn_digits")
    response = alice_client.get(reverse("design-export", args=[design.pk]))
    assert response["Content-Disposition"] == 'attachment; filename="TinyCNN-v1.json"'
    exported = response.content
    upload = io.BytesIO(exported)
    upload.name = "TinyCNN-v1.json"
    alice_client.post(reverse("design-import"), {"file": upload})
    imported = Design.objects.filter(owner=alice).exclude(pk=design.pk).get()
    assert imported.name == design.name
    assert imported.latest_version.spec_hash == design.latest_version.spec_hash


def test_a_broken_import_says_what_is_wrong_and_creates_nothing(alice_client, alice):
    bad = {
        **ORIGINAL_FORMAT,
        "layers": [{"type": "Conv2d", "params": {"out_channels": 8, "kernel_size": 99}}],
    }
    upload = io.BytesIO(json.dumps(bad).encode())
    upload.name = "bad.json"
    response = alice_client.post(reverse("design-import"), {"file": upload}, follow=True)
    assert "could not be imported" in response.content.decode()
    assert "kernel_size" in response.content.decode()
    assert not Design.objects.filter(owner=alice).exists()

    upload = io.BytesIO(b"not json at all")
    upload.name = "x.json"
    response = alice_client.post(reverse("design-import"), {"file": upload}, follow=True)
    assert "The file is not JSON" in response.content.decode()


def test_the_diff_of_two_versions_shows_the_added_block_and_changed_settings(alice_client, alice):
    design = _design_with_two_versions(alice)
    response = alice_client.get(reverse("design-diff", args=[design.pk]), {"a": 1, "b": 2})
    page = response.content.decode()
    added = re.findall(r'<tr class="diff-added"><td>(.*?)</td>', page)
    removed = re.findall(r'<tr class="diff-removed"><td>(.*?)</td>', page)
    assert any(line.startswith("drop1  Dropout") for line in added)
    assert "epochs = 4" in added and "epochs = 10" in removed
    assert not any("conv1" in line for line in added + removed)  # unchanged blocks are not marked


def test_the_samples_of_digits_are_a_png_grid_one_row_per_class(client):
    response = client.get(reverse("dataset-samples", args=["digits"]), {"per_class": 4})
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    # 8x8 digits drawn 4x larger with a 2-pixel gutter: 10 rows of 4.
    assert image.size == (4 * 34 + 2, 10 * 34 + 2)
    assert image.mode == "L"


def test_an_unknown_dataset_has_no_samples(client):
    assert client.get(reverse("dataset-samples", args=["imagenet"])).status_code == 404


@pytest.mark.parametrize("lang, label", [("en", "Your network"), ("ko", "대시보드")])
def test_the_editor_page_is_translated_through_gettext(alice_client, alice, lang, label):
    design = services.design_create_from_starter(owner=alice, slug="tiny_cnn_digits")
    page = alice_client.get(
        reverse("design-editor", args=[design.pk]), HTTP_ACCEPT_LANGUAGE=lang
    ).content.decode()
    assert label in page
    state = json.loads(
        re.search(r'<script id="editor-state" type="application/json">(.*?)</script>', page, re.S)[1]
    )
    assert state["lang"] == lang


def test_the_editor_learns_version_ids_of_my_designs_only(alice_client, alice, bob):
    design = _design_with_two_versions(alice)
    response = alice_client.get(reverse("design-version-ids", args=[design.pk]))
    ids = {str(v.number): v.pk for v in design.versions.all()}
    assert response.json() == {"versions": ids}
    other = services.design_create_from_starter(owner=bob, slug="tiny_cnn_digits")
    assert alice_client.get(reverse("design-version-ids", args=[other.pk])).status_code == 404


def test_the_dashboard_shows_each_designs_best_accuracy_and_my_recent_runs(alice_client, alice, bob):
    from training.models import Run

    design = services.design_create_from_starter(owner=alice, slug="tiny_cnn_digits")
    version = design.latest_version
    artifact = services.artifact_compile(version=version)
    for status, accuracy in (("succeeded", 0.912), ("succeeded", 0.874), ("failed", None)):
        Run.objects.create(
            owner=alice,
            design_version=version,
            code_artifact=artifact,
            dataset="digits",
            status=status,
            epochs=3,
            epoch=3,
            metrics={"accuracy": accuracy} if accuracy else {},
            metrics_source="platform" if accuracy else "",
        )
    bobs = services.design_create_from_starter(owner=bob, slug="tiny_cnn_digits")
    Run.objects.create(
        owner=bob,
        design_version=bobs.latest_version,
        dataset="digits",
        status="succeeded",
        code_artifact=services.artifact_compile(version=bobs.latest_version),
        metrics={"accuracy": 0.99},
        metrics_source="platform",
    )

    page = alice_client.get(reverse("dashboard")).content.decode()
    designs_table = page.split('id="designs-title"')[1].split("</table>")[0]
    assert "91.2%" in designs_table and "99" not in designs_table
    runs_table = page.split('id="runs-title"')[1]
    assert runs_table.count('<tr data-run="') == 3  # mine only
    assert "Succeeded" in runs_table and "Failed" in runs_table


def _editor_state(page: str) -> dict:
    found = re.search(r'<script id="editor-state" type="application/json">(.*?)</script>', page, re.S)
    assert found, "the editor's state is missing from the page"
    return json.loads(found[1])


def test_without_an_llm_the_generate_button_is_off_and_says_why(alice_client, alice, llm_off):
    design = services.design_create_from_starter(owner=alice, slug="tiny_cnn_digits")

    page = alice_client.get(reverse("design-editor", args=[design.pk])).content.decode()

    assert re.search(
        r'<button type="button" class="button" id="generate-ai" disabled[^>]*>Generate with AI<', page
    )
    assert "AI code generation is not set up on this server." in page
    assert "generate" not in _editor_state(page)["urls"]


def test_with_an_llm_the_editor_can_ask_for_code_and_list_what_came_back(alice_client, alice, llm_server):
    design = services.design_create_from_starter(owner=alice, slug="tiny_cnn_digits")

    page = alice_client.get(reverse("design-editor", args=[design.pk])).content.decode()

    assert '<button type="button" class="button" id="generate-ai">Generate with AI<' in page
    assert "not set up on this server" not in page
    urls = _editor_state(page)["urls"]
    assert urls["generate"] == f"/api/v1/designs/{design.pk}/versions/{{n}}/generate/"
    assert urls["artifacts"] == f"/api/v1/designs/{design.pk}/versions/{{n}}/artifacts/"
    assert 'id="ai-result"' in page
