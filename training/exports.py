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
import warnings
import zipfile
from typing import Any

import torch
from django.utils.translation import gettext as _

from designs.models import CodeArtifact
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


def onnx_bytes(run: Run) -> bytes:
    """The model as ONNX (opset 17): input ``input`` (B, C, H, W) already preprocessed, output ``logits``."""
    loaded = predict.get_model(run)
    model = copy.deepcopy(loaded.model).eval()  # the cached model keeps serving while this one is traced
    example = torch.zeros(1, *loaded.input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter needs nothing beyond torch (the dynamo one needs onnxscript); torch
        # marks it deprecated, which is not the user's concern.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # torch types f as a path; the TorchScript exporter takes a file
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return buffer.getvalue()


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
            "classes": class_names,
            "input_shape": report.get("input_shape"),
            "test_samples": metrics.get("samples"),
        },
        "hyperparameters": run.hyperparameters or {},
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
        "weights": {
            "checkpoint": artifact.kind if artifact else None,
            "epoch": artifact.epoch if artifact else None,
        },
        "environment": _environment(run),
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


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
        f"- Name: {card['dataset']['name']}",
        f"- Classes ({len(card['dataset']['classes'])}): {', '.join(card['dataset']['classes'])}",
        f"- Input shape (C, H, W): {tuple(card['dataset']['input_shape'] or ())}",
        f"- Test samples: {card['dataset']['test_samples'] or '–'}",
        "",
        "## Hyperparameters",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in sorted(card["hyperparameters"].items())] or ["- (defaults)"]
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
    return "\n".join(lines)


def card_file(*, run: Run) -> tuple[str, bytes]:
    _finished(run)
    return f"{_stem(run)}-run{run.pk}-model-card.md", card_markdown(run).encode()


# --- The standalone bundle ---------------------------------------------------------------------------

PREDICT_SCRIPT = '''"""Classify images with the trained model: python predict.py IMAGE [IMAGE ...]

Needs torch and Pillow. Preprocessing is the training's: the dataset's channels and size, / 255, then
the script's EVAL_TRANSFORM.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image, ImageOps

import buildx_runtime as rt
import {stem} as script

HERE = Path(__file__).resolve().parent
CLASS_NAMES = {class_names!r}
SOURCE_SHAPE = {source_shape!r}  # (C, H, W) of the dataset's images, before EVAL_TRANSFORM


def load_model() -> torch.nn.Module:
    model = script.build_model()
    tensors, _metadata = rt.read_safetensors(HERE / "model.safetensors")
    model.load_state_dict(tensors)
    return model.eval()


def load_image(path: str) -> torch.Tensor:
    c, h, w = SOURCE_SHAPE
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB" if c == 3 else "L")
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, c)
    return pixels.permute(2, 0, 1)


def main(paths: list[str]) -> None:
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


if __name__ == "__main__":
    main(sys.argv[1:])
'''

README = """# {name} (version {version}), trained by BuildX (run {run})

Files:

- `{stem}.py`: the exact script that trained this model (BuildX trained this file, nothing else).
- `buildx_runtime.py`: the small runtime module the script imports (needs only torch).
- `model.safetensors`: the trained weights (the model's `state_dict`, {checkpoint} checkpoint).
- `predict.py`: classify your own images with these weights (needs Pillow too).
- `MODEL_CARD.md`: the design, dataset, hyperparameters, metrics and training curves.

Classify images:

    pip install torch pillow
    python predict.py my_image.png

Load the weights in your own code:

    import buildx_runtime as rt
    import {stem}
    model = {stem}.build_model()
    tensors, _ = rt.read_safetensors("model.safetensors")
    model.load_state_dict(tensors)
    model.eval()

The model expects a float batch (B, C, H, W) in [0, 1] after `{stem}.EVAL_TRANSFORM`.

Train again (here, or anywhere with torch):

    python {stem}.py --data DIR [--epochs N]

DIR is a dataset folder: one sub-folder of PNG/JPEG images per class, or the standard MNIST / CIFAR-10 files.
"""


def bundle_bytes(run: Run) -> bytes:
    from designs.services import RUNTIME_PATH

    tensors, artifact = state_dict(run)
    stem = _stem(run)
    folder = f"{stem}-run{run.pk}"
    card = model_card(run)
    try:
        from sandbox.engine import datasets

        source_shape = tuple(datasets.get_info(run.dataset).input_shape)
    except KeyError:
        source_shape = tuple(card["dataset"]["input_shape"] or ())
    files = {
        f"{stem}.py": run.code_artifact.code.encode(),
        RUNTIME_NAME: RUNTIME_PATH.read_bytes(),
        "model.safetensors": weights_bytes(run),
        "predict.py": PREDICT_SCRIPT.format(
            stem=stem, class_names=list(card["dataset"]["classes"]), source_shape=source_shape
        ).encode(),
        "README.md": README.format(
            name=card["design"]["name"],
            version=card["design"]["version"],
            run=run.pk,
            stem=stem,
            checkpoint=artifact.kind.replace("checkpoint_", ""),
        ).encode(),
        "MODEL_CARD.md": card_markdown(run).encode(),
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
    trusted = run.code_artifact.source == CodeArtifact.Source.COMPILED
    if trusted:
        exports.insert(1, {"kind": "onnx", "label": _("ONNX"), "url": f"{base}/onnx/"})
    return {
        "exports": exports,
        "predict_url": f"/runs/{run.pk}/predict/",
        "card_url": f"/runs/{run.pk}/card/",
    }
