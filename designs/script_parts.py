"""The parts of a generated script that both compilers write (images: designs/compiler.py; language
models: designs/compiler_lm.py): names, literals, shape comments in one column, layer constructors, the
forward pass, the optimizer, and the script's head and tail. One place, so the two kinds of script read
alike (docs/contracts.md section 1).
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Callable
from typing import Any

from designs import sequence
from designs.catalog import LAYERS, NO_TORCH_DEFAULT
from designs.validation import MODEL_INPUT

COMMENT_COLUMN_MAX = 80
# Module-level names of the script a model class must not shadow.
SCRIPT_GLOBALS = {"Residual", "torch", "nn", "rt", "annotations", "build_model", "train"}

OPTIMIZER_CALLS = {
    "sgd": "torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)",
    "adam": "torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)",
    "adamw": "torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)",
}

Line = tuple[str, str | None]  # code, and the comment beside it (None: no comment)


def class_name(model_name: str) -> str:
    """ "my cnn" → "MyCnn", "LeNet-5" → "LeNet5": a Python class name that cannot clash with the script's names."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", model_name) if p]
    name = "".join(p[0].upper() + p[1:] for p in parts) or "Model"
    if name[0].isdigit():
        name = f"Model{name}"
    if keyword.iskeyword(name) or name in SCRIPT_GLOBALS or name.isupper():
        name = f"{name}Model"
    return name


def literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        items = ", ".join(literal(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    raise TypeError(f"cannot write {value!r} as a literal")


def docstring_text(text: str) -> str:
    """A design name made safe inside a docstring: no quotes to close it, no backslash escapes, one line."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text).replace("\\", "/").replace('"', "'")
    return text.strip()[:120]


def shape_comment(shape: list[int] | None) -> str:
    """`(B, 16, 28, 28)`: a layer's output shape, as the comment beside it says it."""
    return "(B, " + ", ".join(str(d) for d in shape) + ")" if shape else "(B, ?)"


def align_comments(lines: list[Line]) -> list[str]:
    """Put the trailing shape comments of consecutive lines in one column, as hand-written code would."""
    width = max(
        (len(code) for code, comment in lines if comment and len(code) <= COMMENT_COLUMN_MAX), default=0
    )
    out = []
    for code, comment in lines:
        if comment is None:
            out.append(code)
        else:
            out.append(f"{code.ljust(width)}  # {comment}" if len(code) <= width else f"{code}  # {comment}")
    return out


def align_constants(lines: list[Line]) -> list[str]:
    # The contract's layout: comments on constants start in one column (29), like a hand-written config block.
    width = max(28, *(len(code) for code, comment in lines if comment))
    return [f"{code.ljust(width)} # {comment}" if comment else code for code, comment in lines]


def layer_call(layer: dict, inferred: dict[str, Any]) -> str:
    """`nn.Conv2d(1, 16, kernel_size=3, padding=1)` or `TransformerBlock(64, 4)` for one layer (Residual
    excluded): the arguments validation builds it with, positional where PyTorch's examples are, keywords
    only where a value differs from the default."""
    layer_type = LAYERS[layer["type"]]
    params = {param.name: param for param in layer_type.params}
    args = []
    for name, value in sequence.module_kwargs(layer, layer_type, inferred):
        param = params.get(name)
        default = param.torch_default if param else NO_TORCH_DEFAULT  # batch_first, added for LSTM/GRU
        if param and param.positional:
            args.append(literal(value))
        elif default is NO_TORCH_DEFAULT or value != (
            tuple(default) if isinstance(default, list) else default
        ):
            args.append(f"{name}={literal(value)}")
    script_class = sequence.LAYER_CLASS.get(layer_type.type) or f"nn.{layer_type.torch}"
    return f"{script_class}({', '.join(args)})"


def forward_lines(
    nodes: list[dict], rows: dict[str, dict], refs: Callable[[dict], list[str]], *, input_alias: str
) -> list[Line]:
    """The body of forward(): one line per layer with its output shape, in the layers' order.

    The running "x" where a layer's output only feeds the next layer; a named local where it is reused later
    or merged (so that `mix + stem` reads as what it is). ``refs(layer)`` names the layer's inputs
    (MODEL_INPUT for the model's); when the model input feeds more than the first layer, it is kept under
    ``input_alias``.
    """
    consumers: dict[str, list[int]] = {}
    for position, layer in enumerate(nodes):
        for ref in refs(layer):
            consumers.setdefault(ref, []).append(position)
    lines: list[Line] = []
    var = {MODEL_INPUT: "x"}
    if consumers.get(MODEL_INPUT, [0]) != [0]:
        var[MODEL_INPUT] = input_alias
        lines.append((f"        {input_alias} = x", None))
    for position, layer in enumerate(nodes):
        name = layer["name"]
        last = position == len(nodes) - 1
        feeds_next_only = consumers.get(name) == [position + 1] and nodes[position + 1]["type"] not in (
            "Add",
            "Concat",
        )
        out = "x" if last or feeds_next_only else name
        args = [var[r] for r in refs(layer)]
        shape = shape_comment(rows[name]["output_shape"])
        if layer["type"] == "Add":
            lines.append((f"        {out} = {' + '.join(args)}", shape))
        elif layer["type"] == "Concat":
            lines.append((f"        {out} = torch.cat([{', '.join(args)}], dim={layer['dim']})", shape))
        elif layer["type"] in ("LSTM", "GRU"):
            lines.append(
                (f"        {out}, _ = self.{name}({args[0]})", f"{shape}: the outputs; _ is the last state")
            )
        else:
            lines.append((f"        {out} = self.{name}({args[0]})", shape))
        var[name] = out
    lines.append((f"        return {var[nodes[-1]['name']]}" if nodes else "        return x", None))
    return lines


def script_head(
    *, model: str, design_name: str, version_number: int, about: list[str], imports: list[str]
) -> list[str]:
    """The docstring, the imports and the "# Data" heading every generated script starts with."""
    return [
        f'"""{model}: generated by BuildX from the design "{docstring_text(design_name)}", version {version_number}.',
        "",
        *about,
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *imports,
        "",
        "import buildx_runtime as rt",
        "",
        "# Data",
    ]


def script_tail(
    *, model: str, classes: list[str], init: list[str], forward: list[str], train: list[str], main_call: str
) -> list[str]:
    """The helper classes, the model class, build_model(), train() and the script's entry point."""
    out = ["", ""]
    for source in classes:
        out += [*source.rstrip("\n").split("\n"), "", ""]
    return [
        *out,
        f"class {model}(nn.Module):",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *init,
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        *forward,
        "",
        "",
        "def build_model() -> nn.Module:",
        f"    return {model}()",
        "",
        "",
        *train,
        "",
        "",
        'if __name__ == "__main__":',
        f"    {main_call}",
        "",
    ]
