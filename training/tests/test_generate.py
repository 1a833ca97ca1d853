"""Text generation with a finished language-model run: POST /api/v1/runs/{id}/generate/, whole or streamed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from designs import compiler
from designs import services as design_services
from sandbox.engine import buildx_runtime as rt
from training import generate, predict
from training.models import Run, RunArtifact
from training.services import artifact_store

SPEC = {
    "model_name": "Tiny GPT",
    "task": "language_model",
    "dataset": "addition",
    "layers": [
        {"type": "TokenAndPosition", "name": "embed", "n_embd": 32},
        {"type": "TransformerBlock", "name": "block1", "n_head": 2},
        {"type": "LayerNorm", "name": "ln_f"},
        {"type": "Linear", "name": "head", "out_features": 13, "bias": False, "tie_weights": True},
    ],
    "hyperparameters": {"context_length": 16, "epochs": 1},
}


@pytest.fixture
def lm_run(alice, settings, tmp_path) -> Iterator[tuple[Run, torch.nn.Module]]:
    """A finished run of a tiny GPT with (untrained, seeded) weights stored as the runs app stores them."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DATA_DIR = tmp_path / "data"
    generate.clear_cache()
    predict.models.clear()
    design = design_services.design_create(owner=alice, name="Tiny GPT", spec=SPEC)
    version = design.versions.get()
    artifact = design_services.artifact_compile(version=version)
    torch.manual_seed(0)
    model = compiler.load_compiled(artifact.code)["build_model"]()
    buffer = io.BytesIO()
    rt.write_safetensors_file(buffer, dict(model.state_dict()), metadata={})
    run = Run.objects.create(
        owner=alice, design_version=version, code_artifact=artifact, dataset="addition",
        hyperparameters=version.spec["hyperparameters"], status=Run.Status.SUCCEEDED, epochs=1, epoch=1,
        progress=1.0, metrics={"loss": 1.0}, metrics_source=Run.MetricsSource.PLATFORM,
    )  # fmt: skip
    artifact_store(
        run=run, kind=RunArtifact.Kind.MODEL, filename="model.safetensors", content=buffer.getvalue(), epoch=1
    )
    model.eval()
    yield run, model
    generate.clear_cache()


def url(run: Run) -> str:
    return f"/api/v1/runs/{run.pk}/generate/"


def test_greedy_generation_through_the_api_equals_the_runtime_on_the_same_weights(alice_client, lm_run):
    run, model = lm_run
    tokenizer = rt.Tokenizer(kind="char", alphabet="0123456789+=\n")
    expected = rt.generate_text(
        model, tokenizer, "12+35=", max_new_tokens=20, context_length=16, temperature=0
    )

    response = alice_client.post(
        url(run),
        {"prompt": "12+35=", "max_new_tokens": 20, "temperature": 0},
        content_type="application/json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["prompt"] + body["text"] == expected
    assert body["tokens"] == len(body["token_ids"]) == 20
    assert body["checkpoint"]["name"] and body["run"] == run.pk
    assert generate.get_model(run).kv_cache  # a chain of layers: read one new token at a time, same text


def test_a_streamed_generation_sends_each_token_then_done(alice_client, lm_run):
    run, _model = lm_run
    response = alice_client.post(
        url(run),
        {"prompt": "7+", "max_new_tokens": 12, "temperature": 0.8, "top_k": 5, "seed": 3, "stream": True},
        content_type="application/json",
    )

    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    text = b"".join(response.streaming_content).decode()
    blocks = [b for b in text.split("\n\n") if b.startswith("event:")]
    events = [(b.split("\n")[0][7:], json.loads(b.split("\n")[1][6:])) for b in blocks]
    assert [kind for kind, _ in events] == ["generate.token"] * 12 + ["generate.done"]
    assert "".join(data["text"] for _, data in events[:-1]) == events[-1][1]["text"]
    assert [data["index"] for _, data in events[:-1]] == list(range(12))
    again = alice_client.post(
        url(run), {"prompt": "7+", "max_new_tokens": 12, "temperature": 0.8, "top_k": 5, "seed": 3},
        content_type="application/json",
    )  # fmt: skip
    assert again.json()["text"] == events[-1][1]["text"]  # the same seed writes the same text


def test_the_pages_event_stream_request_is_answered_and_a_refusal_is_json(alice_client, lm_run):
    # The generate page asks with Accept: text/event-stream (and DRF's renderers know only JSON).
    run, _model = lm_run
    headers = {"HTTP_ACCEPT": "text/event-stream"}
    body = {"prompt": "7+", "max_new_tokens": 4, "seed": 3, "stream": True}
    response = alice_client.post(url(run), body, content_type="application/json", **headers)
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    assert b"".join(response.streaming_content).decode().count("event: generate.token") == 4
    refused = alice_client.post(
        url(run), {**body, "max_new_tokens": 0}, content_type="application/json", **headers
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid"


def test_a_bad_request_is_a_400_that_names_the_fields(alice_client, lm_run):
    run, _model = lm_run
    response = alice_client.post(
        url(run),
        {"prompt": 5, "max_new_tokens": 100000, "temperature": -1, "top_k": 99},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"prompt", "max_new_tokens", "temperature", "top_k"}


def test_it_refuses_another_users_run_and_an_image_model(client, bob, lm_run):
    run, _model = lm_run
    client.force_login(bob)
    assert client.post(url(run), {"prompt": "1"}, content_type="application/json").status_code == 404

    run.design_version.spec = {**run.design_version.spec, "task": "image_classification"}
    run.design_version.save(update_fields=["spec"])
    client.force_login(run.owner)
    response = client.post(url(run), {"prompt": "1"}, content_type="application/json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_a_language_model"


def test_a_run_that_has_not_finished_cannot_generate(alice_client, lm_run):
    run, _model = lm_run
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)

    response = alice_client.post(url(run), {"prompt": "1"}, content_type="application/json")

    assert response.status_code == 409


def test_the_generate_page_has_the_form_and_the_run_page_shows_samples_and_links_to_it(alice_client, lm_run):
    run, _model = lm_run
    page = alice_client.get(f"/runs/{run.pk}/generate/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="generate-form"' in html and f"/api/v1/runs/{run.pk}/generate/" in html
    assert "12+35=" in html  # the corpus's prompt to start from

    detail = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="run-samples"' in detail and f"/runs/{run.pk}/generate/" in detail
    assert 'id="lm-metrics"' in detail


def test_the_generate_page_is_the_owners(client, bob, lm_run):
    run, _model = lm_run
    client.force_login(bob)
    assert client.get(f"/runs/{run.pk}/generate/").status_code == 404


def test_exports_written_for_images_are_refused_for_a_language_model_but_its_weights_download(
    alice_client, lm_run
):
    run, _model = lm_run
    for kind in ("onnx", "bundle", "card"):
        response = alice_client.get(f"/api/v1/runs/{run.pk}/export/{kind}/")
        assert response.status_code == 409 and response.json()["error"]["code"] == "not_supported", kind
    assert alice_client.get(f"/api/v1/runs/{run.pk}/export/weights/").status_code == 200


def test_a_generation_thread_sets_its_own_torch_threads(settings):
    # GENERATE_TORCH_THREADS is applied by the generating thread itself (with OpenMP the count is the
    # thread's own): one thread, as the setting says, whatever torch's default for the process is.
    settings.GENERATE_TORCH_THREADS = 1

    def threads_seen() -> int:
        predict.use_torch_threads(settings.GENERATE_TORCH_THREADS)
        return torch.get_num_threads()

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(threads_seen).result() == 1
