"""Sequence blocks for language models: their PyTorch classes (as the script shows them) and their shape rules.

The classes are written once, here, as source text: the compiler copies the ones a design uses into its
script (nanoGPT's model file is the model: a beginner reads `CausalSelfAttention` where it is used), and
validation executes the very same text to build the blocks on the meta device. So the parameter counts
and shapes the editor shows are those of the code that trains, by construction.

Shapes are per sequence, without the batch: the model input is (T,) token ids, an embedding makes it
(T, C), and a language model ends with (T, V) scores, one row of V next-token scores per position.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from django.utils.translation import gettext as _
from torch import nn

from designs.catalog import LayerType

# A value the analysis fills in for a block: a size (in_features) or a shape (an Input's).
Inferred = TypeVar("Inferred", int, list[int])

TOKEN_AND_POSITION = '''\
class TokenAndPosition(nn.Module):
    """Token ids (B, T) -> vectors (B, T, C): a learned vector per token plus a learned vector per position."""

    def __init__(self, vocab_size: int, n_embd: int, context_length: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, n_embd)
        self.position = nn.Embedding(context_length, n_embd)
        # Small starting vectors, as GPT-2: a head that shares this table starts with small scores.
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)  # (T,)
        return self.token(idx) + self.position(pos)  # (B, T, C) + (T, C)
'''

POSITIONAL_EMBEDDING = '''\
class PositionalEmbedding(nn.Module):
    """Adds a learned vector per position to vectors (B, T, C): attention alone does not know the order."""

    def __init__(self, context_length: int, n_embd: int) -> None:
        super().__init__()
        self.position = nn.Embedding(context_length, n_embd)
        nn.init.normal_(self.position.weight, std=0.02)  # small, as GPT-2: the tokens' vectors dominate at first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        pos = torch.arange(T, device=x.device)  # (T,)
        return x + self.position(pos)  # (B, T, C) + (T, C)
'''

CAUSAL_SELF_ATTENTION = '''\
class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the positions before it, never after."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # query, key and value of every head at once
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, n_head, T, head_size)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, n_head, T, head_size)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, n_head, T, head_size)
        # softmax(q k^T / sqrt(head_size)) v, with the future masked out (is_causal)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, n_head, T, head_size)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): the heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)
'''

MLP = '''\
class MLP(nn.Module):
    """The feed-forward part of a transformer: widen each position's vector, a non-linearity, narrow back."""

    def __init__(self, n_embd: int, expansion: int = 4, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, expansion * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(expansion * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, expansion * C)
        x = self.gelu(x)
        x = self.c_proj(x)  # (B, T, C)
        return self.dropout(x)
'''

TRANSFORMER_BLOCK = '''\
class TransformerBlock(nn.Module):
    """One GPT block: attention then MLP, each after a LayerNorm and added back to its input (pre-LN)."""

    def __init__(
        self, n_embd: int, n_head: int, expansion: int = 4, dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, expansion, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C): positions talk to each other
        x = x + self.mlp(self.ln_2(x))  # (B, T, C): each position thinks on its own
        return x
'''

CAUSAL_CONV1D = '''\
class CausalConv1d(nn.Conv1d):
    """A convolution along the sequence that only looks back: (kernel_size - 1) * dilation zeros on the left."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, C_in, T): Conv1d wants channels first
        x = F.pad(x, ((self.kernel_size[0] - 1) * self.dilation[0], 0))  # (B, C_in, T + padding)
        return super().forward(x).transpose(1, 2)  # (B, T, C_out)
'''

# Script classes in the order a script defines them (a class before the classes that use it).
CLASS_SOURCES: dict[str, str] = {
    "TokenAndPosition": TOKEN_AND_POSITION,
    "PositionalEmbedding": POSITIONAL_EMBEDDING,
    "CausalSelfAttention": CAUSAL_SELF_ATTENTION,
    "MLP": MLP,
    "TransformerBlock": TRANSFORMER_BLOCK,
    "CausalConv1d": CAUSAL_CONV1D,
}
CLASS_NEEDS: dict[str, tuple[str, ...]] = {"TransformerBlock": ("CausalSelfAttention", "MLP")}

# Layer types whose first input is token ids; every other layer of a language model needs vectors.
EMBEDDINGS = frozenset({"Embedding", "TokenAndPosition"})
# Layer types this module shapes in a language model (the rest, activations and Dropout, keep the shape).
SEQUENCE_KINDS = frozenset(
    {
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
        "Linear",
    }
)
# Layer types a compiled language model may generate with, reading one new token at a time
# (sandbox.engine.buildx_runtime.CachedModel): the embeddings place the new positions, attention keeps its
# keys and values, the others act on each position alone. A convolution or a recurrent layer does not.
INCREMENTAL_KINDS = frozenset(
    {
        "TokenAndPosition",
        "Embedding",
        "PositionalEmbedding",
        "CausalSelfAttention",
        "MLP",
        "TransformerBlock",
        "LayerNorm",
        "RMSNorm",
        "Linear",
        "Dropout",
        "Identity",
        "GELU",
        "ReLU",
        "SiLU",
        "Tanh",
        "Sigmoid",
    }
)


def generates_incrementally(spec: dict) -> bool:
    """Whether a (normalised) language-model spec compiles to a chain of incremental layers, each reading
    the layer before it: its model may generate with a key-value cache."""
    layers = spec.get("layers") or []
    return bool(layers) and all(
        layer.get("type") in INCREMENTAL_KINDS and "input" not in layer for layer in layers
    )


# The parts of a TransformerBlock, as its expanded view lists them: (attribute, type).
BLOCK_PARTS = (("ln_1", "LayerNorm"), ("attn", "CausalSelfAttention"), ("ln_2", "LayerNorm"), ("mlp", "MLP"))


def script_classes(kinds: set[str]) -> list[str]:
    """The class definitions a script needs for these layer types (script classes), in definition order."""
    wanted = {LAYER_CLASS[k] for k in kinds if k in LAYER_CLASS}
    for name in list(wanted):
        wanted.update(CLASS_NEEDS.get(name, ()))
    return [source for name, source in CLASS_SOURCES.items() if name in wanted]


# Layer type -> the script class that implements it (the others are torch's own nn.<type>).
LAYER_CLASS = {
    "TokenAndPosition": "TokenAndPosition",
    "PositionalEmbedding": "PositionalEmbedding",
    "CausalSelfAttention": "CausalSelfAttention",
    "MLP": "MLP",
    "TransformerBlock": "TransformerBlock",
    "Conv1d": "CausalConv1d",
}


@functools.cache
def namespace() -> dict[str, Any]:
    """The script classes, executed from the same text the compiler writes (our own code, never a user's)."""
    ns: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "__name__": "buildx_sequence"}
    for source in CLASS_SOURCES.values():
        exec(compile(source, "<buildx sequence blocks>", "exec"), ns)  # noqa: S102 - our own text above
    return ns


def constructor(layer_type: LayerType) -> Any:
    """The class that builds a layer type: a script class, or torch's nn.<type>."""
    if layer_type.type in LAYER_CLASS:
        return namespace()[LAYER_CLASS[layer_type.type]]
    return getattr(nn, layer_type.torch or layer_type.type)


def module_kwargs(
    layer: dict, layer_type: LayerType, inferred: dict[str, Any]
) -> tuple[tuple[str, Any], ...]:
    """The constructor's keyword arguments: the layer's settings plus inferred values (hashable)."""
    out = []
    for param in layer_type.params:
        if not param.constructor:
            continue
        value = inferred.get(param.name) if param.inferred else layer.get(param.name)
        if param.inferred and value is None:
            value = layer.get(param.name)
        out.append((param.name, tuple(value) if isinstance(value, list) else value))
    if layer_type.type in ("LSTM", "GRU"):
        out.append(("batch_first", True))
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def meta_block(
    kind: str, kwargs: tuple[tuple[str, Any], ...], in_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], int, dict[str, int]]:
    """Build one block on the meta device and run a sequence through it: (output shape, parameters, the
    parameters of each direct child)."""
    from designs.catalog import LAYERS  # noqa: PLC0415 - a cycle-free read of the same module's table

    layer_type = LAYERS[kind]
    with torch.device("meta"):
        module = constructor(layer_type)(**dict(kwargs))
        x = (
            torch.zeros((1, *in_shape), dtype=torch.long)
            if kind in EMBEDDINGS
            else torch.empty((1, *in_shape))
        )
        module.eval()
        with torch.no_grad():
            out = module(x)
    if isinstance(out, tuple):  # LSTM and GRU: (output, state)
        out = out[0]
    children = {name: sum(p.numel() for p in child.parameters()) for name, child in module.named_children()}
    return tuple(out.shape[1:]), sum(p.numel() for p in module.parameters()), children


class Analysis(Protocol):
    """What the shape rules need from validation's analysis of the whole design."""

    context_length: int
    vocab_size: int
    rows: list[dict]

    def error(self, code: str, message: str, **kw: Any) -> None: ...

    def infer(
        self,
        layer: dict,
        layer_type: LayerType,
        field: str,
        actual: Inferred,
        source: str,
        row: dict,
        path: str,
    ) -> Inferred: ...


def _divisors_near(n: int, near: int) -> int:
    """The number of heads closest to `near` that divides n (1 at worst)."""
    candidates = [d for d in range(1, min(n, 64) + 1) if n % d == 0]
    return min(candidates, key=lambda d: (abs(d - near), -d))


def compute(
    analysis: Analysis,
    layer: dict,
    layer_type: LayerType,
    shape: tuple[int, ...],
    source: str,
    row: dict,
    *,
    path: str,
    ids: bool,
) -> tuple[tuple[int, ...] | None, int, int]:
    """Shape-check one sequence block of a language model: (output shape or None, parameters, MACs).

    `ids`: the input is the model's token ids (the model input, or an Input layer)."""
    name, kind = layer["name"], layer_type.type
    if kind in EMBEDDINGS:
        if not ids:
            analysis.error(
                "embedding_needs_ids",
                _(
                    "%(name)s turns token ids into vectors, but it gets vectors of shape %(shape)s from %(source)s."
                )
                % {"name": name, "shape": fmt_shape(shape), "source": source},
                hint=_("Put %(name)s first: it takes the model input (the token ids).") % {"name": name},
                layer=name,
                path=path,
            )
            return None, 0, 0
    elif ids:
        analysis.error(
            "needs_embedding",
            _("%(name)s gets token ids (whole numbers), not vectors.") % {"name": name},
            hint=_(
                "Start the model with an Embedding or a TokenAndPosition block that turns ids into vectors."
            ),
            layer=name,
            path=path,
            fix={
                "label": _("Add TokenAndPosition before %(name)s") % {"name": name},
                "edits": [
                    {
                        "op": "insert_layer",
                        "before": name,
                        "layer": {"type": "TokenAndPosition", "n_embd": 64},
                    }
                ],
            },
        )
        return None, 0, 0
    elif len(shape) != 2:
        analysis.error(
            "needs_sequence",
            _(
                "%(name)s needs a sequence of vectors (positions × features) but gets %(shape)s from %(source)s."
            )
            % {"name": name, "shape": fmt_shape(shape), "source": source},
            hint=_("Remove the Flatten before %(name)s: a language model keeps one vector per position.")
            % {"name": name},
            layer=name,
            path=path,
        )
        return None, 0, 0

    inferred: dict[str, Any] = {}
    T = shape[0]
    for param in layer_type.params:
        if not param.inferred:
            continue
        if param.name in ("vocab_size", "num_embeddings"):
            inferred[param.name] = analysis.infer(
                layer, layer_type, param.name, analysis.vocab_size, _("the vocabulary"), row, path
            )
        elif param.name == "context_length":
            given = layer.get("context_length")
            row["inferred"]["context_length"] = given if given is not None else T
            if given is not None and given < T:
                analysis.error(
                    "context_too_long",
                    _("The context length %(t)s is longer than %(name)s's positional embedding (%(n)s).")
                    % {"t": T, "name": name, "n": given},
                    hint=_(
                        "Give %(name)s a context_length of at least %(t)s (or leave it empty), or train "
                        "with a shorter context_length."
                    )
                    % {"name": name, "t": T},
                    layer=name,
                    path=path,
                    field="context_length",
                    fix={
                        "label": _("Set context_length to %(t)s") % {"t": T},
                        "edits": [
                            {"op": "set_layer_param", "layer": name, "param": "context_length", "value": T}
                        ],
                    },
                )
                return None, 0, 0
            inferred["context_length"] = given if given is not None else T
        else:  # the features coming in: n_embd, in_features, in_channels, input_size, normalized_shape
            inferred[param.name] = analysis.infer(layer, layer_type, param.name, shape[-1], source, row, path)

    if kind in ("CausalSelfAttention", "TransformerBlock"):
        n_embd, n_head = inferred["n_embd"], layer["n_head"]
        if n_embd % n_head:
            better = _divisors_near(n_embd, n_head)
            analysis.error(
                "heads_divide",
                _(
                    "n_embd %(c)s is not divisible by n_head %(h)s: each head gets an equal share of the features."
                )
                % {"c": n_embd, "h": n_head},
                hint=_("Use %(better)s heads (%(size)s features each), or an n_embd that %(h)s divides.")
                % {"better": better, "size": n_embd // better, "h": n_head},
                layer=name,
                path=path,
                field="n_head",
                fix={
                    "label": _("Set n_head to %(n)s") % {"n": better},
                    "edits": [{"op": "set_layer_param", "layer": name, "param": "n_head", "value": better}],
                },
            )
            return None, 0, 0
    if kind == "Linear" and layer.get("tie_weights"):
        if not tied_embedding(analysis.rows):
            analysis.error(
                "tie_without_embedding",
                _("%(name)s shares its weights with the token embedding, but the model has none.")
                % {"name": name},
                hint=_("Start with an Embedding or TokenAndPosition block, or switch tie_weights off."),
                layer=name,
                path=path,
                field="tie_weights",
            )
            return None, 0, 0
    try:
        out, params, children = meta_block(kind, module_kwargs(layer, layer_type, inferred), shape)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        analysis.error(
            "pytorch",
            _("PyTorch rejects %(name)s: %(error)s") % {"name": name, "error": str(exc)[:300]},
            hint=_("Check %(name)s's settings against the shape coming in (%(shape)s).")
            % {"name": name, "shape": fmt_shape(shape)},
            layer=name,
            path=path,
        )
        return None, 0, 0
    if kind == "Linear" and layer.get("tie_weights"):
        embedding = tied_embedding(analysis.rows)
        assert embedding is not None
        vocab, dim = embedding["tied_shape"]
        if inferred["in_features"] != dim:
            analysis.error(
                "tie_shape",
                _(
                    "%(name)s can share the token embedding's weights only as a %(dim)s → %(vocab)s layer; "
                    "it is %(i)s → %(o)s."
                )
                % {
                    "name": name,
                    "dim": dim,
                    "vocab": vocab,
                    "i": inferred["in_features"],
                    "o": layer["out_features"],
                },
                hint=_("Give the vectors before %(name)s %(dim)s features, or switch tie_weights off.")
                % {"name": name, "dim": dim},
                layer=name,
                path=path,
                field="tie_weights",
            )
            return None, 0, 0
        if layer["out_features"] == vocab:  # otherwise the output check says the vocabulary is wrong
            params -= vocab * dim  # one matrix, counted once (model.parameters() skips a shared tensor)
            row["tied_to"] = embedding["name"]
    if kind in EMBEDDINGS:
        dim = layer["embedding_dim"] if kind == "Embedding" else layer["n_embd"]
        row["tied_shape"] = [analysis.vocab_size, dim]
    if kind == "TransformerBlock":
        row["parts"] = block_parts(name, shape, children, layer["n_head"])
    return out, params, macs(kind, layer, inferred, shape, out)


def tied_embedding(rows: list[dict]) -> dict | None:
    """The first token embedding's row (the matrix an LM head may share)."""
    return next((r for r in rows if r["type"] in EMBEDDINGS and r.get("tied_shape")), None)


def block_parts(name: str, shape: tuple[int, ...], children: dict[str, int], heads: int) -> list[dict]:
    """What a TransformerBlock holds, for its expanded view: each part's name, type, shape and parameters
    (and the attention's number of heads)."""
    parts = [
        {"name": f"{name}.{attr}", "type": kind, "output_shape": list(shape), "params": children[attr]}
        for attr, kind in BLOCK_PARTS
    ]
    for part in parts:
        if part["type"] == "CausalSelfAttention":
            part["heads"] = heads
    return parts


def macs(kind: str, layer: dict, inferred: dict, shape: tuple[int, ...], out: tuple[int, ...]) -> int:
    """Multiply-accumulates per sequence of the blocks that dominate compute."""
    T = shape[0]
    if kind == "Linear":
        return T * inferred["in_features"] * layer["out_features"]
    if kind in ("CausalSelfAttention", "TransformerBlock"):
        C = inferred["n_embd"]
        attention = (
            T * C * 3 * C + T * C * C + 2 * T * T * C
        )  # q, k, v; the projection; q k^T and the sum of v
        if kind == "CausalSelfAttention":
            return attention
        return attention + 2 * T * C * layer["expansion"] * C
    if kind == "MLP":
        C = inferred["n_embd"]
        return 2 * T * C * layer["expansion"] * C
    if kind == "Conv1d":
        return T * layer["out_channels"] * inferred["in_channels"] * layer["kernel_size"]
    if kind in ("LSTM", "GRU"):
        gates = 4 if kind == "LSTM" else 3
        H, total, width = layer["hidden_size"], 0, inferred["input_size"]
        for _layer in range(layer["num_layers"]):
            total += T * gates * (width * H + H * H)
            width = H
        return total
    return 0


def fmt_shape(shape: tuple[int, ...] | list[int] | None) -> str:
    """`16×28×28`: a shape as the messages write it ("?" when unknown)."""
    return "×".join(str(d) for d in shape) if shape else "?"


def per_token(total_macs: int, context_length: int) -> int:
    return math.ceil(total_macs / max(1, context_length))
