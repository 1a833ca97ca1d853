"""Language-model designs: the task, the sequence blocks, their shapes and parameter counts, the compiled
script against a hand-written nanoGPT-style model, and the errors a beginner can act on."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from designs.catalog import LAYERS, TASK_LM, catalog_as_json
from designs.compiler import compile_spec, load_compiled
from designs.edits import apply_edits
from designs.validation import analyse, normalise, spec_hash, validate
from sandbox.engine import buildx_runtime as rt
from sandbox.engine import corpus_facts
from sandbox.static_check import check_script

VOCAB = 13  # the addition corpus: "0123456789+=\n"


def tiny_gpt(
    *, n_embd: int = 64, n_head: int = 4, layers: int = 2, context: int = 16, tie: bool = True, **hp
) -> dict:
    return {
        "model_name": "Tiny GPT",
        "task": "language_model",
        "dataset": "addition",
        "layers": [
            {"type": "TokenAndPosition", "name": "embed", "n_embd": n_embd},
            *({"type": "TransformerBlock", "name": f"block{i + 1}", "n_head": n_head} for i in range(layers)),
            {"type": "LayerNorm", "name": "ln_f"},
            {"type": "Linear", "name": "head", "out_features": VOCAB, "bias": False, "tie_weights": tie},
        ],
        "hyperparameters": {"context_length": context, **hp},
    }


def codes(items: list[dict]) -> list[str]:
    return [item["code"] for item in items]


def build(spec: dict) -> tuple[nn.Module, dict]:
    spec, report = validate(spec)
    assert report["valid"], report["errors"]
    namespace = load_compiled(compile_spec(spec, design_name="Test", version_number=1))
    return namespace["build_model"](), report


# --- Parameter counts -------------------------------------------------------------------------------


def test_the_tiny_gpt_has_exactly_the_parameters_counted_by_hand():
    C, T, V, blocks = 64, 16, VOCAB, 2
    embedding = V * C + T * C  # a vector per token and per position
    layer_norm = 2 * C  # weight and bias
    attention = (C * 3 * C + 3 * C) + (C * C + C)  # c_attn (q, k, v) and c_proj, with biases
    mlp = (C * 4 * C + 4 * C) + (4 * C * C + C)  # c_fc and c_proj
    block = layer_norm + attention + layer_norm + mlp
    head = 0  # tied: the head's weight is the token embedding's (no bias)
    expected = embedding + blocks * block + layer_norm + head
    assert expected == 1_856 + 2 * 49_984 + 128  # = 101,952

    spec, report = validate(tiny_gpt())

    assert report["valid"] and report["ready_to_train"], report["errors"]
    assert report["totals"]["params"] == expected
    model, _ = build(tiny_gpt())
    assert sum(p.numel() for p in model.parameters()) == expected
    by_name = {row["name"]: row for row in report["layers"]}
    assert by_name["embed"]["params"] == embedding
    assert by_name["block1"]["params"] == block
    assert [p["params"] for p in by_name["block1"]["parts"]] == [layer_norm, attention, layer_norm, mlp]
    assert [p.get("heads") for p in by_name["block1"]["parts"]] == [None, 4, None, None]
    assert by_name["head"]["params"] == 0 and by_name["head"]["tied_to"] == "embed"
    assert report["output_shape"] == [T, V]


def test_an_untied_head_counts_its_own_matrix():
    spec, report = validate(tiny_gpt(tie=False))

    assert report["totals"]["params"] == 101_952 + 64 * VOCAB


def test_macs_and_memory_are_also_given_per_token():
    spec, report = validate(tiny_gpt())
    T, C = 16, 64
    block = T * C * 3 * C + T * C * C + 2 * T * T * C + 2 * T * C * 4 * C
    head = T * C * VOCAB

    assert report["totals"]["macs"] == 2 * block + head
    assert report["per_token"]["macs"] == math.ceil((2 * block + head) / T)
    assert report["per_token"]["activation_bytes"] > 0
    assert report["memory"]["weights_bytes"] == 101_952 * 4


# --- Shapes ------------------------------------------------------------------------------------------

SEQUENCE_DESIGNS = {
    "gpt": tiny_gpt(),
    "bigram": {
        "task": "language_model",
        "dataset": "brackets",
        "layers": [{"type": "Embedding", "name": "table", "embedding_dim": 7}],
        "hyperparameters": {"context_length": 8},
    },
    "mlp_window": {
        "task": "language_model",
        "dataset": "grammar",
        "layers": [
            {"type": "Embedding", "name": "emb", "embedding_dim": 16},
            {"type": "Conv1d", "name": "window", "out_channels": 48, "kernel_size": 4, "dilation": 2},
            {"type": "Tanh"},
            {"type": "Dropout", "p": 0.1},
            {"type": "Linear", "name": "head", "out_features": 29},
        ],
        "hyperparameters": {"context_length": 12},
    },
    "recurrent": {
        "task": "language_model",
        "dataset": "python",
        "layers": [
            {"type": "Embedding", "name": "emb", "embedding_dim": 24},
            {"type": "LSTM", "name": "lstm", "hidden_size": 32, "num_layers": 2, "dropout": 0.1},
            {"type": "GRU", "name": "gru", "hidden_size": 20},
            {"type": "RMSNorm", "name": "norm"},
            {"type": "Linear", "name": "head", "out_features": 97},
        ],
        "hyperparameters": {"context_length": 10},
    },
    "parts": {
        "task": "language_model",
        "dataset": "addition",
        "layers": [
            {"type": "Embedding", "name": "tok", "embedding_dim": 32},
            {"type": "PositionalEmbedding", "name": "pos", "context_length": 20},
            {"type": "LayerNorm", "name": "ln1"},
            {"type": "CausalSelfAttention", "name": "attn", "n_head": 2},
            {"type": "Add", "name": "res1", "input": ["attn", "pos"]},
            {"type": "MLP", "name": "mlp", "expansion": 2},
            {"type": "GELU"},
            {"type": "Linear", "name": "head", "out_features": VOCAB, "tie_weights": True},
        ],
        "hyperparameters": {"context_length": 20, "tokenizer": "char"},
    },
}


@pytest.mark.parametrize("name", sorted(SEQUENCE_DESIGNS))
def test_meta_shapes_and_counts_equal_a_real_forward_pass(name):
    model, report = build(copy.deepcopy(SEQUENCE_DESIGNS[name]))
    T = report["dataset"]["context_length"]
    seen: dict[str, list[int]] = {}
    for child_name, child in model.named_children():
        child.register_forward_hook(
            lambda _m, _i, out, child_name=child_name: seen.__setitem__(
                child_name, list((out[0] if isinstance(out, tuple) else out).shape[1:])
            )
        )
    model.eval()
    x = torch.randint(0, report["dataset"]["vocab_size"], (3, T))
    logits = model(x)

    assert list(logits.shape) == [3, *report["output_shape"]]
    assert report["output_shape"] == [T, report["dataset"]["vocab_size"]]
    for row in report["layers"]:
        if row["name"] in seen:
            assert seen[row["name"]] == row["output_shape"], row["name"]
    assert sum(p.numel() for p in model.parameters()) == report["totals"]["params"]


def test_attention_is_causal_in_the_compiled_model():
    model, _ = build(tiny_gpt())
    model.eval()
    x = torch.randint(0, VOCAB, (1, 16))
    changed = x.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % VOCAB

    with torch.no_grad():
        a, b = model(x), model(changed)

    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-5)  # the past never sees the future
    assert not torch.allclose(a[0, 10:], b[0, 10:])


# --- The compiled script against a hand-written nanoGPT-style reference ------------------------------


class RefAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        hs = C // self.n_head
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # written out, without scaled_dot_product_attention
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = att.softmax(dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class RefMLP(nn.Module):
    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class RefBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = RefAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = RefMLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefEmbed(nn.Module):
    def __init__(self, vocab: int, n_embd: int, context: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab, n_embd)
        self.position = nn.Embedding(context, n_embd)


class NanoGPT(nn.Module):
    """nanoGPT's model, trimmed (no dropout), with the design's attribute names."""

    def __init__(self, vocab: int = VOCAB, n_embd: int = 64, n_head: int = 4, context: int = 16) -> None:
        super().__init__()
        self.embed = RefEmbed(vocab, n_embd, context)
        self.block1 = RefBlock(n_embd, n_head)
        self.block2 = RefBlock(n_embd, n_head)
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab, bias=False)
        self.head.weight = self.embed.token.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.embed.token(idx) + self.embed.position(torch.arange(T))
        x = self.block2(self.block1(x))
        return self.head(self.ln_f(x))


def test_the_compiled_tiny_gpt_equals_a_hand_written_nanogpt():
    model, _ = build(tiny_gpt())
    reference = NanoGPT()
    compiled_state, reference_state = model.state_dict(), reference.state_dict()

    assert {k: list(v.shape) for k, v in compiled_state.items()} == {
        k: list(v.shape) for k, v in reference_state.items()
    }
    torch.manual_seed(0)
    for tensor in compiled_state.values():
        tensor.normal_(0, 0.3)  # weights far from the initialisation: a real test of the arithmetic
    reference.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    reference.eval()
    x = torch.randint(0, VOCAB, (4, 16))
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-4)
    assert model.head.weight is model.embed.token.weight  # tied in the compiled model too


def test_the_compiled_script_reads_like_nanogpt_and_passes_the_static_check():
    spec, _report = validate(tiny_gpt())
    code = compile_spec(spec, design_name="Tiny GPT", version_number=3)

    assert check_script(code) == []
    assert code == compile_spec(spec, design_name="Tiny GPT", version_number=3)  # deterministic
    for line in (
        'TASK = "language_model"',
        "VOCAB_SIZE = 13",
        "CONTEXT_LENGTH = 16",
        "class CausalSelfAttention(nn.Module):",
        "F.scaled_dot_product_attention(",
        "class TransformerBlock(nn.Module):",
        "self.block1 = TransformerBlock(64, 4)",
        "self.head.weight = self.embed.token.weight",
        "rt.clip_gradients(model, GRAD_CLIP)",
        "rt.report_sample(epoch=epoch, prompt=SAMPLE_PROMPT, text=sample)",
    ):
        assert line in code, line
    assert "# (B, 16, 13)" in code
    assert "class Residual" not in code and "class CausalConv1d" not in code  # only the classes it uses


def test_every_sequence_design_compiles_to_a_script_the_static_check_accepts():
    for spec in SEQUENCE_DESIGNS.values():
        spec, _report = validate(copy.deepcopy(spec))
        assert check_script(compile_spec(spec, design_name="S", version_number=1)) == []


# --- Errors a beginner can act on ---------------------------------------------------------------------


def fixed(spec: dict, issue: dict) -> dict:
    return apply_edits(spec, issue["fix"]["edits"])


def test_n_embd_not_divisible_by_n_head_is_reported_on_the_block_with_a_fix():
    spec, report = validate(tiny_gpt(n_embd=100, n_head=3))
    error = report["errors"][0]

    assert codes(report["errors"]) == ["heads_divide"]
    assert error["layer"] == "block1" and error["field"] == "n_head" and error["path"] == "layers[1]"
    assert error["message"].startswith("n_embd 100 is not divisible by n_head 3")
    assert error["fix"]["edits"] == [
        {"op": "set_layer_param", "layer": "block1", "param": "n_head", "value": 4}
    ]
    repaired = fixed(spec, error)
    repaired["layers"][2]["n_head"] = 4
    assert validate(repaired)[1]["valid"]


def test_a_head_that_is_not_the_vocabulary_size_is_reported_with_a_fix():
    design = tiny_gpt(tie=False)
    design["layers"][-1]["out_features"] = 65
    spec, report = validate(design)
    error = report["errors"][0]

    assert codes(report["errors"]) == ["vocab_mismatch"]
    assert error["layer"] == "head" and error["field"] == "out_features"
    assert "must equal the vocabulary size (13)" in error["message"]
    assert validate(fixed(spec, error))[1]["ready_to_train"]


def test_a_context_longer_than_the_positional_embedding_is_reported_with_a_fix():
    design = tiny_gpt(context=256)
    design["layers"][0]["context_length"] = 128
    spec, report = validate(design)
    error = report["errors"][0]

    assert codes(report["errors"]) == ["context_too_long"]
    assert error["layer"] == "embed" and error["field"] == "context_length"
    assert error["message"] == "The context length 256 is longer than embed's positional embedding (128)."
    assert validate(fixed(spec, error))[1]["valid"]


def test_a_model_without_a_head_and_one_without_an_embedding_get_fixes():
    design = tiny_gpt()
    design["layers"] = design["layers"][:-1]
    spec, report = validate(design)
    assert codes(report["errors"]) == ["lm_output"]
    assert validate(fixed(spec, report["errors"][0]))[1]["ready_to_train"]

    design = tiny_gpt()
    design["layers"] = design["layers"][1:]
    spec, report = validate(design)
    assert codes(report["errors"]) == ["needs_embedding"] and report["errors"][0]["layer"] == "block1"
    assert validate(fixed(spec, report["errors"][0]))[1]["valid"]


def test_image_layers_are_refused_in_a_language_model_and_tying_needs_an_embedding():
    design = tiny_gpt()
    design["layers"].insert(1, {"type": "Conv2d", "name": "conv", "out_channels": 8})
    assert codes(validate(design)[1]["errors"]) == ["wrong_task"]

    # The other way round (an LM design switched to images in the editor): the message names the right task.
    image = {
        "dataset": "digits",
        "layers": [{"type": "TokenAndPosition", "name": "embed"}, {"type": "Flatten"}],
    }
    errors = validate(image)[1]["errors"]
    assert codes(errors) == ["wrong_task"] and errors[0]["path"] == "layers[0]"
    assert (
        "is for language models" in errors[0]["message"] and "switch the design's task" in errors[0]["hint"]
    )

    design = SEQUENCE_DESIGNS["recurrent"]
    design = copy.deepcopy(design)
    design["layers"][-1]["tie_weights"] = True
    assert codes(validate(design)[1]["errors"]) == ["tie_shape"]


def test_the_messages_come_in_korean_too(settings):
    from django.utils import translation

    with translation.override("ko"):
        spec, report = validate(tiny_gpt(n_embd=100, n_head=3))
    assert report["errors"][0]["message"] != "n_embd 100 is not divisible by n_head 3"
    assert "n_embd 100" in report["errors"][0]["message"]


# --- The task and the catalog --------------------------------------------------------------------------


def test_an_image_design_keeps_its_normal_form_and_has_no_language_model_settings():
    image = {"dataset": "digits", "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]}
    spec = normalise(image)

    assert "task" not in spec and "tie_weights" not in spec["layers"][1]
    assert spec_hash(spec) == spec_hash(normalise({**image, "task": "image_classification"}))
    with pytest.raises(Exception, match="tie_weights"):
        normalise(
            {
                **image,
                "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10, "tie_weights": True}],
            }
        )
    # The editor shows every setting of a block and sends tie_weights' default (off) for an image Linear.
    editor = {
        **image,
        "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10, "tie_weights": False}],
    }
    assert normalise(editor) == spec


def test_a_language_model_names_a_corpus_and_has_its_own_hyperparameters():
    spec = normalise(tiny_gpt())

    assert spec["task"] == TASK_LM and spec["dataset"] == "addition"
    assert spec["hyperparameters"]["optimizer"] == "adamw"
    assert {"context_length", "tokenizer", "warmup_steps", "grad_clip", "steps_per_epoch"} <= set(
        spec["hyperparameters"]
    )
    with pytest.raises(Exception, match="dataset"):
        normalise({**tiny_gpt(), "dataset": "digits"})
    bpe = analyse(normalise(tiny_gpt(tokenizer="bpe", vocab_size=300)))
    assert bpe["dataset"]["vocab_size"] == 300 and codes(bpe["errors"]) == ["vocab_mismatch"]


def test_the_catalog_serves_tasks_corpora_and_sequence_blocks_in_both_languages():
    catalog = catalog_as_json()

    assert [t["id"] for t in catalog["tasks"]] == ["image_classification", "language_model"]
    assert [c["name"] for c in catalog["corpora"]] == ["addition", "brackets", "grammar", "python"]
    sequence_layers = [layer for layer in catalog["layers"] if TASK_LM in layer["tasks"]]
    names = {layer["type"] for layer in sequence_layers}
    assert {
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
        "Dropout",
        "Linear",
    } <= names
    for layer in sequence_layers:
        assert layer["help"]["en"] and layer["help"]["ko"], layer["type"]
        for param in layer["params"]:
            assert param["help"]["en"] and param["help"]["ko"], (layer["type"], param["name"])
    assert all(LAYERS[name].tasks for name in names)


def test_the_runtime_keeps_the_corpora_alphabets_and_prompts_of_the_facts():
    assert rt.CORPUS_ALPHABETS == {name: facts.alphabet for name, facts in corpus_facts.CORPORA.items()}
    assert rt.CORPUS_PROMPTS == {name: facts.sample_prompt for name, facts in corpus_facts.CORPORA.items()}
    assert (rt.TRAIN_SHARE, rt.VAL_SHARE) == (corpus_facts.TRAIN_SHARE, corpus_facts.VAL_SHARE)


@pytest.mark.django_db
def test_a_language_model_starter_opens_as_a_design_in_the_editor(alice_client):
    response = alice_client.post(
        "/api/v1/designs/", {"starter": "lm_tiny_gpt_addition"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["latest_version"]["params"] == 101_952 + 4 * 64 and body["latest_version"]["ready_to_train"]

    page = alice_client.get(f"/designs/{body['id']}/")
    assert page.status_code == 200
