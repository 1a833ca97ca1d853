"""Predictions, exports and the model card of a run trained for real (the digits starter, in the sandbox)."""

from __future__ import annotations

import copy
import fcntl
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from buildx.testing.browser import CHROMIUM_ARGS
from designs import compiler
from designs import services as design_services
from designs.models import CodeArtifact
from sandbox import checks, files
from sandbox import runner as sandbox_runner
from sandbox.engine import buildx_runtime as rt
from sandbox.engine import datasets as ds
from training import exports, predict
from training.models import EpochMetric, Run, RunArtifact, RunEvent
from training.services import artifact_store

EPOCHS = 2


def starter_spec() -> dict:
    starter = design_services.starter_get(slug="tiny_cnn_digits")
    assert starter is not None
    spec = copy.deepcopy(starter["spec"])
    spec["hyperparameters"]["epochs"] = EPOCHS
    return spec


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """The digits starter (2 epochs) trained once through the harness in the sandbox: its events and files."""
    data_dir = tmp_path_factory.mktemp("data")
    cache = ds.ensure_cache("digits", data_dir=data_dir)
    spec, report = design_services.spec_validate(spec=starter_spec())
    code = compiler.compile_spec(spec, design_name="Tiny", version_number=1)
    run_dir = tmp_path_factory.mktemp("train") / "run"
    events: list[dict] = []
    checkpoints: dict[str, bytes] = {}

    def on_event(event: dict) -> None:
        # Copied when announced, as the runs app does: the sandbox removes hard links after the child
        # exits, and the runtime's `best` is a hard link to `last` when the final epoch is the best.
        events.append(event)
        if event["kind"] == "checkpoint":
            for suffix in (".safetensors", ".json"):
                name = event["name"] + suffix
                checkpoints[name] = (run_dir / "checkpoints" / name).read_bytes()

    config = {
        "resume": False,
        "checkpoint_dir": "checkpoints",
        "expect": {"params": report["totals"]["params"], "output_shape": report["output_shape"]},
        "val_split": 0.1,
        "seed": 42,
        "max_epochs": 10,
        "epochs": EPOCHS,
        "device": "cpu",
    }
    result = sandbox_runner.run_script(
        code=code, run_dir=run_dir, config=config, on_event=on_event, should_stop=lambda: False,
        wall_limit_s=300, trusted_code=True, dataset=ds.training_cache(cache),
    )  # fmt: skip
    assert result.status == "succeeded", (result.cause, result.traceback, events)
    model = (run_dir / "model.safetensors").read_bytes()
    # The platform's measurement, as the runs app takes it: the compiled model, these weights, the test split.
    with files.open_regular(run_dir, "model.safetensors", max_bytes=2**24) as weights:
        measured = checks.run_check(
            code=code, config={"mode": "evaluate", "weights": "weights.safetensors"}, dataset=cache,
            inputs={"weights.safetensors": weights}, on_event=events.append, wall_limit_s=300,
        )  # fmt: skip
    assert measured.status == "succeeded", (measured.cause, events)
    return {"data_dir": data_dir, "cache": cache, "code": code, "events": events, "checkpoints": checkpoints,
            "model": model}  # fmt: skip


def store_run(owner, trained: dict, *, source: str = CodeArtifact.Source.COMPILED, status=Run.Status.SUCCEEDED,
              code: str | None = None) -> Run:  # fmt: skip
    """A run as the runs app leaves a finished one: rows, events, metrics and checkpoint files."""
    design = design_services.design_create(owner=owner, name="Tiny", spec=starter_spec())
    version = design.versions.get()
    if source == CodeArtifact.Source.COMPILED:
        artifact = design_services.artifact_compile(version=version)
        assert artifact.code == trained["code"]  # the compiler is deterministic: the code that trained
    else:
        artifact = CodeArtifact.objects.create(
            version=version, source=source, status=CodeArtifact.Status.READY, code=code or trained["code"]
        )
    events = trained["events"]
    result = next(e for e in events if e["kind"] == "result")["test"]
    status_event = next(e for e in events if e["kind"] == "status")
    run = Run.objects.create(
        owner=owner, design_version=version, code_artifact=artifact, dataset="digits",
        hyperparameters=version.spec["hyperparameters"], status=status, epochs=EPOCHS, epoch=EPOCHS,
        progress=1.0, device=status_event["device"], params=status_event["params"],
        metrics=result if status == Run.Status.SUCCEEDED else {}, last_seq=1, run_seconds=3.0, attempt=1,
        metrics_source=(
            (Run.MetricsSource.PLATFORM if source == CodeArtifact.Source.COMPILED else Run.MetricsSource.SCRIPT)
            if status == Run.Status.SUCCEEDED else ""
        ),
    )  # fmt: skip
    RunEvent.objects.create(run=run, seq=1, kind=RunEvent.Kind.STATUS, payload={
        k: status_event.get(k) for k in ("status", "device", "torch", "params")})  # fmt: skip
    for e in events:
        if e["kind"] == "epoch":
            EpochMetric.objects.create(run=run, **{k: e.get(k) for k in (
                "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")})  # fmt: skip
    checkpoint_files = trained["checkpoints"]
    for kind, name in (
        (RunArtifact.Kind.CHECKPOINT_LAST, "last.safetensors"),
        (RunArtifact.Kind.CHECKPOINT_LAST_META, "last.json"),
        (RunArtifact.Kind.CHECKPOINT_BEST, "best.safetensors"),
        (RunArtifact.Kind.CHECKPOINT_BEST_META, "best.json"),
    ):
        artifact_store(run=run, kind=kind, filename=name, content=checkpoint_files[name], epoch=EPOCHS)
    if status == Run.Status.SUCCEEDED:
        artifact_store(
            run=run,
            kind=RunArtifact.Kind.MODEL,
            filename="model.safetensors",
            content=trained["model"],
            epoch=EPOCHS,
        )
    return run


@pytest.fixture
def storage(settings, tmp_path, trained):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DATA_DIR = trained["data_dir"]
    predict.models.clear()
    yield tmp_path
    predict.models.clear()


@pytest.fixture
def alice_run(alice, storage, trained) -> Run:
    return store_run(alice, trained)


def held_out_images(trained) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = rt.load_cache(trained["cache"])
    idx = dataset["test_idx"]
    return dataset["images"].index_select(0, idx), dataset["labels"].index_select(0, idx)


def png(image: torch.Tensor) -> bytes:
    """uint8 (C, H, W) -> PNG bytes: lossless, so the API sees exactly the pixels the harness saw."""
    array = image.permute(1, 2, 0).numpy()
    im = Image.fromarray(array[:, :, 0] if image.shape[0] == 1 else array)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def post_images(client, run: Run, blobs: list[bytes], names: list[str] | None = None):
    files = [("images", (names[i] if names else f"{i}.png", blob)) for i, blob in enumerate(blobs)]
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"images": [SimpleUploadedFile(name, blob) for _field, (name, blob) in files]}
    return client.post(f"/api/v1/runs/{run.pk}/predict/", data)


# --- Predictions -------------------------------------------------------------------------------------------


def test_predictions_through_the_api_equal_the_harness_on_every_test_image(alice_client, alice_run, trained):
    images, labels = held_out_images(trained)
    predicted = []
    for start in range(0, len(images), 64):
        response = post_images(alice_client, alice_run, [png(im) for im in images[start : start + 64]])
        assert response.status_code == 200, response.json()
        predicted += [p["class_index"] for p in response.json()["predictions"]]

    assert len(predicted) == len(labels) == alice_run.metrics["samples"]
    # The harness's own result for the same model on the same test split, image by image summed up:
    confusion = rt.classification_report(torch.tensor(predicted), labels, alice_run.metrics["class_names"])
    assert confusion["confusion_matrix"] == alice_run.metrics["confusion_matrix"]
    assert confusion["accuracy"] == alice_run.metrics["accuracy"] >= 0.8


def test_a_prediction_answers_classes_with_probabilities(alice_client, alice_run, trained):
    images, labels = held_out_images(trained)
    response = post_images(
        alice_client, alice_run, [png(images[0]), png(images[1])], names=["a.png", "b.png"]
    )

    assert response.status_code == 200
    body = response.json()
    assert body["class_names"] == [str(i) for i in range(10)]
    assert body["checkpoint"] == {
        "name": "model",
        "epoch": EPOCHS,
    }  # the final weights: what the metrics measured
    first = body["predictions"][0]
    assert first["name"] == "a.png"
    assert len(first["top"]) == 3 and first["top"][0]["class"] == first["class"]
    assert abs(sum(first["probabilities"]) - 1) < 1e-4
    assert first["top"][0]["probability"] >= first["top"][1]["probability"] >= first["top"][2]["probability"]


def test_a_large_photo_is_converted_and_resized_like_the_training_images(alice_client, alice_run):
    photo = Image.new("RGB", (640, 480), (255, 255, 255))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)

    response = post_images(alice_client, alice_run, [buffer.getvalue()], names=["photo.jpg"])

    assert response.status_code == 200, response.json()
    assert response.json()["input_shape"] == [1, 8, 8]
    assert len(response.json()["predictions"]) == 1


def test_a_base64_image_in_json_is_accepted(alice_client, alice_run, trained):
    import base64

    images, _ = held_out_images(trained)
    url = "data:image/png;base64," + base64.b64encode(png(images[3])).decode()
    response = alice_client.post(
        f"/api/v1/runs/{alice_run.pk}/predict/", {"images": [url]}, content_type="application/json"
    )
    assert response.status_code == 200, response.json()
    assert len(response.json()["predictions"]) == 1


def test_a_corrupted_image_is_a_400_that_names_it(alice_client, alice_run, trained):
    images, _ = held_out_images(trained)
    good = png(images[0])
    response = post_images(
        alice_client, alice_run, [good, good[: len(good) // 2]], names=["ok.png", "broken.png"]
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "image_unreadable"
    assert "broken.png" in error["message"]
    assert list(error["fields"]) == ["images[1]"]


def test_a_file_that_is_not_png_or_jpeg_is_a_400(alice_client, alice_run):
    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, format="GIF")
    for blob in (gif.getvalue(), b"#!/bin/sh\necho hello\n"):
        response = post_images(alice_client, alice_run, [blob], names=["digit.png"])
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "image_type"


def test_an_oversized_image_is_a_400(alice_client, alice_run, settings):
    settings.PREDICT_MAX_IMAGE_PIXELS = 100 * 100
    big = io.BytesIO()
    Image.new("L", (101, 100)).save(big, format="PNG")
    response = post_images(alice_client, alice_run, [big.getvalue()])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "image_too_large"
    assert "101×100" in response.json()["error"]["message"]

    settings.PREDICT_MAX_IMAGE_BYTES = 1000
    noisy = io.BytesIO()
    Image.frombytes("L", (60, 60), random.Random(0).randbytes(3600)).save(noisy, format="PNG")
    assert len(noisy.getvalue()) > 1000
    response = post_images(alice_client, alice_run, [noisy.getvalue()])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "image_too_large"


def test_no_image_or_too_many_images_is_a_400(alice_client, alice_run, settings, trained):
    response = alice_client.post(f"/api/v1/runs/{alice_run.pk}/predict/", {})
    assert response.status_code == 400 and response.json()["error"]["code"] == "no_image"

    settings.PREDICT_MAX_IMAGES = 2
    images, _ = held_out_images(trained)
    response = post_images(alice_client, alice_run, [png(im) for im in images[:3]])
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_images"


def test_it_refuses_another_users_run(client, bob, alice_run, trained):
    client.force_login(bob)
    images, _ = held_out_images(trained)
    assert post_images(client, alice_run, [png(images[0])]).status_code == 404
    for url in (
        f"/api/v1/runs/{alice_run.pk}/mistakes/",
        f"/api/v1/runs/{alice_run.pk}/exports/",
        f"/api/v1/runs/{alice_run.pk}/export/weights/",
        f"/api/v1/runs/{alice_run.pk}/export/onnx/",
        f"/api/v1/runs/{alice_run.pk}/export/bundle/",
        f"/api/v1/runs/{alice_run.pk}/export/card/",
        f"/runs/{alice_run.pk}/predict/",
        f"/runs/{alice_run.pk}/card/",
    ):
        assert client.get(url).status_code == 404, url


def test_a_run_still_training_is_a_409_that_says_so(alice_client, alice, storage, trained):
    run = store_run(alice, trained, status=Run.Status.RUNNING)
    images, _ = held_out_images(trained)

    response = post_images(alice_client, run, [png(images[0])])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "run_not_finished"
    assert "still training" in response.json()["error"]["message"]
    assert alice_client.get(f"/api/v1/runs/{run.pk}/export/weights/").status_code == 409


def test_a_run_of_assistant_code_predicts_in_the_sandbox_as_the_compiled_model_does(
    alice_client, alice, storage, trained
):
    compiled = store_run(alice, trained)
    written = store_run(alice, trained, source=CodeArtifact.Source.LLM)
    images, _ = held_out_images(trained)
    blobs = [png(images[i]) for i in range(6)]

    response = post_images(alice_client, written, blobs)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["sandboxed"] is True
    expected = post_images(alice_client, compiled, blobs).json()
    assert expected["sandboxed"] is False
    assert [p["class"] for p in body["predictions"]] == [p["class"] for p in expected["predictions"]]
    for got, want in zip(body["predictions"], expected["predictions"], strict=True):
        assert abs(got["probability"] - want["probability"]) < 1e-4
    assert predict.models.stats()["models"] == 1  # only the compiled model was loaded in this process

    # ONNX needs the model in this process: refused for code nobody reviewed.
    onnx = alice_client.get(f"/api/v1/runs/{written.pk}/export/onnx/")
    assert onnx.status_code == 409 and onnx.json()["error"]["code"] == "untrusted_code"
    # Weights, bundle and card copy stored files only: they work for any finished run.
    assert alice_client.get(f"/api/v1/runs/{written.pk}/export/weights/").status_code == 200


def test_assistant_code_never_runs_in_the_web_process(alice_client, alice, storage, trained, tmp_path):
    canary = tmp_path / "canary"
    code = trained["code"].replace(
        "import buildx_runtime as rt", f"import buildx_runtime as rt\nopen({str(canary)!r}, 'w').write('ran')"
    )
    run = store_run(alice, trained, source=CodeArtifact.Source.LLM, code=code)
    images, _ = held_out_images(trained)

    response = post_images(alice_client, run, [png(images[0])])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "prediction_failed"
    assert "open" in response.json()["error"]["message"]  # the sandbox's static check named it
    assert alice_client.get(f"/api/v1/runs/{run.pk}/export/onnx/").status_code == 409
    assert alice_client.get(f"/api/v1/runs/{run.pk}/export/bundle/").status_code == 200
    assert not canary.exists()


def test_the_cache_keeps_a_model_loaded_and_stays_within_its_bounds(alice, storage, trained, settings):
    settings.PREDICT_CACHE_MODELS = 2
    runs = [store_run(alice, trained) for _ in range(3)]
    images, _ = held_out_images(trained)

    predict.predict(run=runs[0], images=[png(images[0])])
    predict.predict(run=runs[0], images=[png(images[0])])
    assert predict.models.stats()["misses"] == 1 and predict.models.stats()["hits"] == 1
    for run in runs[1:]:
        predict.predict(run=run, images=[png(images[0])])
    assert predict.models.stats()["models"] == 2

    settings.PREDICT_CACHE_BYTES = predict.get_model(runs[2]).nbytes  # room for one model's weights
    predict.predict(run=runs[0], images=[png(images[0])])  # evicted before: loaded again
    assert predict.models.stats()["models"] == 1


def test_mistakes_are_the_test_images_the_model_gets_wrong(alice_client, alice_run, trained):
    response = alice_client.get(f"/api/v1/runs/{alice_run.pk}/mistakes/")

    assert response.status_code == 200
    body = response.json()
    confusion = alice_run.metrics["confusion_matrix"]
    correct = sum(confusion[i][i] for i in range(10))
    assert body["samples"] == alice_run.metrics["samples"]
    assert body["wrong"] == body["samples"] - correct
    images, labels = held_out_images(trained)
    for item in body["mistakes"]:
        assert item["label"] == str(int(labels[item["index"]])) != item["predicted"]
        assert item["image"].startswith("data:image/png;base64,")


# --- Exports ---------------------------------------------------------------------------------------------


def test_the_exported_weights_load_into_the_scripts_model(alice_client, alice_run, trained):
    from safetensors.torch import load as load_safetensors

    response = alice_client.get(f"/api/v1/runs/{alice_run.pk}/export/weights/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="tinycnn-run{alice_run.pk}.safetensors"'
    tensors = load_safetensors(response.content)

    namespace = compiler.load_compiled(trained["code"])
    model = namespace["build_model"]()
    model.load_state_dict(tensors, strict=True)
    model.eval()
    images, _ = held_out_images(trained)
    x = namespace["EVAL_TRANSFORM"](images[:50].float() / 255)
    expected = predict.probabilities(predict.get_model(alice_run), images[:50])
    assert torch.equal(model(x).argmax(1), expected.argmax(1))


def test_onnx_export_takes_raw_pixels_as_its_card_says_and_gives_the_apis_classes(
    alice_client, alice_run, trained
):
    import onnx
    import onnxruntime

    response = alice_client.get(f"/api/v1/runs/{alice_run.pk}/export/onnx/")
    assert response.status_code == 200
    onnx.checker.check_model(onnx.load_from_string(response.content))

    # As the model card says: uint8 (B, 1, 8, 8), the raw pixels; the preprocessing is in the graph.
    card = alice_client.get(f"/api/v1/runs/{alice_run.pk}/export/card/").content.decode()
    assert "input `input`, uint8 (B, 1, 8, 8), the raw pixels 0..255" in card
    assert "divided by 255 (to [0, 1]), then: Normalize((0.5,), (0.5,))" in card
    images, _ = held_out_images(trained)
    images = images[:40]
    session = onnxruntime.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    (pixels,) = session.get_inputs()
    assert (pixels.name, pixels.type, pixels.shape[1:]) == ("input", "tensor(uint8)", [1, 8, 8])
    (logits,) = session.run(["logits"], {"input": images.numpy()})
    api = post_images(alice_client, alice_run, [png(image) for image in images]).json()["predictions"]
    assert [int(i) for i in logits.argmax(1)] == [p["class_index"] for p in api]
    metadata = json.loads(session.get_modelmeta().custom_metadata_map["buildx"])
    assert metadata["class_names"] == [str(i) for i in range(10)]
    assert metadata["preprocessing_in_graph"] == "x / 255, then Normalize((0.5,), (0.5,))"


def test_the_bundle_runs_standalone_and_its_model_loads_the_weights(
    alice_client, alice_run, trained, tmp_path
):
    response = alice_client.get(f"/api/v1/runs/{alice_run.pk}/export/bundle/")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        names = sorted(bundle.namelist())
        bundle.extractall(tmp_path / "unzipped")
    folder = f"tinycnn-run{alice_run.pk}"
    assert names == sorted(
        f"{folder}/{n}"
        for n in (
            "tinycnn.py",
            "buildx_runtime.py",
            "model.safetensors",
            "predict.py",
            "requirements.txt",
            "README.md",
            "MODEL_CARD.md",
            *(f"examples/{k}-{k}.png" for k in range(10)),  # one held-out image per class
        )
    )
    root = tmp_path / "unzipped" / folder
    assert (root / "tinycnn.py").read_text() == alice_run.code_artifact.code
    assert "## Test metrics" in (root / "MODEL_CARD.md").read_text()

    # Its predict.py classifies images with the exported weights as the API does.
    images, _ = held_out_images(trained)
    paths = []
    for i in range(5):
        (tmp_path / f"img{i}.png").write_bytes(png(images[i]))
        paths.append(str(tmp_path / f"img{i}.png"))
    api = post_images(alice_client, alice_run, [png(images[i]) for i in range(5)]).json()["predictions"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "predict.py", *paths], cwd=root, capture_output=True, text=True,
                         timeout=120, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [p["class"] for p in api]

    # Its script trains anywhere: one epoch on a tiny folder of PNGs (one sub-folder per class).
    data = tmp_path / "tiny-data"
    for i in range(40):
        label = int(trained_label(trained, i))
        (data / str(label)).mkdir(parents=True, exist_ok=True)
        (data / str(label) / f"{i}.png").write_bytes(png(images[i]))
    out = subprocess.run([sys.executable, "tinycnn.py", "--data", str(data), "--epochs", "1"], cwd=root,
                         capture_output=True, text=True, timeout=180, env=env)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "epoch 1" in out.stdout.lower()


def trained_label(trained: dict, i: int) -> int:
    return int(held_out_images(trained)[1][i])


# --- The model card and the pages ------------------------------------------------------------------------


def test_the_model_card_page_shows_design_data_metrics_and_environment(alice_client, alice_run):
    response = alice_client.get(f"/runs/{alice_run.pk}/card/")

    assert response.status_code == 200
    html = response.content.decode()
    accuracy = f"{alice_run.metrics['accuracy'] * 100:.1f}%"
    assert accuracy in html
    assert torch.__version__ in html
    assert "conv1" in html and "digits" in html and "<polyline" in html
    assert f"/api/v1/runs/{alice_run.pk}/export/bundle/" in html
    # How to feed it, with its numbers (the ONNX takes raw pixels: the preprocessing is in its graph).
    assert "Feeding the model" in html and "<code>Normalize((0.5,), (0.5,))</code>" in html
    assert "uint8 (B, 1, 8, 8), the raw pixels 0..255" in html

    markdown = alice_client.get(f"/api/v1/runs/{alice_run.pk}/export/card/").content.decode()
    for heading in ("## Design", "## Dataset", "## Hyperparameters", "## Test metrics", "## Training curves",
                    "## Environment"):  # fmt: skip
        assert heading in markdown
    assert f"Accuracy: {accuracy}" in markdown and f"PyTorch: {torch.__version__}" in markdown
    assert "Seed: 42" in markdown


def test_the_predict_page_offers_upload_a_canvas_for_digits_and_downloads(alice_client, alice_run):
    response = alice_client.get(f"/runs/{alice_run.pk}/predict/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'type="file"' in html and "<canvas" in html
    assert f"/api/v1/runs/{alice_run.pk}/export/onnx/" in html
    assert "<script>" not in html and 'style="' not in html  # the CSP allows neither


def test_the_exports_list_names_every_download(alice_client, alice_run):
    body = alice_client.get(f"/api/v1/runs/{alice_run.pk}/exports/").json()
    assert [e["kind"] for e in body["exports"]] == ["weights", "onnx", "bundle", "card"]
    assert body["predict_url"] == f"/runs/{alice_run.pk}/predict/"
    for item in body["exports"]:
        assert alice_client.get(item["url"]).status_code == 200, item


def test_weights_file_is_safetensors_with_its_description(alice_run):
    from safetensors import safe_open

    _name, content = exports.weights_file(run=alice_run)
    path = Path(alice_run.artifacts.first().file.path).parent / "export.safetensors"
    path.write_bytes(content)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["buildx"])
    assert meta["run"] == alice_run.pk and meta["epoch"] == EPOCHS and meta["dataset"] == "digits"


# --- The page in a browser -------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_the_predict_page_in_a_browser_upload_draw_and_mistakes(transactional_db, live_server, client, alice,
                                                               storage, trained, tmp_path, monkeypatch):  # fmt: skip
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop
    run = store_run(alice, trained)
    client.force_login(alice)
    images, _ = held_out_images(trained)
    upload = tmp_path / "digit.png"
    upload.write_bytes(png(images[7]))
    expected = predict.predict(run=run, images=[upload.read_bytes()], top_k=5)["predictions"][0]
    errors: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                              "url": live_server.url}])  # fmt: skip
        page = context.new_page()
        # Console errors (a CSP violation among them) and failed requests; the favicon is the base template's.
        page.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" and "Failed to load" not in m.text else None,
        )
        page.on(
            "response",
            lambda r: (
                errors.append(f"{r.status} {r.url}") if r.status >= 400 and "favicon" not in r.url else None
            ),
        )
        page.goto(f"{live_server.url}/runs/{run.pk}/predict/")

        # The grid of mistakes fills in from the test split.
        expect(page.locator("#mistakes-status")).to_contain_text("test images are wrong")
        assert page.locator("#mistakes-grid img").count() >= 1

        # Upload: five bars, the first the API's class with its probability.
        page.set_input_files("#predict-file", str(upload))
        bars = page.locator("#predict-bars li")
        expect(bars).to_have_count(5)
        expect(bars.first.locator(".predict-label")).to_have_text(expected["class"])
        expect(bars.first.locator(".predict-pct")).to_have_text(f"{expected['probability'] * 100:.1f}%")

        # Draw a stroke on the canvas and send it.
        page.click("#predict-clear")
        expect(bars).to_have_count(0)
        box = page.locator("#predict-canvas").bounding_box()
        page.mouse.move(box["x"] + 112, box["y"] + 30)
        page.mouse.down()
        page.mouse.move(box["x"] + 112, box["y"] + 200, steps=10)
        page.mouse.up()
        page.click("#predict-draw-submit")
        expect(bars).to_have_count(5)
        browser.close()
    assert not errors, errors


def test_the_run_page_links_the_predict_page_the_card_and_the_exports(alice_client, alice_run):
    html = alice_client.get(f"/runs/{alice_run.pk}/").content.decode()
    for url in (
        f"/runs/{alice_run.pk}/predict/",
        f"/runs/{alice_run.pk}/card/",
        f"/api/v1/runs/{alice_run.pk}/export/weights/",
        f"/api/v1/runs/{alice_run.pk}/export/onnx/",
        f"/api/v1/runs/{alice_run.pk}/export/bundle/",
    ):
        assert f'href="{url}"' in html, url


def test_a_prediction_costs_a_fixed_number_of_queries_with_a_warm_cache(alice_client, alice_run, trained):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    images, _ = held_out_images(trained)
    blob = png(images[0])
    post_images(alice_client, alice_run, [blob])  # warms the cache
    with CaptureQueriesContext(connection) as queries:
        assert post_images(alice_client, alice_run, [blob]).status_code == 200
    # session, user, the run (with its version, design and code), its weights artifact
    assert len(queries) <= 4, [q["sql"] for q in queries]


def test_damaged_weights_in_storage_are_a_409_not_a_crash(alice_client, alice_run, trained):
    artifact = predict.weights_artifact(alice_run)  # the final model's file
    Path(artifact.file.path).write_bytes(b"\x00\x01 not safetensors")
    images, _ = held_out_images(trained)

    response = post_images(alice_client, alice_run, [png(images[0])])

    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "no_weights",
        "message": "This run's saved weights could not be read.",
    }
    assert alice_client.get(f"/api/v1/runs/{alice_run.pk}/export/bundle/").status_code == 409


def test_the_predict_page_of_a_run_still_training_says_to_wait(alice_client, alice, storage, trained):
    run = store_run(alice, trained, status=Run.Status.RUNNING)

    response = alice_client.get(f"/runs/{run.pk}/predict/")

    assert response.status_code == 409
    html = response.content.decode()
    assert "still training" in html and "<canvas" not in html
    assert "The run has not finished training." in html


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_trained_by_a_real_worker_predicts_what_its_harness_measured(workers, alice, client, settings):
    """The whole way: run_create, a Dramatiq worker, the sandbox, the stored checkpoints, the API."""
    from training import services
    from training.tests.conftest import wait_for

    predict.models.clear()
    design = design_services.design_create(owner=alice, name="Tiny", spec=starter_spec())
    version = design.versions.get()
    artifact = design_services.artifact_compile(version=version)
    workers.start()  # a rundramatiq process on Redis, or worker threads in embedded mode
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    wait_for(lambda: Run.objects.get(pk=run.pk).is_finished(), timeout=240, what="the run to finish")
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)

    client.force_login(alice)
    dataset = rt.load_cache(ds.ensure_cache("digits", data_dir=settings.DATA_DIR))
    images = dataset["images"].index_select(0, dataset["test_idx"])
    labels = dataset["labels"].index_select(0, dataset["test_idx"])
    predicted = []
    for start in range(0, len(images), 64):
        response = post_images(client, run, [png(im) for im in images[start : start + 64]])
        assert response.status_code == 200, response.json()
        predicted += [p["class_index"] for p in response.json()["predictions"]]
    report = rt.classification_report(torch.tensor(predicted), labels, run.metrics["class_names"])
    assert report["confusion_matrix"] == run.metrics["confusion_matrix"]
    predict.models.clear()


# --- The bundle on its own: a clean folder, a virtualenv holding only what its README names -------------------

BUNDLE_VENVS = Path(__file__).resolve().parents[2] / "var" / "bundle-venvs"


def readme_commands(readme: str) -> list[str]:
    """The commands of the README's "Run it" section, one a line, as a user would type them."""
    section = readme.split("## Run it", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, section
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def pip_settings() -> dict[str, str]:
    """This machine's pip configuration (its indexes, wheel folders, constraints: where packages come from,
    not packages): HOME for the user's pip.conf, and PIP_* variables."""
    return {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k == "HOME"}


def bundle_venv(requirements: str, install: str) -> Path:
    """A virtualenv with `install` (the README's pip line) run in it and nothing else: no system site
    packages, so a requirement the README forgets is missing here too. Made once per requirements (kept in
    var/, keyed by their hash and the Python version): installing torch takes minutes."""
    key = hashlib.sha256(f"{sys.version}\n{install}\n{requirements}".encode()).hexdigest()[:16]
    venv = BUNDLE_VENVS / key
    BUNDLE_VENVS.mkdir(parents=True, exist_ok=True)
    with open(BUNDLE_VENVS / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker at a time; the others wait and reuse it
        if not (venv / "complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / "requirements.txt").write_text(requirements)
                env = {"PATH": f"{venv}/bin:/usr/bin:/bin", **pip_settings()}
                done = subprocess.run(["bash", "-c", install], cwd=folder, env=env, capture_output=True,
                                      text=True, timeout=1500)  # fmt: skip
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            (venv / "complete").touch()
    return venv


@pytest.mark.slow
def test_the_bundle_trains_and_predicts_in_a_clean_folder_with_only_what_its_readme_names(
    alice_client, alice_run, tmp_path
):
    response = alice_client.get(f"/api/v1/runs/{alice_run.pk}/export/bundle/")
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        bundle.extractall(tmp_path / "clean")
    root = tmp_path / "clean" / f"tinycnn-run{alice_run.pk}"
    requirements = (root / "requirements.txt").read_text()
    torch_release = torch.__version__.split("+")[0]  # the release that trained it (a CPU build here)
    assert requirements.split() == [
        f"torch=={torch_release}",
        "numpy>=1.24",
        "pillow>=10",
        "scikit-learn>=1.3",
    ]
    commands = readme_commands((root / "README.md").read_text())
    # The first two make and enter a fresh virtualenv: the cached one stands for it (same Python, empty).
    assert commands[:3] == ["python -m venv .venv", ". .venv/bin/activate", "pip install -r requirements.txt"]
    venv = bundle_venv(requirements, commands[2])
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "VIRTUAL_ENV": str(venv), **pip_settings()}

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip

    outputs = {}
    for command in commands[2:]:
        done = run(command)
        assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
        assert "Traceback" not in done.stderr and "Warning" not in done.stderr, (command, done.stderr)
        outputs[command] = done.stdout

    # It classifies its example images (one held-out test image per class) as the API does.
    assert commands[3] == "python predict.py examples/*.png"
    examples = sorted((root / "examples").glob("*.png"))
    lines = outputs[commands[3]].splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"examples/{p.name}" for p in examples]
    api = post_images(alice_client, alice_run, [p.read_bytes() for p in examples]).json()["predictions"]
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [p["class"] for p in api]

    # It trains on the digits without a folder (they ship with scikit-learn), then tests.
    assert commands[4] == "python tinycnn.py --epochs 2"
    trained = outputs[commands[4]]
    assert "epoch 2/2" in trained.lower() and "Test: accuracy" in trained, trained

    # predict.py alone says how to use it.
    usage = run("python predict.py")
    assert usage.returncode == 2 and usage.stdout.startswith("usage: python predict.py IMAGE")
    assert "Traceback" not in usage.stderr

    # A dataset that needs files says where to get them, without a traceback.
    script = (root / "tinycnn.py").read_text().replace('DATASET = "digits"', 'DATASET = "MNIST"')
    (root / "mnist_variant.py").write_text(script)
    missing = run("python mnist_variant.py --epochs 1")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "MNIST is not in MNIST/" in missing.stderr and "ossci-datasets.s3.amazonaws.com" in missing.stderr


def test_a_bundle_names_what_its_dataset_needs_beyond_torch_numpy_and_pillow():
    from training.exports import dataset_requirements

    assert dataset_requirements("digits") == ["scikit-learn>=1.3"]
    assert dataset_requirements("svhn") == dataset_requirements("SVHN") == ["scipy>=1.8"]  # MATLAB files
    assert dataset_requirements("CIFAR100") == dataset_requirements("EMNISTLetters") == []
    assert dataset_requirements("upload-17") == []
