"""Downloads of a trained run: the weights (safetensors), ONNX, the standalone bundle, the model card.

The weights, the bundle and the card only copy stored files and rows: no model is built, so they work
for any finished run. ONNX needs the model itself in this process and so follows training.predict's rule: compiled code
only (the model is rebuilt from the spec by the platform's compiler, never from a stored script).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import warnings
import zipfile
from typing import Any

import torch
from django.utils.translation import gettext as _

from designs import compiler
from designs.catalog import IGNORED_HYPERPARAMETERS
from sandbox.engine import datasets
from training import predict
from training.models import Run, RunEvent

ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed timestamps inside the zip
RUNTIME_NAME = "buildx_runtime.py"


def _stem(run: Run) -> str:
    from designs.services import script_filename

    return script_filename(run.design_version).removesuffix(".py")


def _finished(run: Run) -> None:
    if run.status != Run.Status.SUCCEEDED:
        predict.check_predictable(run)  # raises run_not_finished with the right message


def state_dict(run: Run) -> tuple[dict[str, torch.Tensor], Any]:
    """The model's weights as stored by the run (``predict.WEIGHT_KINDS`` order) and their artifact."""
    _finished(run)
    artifact = predict.weights_artifact(run)
    if artifact is None:
        raise predict.PredictRefused(
            "no_weights", _("This run saved no weights, so there is nothing to export.")
        )
    return predict.read_weights(artifact), artifact


def _metadata(run: Run, artifact) -> dict[str, str]:
    """safetensors metadata is str -> str: one JSON string that says what the weights are."""
    info = {
        "run": run.pk,
        "design": run.design_version.design.name,
        "version": run.design_version.number,
        "dataset": run.dataset,
        "class_names": (run.metrics or {}).get("class_names"),
        "checkpoint": artifact.kind,
        "epoch": artifact.epoch,
        "format": "pytorch state_dict (model.load_state_dict)",
    }
    return {"buildx": json.dumps(info, sort_keys=True)}


def weights_bytes(run: Run) -> bytes:
    from safetensors.torch import save as save_safetensors

    tensors, artifact = state_dict(run)
    return save_safetensors(
        {k: v.contiguous() for k, v in tensors.items()}, metadata=_metadata(run, artifact)
    )


def weights_file(*, run: Run) -> tuple[str, bytes]:
    return f"{_stem(run)}-run{run.pk}.safetensors", weights_bytes(run)


# --- ONNX ---------------------------------------------------------------------------------------------


ONNX_INPUT = "input"


class PixelsToLogits(torch.nn.Module):
    """uint8 pixels (B, C, H, W) at the dataset's size -> logits: the evaluation's own preprocessing (/ 255,
    then EVAL_TRANSFORM), then the model. Exported as one graph, so nobody can feed it differently."""

    def __init__(self, model: torch.nn.Module, eval_transform: Any) -> None:
        super().__init__()
        self.model = model
        self.eval_transform = eval_transform

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float() / 255.0  # (B, C, H, W) in [0, 1]
        if self.eval_transform is not None:
            x = self.eval_transform(x)  # batch-wise tensor ops: traced like the model's own
        return self.model(x)


def onnx_bytes(run: Run) -> bytes:
    """The model as ONNX (opset 17): input ``input`` uint8 (B, C, H, W), the raw pixels at the dataset's size,
    preprocessing inside the graph; output ``logits``. Metadata ``buildx`` says the same in JSON."""
    loaded = predict.get_model(run)
    model = copy.deepcopy(loaded.model).eval()  # the cached model keeps serving while this one is traced
    wrapped = PixelsToLogits(model, loaded.eval_transform).eval()
    example = torch.zeros(1, *loaded.source_shape, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter needs nothing beyond torch (the dynamo one needs onnxscript); torch
        # marks it deprecated, which is not the user's concern.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            buffer,  # type: ignore[arg-type]  # torch types f as a path; the TorchScript exporter takes a file
            dynamo=False,
            opset_version=17,
            input_names=[ONNX_INPUT],
            output_names=["logits"],
            dynamic_axes={ONNX_INPUT: {0: "batch"}, "logits": {0: "batch"}},
        )
    card = model_card(run)
    info = {
        "run": run.pk,
        "input": f"{ONNX_INPUT}: uint8 (batch, {', '.join(str(d) for d in loaded.source_shape)}), pixels 0..255",
        "preprocessing_in_graph": f"x / 255, then {card['preprocessing']['eval_text']}",
        "class_names": loaded.class_names,
        "dataset": run.dataset,
    }
    return with_metadata(buffer.getvalue(), {"buildx": json.dumps(info, sort_keys=True)})


def with_metadata(model_proto: bytes, metadata: dict[str, str]) -> bytes:
    """The ONNX model with ``metadata_props`` entries added (no onnx package in the web process).

    A serialized protobuf message followed by more fields is the same message with those fields merged,
    so each entry is appended as ModelProto field 14 (metadata_props), a StringStringEntryProto of key (1)
    and value (2), all length-delimited (wire type 2).
    """

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    extra = b"".join(
        field(14, field(1, key.encode()) + field(2, value.encode())) for key, value in metadata.items()
    )
    return model_proto + extra


def onnx_file(*, run: Run) -> tuple[str, bytes]:
    return f"{_stem(run)}-run{run.pk}.onnx", onnx_bytes(run)


# --- The model card ---------------------------------------------------------------------------------


def _environment(run: Run) -> dict[str, Any]:
    status = (
        RunEvent.objects.filter(run=run, kind=RunEvent.Kind.STATUS, payload__has_key="torch")
        .order_by("-seq")
        .values_list("payload", flat=True)
        .first()
    ) or {}
    hp = run.hyperparameters or {}
    return {
        "torch": status.get("torch") or "",
        "device": run.device or status.get("device") or "",
        "seed": hp.get("seed", 42),
        "isolation": run.isolation or [],
        "run_seconds": round(run.run_seconds or 0.0, 1),
        "attempts": run.attempt,
    }


def model_card(run: Run) -> dict[str, Any]:
    """Everything the card shows, as plain data (the page and MODEL_CARD.md both render this)."""
    version = run.design_version
    report = version.report or {}
    metrics = run.metrics or {}
    code = run.code_artifact
    epochs = [m.as_dict() for m in run.epoch_metrics.order_by("epoch")]
    artifact = predict.weights_artifact(run)
    layers = [
        {
            "name": layer.get("name"),
            "type": layer.get("type"),
            "output_shape": layer.get("output_shape"),
            "params": layer.get("params"),
        }
        for layer in report.get("layers", [])
        if not layer.get("parent")
    ]
    class_names = metrics.get("class_names") or (report.get("dataset") or {}).get("class_names") or []
    per_class = metrics.get("per_class_accuracy") or []
    steps = [call.removeprefix("rt.") for call in compiler.transforms(version.spec)[1]]
    shape = source_shape(run)
    return {
        "run": run.pk,
        "status": run.status,
        "design": {
            "name": version.design.name,
            "version": version.number,
            "model_name": (version.spec or {}).get("model_name", ""),
            "params": run.params or (report.get("totals") or {}).get("params"),
            "macs": (report.get("totals") or {}).get("macs"),
            "layers": layers,
            "preprocessing": (version.spec or {}).get("preprocessing", []),
        },
        "code": {
            "source": code.source,
            "source_label": code.get_source_display(),
            "sha256": hashlib.sha256(code.code.encode()).hexdigest(),
            "filename": f"{_stem(run)}.py",
        },
        "dataset": {
            "name": run.dataset,
            "title": run.dataset_ref.name if run.dataset_ref else run.dataset,
            "uploaded": run.dataset_ref is not None,
            "classes": class_names,
            "counts": dict(run.dataset_ref.counts) if run.dataset_ref else {},
            "split": dict(run.dataset_ref.split) if run.dataset_ref else {},
            "content_hash": run.dataset_hash,
            "input_shape": report.get("input_shape"),
            "test_samples": metrics.get("samples"),
        },
        "hyperparameters": {
            k: v for k, v in (run.hyperparameters or {}).items() if k not in IGNORED_HYPERPARAMETERS
        },
        "metrics": {
            "accuracy": metrics.get("accuracy"),
            "precision": metrics.get("precision"),
            "recall": metrics.get("recall"),
            "f1": metrics.get("f1"),
            "per_class": [
                {"class": name, "accuracy": per_class[i] if i < len(per_class) else None}
                for i, name in enumerate(class_names)
            ],
            "final_epoch": epochs[-1] if epochs else None,
        },
        "curves": epochs,
        # What the model is fed: the dataset's own images, / 255, then the script's EVAL_TRANSFORM.
        "preprocessing": {
            "source_shape": list(shape),
            "eval_steps": steps,
            "eval_text": ", then ".join(steps) if steps else "nothing more",
        },
        "onnx": {
            "available": predict.is_trusted(run),
            "input": ONNX_INPUT,
            "dtype": "uint8",
            "shape": ["batch", *shape],
            "output": "logits",
        },
        "weights": {
            "checkpoint": artifact.kind if artifact else None,
            "epoch": artifact.epoch if artifact else None,
        },
        "environment": _environment(run),
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def source_shape(run: Run) -> tuple[int, ...]:
    """(C, H, W) of the run's dataset images, before EVAL_TRANSFORM: what predict.py and the ONNX take."""
    try:
        return tuple(datasets.get_info(run.dataset).input_shape)
    except KeyError:
        return tuple((run.design_version.report or {}).get("input_shape") or ())


def _card_value(value: Any) -> str:
    """A hyperparameter as the card writes it: "–" for a default left to BuildX (None), yes / no."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def percent(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) else "–"


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def card_markdown(run: Run) -> str:
    card = model_card(run)
    d, m, env = card["design"], card["metrics"], card["environment"]
    lines = [
        f"# Model card: {d['name']} (version {d['version']}), run {card['run']}",
        "",
        f"A {d['model_name']} convolutional network trained by BuildX on the `{card['dataset']['name']}` dataset.",
        "",
        "## Design",
        "",
        f"- Parameters: {d['params']:,}" if isinstance(d["params"], int) else "- Parameters: –",
        f"- Code: `{card['code']['filename']}` ({card['code']['source_label']}), sha256 `{card['code']['sha256']}`",
        f"- Preprocessing: {', '.join(t.get('type', '?') for t in d['preprocessing']) or 'none'}",
        "",
        "| layer | type | output shape | parameters |",
        "| --- | --- | --- | --- |",
    ]
    for layer in d["layers"]:
        shape = "×".join(str(x) for x in layer["output_shape"] or []) or "–"
        lines.append(f"| {layer['name']} | {layer['type']} | {shape} | {layer['params'] or 0:,} |")
    lines += [
        "",
        "## Dataset",
        "",
        f"- Name: {card['dataset']['title']} (`{card['dataset']['name']}`)",
        *(
            [
                "- Images per class: "
                + ", ".join(f"{name} {n}" for name, n in card["dataset"]["counts"].items()),
                f"- Split: {card['dataset']['split'].get('train', '–')} for training and validation, "
                f"{card['dataset']['split'].get('test', '–')} held out for the test",
            ]
            if card["dataset"]["counts"]
            else []
        ),
        f"- Content hash (SHA-256 of what it trained on): {card['dataset']['content_hash'] or '–'}",
        f"- Classes ({len(card['dataset']['classes'])}): {', '.join(card['dataset']['classes'])}",
        f"- Input shape (C, H, W): {tuple(card['dataset']['input_shape'] or ())}",
        f"- Test samples: {card['dataset']['test_samples'] or '–'}",
        "",
        "## Hyperparameters",
        "",
    ]
    lines += [f"- {k}: {_card_value(v)}" for k, v in sorted(card["hyperparameters"].items())] or [
        "- (defaults)"
    ]
    lines += [
        "",
        "## Test metrics (held-out test split, evaluated by the BuildX harness)",
        "",
        f"- Accuracy: {percent(m['accuracy'])}",
        f"- Precision (macro): {percent(m['precision'])}",
        f"- Recall (macro): {percent(m['recall'])}",
        f"- F1 (macro): {percent(m['f1'])}",
        "",
        "| class | accuracy |",
        "| --- | --- |",
    ]
    lines += [f"| {row['class']} | {percent(row['accuracy'])} |" for row in m["per_class"]]
    lines += [
        "",
        "## Training curves",
        "",
        "| epoch | train loss | train acc | val loss | val acc | lr | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in card["curves"]:
        lines.append(
            f"| {e['epoch']} | {_num(e['train_loss'])} | {percent(e['train_acc'])} | {_num(e['val_loss'])} | "
            f"{percent(e['val_acc'])} | {_num(e['lr'], 6)} | {_num(e['seconds'], 2)} |"
        )
    lines += [
        "",
        "## Environment",
        "",
        f"- PyTorch: {env['torch'] or '–'}",
        f"- Device: {env['device'] or '–'}",
        f"- Seed: {env['seed']}",
        f"- Training time: {env['run_seconds']} s over {env['attempts']} execution(s)",
        f"- Weights: `{card['weights']['checkpoint']}` checkpoint after epoch {card['weights']['epoch']}",
        "",
    ]
    lines += _feeding_markdown(card)
    return "\n".join(lines)


def _feeding_markdown(card: dict[str, Any]) -> list[str]:
    """How to feed the model, with its numbers: a model fed other values gives wrong answers silently."""
    pre, onnx = card["preprocessing"], card["onnx"]
    c, h, w = pre["source_shape"] or (None, None, None)
    colours = {1: "grey", 3: "RGB"}.get(c, f"{c} channels") if c is not None else "?"
    classes = card["dataset"]["classes"]
    lines = [
        "## Feeding the model",
        "",
        f"Images are {colours}, {h}×{w} pixels (C, H, W = {c}, {h}, {w}): the dataset's own size. At evaluation",
        f"the pixels are divided by 255 (to [0, 1]), then: {pre['eval_text']} (the script's `EVAL_TRANSFORM`).",
        "",
        f"- PyTorch (`model.safetensors`): `build_model()` takes the float batch (B, {c}, {h}, {w}) after that "
        "preprocessing; `predict.py` does it for you.",
    ]
    if onnx["available"]:
        lines += [
            f"- ONNX: input `{onnx['input']}`, {onnx['dtype']} (B, {c}, {h}, {w}), the raw pixels 0..255: the "
            "preprocessing above is inside the graph. Output `logits` (B, "
            f"{len(classes)}), in the order of the classes: {', '.join(classes)}. The same facts are in the "
            "file's metadata (`buildx`).",
            "",
            "```python",
            "import numpy as np, onnxruntime",
            "from PIL import Image",
            f'session = onnxruntime.InferenceSession("{card["code"]["filename"].removesuffix(".py")}'
            f'-run{card["run"]}.onnx")',
            f'image = Image.open("digit.png").convert("{"L" if c == 1 else "RGB"}").resize(({w}, {h}))',
            f"pixels = np.asarray(image, dtype=np.uint8).reshape({h}, {w}, {c}).transpose(2, 0, 1)[None]",
            f'(logits,) = session.run(["logits"], {{"{onnx["input"]}": pixels}})',
            f"print({classes!r}[int(logits.argmax(1)[0])])",
            "```",
        ]
    else:
        lines.append(
            "- ONNX: not offered for code written by the assistant (BuildX builds ONNX from its own compiler)."
        )
    lines.append("")
    return lines


def card_file(*, run: Run) -> tuple[str, bytes]:
    _finished(run)
    return f"{_stem(run)}-run{run.pk}-model-card.md", card_markdown(run).encode()


# --- The standalone bundle ---------------------------------------------------------------------------

PREDICT_SCRIPT = '''"""Classify images with the trained model: python predict.py IMAGE [IMAGE ...]

Needs torch and Pillow (requirements.txt). Preprocessing is the training's: the dataset's channels and size,
/ 255, then the script's EVAL_TRANSFORM.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

import buildx_runtime as rt
import {stem} as script

HERE = Path(__file__).resolve().parent
CLASS_NAMES = {class_names!r}
SOURCE_SHAPE = {source_shape!r}  # (C, H, W) of the dataset's images, before EVAL_TRANSFORM
USAGE = """usage: python predict.py IMAGE [IMAGE ...]

Classifies PNG or JPEG images with the trained model in model.safetensors: one line per image with its
three most likely classes. Try it on the examples: python predict.py examples/*.png"""


def load_model() -> torch.nn.Module:
    model = script.build_model()
    tensors, _metadata = rt.read_safetensors(HERE / "model.safetensors")
    model.load_state_dict(tensors)
    return model.eval()


def load_image(path: str) -> torch.Tensor:
    c, h, w = SOURCE_SHAPE
    try:
        im = ImageOps.exif_transpose(Image.open(path)).convert("RGB" if c == 3 else "L")
    except (OSError, UnidentifiedImageError) as e:
        raise SystemExit(f"{{path}}: not an image this script can read (PNG or JPEG): {{e}}") from None
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, c)
    return pixels.permute(2, 0, 1)


def main(paths: list[str]) -> int:
    if not paths or paths[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if paths else 2
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        print(f"No such file: {{', '.join(missing)}}\\n\\n{{USAGE}}", file=sys.stderr)
        return 2
    model = load_model()
    x = torch.stack([load_image(p) for p in paths]).float() / 255.0
    if script.EVAL_TRANSFORM is not None:
        x = script.EVAL_TRANSFORM(x)
    with torch.no_grad():
        probs = model(x).softmax(1)
    for path, row in zip(paths, probs):
        top = torch.topk(row, min(3, len(row)))
        best = ", ".join(f"{{CLASS_NAMES[i]}} {{p:.1%}}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{{path}}: {{best}}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

# What the bundle needs, named once: requirements.txt lists it and the README's commands install it. torch
# is the release that trained the model (any torch 2 should do; this one surely does); it prints a warning
# on import without numpy; Pillow reads images (predict.py, folders of images).
BUNDLE_REQUIREMENTS = ["numpy>=1.24", "pillow>=10"]
# The 8x8 digits ship inside scikit-learn; SVHN's MATLAB files are read with scipy.
DATASET_REQUIREMENTS = {"digits": ["scikit-learn>=1.3"], "SVHN": ["scipy>=1.8"]}


def dataset_requirements(dataset: str) -> list[str]:
    """What a bundle's script needs to read `dataset` beyond BUNDLE_REQUIREMENTS (a spec may spell it "svhn")."""
    return DATASET_REQUIREMENTS.get(datasets.canonical_name(dataset) or dataset, [])


def torch_requirement(run: Run) -> str:
    """``torch==X.Y.Z``: the release the run trained with (its local build label, "+cpu", left out)."""
    version = _environment(run)["torch"] or torch.__version__
    return f"torch=={version.split('+')[0]}"


EXAMPLES_PER_BUNDLE = 10  # test images in examples/, one per class while classes last

README = """# {name} (version {version}), trained by BuildX (run {run})

Files:

- `{stem}.py`: the exact script that trained this model (BuildX trained this file, nothing else).
- `buildx_runtime.py`: the small runtime module the script imports.
- `model.safetensors`: the trained weights (the model's `state_dict`, {checkpoint} checkpoint).
- `predict.py`: classify your own images with these weights.
- `examples/`: {examples_note}
- `requirements.txt`: what these need ({requirements}).
- `MODEL_CARD.md`: the design, dataset, hyperparameters, metrics, training curves, and how to feed the model.

## Run it

In this folder, with Python 3.10 or newer:

```bash
python -m venv .venv
. .venv/bin/activate
pip install -r requirements.txt
python predict.py {example_glob}
python {stem}.py {train_args}
```

In order: a clean environment (on Windows, activate it with `.venv\\Scripts\\activate`); what the files need;
`predict.py` classifies the example images (one line each: the file, then its three most likely classes;
`python predict.py` alone says how to use it); last, the script trains the model again {train_note}
and tests it on the held-out test images, printing each epoch as it goes.

## Use the weights in your own code

```python
import buildx_runtime as rt
import {stem}
model = {stem}.build_model()
tensors, _ = rt.read_safetensors("model.safetensors")
model.load_state_dict(tensors)
model.eval()
```

The model expects a float batch (B, C, H, W): the pixels / 255 (so in [0, 1]), then `{stem}.EVAL_TRANSFORM`
({eval_steps}). MODEL_CARD.md says it with the numbers, for this file and for the ONNX export.

Train on your own images: `python {stem}.py --data DIR`, where DIR holds one sub-folder of PNG/JPEG images
per class (or the standard MNIST / CIFAR-10 files); `python {stem}.py --help` lists the options.
"""


def _train_command(dataset: str) -> tuple[str, str]:
    """(arguments, a few words on the data) for the README's training command."""
    if dataset == "digits":
        return "--epochs 2", "for 2 epochs on the 8×8 digits that ship with scikit-learn"
    if dataset == "shapes":
        return "--epochs 2", "for 2 epochs on the generated shapes"
    return (
        f"--data ./{dataset} --epochs 2",
        f"for 2 epochs on the standard {dataset} files in ./{dataset} (run without them, it says where to get them)",
    )


def _example_images(run: Run, class_names: list[str]) -> dict[str, bytes]:
    """A few held-out test images as PNGs, one per class while classes last: {"examples/3-cat.png": ...}."""
    from PIL import Image

    found = predict.test_split(run)
    if found is None:
        return {}
    images, labels = found
    out: dict[str, bytes] = {}
    for label in range(min(len(class_names), EXAMPLES_PER_BUNDLE)):
        hits = (labels == label).nonzero().flatten()
        if not len(hits):
            continue
        array = images[int(hits[0])].permute(1, 2, 0).contiguous().numpy()
        im = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        buffer = io.BytesIO()
        im.save(buffer, format="PNG")
        name = re.sub(r"[^A-Za-z0-9]+", "_", class_names[label]).strip("_") or str(label)
        out[f"examples/{label}-{name}.png"] = buffer.getvalue()
    return out


def bundle_bytes(run: Run) -> bytes:
    from designs.services import RUNTIME_PATH

    tensors, artifact = state_dict(run)
    stem = _stem(run)
    folder = f"{stem}-run{run.pk}"
    card = model_card(run)
    class_names = list(card["dataset"]["classes"])
    examples = _example_images(run, class_names)
    requirements = [torch_requirement(run), *BUNDLE_REQUIREMENTS, *dataset_requirements(run.dataset)]
    train_args, train_note = _train_command(run.dataset)
    if run.dataset_ref is not None and run.dataset_ref.owner_id != run.owner_id:
        # A dataset shared with the owner's course: only its owner may download it.
        train_args = "--data ./dataset --epochs 2"
        train_note = (
            f"for 2 epochs on the dataset {run.dataset_ref.name!r} shared with your course: ask its owner "
            "for the zip and unzip it so that ./dataset holds the class folders"
        )
    elif run.dataset_ref is not None:
        # An uploaded dataset: its owner downloads it (the zip as uploaded, the same folder layout) and
        # trains on the folder, which buildx_runtime reads as class folders.
        train_args = "--data ./dataset --epochs 2"
        train_note = (
            f"for 2 epochs on your dataset {run.dataset_ref.name!r}: download it from the dataset's page "
            f"(/datasets/{run.dataset_ref_id}/, or GET /api/v1/datasets/{run.dataset_ref_id}/export/ while "
            "signed in as its owner) and unzip it so that ./dataset holds the class folders"
        )
    files = {
        f"{stem}.py": run.code_artifact.code.encode(),
        RUNTIME_NAME: RUNTIME_PATH.read_bytes(),
        "model.safetensors": weights_bytes(run),
        "predict.py": PREDICT_SCRIPT.format(
            stem=stem, class_names=class_names, source_shape=source_shape(run)
        ).encode(),
        "requirements.txt": "".join(f"{r}\n" for r in requirements).encode(),
        "README.md": README.format(
            name=card["design"]["name"],
            version=card["design"]["version"],
            run=run.pk,
            stem=stem,
            checkpoint=artifact.kind.replace("checkpoint_", ""),
            requirements=", ".join(re.split("[<>=]", r)[0] for r in requirements),
            examples_note=(
                "a few held-out test images, one per class, named after their true class."
                if examples
                else "(none: this server could not read the dataset's test images)."
            ),
            example_glob="examples/*.png" if examples else "YOUR_IMAGE.png",
            train_args=train_args,
            train_note=train_note,
            eval_steps=card["preprocessing"]["eval_text"],
        ).encode(),
        "MODEL_CARD.md": card_markdown(run).encode(),
        **examples,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, content in files.items():
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, content)
    return buffer.getvalue()


def bundle_file(*, run: Run) -> tuple[str, bytes]:
    return f"{_stem(run)}-run{run.pk}.zip", bundle_bytes(run)


def available(*, run: Run) -> dict[str, Any]:
    """The downloads this run offers now, with their URLs; ``reason`` when there are none yet."""
    base = f"/api/v1/runs/{run.pk}/export"
    if run.status != Run.Status.SUCCEEDED or predict.weights_artifact(run) is None:
        return {
            "exports": [],
            "predict_url": None,
            "card_url": None,
            "reason": _("The run has not finished training."),
        }
    exports = [
        {"kind": "weights", "label": _("Weights (safetensors)"), "url": f"{base}/weights/"},
        {"kind": "bundle", "label": _("Standalone bundle (zip)"), "url": f"{base}/bundle/"},
        {"kind": "card", "label": _("Model card (markdown)"), "url": f"{base}/card/"},
    ]
    answer: dict[str, Any] = {
        "exports": exports,
        "predict_url": f"/runs/{run.pk}/predict/",
        "card_url": f"/runs/{run.pk}/card/",
    }
    # The same rule as the ONNX download itself (training.predict.check_trusted), and its reason.
    if predict.is_trusted(run):
        exports.insert(1, {"kind": "onnx", "label": _("ONNX"), "url": f"{base}/onnx/"})
    else:
        answer["onnx_unavailable"] = onnx_unavailable_reason()
    return answer


def onnx_unavailable_reason() -> str:
    """Why a run of code written by the assistant, which BuildX cannot rebuild, has no ONNX export."""
    return _(
        "No ONNX: this run trained code written by the AI that BuildX cannot rebuild as the design's model "
        "(it runs only in the sandbox). Train the compiled code, or generate the code again, to get one."
    )
