"""Language models in the engine: corpora and their token caches, the tokenizers, and the addition starter
trained through the real runner (sandboxed child, events, checkpoints, harness) and measured by the trusted
evaluation on held-out sums."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from designs import compiler, services, validation
from sandbox import checks, files
from sandbox.engine import buildx_runtime as rt
from sandbox.engine import corpora
from sandbox.events import EventRules, Violation
from sandbox.runner import run_script

WALL_LIMIT_S = 2400  # a guard against a hang: under a load of 19 on two cores, 4 epochs took 900 s


@pytest.fixture(autouse=True)
def one_thread(settings):
    settings.BUILDX_SANDBOX_THREADS = 1


@pytest.fixture(scope="module")
def addition_cache(tmp_path_factory) -> Path:
    return corpora.ensure_text_cache("addition", cache_dir=tmp_path_factory.mktemp("cache"))


def test_a_text_cache_holds_the_token_stream_split_by_position_and_its_tokenizer(addition_cache):
    data = rt.load_cache(addition_cache)
    tokenizer = rt.Tokenizer.from_json(data["tokenizer"])
    train, val, test = (data["splits"][k] for k in ("train", "val", "test"))

    assert data["kind"] == "text" and data["tokens"].dtype == torch.uint16
    assert train[0] == 0 and train[1] == val[0] and val[1] == test[0] and test[1] == data["tokens"].numel()
    text = tokenizer.decode(data["tokens"].long().tolist())
    assert text == rt.addition_text()  # nothing lost: every character is in the alphabet
    test_text = tokenizer.decode(data["tokens"][test[0] : test[1]].long().tolist())
    train_text = tokenizer.decode(data["tokens"][: train[1]].long().tolist())
    assert test_text.startswith(tuple("0123456789")) and text[len(text) - len(test_text) - 1] == "\n"
    held_out = set(test_text.splitlines())
    assert held_out and not held_out & set(train_text.splitlines())  # the test sums are never trained on

    trimmed = rt.load_cache(corpora.training_text_cache(addition_cache))
    assert "test" not in trimmed["splits"] and trimmed["tokens"].numel() == test[0]


def test_random_windows_are_gathered_on_the_device_with_targets_one_token_later(addition_cache):
    data, test = rt.make_text_data(rt.load_cache(addition_cache), device="cpu")
    x, y = data.train.batch(8, 12)

    assert x.shape == y.shape == (8, 12) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert test is not None and len(test) > 0


@pytest.mark.parametrize("seed", range(5))
def test_next_token_accuracy_is_the_share_of_positions_whose_next_token_scored_highest(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 16, 13, generator=generator, requires_grad=True)
    targets = torch.randint(0, 13, (4, 16), generator=generator)
    targets[0, :8] = logits.detach()[0, :8].argmax(-1)  # some right, so that the share is not near 1/13

    accuracy = rt.next_token_accuracy(logits, targets)

    assert accuracy.shape == () and not accuracy.requires_grad  # a figure, not part of the graph
    assert accuracy.item() == pytest.approx((logits.argmax(-1) == targets).float().mean().item())
    assert accuracy.item() >= 8 / 64


def test_next_token_accuracy_counts_a_tie_at_the_top_for_the_target_and_a_diverged_row_as_wrong():
    logits = torch.tensor([[[1.0, 3.0, 3.0], [5.0, 0.0, 0.0], [float("nan"), 1.0, 0.0]]])

    hits = [
        rt.next_token_accuracy(logits[:, i : i + 1], torch.tensor([[t]])).item() for i, t in [(0, 2), (1, 1)]
    ]
    assert hits == [1.0, 0.0]  # token 2 ties token 1 for the top score; token 1 is not the top
    assert rt.next_token_accuracy(logits[:, 2:], torch.tensor([[0]])).item() == 0.0


def test_byte_level_bpe_trains_to_the_vocabulary_and_the_runtime_decodes_and_encodes_it():
    text = rt.grammar_text(3000)
    ours, library = corpora.train_bpe(text, vocab_size=300)

    assert ours.vocab_size == library.get_vocab_size() <= 300 and ours.vocab_size > 256
    sentence = "the small cat sees some happy dogs .\na fox likes the teacher .\n"
    ids = library.encode(sentence).ids
    assert ours.decode(ids) == sentence
    assert ours.encode(sentence) == ids  # the runtime needs no tokenizers library to encode a prompt
    assert len(ids) < len(sentence) / 2  # merges: whole words are tokens


def test_a_bpe_cache_is_named_by_its_vocabulary_and_built_once(tmp_path, monkeypatch):
    monkeypatch.setitem(rt.CORPUS_TEXT, "grammar", lambda: rt.grammar_text(2000))
    path = corpora.ensure_text_cache("grammar:bpe300", cache_dir=tmp_path)
    data = rt.load_cache(path)

    assert path.name == "text-grammar-bpe300-v1.pt"
    assert data["tokenizer"]["kind"] == "bpe" and data["vocab_size"] <= 300
    assert (
        corpora.ensure_text_cache("grammar:bpe300", cache_dir=tmp_path).stat().st_mtime_ns
        == path.stat().st_mtime_ns
    )
    assert corpora.parse_key("grammar:bpe300") == ("grammar", "bpe", 300)
    assert corpora.parse_key("digits") is None and corpora.parse_key("python:bpe5") is None


def test_the_python_corpus_is_the_standard_librarys_source():
    text = rt.python_text(200_000)

    assert len(text) == 200_000 and "def " in text and "import " in text
    assert set(text) <= set(rt.CORPUS_ALPHABETS["python"])


def test_sample_events_are_checked_like_any_other():
    rules = EventRules(epochs=2)
    clean = rules.check(b'{"kind": "sample", "epoch": 1, "prompt": "12+", "text": "12+3=15", "extra": 1}')

    assert clean == {"kind": "sample", "epoch": 1, "prompt": "12+", "text": "12+3=15"}
    rules.check(b'{"kind": "sample", "epoch": 2, "text": "x"}')
    with pytest.raises(Violation):
        rules.check(b'{"kind": "sample", "epoch": 2, "text": "x"}')  # no more than one per epoch
    with pytest.raises(Violation):
        EventRules(epochs=2).check(b'{"kind": "sample", "epoch": 3, "text": "x"}')  # beyond the epochs


@pytest.fixture(scope="module")
def addition_starter() -> tuple[str, dict]:
    starter = services.starter_get(slug="lm_tiny_gpt_addition")
    assert starter is not None
    spec, report = validation.validate(starter["spec"])
    code = compiler.compile_spec(
        spec, design_name="Tiny GPT that learns to add", version_number=1, report=report
    )
    return code, report


@pytest.mark.slow
def test_the_addition_starter_learns_to_add_held_out_sums_through_the_sandbox(
    addition_starter, addition_cache, tmp_path
):
    code, report = addition_starter
    epochs = report["totals"] and validation.hyperparameter(
        services.starter_get(slug="lm_tiny_gpt_addition")["spec"], "epochs"
    )
    events: list[dict] = []
    config = {
        "dataset_cache": str(corpora.training_text_cache(addition_cache)),
        "epochs": epochs,
        "resume": False,
        "checkpoint_dir": "checkpoints",
        "expect": {"params": report["totals"]["params"], "output_shape": report["output_shape"]},
        "seed": 42,
        "max_epochs": 50,
        "device": "cpu",
    }
    result = run_script(code=code, run_dir=tmp_path / "run", config=config, on_event=events.append,
                        should_stop=lambda: False, wall_limit_s=WALL_LIMIT_S)  # fmt: skip

    assert result.status == "succeeded", (result.cause, result.traceback, events[-5:])
    samples = [e for e in events if e["kind"] == "sample"]
    assert [s["epoch"] for s in samples] == list(range(1, epochs + 1))
    assert all(s["text"].startswith("12+35=") for s in samples)
    with files.open_regular(tmp_path / "run", "model.safetensors", max_bytes=16 * 2**20) as weights:
        measured: list[dict] = []
        evaluation = checks.run_check(code=code, config={"mode": "evaluate", "weights": "weights.safetensors"},
                                      dataset=addition_cache, inputs={"weights.safetensors": weights},
                                      on_event=measured.append, wall_limit_s=WALL_LIMIT_S)  # fmt: skip
    assert evaluation.status == "succeeded", (evaluation.cause, measured)
    test = next(e for e in measured if e["kind"] == "result")["test"]
    assert test["exact_match_lines"] >= 400
    assert test["exact_match"] >= 0.90, test["examples"]
    assert test["perplexity"] == pytest.approx(2.718281828 ** test["loss"], rel=1e-6)
    assert test["bits_per_token"] == pytest.approx(test["loss"] / 0.6931471805599453, rel=1e-6)
