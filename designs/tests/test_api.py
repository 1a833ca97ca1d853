"""The designs API: owner-only CRUD, immutable versions, compiled code, the download bundle, catalog, starters."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.management import call_command

from designs.models import CodeArtifact, Design, DesignVersion
from designs.tests.specs import original_example, small

HEAD = [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]


def post(client, url: str, data) -> object:
    return client.post(url, data, content_type="application/json")


@pytest.fixture
def bob_client(client, bob):
    from django.test import Client

    other = Client()
    other.force_login(bob)
    return other


def test_the_catalog_lists_every_layer_with_its_palette_group_and_help_in_both_languages(client):
    response = client.get("/api/v1/catalog/")

    assert response.status_code == 200
    body = response.json()
    types = {layer["type"]: layer for layer in body["layers"]}
    expected = {
        "Input",
        "Conv2d",
        "ConvTranspose2d",
        "BatchNorm2d",
        "BatchNorm1d",
        "ReLU",
        "LeakyReLU",
        "GELU",
        "SiLU",
        "ELU",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "MaxPool2d",
        "AvgPool2d",
        "AdaptiveAvgPool2d",
        "AdaptiveMaxPool2d",
        "Upsample",
        "Dropout",
        "Dropout2d",
        "Flatten",
        "Linear",
        "Identity",
        "Add",
        "Concat",
        "Residual",
        # Language models (issue 16).
        "Embedding",
        "TokenAndPosition",
        "PositionalEmbedding",
        "LayerNorm",
        "RMSNorm",
        "CausalSelfAttention",
        "MLP",
        "TransformerBlock",
        "Conv1d",
        "LSTM",
        "GRU",
    }
    assert set(types) == expected
    groups = {group["id"] for group in body["groups"]}
    assert groups == {
        "blocks",
        "convolution",
        "pooling",
        "normalisation",
        "activation",
        "regularisation",
        "dense",
        "sequence",
    }
    for layer in body["layers"]:
        assert layer["group"] in groups and layer["help"]["en"] and layer["help"]["ko"]
        for param in layer["params"]:
            assert param["help"]["en"] and param["help"]["ko"], (layer["type"], param["name"])
    conv = types["Conv2d"]
    assert conv["inferred"] == ["in_channels"]
    kernel = next(p for p in conv["params"] if p["name"] == "kernel_size")
    assert kernel["default"] == 3 and kernel["min"] == 1 and kernel["max"] == 31
    assert {t["type"] for t in body["transforms"]} >= {
        "Resize",
        "CenterCrop",
        "RandomCrop",
        "RandomHorizontalFlip",
        "RandomVerticalFlip",
        "RandomRotation",
        "ColorJitter",
        "Grayscale",
        "Normalize",
        "ToTensor",
    }
    hyper = {p["name"]: p for p in body["hyperparameters"]}
    assert hyper["optimizer"]["choices"] == ["sgd", "adam", "adamw"]
    assert hyper["lr_schedule"]["choices"] == ["none", "step", "cosine"]


def test_the_catalogs_datasets_agree_with_the_contract_and_the_engine():
    import sys
    from pathlib import Path

    from designs.catalog import DATASETS

    contract = {
        "digits": ((1, 8, 8), 10),
        "shapes": ((3, 32, 32), 4),
        "MNIST": ((1, 28, 28), 10),
        "FashionMNIST": ((1, 28, 28), 10),
        "CIFAR10": ((3, 32, 32), 10),
        "CIFAR100": ((3, 32, 32), 100),
        "SVHN": ((3, 32, 32), 10),
        "EMNISTLetters": ((1, 28, 28), 26),
    }
    assert {name: (d.input_shape, d.num_classes) for name, d in DATASETS.items()} == contract

    engine = Path(__file__).resolve().parents[2] / "sandbox" / "engine"
    sys.path.insert(0, str(engine))
    try:
        import datasets as engine_datasets
    finally:
        sys.path.remove(str(engine))
    for name, info in DATASETS.items():
        theirs = engine_datasets.BUILTIN[name]
        assert (theirs.input_shape, theirs.class_names) == (info.input_shape, info.class_names), name


def test_validate_answers_a_report_without_saving(alice_client):
    response = post(alice_client, "/api/v1/designs/validate/", original_example())

    assert response.status_code == 200
    body = response.json()
    assert body["report"]["warnings"][0]["code"] == "output_mismatch"
    assert body["spec"]["layers"][0]["kernel_size"] == 3 and len(body["spec_hash"]) == 64
    assert not DesignVersion.objects.exists()
    # {"spec": ...} works too.
    wrapped = post(alice_client, "/api/v1/designs/validate/", {"spec": original_example()})
    assert wrapped.json()["spec_hash"] == body["spec_hash"]


def test_validate_answers_field_errors_in_the_one_error_shape(alice_client):
    spec = original_example()
    spec["layers"][0]["kernel_size"] = "big"
    response = post(alice_client, "/api/v1/designs/validate/", spec)

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid_spec",
            "message": "The design has settings that need fixing.",
            "fields": {
                "layers[0].kernel_size": ['conv1 (Conv2d): kernel_size must be a number, not the text "big".']
            },
        }
    }


def test_validate_needs_a_login(client):
    assert post(client, "/api/v1/designs/validate/", original_example()).status_code in (401, 403)


def test_alice_creates_a_design_saves_versions_and_gets_its_code(alice_client, alice):
    response = post(alice_client, "/api/v1/designs/", {"name": "My CNN", "spec": original_example()})
    assert response.status_code == 201
    design_id = response.json()["id"]
    assert response.json()["latest_version"]["number"] == 1

    spec = original_example()
    spec["layers"] += HEAD
    saved = post(alice_client, f"/api/v1/designs/{design_id}/versions/", {"spec": spec})
    assert saved.status_code == 201
    assert saved.json()["number"] == 2 and saved.json()["ready_to_train"] is True
    assert saved.json()["report"]["totals"]["params"] == 896 + 7200 * 10 + 10

    again = post(alice_client, f"/api/v1/designs/{design_id}/versions/", {"spec": spec})
    assert again.status_code == 200 and again.json()["number"] == 2
    assert DesignVersion.objects.filter(design_id=design_id).count() == 2

    listing = alice_client.get(f"/api/v1/designs/{design_id}/versions/").json()
    assert [v["number"] for v in listing["results"]] == [2, 1]

    code = alice_client.get(f"/api/v1/designs/{design_id}/versions/2/code/")
    assert code.status_code == 200
    body = code.json()
    assert body["source"] == "compiled" and body["status"] == "ready" and body["filename"] == "mycnn.py"
    assert body["code"].startswith('"""MyCNN: generated by BuildX from the design "My CNN", version 2.')
    assert alice_client.get(f"/api/v1/designs/{design_id}/versions/2/code/").json()["id"] == body["id"]
    artifact = CodeArtifact.objects.get()
    assert artifact.version.number == 2 and artifact.code == body["code"] and len(artifact.code_hash) == 64


def test_the_download_is_the_script_with_the_runtime_beside_it(alice_client):
    design = post(alice_client, "/api/v1/designs/", {"starter": "tiny_cnn_digits"}).json()

    response = alice_client.get(f"/api/v1/designs/{design['id']}/versions/1/download/")

    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert 'filename="tinycnn-v1.zip"' in response["Content-Disposition"]
    bundle = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(bundle.namelist()) == ["tinycnn/buildx_runtime.py", "tinycnn/tinycnn.py"]
    assert "import buildx_runtime as rt" in bundle.read("tinycnn/tinycnn.py").decode()
    assert "def main(" in bundle.read("tinycnn/buildx_runtime.py").decode()
    assert (
        alice_client.get(f"/api/v1/designs/{design['id']}/versions/1/download/").content == response.content
    )


def test_a_version_with_errors_does_not_compile(alice_client):
    spec = small([{"type": "Conv2d", "out_channels": 4, "kernel_size": 11}])
    design = post(alice_client, "/api/v1/designs/", {"name": "Broken", "spec": spec}).json()

    response = alice_client.get(f"/api/v1/designs/{design['id']}/versions/1/code/")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "design_not_valid"
    assert error["fields"] == {"layers[0]": ["conv1's 11×11 kernel does not fit its 8×8 input."]}
    assert not CodeArtifact.objects.exists()


def test_a_bad_spec_saves_nothing_and_names_the_field(alice_client, alice):
    spec = original_example()
    spec["hyperparameters"]["epochs"] = 10_000
    response = post(alice_client, "/api/v1/designs/", {"name": "Too long", "spec": spec})

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["spec.hyperparameters.epochs"]
    assert not Design.objects.filter(owner=alice).exists()


def test_bob_gets_a_404_for_alices_design(alice_client, bob_client):
    design = post(alice_client, "/api/v1/designs/", {"name": "Mine", "spec": original_example()}).json()
    base = f"/api/v1/designs/{design['id']}/"

    for url in (
        base,
        f"{base}versions/",
        f"{base}versions/1/",
        f"{base}versions/1/code/",
        f"{base}versions/1/download/",
    ):
        assert bob_client.get(url).status_code == 404, url
    assert bob_client.patch(base, {"name": "Stolen"}, content_type="application/json").status_code == 404
    assert bob_client.delete(base).status_code == 404
    assert post(bob_client, f"{base}versions/", {"spec": original_example()}).status_code == 404
    assert bob_client.get("/api/v1/designs/").json()["results"] == []
    assert bob_client.get(base).json()["error"]["code"] == "not_found"
    assert Design.objects.get(pk=design["id"]).name == "Mine"


def test_alice_renames_and_deletes_her_design(alice_client):
    design = post(alice_client, "/api/v1/designs/", {"name": "Draft"}).json()
    assert design["latest_version"] is None

    renamed = alice_client.patch(
        f"/api/v1/designs/{design['id']}/", {"name": "Final"}, content_type="application/json"
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "Final"
    assert Design.objects.get(pk=design["id"]).name == "Final"

    assert alice_client.delete(f"/api/v1/designs/{design['id']}/").status_code == 204
    assert not Design.objects.filter(pk=design["id"]).exists()


def test_starters_are_listed_and_open_as_designs(client, alice_client):
    starters = client.get("/api/v1/starters/").json()
    assert [s["slug"] for s in starters] == [
        "tiny_cnn_digits",
        "lenet5_mnist",
        "vgg_small_cifar10",
        "resnet20_cifar10",
        "lm_bigram_grammar",
        "lm_mlp_grammar",
        "lm_lstm_brackets",
        "lm_tiny_gpt_addition",
        "lm_tiny_gpt_python",
    ]
    assert all(s["title"]["ko"] and s["description"]["ko"] for s in starters)

    response = post(alice_client, "/api/v1/designs/", {"starter": "resnet20_cifar10"})
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "ResNet-20 for CIFAR-10" and body["starter"] == "resnet20_cifar10"
    assert body["latest_version"]["params"] == 272_474 and body["latest_version"]["ready_to_train"]
    assert post(alice_client, "/api/v1/designs/", {"starter": "nope"}).status_code == 400


def test_the_api_schema_has_no_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_listing_designs_takes_the_same_queries_for_one_design_or_many(
    alice_client, alice, django_assert_max_num_queries
):
    from designs import services

    for n in range(6):
        services.design_create(owner=alice, name=f"d{n}", spec=small(HEAD))
    services.design_create(owner=alice, name="empty")

    with django_assert_max_num_queries(6):
        response = alice_client.get("/api/v1/designs/")
    body = response.json()
    assert body["count"] == 7
    assert [d["latest_version"]["number"] if d["latest_version"] else None for d in body["results"]] == [
        None,
        1,
        1,
        1,
        1,
        1,
        1,
    ]
