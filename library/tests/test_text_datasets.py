"""Text datasets: a plain-text upload checked and tokenised (character-level or byte-level BPE) into the text
cache built-in corpora use, shown on its page, named by a language-model design, and trained on."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.test import Client

from designs import services as design_services
from designs.validation import SpecError, validate
from library import services, text_datasets
from library.models import Dataset
from sandbox.engine import buildx_runtime as rt

# Sums and Korean words, one a line: characters beyond ASCII, lines of a few tokens, 7,000-odd characters.
TEXT = "".join(f"{a}+{b}={a + b} 안녕 BuildX\n" for a in range(20) for b in range(20))


def upload(client: Client, data: bytes, *, name: str = "Sums", **fields) -> dict:
    """The API's multipart door, as an API client uploads a whole text."""
    body = {"name": name, "kind": "text", "file": io.BytesIO(data), **fields}
    response = client.post("/api/v1/datasets/", body, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def checked(client: Client, data: bytes, **fields) -> Dataset:
    """Uploaded, then checked as the worker's actor does (the worker test below uses a real one)."""
    pk = upload(client, data, **fields)["id"]
    assert Dataset.objects.get(pk=pk).status == Dataset.Status.CHECKING
    dataset = text_datasets.text_check(dataset_id=pk)
    assert dataset is not None
    return dataset


def lm_spec(dataset: Dataset, *, head: int | None = None) -> dict:
    return {
        "model_name": "Tiny GPT",
        "task": "language_model",
        "dataset": dataset.spec_name,
        "layers": [
            {"type": "TokenAndPosition", "name": "embed", "n_embd": 32},
            {"type": "TransformerBlock", "name": "block1", "n_head": 2},
            {"type": "LayerNorm", "name": "ln_f"},
            {"type": "Linear", "name": "head", "out_features": head or dataset.text_facts["vocab_size"],
             "bias": False, "tie_weights": True},
        ],
        "hyperparameters": {"context_length": 16, "epochs": 2, "steps_per_epoch": 30, "batch_size": 16,
                            "learning_rate": 0.003, "warmup_steps": 5},
    }  # fmt: skip


def test_a_character_level_text_is_tokenised_and_its_page_shows_size_vocabulary_and_a_sample(alice_client):
    dataset = checked(alice_client, TEXT.encode())
    assert dataset.status == Dataset.Status.READY, dataset.problems
    assert dataset.kind == Dataset.Kind.TEXT
    facts = dataset.text_facts
    alphabet = sorted(set(TEXT))
    assert facts["tokenizer"] == "char" and facts["vocab_size"] == len(alphabet) == len(facts["alphabet"])
    assert facts["chars"] == len(TEXT) and facts["lines"] == 400
    assert facts["prompt"] == TEXT[:12]

    cache = rt.load_cache(services.cache_path(dataset))  # the built-in corpora's format, read the same way
    assert cache["kind"] == "text" and cache["tokenizer"] == {"kind": "char", "alphabet": "".join(alphabet)}
    assert rt.Tokenizer.from_json(cache["tokenizer"]).decode(cache["tokens"].tolist()) == TEXT
    splits = cache["splits"]
    assert (
        splits["train"][0] == 0
        and splits["train"][1] == splits["val"][0]
        and splits["val"][1] == splits["test"][0]
    )
    assert splits["test"][1] == len(TEXT) == sum(facts["tokens"].values())
    # By position at a line start: the test part is the last lines, whole.
    assert TEXT[splits["test"][0] - 1] == "\n" and facts["tokens"]["test"] >= len(TEXT) // 25

    page = alice_client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert f"{len(TEXT)} characters in 400 lines" in page
    assert "character-level" in page and f"{len(alphabet)} tokens" in page
    assert "0+0=0 안녕 BuildX" in page  # the sample
    assert dataset.spec_name in page
    listing = alice_client.get("/datasets/").content.decode()
    assert f"{len(TEXT)} characters" in listing

    answer = alice_client.get(f"/api/v1/datasets/{dataset.pk}/").json()
    assert answer["kind"] == "text" and answer["text"]["vocab_size"] == len(alphabet)
    export = alice_client.get(f"/api/v1/datasets/{dataset.pk}/export/")
    assert b"".join(export.streaming_content) == TEXT.encode()
    assert 'filename="Sums.txt"' in export["Content-Disposition"]


def test_a_bpe_text_gets_the_vocabulary_asked_for_and_decodes_to_the_text(alice_client):
    dataset = checked(alice_client, TEXT.encode(), tokenizer="bpe", vocab_size=300)
    assert dataset.status == Dataset.Status.READY, dataset.problems
    assert dataset.text_facts["tokenizer"] == "bpe" and dataset.text_facts["alphabet"] == ""
    assert 257 <= dataset.text_facts["vocab_size"] <= 300
    cache = rt.load_cache(services.cache_path(dataset))
    tokenizer = rt.Tokenizer.from_json(cache["tokenizer"])
    assert tokenizer.vocab_size == dataset.text_facts["vocab_size"]
    assert tokenizer.decode(cache["tokens"].tolist()) == TEXT
    assert sum(dataset.text_facts["tokens"].values()) < len(TEXT.encode()) / 2  # merges made tokens of bytes
    assert "byte-level BPE" in alice_client.get(f"/datasets/{dataset.pk}/").content.decode()


def test_a_bpe_vocabulary_outside_its_range_and_an_unknown_tokenizer_are_400s(alice_client):
    for fields, field in (
        ({"tokenizer": "bpe", "vocab_size": 100}, "vocab_size"),
        ({"tokenizer": "word"}, "tokenizer"),
    ):
        response = alice_client.post(
            "/api/v1/datasets/", {"name": "X", "kind": "text", "file": io.BytesIO(TEXT.encode()), **fields},
            format="multipart",
        )  # fmt: skip
        assert response.status_code == 400, response.content
        assert field in str(response.json()["error"])
    assert not Dataset.objects.exists()


def zip_bomb() -> bytes:
    """64 MB of zeros deflated to some 64 KB, named like a text file inside and out."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("notes.txt", b"\0" * (64 * 2**20))
    return buf.getvalue()


HOSTILE = {
    "binary": (bytes(range(256)) * 40, "binary", "This is not a text file"),
    "control_characters": (b"\x01\x02\x03\x04abc\n" * 500, "binary", "This is not a text file"),
    "zip_bomb_as_txt": (zip_bomb(), "binary", "This is not a text file"),
    "invalid_utf8": ("café au lait\n".encode("latin-1") * 300, "not_utf8", "byte 3 cannot be decoded"),
    "huge_line": (("abcdefghij" * 20_000).encode(), "split_too_small", "break long lines"),
    "whitespace_only": (b" \n\t\n" * 100, "empty", "The file is empty"),
    "too_few_characters": (b"hello world\n" * 10, "too_few_characters", "needs at least 2000"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_or_unusable_file_is_rejected_with_a_reason_and_nothing_of_it_is_kept(alice_client, case):
    data, code, said = HOSTILE[case]
    dataset = checked(alice_client, data)
    assert dataset.status == Dataset.Status.REJECTED
    assert [p["code"] for p in dataset.problems] == [code]
    assert not services.upload_path(dataset).exists() and not services.cache_path(dataset).exists()
    page = alice_client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert "This text was refused" in page and said in page


def test_a_character_level_tokenizer_refuses_a_text_of_too_many_characters(alice_client):
    text = "".join(chr(0xAC00 + i) + ("\n" if i % 40 == 39 else "") for i in range(5000)) * 2
    dataset = checked(alice_client, text.encode())
    assert [p["code"] for p in dataset.problems] == ["too_many_characters"]
    assert "Choose byte-level BPE" in alice_client.get(f"/datasets/{dataset.pk}/").content.decode()


def test_a_text_over_the_size_limit_is_refused_before_a_byte_is_stored(alice_client, settings):
    settings.DATASET_TEXT_MAX_BYTES = 4096
    response = alice_client.post(
        "/api/v1/datasets/", {"name": "Big", "kind": "text", "size": 4097}, content_type="application/json"
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert not Dataset.objects.exists()


def test_the_page_speaks_korean(alice_client):
    ready = checked(alice_client, TEXT.encode())
    rejected = checked(alice_client, "café\n".encode("latin-1") * 500)
    page = alice_client.get(f"/datasets/{ready.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "언어 모델이 보는 것" in page and "문자 단위" in page and f"{len(TEXT)}자, 400줄" in page
    page = alice_client.get(f"/datasets/{rejected.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "이 텍스트는 거절되었습니다" in page and "UTF-8 텍스트가 아닙니다" in page


def test_a_language_model_design_names_the_upload_with_its_tokenizer_and_vocabulary(alice, alice_client, bob):
    dataset = checked(alice_client, TEXT.encode(), tokenizer="bpe", vocab_size=300)
    vocab = dataset.text_facts["vocab_size"]
    spec, report = validate(lm_spec(dataset))
    assert report["valid"], report["errors"]
    assert spec["hyperparameters"]["tokenizer"] == "bpe" and spec["hyperparameters"]["vocab_size"] == vocab
    assert report["dataset"] == {"name": dataset.spec_name, "kind": "text", "tokenizer": "bpe",
                                 "vocab_size": vocab, "context_length": 16}  # fmt: skip
    _spec, wrong = validate(lm_spec(dataset, head=13))
    assert [e["code"] for e in wrong["errors"]] == ["vocab_mismatch"]
    assert f"vocabulary size ({vocab})" in wrong["errors"][0]["message"]

    design = design_services.design_create(owner=alice, name="Mine", spec=lm_spec(dataset))
    assert design.versions.get().spec["hyperparameters"]["tokenizer"] == "bpe"  # the dataset's, not a default
    with pytest.raises(SpecError):  # bob may not use alice's private text: the answer an unknown one gets
        design_services.spec_validate(spec=lm_spec(dataset), user=bob)
    image = {
        "model_name": "M",
        "dataset": dataset.spec_name,
        "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 2}],
    }
    with pytest.raises(SpecError):  # a text is no image set
        validate(image)


def test_the_editor_offers_an_uploaded_text_among_the_corpora_not_the_image_sets(alice, alice_client):
    from designs.views import picker_datasets

    dataset = checked(alice_client, TEXT.encode())
    picker = picker_datasets(alice)
    assert [c["name"] for c in picker["corpora"]] == [dataset.spec_name]
    assert picker["corpora"][0]["vocab_size"] == dataset.text_facts["vocab_size"]
    assert dataset.spec_name not in [u["name"] for u in picker["uploads"]]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the workers use connections of their own
def test_a_real_worker_checks_an_uploaded_text_and_another_trains_a_tiny_gpt_on_it_which_then_writes(
    alice, settings, tmp_path
):
    """The actors, not the services: `rundramatiq` on the default and training queues (Redis and
    PostgreSQL), or the embedded worker's threads; the run goes through the real sandbox."""
    import dramatiq

    import library.actors  # noqa: F401 - declares the check's queue on the broker
    import training.actors  # noqa: F401 - and the training queue
    from training.models import Run, RunEvent
    from training.tests.ops_support import WorkerGroup, wait_for

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BUILDX_SANDBOX_THREADS = 1
    client = Client()
    client.force_login(alice)
    broker = dramatiq.get_broker()
    for queue in ("default", "training"):
        broker.flush(queue)  # messages left by earlier tests (only this run's Redis database)
    if settings.EMBEDDED:
        embedded = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
        embedded.start()
        stop = lambda: embedded.stop(timeout=10_000)  # noqa: E731
    else:
        group = WorkerGroup(tmp_path, processes=1, queues=["default", "training"])
        stop = group.stop
    try:
        pk = upload(client, TEXT.encode())["id"]
        dataset = wait_for(
            lambda: Dataset.objects.filter(pk=pk).exclude(status=Dataset.Status.CHECKING).first(),
            timeout=120,
            what="the worker's check",
        )
        assert dataset.status == Dataset.Status.READY, dataset.problems
        design = design_services.design_create(owner=alice, name="Tiny GPT", spec=lm_spec(dataset))
        response = client.post(
            "/api/v1/runs/", {"design_version": design.versions.get().pk}, content_type="application/json"
        )
        assert response.status_code == 201, response.content
        run = wait_for(
            lambda: Run.objects.filter(pk=response.json()["id"], finished_at__isnull=False).first(),
            timeout=300,
            what="the training worker's run",
        )
    finally:
        stop()
    assert run.status == Run.Status.SUCCEEDED, (run.cause, run.error, run.traceback)
    assert run.dataset == dataset.spec_name and run.dataset_ref_id == dataset.pk
    assert run.dataset_hash == dataset.content_hash
    assert run.metrics_source == Run.MetricsSource.PLATFORM
    assert run.metrics["perplexity"] < dataset.text_facts["vocab_size"]  # better than a uniform guess
    samples = [e.payload for e in RunEvent.objects.filter(run=run, kind=RunEvent.Kind.SAMPLE).order_by("seq")]
    assert [s["epoch"] for s in samples] == [1, 2]
    assert all(s["text"].startswith(dataset.text_facts["prompt"]) for s in samples)

    page = client.get(f"/runs/{run.pk}/generate/").content.decode()
    assert dataset.text_facts["prompt"] in page  # the generate page starts from the text's own prompt
    answer = client.post(
        f"/api/v1/runs/{run.pk}/generate/",
        {"prompt": "3+4=", "max_new_tokens": 20, "temperature": 0, "seed": 1},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    written = answer.json()
    assert written["prompt"] == "3+4=" and written["tokens"] == 20 and len(written["text"]) == 20
    assert set(written["text"]) <= set(TEXT)  # the upload's own characters, decoded by its own tokenizer
