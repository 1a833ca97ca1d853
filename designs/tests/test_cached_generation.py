"""Generation with a key-value cache: a compiled chain of layers read one new token at a time gives the
scores of the full forward pass at every step, and the same tokens; other models are never read that way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from designs.compiler import compile_spec, load_compiled
from designs.sequence import INCREMENTAL_KINDS, generates_incrementally
from designs.validation import validate
from sandbox.engine import buildx_runtime as rt

VOCAB = 13  # the addition corpus
CONTEXT = 12


def lm(layers: list[dict], *, context: int = CONTEXT) -> dict:
    return {
        "model_name": "Cached",
        "task": "language_model",
        "dataset": "addition",
        "layers": layers,
        "hyperparameters": {"context_length": context},
    }


TINY_GPT = lm(
    [
        {"type": "TokenAndPosition", "name": "embed", "n_embd": 32},
        {"type": "TransformerBlock", "name": "block1", "n_head": 4},
        {"type": "TransformerBlock", "name": "block2", "n_head": 2, "dropout": 0.1},
        {"type": "LayerNorm", "name": "ln_f"},
        {"type": "Linear", "name": "head", "out_features": VOCAB, "bias": False, "tie_weights": True},
    ]
)
# The parts written out one by one, with torch's position-wise layers between them.
PARTS = lm(
    [
        {"type": "Embedding", "name": "tokens", "embedding_dim": 24},
        {"type": "PositionalEmbedding", "name": "positions"},
        {"type": "RMSNorm", "name": "norm1"},
        {"type": "CausalSelfAttention", "name": "attn", "n_head": 3},
        {"type": "LayerNorm", "name": "norm2"},
        {"type": "MLP", "name": "mlp"},
        {"type": "GELU", "name": "gelu"},
        {"type": "Dropout", "name": "drop", "p": 0.2},
        {"type": "Linear", "name": "up", "out_features": 24},
        {"type": "ReLU", "name": "relu"},
        {"type": "SiLU", "name": "silu"},
        {"type": "Tanh", "name": "tanh"},
        {"type": "Sigmoid", "name": "sigmoid"},
        {"type": "Identity", "name": "same"},
        {"type": "Linear", "name": "head", "out_features": VOCAB},
    ]
)
# A residual written with Add: its forward is not a chain, so it must never be read with the cache.
BRANCHED = lm(
    [
        {"type": "TokenAndPosition", "name": "embed", "n_embd": 16},
        {"type": "CausalSelfAttention", "name": "attn", "n_head": 2},
        {"type": "Add", "name": "residual", "input": ["embed", "attn"]},
        {"type": "Linear", "name": "head", "out_features": VOCAB},
    ]
)
RECURRENT = lm(
    [
        {"type": "Embedding", "name": "tokens", "embedding_dim": 16},
        {"type": "LSTM", "name": "lstm", "hidden_size": 16},
        {"type": "Linear", "name": "head", "out_features": VOCAB},
    ]
)


def build(spec: dict, seed: int = 0, std: float = 0.5) -> tuple[dict, nn.Module]:
    spec, report = validate(spec)
    assert report["valid"], report["errors"]
    model = load_compiled(compile_spec(spec, design_name="Test", version_number=1))["build_model"]()
    torch.manual_seed(seed)
    with torch.no_grad():  # larger weights than the initialisation: scores far apart, so a wrong cache shows
        for param in model.parameters():
            param.normal_(0.0, std)
    return spec, model.eval()


def test_every_kind_the_spec_check_lets_through_is_read_step_by_step_in_these_tests():
    """designs.sequence.INCREMENTAL_KINDS decides which models generate with the cache; the tests below
    prove the reader equals the full pass for the models here, so every kind it admits is in one of them."""
    tested = {layer["type"] for spec in (TINY_GPT, PARTS) for layer in spec["layers"]}
    assert INCREMENTAL_KINDS <= tested, sorted(INCREMENTAL_KINDS - tested)


@pytest.mark.parametrize("spec", [TINY_GPT, PARTS], ids=["tiny-gpt", "parts"])
def test_reading_one_token_at_a_time_gives_the_full_passes_scores_at_every_position(spec):
    spec, model = build(spec)
    assert generates_incrementally(spec) and rt.CachedModel.supports(model)
    ids = torch.randint(0, VOCAB, (1, CONTEXT), generator=torch.Generator().manual_seed(1))
    reader = rt.CachedModel(model)

    with torch.no_grad():
        full = model(ids)  # (1, T, V): every position's scores in one pass
        prompt = reader.scores(ids[:, :4])  # a prompt of 4 tokens first, as generation does
        steps = [reader.scores(ids[:, t : t + 1]) for t in range(4, CONTEXT)]

    assert reader.length == CONTEXT
    torch.testing.assert_close(prompt, full[:, :4], rtol=1e-4, atol=1e-4)
    for t, step in enumerate(steps, start=4):
        assert step.shape == (1, 1, VOCAB)
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=1e-4, atol=1e-4)
    # The model is untouched: a second reader of the same model starts afresh.
    with torch.no_grad():
        torch.testing.assert_close(rt.CachedModel(model).scores(ids), full, rtol=1e-4, atol=1e-4)
        # Only the last position's scores (what generation asks for): the same, whole window or cached.
        window = rt.CachedModel(model).scores(ids, last_only=True)
        reader = rt.CachedModel(model)
        last_of_prompt = reader.scores(ids[:, :5], last_only=True)
        next_one = reader.scores(ids[:, 5:6], last_only=True)
    assert window.shape == last_of_prompt.shape == next_one.shape == (1, 1, VOCAB)
    torch.testing.assert_close(window[:, 0], full[:, -1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last_of_prompt[:, 0], full[:, 4], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(next_one[:, 0], full[:, 5], rtol=1e-4, atol=1e-4)


# Weights large enough that attention decides the scores (a wrong cache changes the text) and a hot
# temperature, so that a random model's text is not one token repeated.
@pytest.mark.parametrize(("spec", "std"), [(TINY_GPT, 1.0), (PARTS, 0.5)], ids=["tiny-gpt", "parts"])
@pytest.mark.parametrize("seed", [3, 4])
def test_generation_with_the_cache_writes_the_same_tokens_past_the_context(spec, std, seed):
    _spec, model = build(spec, seed=seed, std=std)
    prompt = [1, 2, 10, 3]

    def generate(kv_cache: bool) -> list[int]:
        return list(
            rt.generate_tokens(
                model, prompt, max_new_tokens=3 * CONTEXT, context_length=CONTEXT, temperature=4.0,
                top_k=None, generator=torch.Generator().manual_seed(seed), kv_cache=kv_cache,
            )
        )  # fmt: skip

    cached = generate(True)
    assert cached == generate(False)
    assert len(cached) == 3 * CONTEXT  # well past the context, where the whole window is read again
    assert len(set(cached)) > 3  # a model that writes one token forever would prove little


def test_a_recurrent_model_is_never_read_with_the_cache_and_generates_as_before():
    spec, model = build(RECURRENT)

    assert not generates_incrementally(spec)
    assert not rt.CachedModel.supports(model)  # an LSTM carries a state the reader does not keep
    with pytest.raises(ValueError):
        rt.CachedModel(model)

    def generate(kv_cache: bool) -> list[int]:
        return list(
            rt.generate_tokens(
                model, [4, 5], max_new_tokens=20, context_length=CONTEXT, temperature=0.0, kv_cache=kv_cache
            )
        )

    assert generate(True) == generate(False)


def test_a_branched_model_is_not_a_chain_although_the_runtime_knows_its_layers():
    """Why the platform asks the spec too: the reader steps the layers in their order, and this forward adds
    a layer's input back (Add), so the scores would be another model's."""
    spec, model = build(BRANCHED)

    assert not generates_incrementally(spec)
    assert rt.CachedModel.supports(model)  # every layer is one the reader knows
    ids = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(2))

    with torch.no_grad():
        assert not torch.allclose(rt.CachedModel(model).scores(ids), model(ids), atol=1e-3)


@pytest.mark.parametrize("spec", [TINY_GPT, PARTS], ids=["tiny-gpt", "parts"])
def test_the_training_scripts_sample_reads_without_the_cache(spec):
    """The reader steps the platform's own block classes by their parts, and an assistant-written script
    follows the compiled script's shape with classes of its own: a sample asking for the cache there could
    write another model's text or stop the run. Only the platform's generation (training/generate.py), which
    knows the model is compiled, uses it."""
    spec, _report = validate(spec)
    code = compile_spec(spec, design_name="Test", version_number=1)
    assert "rt.generate_text(" in code and "kv_cache" not in code
