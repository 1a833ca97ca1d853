"""The compiler: a validated design spec → the readable PyTorch script of docs/contracts.md section 1.

Deterministic: the output depends only on the spec, the design's name and the version number (no dates,
no dict-order accidents, no floating-point formatting that varies), so the same version gives the same bytes.
Layer constructors are written from the catalog: positional arguments where PyTorch's own examples use them
(channels, features), keyword arguments only where a value differs from PyTorch's default.
"""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Any

from designs.catalog import TASK_LM, TRANSFORMS, DatasetFacts, dataset_lookup
from designs.compiler_lm import compile_lm
from designs.limits import NO_LIMITS
from designs.script_parts import (
    OPTIMIZER_CALLS,
    align_comments,
    align_constants,
    class_name,
    forward_lines,
    layer_call,
    literal,
    script_head,
    script_tail,
    shape_comment,
)
from designs.validation import MODEL_INPUT, analyse, hyperparameter, spec_task

if TYPE_CHECKING:  # annotations only: compiling a spec needs no Django model loaded
    from designs.models import DesignVersion

RESIDUAL_CLASS = '''\
class Residual(nn.Module):
    """A residual block: its layers, plus a skip connection that adds the block's input to their output.

    When the layers change the shape, the skip goes through `shortcut` (a 1x1 convolution with batch norm)
    so that the two can be added; otherwise `shortcut` is nn.Identity().
    """

    def __init__(self, shortcut: nn.Module, **layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential()
        for name, layer in layers.items():
            self.layers.add_module(name, layer)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.shortcut(x)
'''


class CompileError(Exception):
    """The spec has validation errors; compile only valid versions."""


class _Writer:
    def __init__(self, spec: dict, report: dict) -> None:
        self.spec = spec
        self.report = report
        self.rows = {row["name"]: row for row in report["layers"]}
        self.uses_residual = False

    # --- __init__

    def attribute_lines(self, layer: dict, indent: str) -> list[tuple[str, str | None]]:
        row = self.rows[layer["name"]]
        shape = shape_comment(row["output_shape"])
        if layer["type"] == "Residual":
            self.uses_residual = True
            lines: list[tuple[str, str | None]] = [(f"{indent}self.{layer['name']} = Residual(", None)]
            lines += self.residual_args(layer, indent + "    ")
            lines.append((f"{indent})", shape))
            return lines
        return [(f"{indent}self.{layer['name']} = {layer_call(layer, row['inferred'])}", shape)]

    def residual_args(self, layer: dict, indent: str) -> list[tuple[str, str | None]]:
        lines: list[tuple[str, str | None]] = []
        for child in layer["layers"]:
            row = self.rows[child["name"]]
            if child["type"] == "Residual":
                lines.append((f"{indent}{child['name']}=Residual(", None))
                lines += self.residual_args(child, indent + "    ")
                lines.append((f"{indent}),", shape_comment(row["output_shape"])))
            else:
                lines.append(
                    (
                        f"{indent}{child['name']}={layer_call(child, row['inferred'])},",
                        shape_comment(row["output_shape"]),
                    )
                )
        shortcut = self.rows[layer["name"]]["shortcut"]
        if shortcut["kind"] == "projection":
            conv = (
                f"nn.Conv2d({shortcut['in_channels']}, {shortcut['out_channels']}, kernel_size=1"
                + (f", stride={shortcut['stride']}" if shortcut["stride"] != 1 else "")
                + ", bias=False)"
            )
            lines.append(
                (f"{indent}# The layers change the shape: a 1x1 projection makes the skip match.", None)
            )
            lines.append(
                (f"{indent}shortcut=nn.Sequential({conv}, nn.BatchNorm2d({shortcut['out_channels']})),", None)
            )
        else:
            lines.append((f"{indent}shortcut=nn.Identity(),", None))
        return lines

    # --- forward

    def forward_lines(self) -> list[tuple[str, str | None]]:
        input_names = {layer["name"] for layer in self.spec["layers"] if layer["type"] == "Input"}
        nodes = [layer for layer in self.spec["layers"] if layer["type"] != "Input"]

        def refs(layer: dict) -> list[str]:
            return [MODEL_INPUT if r in input_names else r for r in self.rows[layer["name"]]["inputs"]]

        return forward_lines(nodes, self.rows, refs, input_alias="inputs")


def _transform_call(t: dict, *, channels: int, dataset_mean: tuple, dataset_std: tuple) -> str | None:
    kind = t["type"]
    if kind == "ToTensor":
        return None

    def size(value: list[int]) -> str:
        return str(value[0]) if value[0] == value[1] else literal(value)

    if kind in ("Resize", "CenterCrop"):
        return f"rt.{kind}({size(t['size'])})"
    if kind == "RandomCrop":
        return f"rt.RandomCrop({size(t['size'])}, padding={t['padding']})"
    if kind in ("RandomHorizontalFlip", "RandomVerticalFlip"):
        return f"rt.{kind}(p={t['p']!r})"
    if kind == "RandomRotation":
        return f"rt.RandomRotation({t['degrees']!r})"
    if kind == "ColorJitter":
        keys = ("brightness", "contrast", "saturation", "hue")
        return "rt.ColorJitter(" + ", ".join(f"{k}={t[k]!r}" for k in keys) + ")"
    if kind == "Grayscale":
        return f"rt.Grayscale(num_output_channels={t['num_output_channels']})"
    if kind == "Normalize":
        mean = t["mean"] if t["mean"] is not None else _per_channel(dataset_mean, channels)
        std = t["std"] if t["std"] is not None else _per_channel(dataset_std, channels)
        return f"rt.Normalize({literal(mean)}, {literal(std)})"
    raise AssertionError(f"no runtime call for {kind}")  # every catalog transform is handled above


def _per_channel(values: tuple, channels: int) -> list[float]:
    """The dataset's per-channel statistic for `channels` channels (after a Grayscale, say)."""
    if len(values) == channels:
        return list(values)
    if channels == 1:
        return [round(sum(values) / len(values), 4)]
    return [values[0]] * channels


def _dataset(spec: dict) -> DatasetFacts:
    info = dataset_lookup(spec["dataset"])
    if info is None:  # validation normalises the name: only a spec that skipped it gets here
        raise ValueError(f"Unknown dataset {spec['dataset']!r}: compile a validated spec.")
    return info


def transforms(spec: dict) -> tuple[list[str], list[str]]:
    """(TRAIN_TRANSFORM calls, EVAL_TRANSFORM calls).

    Random transforms are training-only. A RandomCrop that changes the image size becomes a CenterCrop of
    that size at evaluation, so that the model sees the same size in both.
    """
    info = _dataset(spec)
    channels, height, width = info.input_shape
    train, evaluate = [], []
    for t in spec["preprocessing"]:
        call = _transform_call(t, channels=channels, dataset_mean=info.mean, dataset_std=info.std)
        if t["type"] == "Grayscale":
            channels = t["num_output_channels"]
        if call is None:
            continue
        train.append(call)
        if t["type"] == "RandomCrop" and t["size"] != [height, width]:
            evaluate.append(f"rt.CenterCrop({literal(t['size'])})")
        elif not TRANSFORMS[t["type"]].random:
            evaluate.append(call)
        if t["type"] in ("Resize", "CenterCrop", "RandomCrop"):
            height, width = t["size"]
    return train, evaluate


def _compose(calls: list[str]) -> str:
    one_line = f"rt.Compose([{', '.join(calls)}])"
    if len(one_line) <= 80:
        return one_line
    return "rt.Compose([\n" + "".join(f"    {call},\n" for call in calls) + "])"


def _how_to_train(filename: str, dataset: str) -> list[str]:
    """The docstring's lines on training the script elsewhere (buildx_runtime.main's command line)."""
    if dataset == "digits":
        return [
            f"Train it here with `python {filename}` (needs torch, scikit-learn for the digits, and",
            "buildx_runtime.py beside it).",
        ]
    if dataset == "shapes":
        return [f"Train it here with `python {filename}` (needs torch and buildx_runtime.py beside it)."]
    return [
        f"Train it here with `python {filename} --data ./{dataset}`, a folder of the standard {dataset} files",
        "(without them, it says where to get them; needs torch and buildx_runtime.py beside it).",
    ]


def compile_spec(spec: dict, *, design_name: str, version_number: int, report: dict | None = None) -> str:
    """The script for a normalised, valid spec. Raises CompileError when the spec has validation errors."""
    report = report if report is not None else analyse(spec, limits=NO_LIMITS)
    if not report["valid"]:
        raise CompileError(report["errors"][0]["message"] if report["errors"] else "The design is not valid.")
    if spec_task(spec) == TASK_LM:
        return compile_lm(spec, report, design_name=design_name, version_number=version_number)
    model = class_name(spec["model_name"])
    filename = f"{model.lower()}.py"
    info = _dataset(spec)
    hp = spec["hyperparameters"]
    train_calls, eval_calls = transforms(spec)

    out = script_head(
        model=model,
        design_name=design_name,
        version_number=version_number,
        about=_how_to_train(filename, info.name),
        imports=["import torch", "from torch import nn"],
    )
    out += align_comments(
        [
            (f"DATASET = {json.dumps(info.name)}", None),
            (f"INPUT_SHAPE = {literal(report['input_shape'])}", "(C, H, W) after preprocessing"),
            (f"NUM_CLASSES = {info.num_classes}", None),
            (f"TRAIN_TRANSFORM = {_compose(train_calls)}", None),
            (f"EVAL_TRANSFORM = {_compose(eval_calls)}", None),
        ]
    )
    out += ["", "# Hyperparameters"]
    constants: list[tuple[str, str | None]] = [
        (f"EPOCHS = {hp['epochs']}", None),
        (f"BATCH_SIZE = {hp['batch_size']}", None),
        (f"LEARNING_RATE = {hp['learning_rate']!r}", None),
        (f"OPTIMIZER = {json.dumps(hp['optimizer'])}", "sgd | adam | adamw"),
        (f"MOMENTUM = {hp['momentum']!r}", "SGD only"),
        (f"WEIGHT_DECAY = {hp['weight_decay']!r}", None),
        (f"LR_SCHEDULE = {json.dumps(hp['lr_schedule'])}", "none | step | cosine"),
    ]
    if hp["lr_schedule"] == "step":
        constants += [
            (f"LR_STEP_SIZE = {hyperparameter(spec, 'lr_step_size')}", "epochs between learning-rate decays"),
            (f"LR_GAMMA = {hp['lr_gamma']!r}", "factor applied at each decay"),
        ]
    constants += [
        (f"LABEL_SMOOTHING = {hp['label_smoothing']!r}", None),
        (f"SEED = {hp['seed']}", None),
        (f"VAL_SPLIT = {hp['val_split']!r}", "share of the training data held out for validation"),
    ]
    out += align_constants(constants)

    writer = _Writer(spec, report)
    init: list[tuple[str, str | None]] = []
    for layer in spec["layers"]:
        if layer["type"] in ("Input", "Add", "Concat"):
            continue  # no module: the input is forward()'s x, merges are expressions in forward()
        init += writer.attribute_lines(layer, "        ")
    forward = writer.forward_lines()

    out += script_tail(
        model=model,
        classes=[RESIDUAL_CLASS] if writer.uses_residual else [],
        init=align_comments(init),
        forward=align_comments(forward),
        train=_train_function(hp),
        main_call="rt.main(build_model, train, dataset=DATASET, eval_transform=EVAL_TRANSFORM, val_split=VAL_SPLIT, seed=SEED)",
    )
    return "\n".join(out)


def _train_function(hp: dict) -> list[str]:
    optimizer = OPTIMIZER_CALLS[hp["optimizer"]]
    scheduler = {
        "none": "None",
        "step": "torch.optim.lr_scheduler.StepLR(optimizer, step_size=LR_STEP_SIZE, gamma=LR_GAMMA)",
        "cosine": "torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)",
    }[hp["lr_schedule"]]
    return [
        "def train(model: nn.Module, data: rt.Data) -> None:",
        "    rt.seed_everything(SEED)",
        f"    optimizer = {optimizer}",
        f"    scheduler = {scheduler}",
        "    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)",
        "    start_epoch = rt.resume(model=model, optimizer=optimizer, scheduler=scheduler)  # 0 on a fresh run",
        "",
        "    for epoch in range(start_epoch + 1, EPOCHS + 1):",
        "        model.train()",
        "        total_loss = torch.zeros((), device=data.device)",
        "        correct = torch.zeros((), device=data.device)",
        "        for x, y in data.train.batches(BATCH_SIZE, shuffle=True, transform=TRAIN_TRANSFORM):",
        "            with rt.autocast():",
        "                logits = model(x)  # (B, NUM_CLASSES)",
        "                loss = loss_fn(logits, y)",
        "            optimizer.zero_grad(set_to_none=True)",
        "            loss.backward()",
        "            optimizer.step()",
        "            total_loss += loss.detach() * len(y)  # stays on the device: no sync per batch",
        "            correct += (logits.argmax(1) == y).sum()",
        "        if scheduler is not None:",
        "            scheduler.step()",
        "        val_loss, val_acc = rt.evaluate(model, data.val, loss_fn=loss_fn, batch_size=BATCH_SIZE,",
        "                                        transform=EVAL_TRANSFORM)",
        "        rt.report_epoch(epoch=epoch, epochs=EPOCHS,",
        "                        train_loss=total_loss.item() / len(data.train),",
        "                        train_acc=correct.item() / len(data.train),",
        "                        val_loss=val_loss, val_acc=val_acc,",
        '                        lr=optimizer.param_groups[0]["lr"])',
        "        rt.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, metric=val_acc)",
    ]


def compile_version(version: DesignVersion) -> str:
    """The script of a DesignVersion (its stored spec; the report is recomputed, identical for a valid spec)."""
    return compile_spec(version.spec, design_name=version.design.name, version_number=version.number)


def _import_runtime_only(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
    """The script's ``import buildx_runtime`` gets the engine's module without touching ``sys.modules``."""
    if name == "buildx_runtime" and level == 0:
        from sandbox.engine import buildx_runtime  # torch: only in processes that build a model

        return buildx_runtime
    return builtins.__import__(name, globals, locals, fromlist, level)


def load_compiled(code: str) -> dict[str, Any]:
    """Execute the compiler's own output and return its module namespace.

    Only ever called with text from ``compile_spec``: never a user's or the LLM's. ``__name__`` is not
    ``"__main__"``, so the script's ``rt.main(...)`` does not run.
    """
    namespace: dict[str, Any] = {
        "__name__": "buildx_compiled",
        "__builtins__": {**vars(builtins), "__import__": _import_runtime_only},
    }
    exec(compile(code, "<buildx compiled script>", "exec"), namespace)  # noqa: S102 - our compiler's code
    return namespace


def state_dict_shapes(code: str) -> dict[str, list[int]]:
    """The compiled model's state dict as {name: shape}, built on the meta device (no memory, no time).

    The contract for code written by the LLM: the same names and shapes, so that the trusted
    evaluation, which builds this model, can load the weights that code trained."""
    import torch  # a real cost, paid only by the processes that check or run code

    namespace = load_compiled(code)
    with torch.device("meta"):
        model = namespace["build_model"]()
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
