"""Predictions with a trained run's model, in the web process.

What is trusted. A run's script may have been written by the LLM: building its model would execute
that code, so the web process never imports an artifact's code. For a run of *compiled* code the
model is rebuilt from the design version's spec by the platform's own compiler (deterministic, and
its output only contains the layer constructors the catalog knows), the run's checkpoint must fit
that model exactly (same keys, same shapes), and the model stays in a per-process cache. A run of
LLM code predicts in the training sandbox instead (``sandboxed``: engine/predict_child.py in a
bubblewrap child, one per request, seconds each, nothing cached here); ONNX, which needs the model
in this process, is refused for it with a 409 that says why.

Which weights. The harness's test metrics describe the model as it was when ``train`` returned,
which is the ``last`` checkpoint of a finished run: predictions, the grid of mistakes and the
exports use ``last`` so that they agree with the accuracy the run page shows. ``best`` (or the
stored model) is the fallback when a script saved no ``last``. Checkpoints are read as safetensors
only: nothing is unpickled.

Preprocessing is the training pipeline: an image becomes the dataset's own channel count and size
(as the custom-dataset decoder does: EXIF orientation, Pillow's L/RGB conversion, bilinear resize),
uint8, then ``/ 255`` and the script's ``EVAL_TRANSFORM``, as ``Split.batches`` does for a batch.
"""

from __future__ import annotations

import base64
import builtins
import collections
import io
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext as _

from designs.models import CodeArtifact
from sandbox.engine import buildx_runtime as rt
from training.models import Run, RunArtifact

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("PNG", "JPEG")
# Which stored weights a prediction uses, in order of preference (see the module docstring).
WEIGHT_KINDS = (RunArtifact.Kind.CHECKPOINT_LAST, RunArtifact.Kind.MODEL, RunArtifact.Kind.CHECKPOINT_BEST)


class PredictRefused(Exception):
    """A run the platform will not predict with, and why (an HTTP status and a code for the API)."""

    def __init__(self, code: str, message: str, *, http_status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


class ImageRejected(Exception):
    """An uploaded image that cannot be used; ``code`` is image_type | image_too_large | image_unreadable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class LoadedModel:
    run_id: int
    model: torch.nn.Module
    eval_transform: Any
    class_names: list[str]
    source_shape: tuple[int, int, int]  # (C, H, W) of the dataset's images, before EVAL_TRANSFORM
    input_shape: tuple[int, int, int]  # (C, H, W) the model takes, after EVAL_TRANSFORM
    checkpoint: str  # "last" | "model" | "best"
    epoch: int | None
    nbytes: int
    code: str  # the compiler's script the model was built from
    tensors: dict[str, torch.Tensor]  # the state dict as stored (exports reuse it)


# --- Building the model ------------------------------------------------------------------------------


def _import_runtime_only(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
    """The script's ``import buildx_runtime`` gets our module without touching ``sys.modules``."""
    if name == "buildx_runtime" and level == 0:
        return rt
    return builtins.__import__(name, globals, locals, fromlist, level)


def compiled_script(run: Run) -> str:
    """The platform compiler's script for the run's design version (never the stored artifact's text)."""
    from designs import compiler

    version = run.design_version
    return compiler.compile_spec(version.spec, design_name=version.design.name, version_number=version.number)


def execute_compiled(code: str) -> dict[str, Any]:
    """Execute the compiler's own output and return its module namespace.

    Only ever called with ``compiled_script()``: text from our compiler, not from a user or the LLM.
    ``__name__`` is not ``"__main__"``, so the script's ``rt.main(...)`` does not run.
    """
    namespace: dict[str, Any] = {
        "__name__": "buildx_compiled",
        "__builtins__": {**vars(builtins), "__import__": _import_runtime_only},
    }
    exec(compile(code, "<buildx compiled script>", "exec"), namespace)  # noqa: S102 - trusted, see above
    return namespace


def weights_artifact(run: Run) -> RunArtifact | None:
    artifacts = {a.kind: a for a in run.artifacts.filter(kind__in=WEIGHT_KINDS)}
    for kind in WEIGHT_KINDS:
        if kind in artifacts:
            return artifacts[kind]
    return None


def read_weights(artifact: RunArtifact) -> dict[str, torch.Tensor]:
    """The model's state dict from a checkpoint file: safetensors only, ``model.`` prefix removed."""
    from safetensors.torch import load as load_safetensors

    try:
        with artifact.file.open("rb") as f:
            tensors = load_safetensors(f.read())
    except Exception as e:  # a file missing from storage or damaged: an answer, not a 500
        logger.exception("Run %s: could not read %s", artifact.run_id, artifact.kind)
        raise PredictRefused("no_weights", _("This run's saved weights could not be read.")) from e
    if any(k.startswith("model.") for k in tensors):  # the runtime's checkpoints; optimizer state is dropped
        tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return tensors


def check_predictable(run: Run) -> None:
    """Raise PredictRefused unless the run has a final model to predict with."""
    if run.status != Run.Status.SUCCEEDED:
        if run.is_active():
            message = _("This run is still training (%(status)s). Predictions open when it has finished.")
        else:
            message = _(
                "This run did not finish training (%(status)s), so it has no final model. "
                "Resume it or train the design again."
            )
        raise PredictRefused("run_not_finished", message % {"status": run.get_status_display()})


def is_trusted(run: Run) -> bool:
    """Compiled code: the model may be rebuilt in this process from the spec (module docstring)."""
    return run.code_artifact.source == CodeArtifact.Source.COMPILED


def check_trusted(run: Run) -> None:
    """For what only an in-process model can do (ONNX): refuse code written by the assistant."""
    check_predictable(run)
    if not is_trusted(run):
        raise PredictRefused(
            "untrusted_code",
            _(
                "This run trained code written by the assistant. BuildX runs such code only inside the "
                "sandbox, so it cannot export it to ONNX. Train the compiled code of the same design to get one."
            ),
        )


def _source_shape(run: Run, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    from sandbox.engine import datasets

    try:
        return tuple(datasets.get_info(run.dataset).input_shape)
    except (KeyError, ValueError):
        return input_shape  # an uploaded dataset: its images already have the model's input size


def build(run: Run) -> LoadedModel:
    """Rebuild the run's model from its spec and load its weights (no cache: see ``get_model``)."""
    check_trusted(run)
    artifact = weights_artifact(run)
    if artifact is None:
        raise PredictRefused("no_weights", _("This run saved no weights, so there is no model to use."))
    try:
        code = compiled_script(run)
        namespace = execute_compiled(code)
        model = namespace["build_model"]()  # its initial weights are replaced below
    except Exception as e:  # a spec the compiler no longer accepts: an answer, not a 500
        logger.exception("Run %s: could not rebuild the model from its spec", run.pk)
        raise PredictRefused(
            "model_unavailable", _("BuildX could not rebuild this run's model from its design.")
        ) from e
    tensors = read_weights(artifact)
    expected = model.state_dict()
    if set(expected) != set(tensors) or any(expected[k].shape != tensors[k].shape for k in expected):
        raise PredictRefused(
            "weights_mismatch",
            _("The saved weights do not fit the design's model any more, so this run cannot predict."),
        )
    model.load_state_dict(tensors, strict=True)
    model.eval()
    input_shape = tuple(int(x) for x in namespace["INPUT_SHAPE"])
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    name = {
        RunArtifact.Kind.CHECKPOINT_LAST: "last",
        RunArtifact.Kind.CHECKPOINT_BEST: "best",
    }.get(artifact.kind, "model")
    class_names = (run.metrics or {}).get("class_names") or _class_names(run, namespace)
    return LoadedModel(
        run_id=run.pk,
        model=model,
        eval_transform=namespace.get("EVAL_TRANSFORM"),
        class_names=[str(c) for c in class_names],
        source_shape=_source_shape(run, input_shape),
        input_shape=input_shape,
        checkpoint=name,
        epoch=artifact.epoch,
        nbytes=nbytes,
        code=code,
        tensors=tensors,
    )


def _class_names(run: Run, namespace: dict) -> list[str]:
    report = run.design_version.report or {}
    names = (report.get("dataset") or {}).get("class_names")
    return names or [str(i) for i in range(int(namespace.get("NUM_CLASSES", 0)))]


# --- The per-process cache ----------------------------------------------------------------------------


class ModelCache:
    """Least recently used models, bounded by a count and by the bytes of their weights.

    One lock guards the table and the building, so two requests for a cold model build it once. A
    key includes the weights file's identity and time, so a run resumed and finished again is rebuilt.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.models: collections.OrderedDict[tuple, LoadedModel] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def key(self, run: Run) -> tuple:
        artifact = weights_artifact(run)
        return (run.pk, artifact.pk if artifact else None, artifact.updated_at if artifact else None)

    def get(self, run: Run) -> LoadedModel:
        check_trusted(run)
        _set_threads()
        key = self.key(run)
        with self.lock:
            if key in self.models:
                self.models.move_to_end(key)
                self.hits += 1
                return self.models[key]
            self.misses += 1
            loaded = build(run)
            for old in [k for k in self.models if k[0] == run.pk]:
                del self.models[old]
            self.models[key] = loaded
            self._evict(keep=key)
            return loaded

    def _evict(self, *, keep: tuple) -> None:
        max_models = max(int(settings.PREDICT_CACHE_MODELS), 1)
        max_bytes = int(settings.PREDICT_CACHE_BYTES)
        while len(self.models) > 1 and (
            len(self.models) > max_models or sum(m.nbytes for m in self.models.values()) > max_bytes
        ):
            oldest = next(iter(self.models))
            if oldest == keep:
                break
            del self.models[oldest]

    def clear(self) -> None:
        with self.lock:
            self.models.clear()
            self.hits = self.misses = 0

    def stats(self) -> dict:
        with self.lock:
            return {
                "models": len(self.models),
                "bytes": sum(m.nbytes for m in self.models.values()),
                "hits": self.hits,
                "misses": self.misses,
            }


models = ModelCache()
_threads_set = False


def _set_threads() -> None:
    """Intra-op threads for the web process's torch, once (the setting's reason is in settings.py)."""
    global _threads_set
    if not _threads_set and settings.PREDICT_TORCH_THREADS > 0:
        torch.set_num_threads(settings.PREDICT_TORCH_THREADS)
        _threads_set = True


def get_model(run: Run) -> LoadedModel:
    return models.get(run)


# --- Images -------------------------------------------------------------------------------------------


def decode_image(data: bytes, *, shape: tuple[int, int, int]) -> torch.Tensor:
    """PNG or JPEG bytes -> uint8 (C, H, W) at the dataset's shape, or ImageRejected with the reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > settings.PREDICT_MAX_IMAGE_BYTES:
        raise ImageRejected(
            "image_too_large",
            _("The image is %(size)s kB; the limit is %(max)s kB. Send a smaller image.")
            % {"size": len(data) // 1024, "max": settings.PREDICT_MAX_IMAGE_BYTES // 1024},
        )
    c, h, w = shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the PNG and JPEG parsers look at the bytes: the type is decided by content, not name.
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = im.size
        if width * height > settings.PREDICT_MAX_IMAGE_PIXELS:
            raise ImageRejected(
                "image_too_large",
                _("The image is %(w)d×%(h)d pixels; the limit is %(max)s pixels. Send a smaller image.")
                % {"w": width, "h": height, "max": f"{settings.PREDICT_MAX_IMAGE_PIXELS:,}"},
            )
        im.draft(
            "RGB" if c == 3 else "L", (w, h)
        )  # as the dataset decoder: JPEG decodes near the target size
        im = ImageOps.exif_transpose(im).convert("RGB" if c == 3 else "L")
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
        pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, c)
    except UnidentifiedImageError as e:
        raise ImageRejected(
            "image_type", _("This is not a PNG or JPEG image. Send a PNG or JPEG file.")
        ) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(
            "image_too_large", _("The image has too many pixels. Send a smaller image.")
        ) from e
    except ImageRejected:
        raise
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupted data
        raise ImageRejected(
            "image_unreadable", _("The image could not be read: the file is damaged or incomplete.")
        ) from e
    return pixels.permute(2, 0, 1).contiguous()


def preprocess(loaded: LoadedModel, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> the model's float input, exactly as ``Split.batches`` with EVAL_TRANSFORM."""
    x = images.float().div_(255.0)
    if loaded.eval_transform is not None:
        x = loaded.eval_transform(x)
    return x


def probabilities(loaded: LoadedModel, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> softmax probabilities (B, classes), float32 on the CPU."""
    with torch.inference_mode():
        logits = loaded.model(preprocess(loaded, images))
    return logits.float().softmax(1)


@dataclass
class ModelFacts:
    """What a prediction answers with besides probabilities; for a sandboxed model, from the run's rows."""

    class_names: list[str]
    source_shape: tuple[int, int, int]
    checkpoint: str
    epoch: int | None


def _facts(run: Run, loaded: LoadedModel | None = None) -> ModelFacts:
    if loaded is not None:
        return ModelFacts(loaded.class_names, loaded.source_shape, loaded.checkpoint, loaded.epoch)
    artifact = weights_artifact(run)
    if artifact is None:
        raise PredictRefused("no_weights", _("This run saved no weights, so there is no model to use."))
    report = run.design_version.report or {}
    dataset = report.get("dataset") or {}
    names = (run.metrics or {}).get("class_names") or dataset.get("class_names") or []
    shape = tuple(dataset.get("input_shape") or report.get("input_shape") or ())
    name = {RunArtifact.Kind.CHECKPOINT_LAST: "last", RunArtifact.Kind.CHECKPOINT_BEST: "best"}.get(
        artifact.kind, "model"
    )
    return ModelFacts([str(c) for c in names], _source_shape(run, shape), name, artifact.epoch)


def sandboxed(run: Run, *, images: torch.Tensor | None) -> dict:
    """Run sandbox/engine/predict_child.py on the run's own script in the training sandbox.

    ``images`` uint8 (N, C, H, W), or None for the run's test split. Returns the child's ``result``
    event. Costs a sandbox start (seconds): nothing of this code is kept in the web process.
    """
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    import sandbox.runner as sandbox

    artifact = weights_artifact(run)
    base = Path(settings.RUNS_WORK_DIR)
    base.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"predict-{run.pk}-", dir=base))
    # bubblewrap enters the folder before it drops to the sandbox's uid, without CAP_DAC_OVERRIDE:
    # mkdtemp's 0700 would shut it out once the folder belongs to that uid.
    run_dir.chmod(0o755)
    events: list[dict] = []
    try:
        with artifact.file.open("rb") as f:
            (run_dir / "weights.safetensors").write_bytes(f.read())
        config: dict[str, Any] = {"weights": str(run_dir / "weights.safetensors")}
        if images is not None:
            rt.write_safetensors(run_dir / "images.safetensors", {"images": images.contiguous()}, metadata={})
            config["images"] = str(run_dir / "images.safetensors")
        else:
            from sandbox.engine import datasets

            config["dataset_cache"] = str(datasets.ensure_cache(run.dataset, data_dir=settings.DATA_DIR))
        for name in ("weights.safetensors", "images.safetensors"):
            if (run_dir / name).exists():
                (run_dir / name).chmod(0o644)  # the child runs as another user
        child = sandbox.ENGINE_DIR / "predict_child.py"
        result = sandbox.run_script(
            code=run.code_artifact.code,
            run_dir=run_dir,
            config=config,
            on_event=events.append,
            should_stop=lambda: False,
            wall_limit_s=settings.PREDICT_SANDBOX_SECONDS,
            trusted_code=False,
            entry=[sys.executable, "-s", str(child), "--script", "script.py", "--config", "config.json"],
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    found = next((e for e in events if e.get("kind") == "result"), None)
    if result.status != "succeeded" or found is None:
        error = next((e for e in events if e.get("kind") == "error"), {})
        raise PredictRefused(
            "prediction_failed",
            _("The model could not run in the sandbox: %(cause)s")
            % {"cause": error.get("message") or result.cause or result.status},
        )
    return found


def _sandboxed_probabilities(run: Run, images: torch.Tensor, classes: int) -> torch.Tensor:
    rows = sandboxed(run, images=images).get("predictions")
    try:
        probs = torch.tensor(rows, dtype=torch.float32)
    except (TypeError, ValueError):
        probs = None
    # The script's own code ran in the child and could have written anything on the event channel.
    if probs is None or probs.shape != (len(images), classes):
        raise PredictRefused(
            "prediction_failed", _("The model in the sandbox answered in an unexpected shape.")
        )
    return probs


def predict(*, run: Run, images: list[bytes], top_k: int = 3) -> dict:
    """Classes and probabilities for each image. Raises PredictRefused or ImageRejected (with ``index``)."""
    check_predictable(run)
    loaded = get_model(run) if is_trusted(run) else None
    facts = _facts(run, loaded)
    batch = []
    for i, data in enumerate(images):
        try:
            batch.append(decode_image(data, shape=facts.source_shape))
        except ImageRejected as e:
            e.index = i
            raise
    uint8 = torch.stack(batch)
    if loaded is not None:
        probs = probabilities(loaded, uint8)
    else:
        probs = _sandboxed_probabilities(run, uint8, len(facts.class_names))
    k = min(max(top_k, 1), probs.shape[1])
    out = []
    for row in probs:
        top = torch.topk(row, k)
        out.append(
            {
                "class": facts.class_names[int(top.indices[0])],
                "class_index": int(top.indices[0]),
                "probability": float(top.values[0]),
                "top": [
                    {"class": facts.class_names[int(i)], "class_index": int(i), "probability": float(p)}
                    for p, i in zip(top.values, top.indices, strict=True)
                ],
                "probabilities": [round(float(p), 6) for p in row],
            }
        )
    return {
        "run": run.pk,
        "checkpoint": {"name": facts.checkpoint, "epoch": facts.epoch},
        "class_names": facts.class_names,
        "input_shape": list(facts.source_shape),
        "sandboxed": loaded is None,
        "predictions": out,
    }


# --- Mistakes on the test split ----------------------------------------------------------------------------


def png_data_url(image: torch.Tensor) -> str:
    """uint8 (C, H, W) -> a PNG data URL (the page shows it scaled up, pixelated)."""
    from PIL import Image

    array = image.permute(1, 2, 0).contiguous().numpy()
    im = Image.fromarray(array[:, :, 0] if image.shape[0] == 1 else array)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_split(run: Run) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The run's held-out test images (uint8) and labels, from the dataset cache; None if unavailable."""
    from sandbox.engine import datasets

    try:
        path = datasets.ensure_cache(run.dataset, data_dir=settings.DATA_DIR)
        dataset = rt.load_cache(path)
    except (FileNotFoundError, KeyError, ValueError):
        return None
    idx = dataset["test_idx"]
    return dataset["images"].index_select(0, idx), dataset["labels"].index_select(0, idx)


def _test_predictions(run: Run, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, its probability) per test image."""
    if is_trusted(run):
        loaded = get_model(run)
        chunks = [probabilities(loaded, images[s : s + 256]).max(1) for s in range(0, len(images), 256)]
        return torch.cat([c.indices for c in chunks]), torch.cat([c.values for c in chunks])
    found = sandboxed(run, images=None)
    try:
        predicted = torch.tensor(found.get("predicted"), dtype=torch.long)
        probability = torch.tensor(found.get("probability"), dtype=torch.float32)
    except (TypeError, ValueError):
        predicted = probability = torch.zeros(0)
    if predicted.shape != (len(images),) or probability.shape != (len(images),):
        raise PredictRefused(
            "prediction_failed", _("The model in the sandbox answered in an unexpected shape.")
        )
    return predicted, probability


def mistakes(*, run: Run, limit: int | None = None) -> dict:
    """Test images the model classifies wrongly (the first ``limit``), computed once and cached."""
    check_predictable(run)
    limit = limit or settings.PREDICT_MISTAKES
    facts = _facts(run, get_model(run) if is_trusted(run) else None)
    artifact = weights_artifact(run)
    key = f"predict:mistakes:{run.pk}:{artifact.pk}:{artifact.updated_at.timestamp()}:{limit}"
    found = cache.get(key)
    if found is not None:
        return found
    split = test_split(run)
    if split is None:
        result = {"run": run.pk, "available": False, "samples": 0, "wrong": 0, "mistakes": []}
    else:
        images, labels = split
        predicted, probability = _test_predictions(run, images)
        wrong = (predicted != labels).nonzero().flatten().tolist()
        result = {
            "run": run.pk,
            "available": True,
            "samples": len(images),
            "wrong": len(wrong),
            "mistakes": [
                {
                    "index": i,
                    "label": facts.class_names[int(labels[i])],
                    "predicted": facts.class_names[int(predicted[i])],
                    "probability": round(float(probability[i]), 4),
                    "image": png_data_url(images[i]),
                }
                for i in wrong[:limit]
            ],
        }
    cache.set(key, result, timeout=24 * 3600)
    return result
