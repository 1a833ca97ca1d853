"""Predictions with a trained run's model, in the web process.

What is trusted. A run's script may have been written by the LLM: building its model would execute
that code, so the web process never imports an artifact's code. The model of a run whose metrics
BuildX measured (compiled code, and LLM code under the weights contract) is rebuilt from the design
version's spec by the platform's own compiler (deterministic, and its output only contains the layer
constructors the catalog knows), the run's weights must fit that model exactly (same keys, same
shapes), and the model stays in a per-process cache: it is the model the test metrics describe. A
run of older LLM code predicts in a box of its own instead (``sandboxed``: the harness's "predict"
mode, one per request, seconds each, nothing cached here); ONNX, which needs the model in this
process, is refused for it with a 409 that says why.

Which weights. The test metrics describe the model as it was when ``train`` returned, stored as the
run's ``model``: predictions, the grid of mistakes and the exports use it so that they agree with
the accuracy the run page shows. ``last`` (then ``best``) is the fallback for runs from before the
final model was kept. Files are read as safetensors only (nothing is unpickled), the model's tensors
alone, from a local file (mapped, not read whole).

Preprocessing is the training pipeline: an image becomes the dataset's own channel count and size
(as the custom-dataset decoder does: EXIF orientation, Pillow's L/RGB conversion, bilinear resize),
uint8, then ``/ 255`` and the script's ``EVAL_TRANSFORM``, as ``Split.batches`` does for a batch.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import io
import logging
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext as _

from buildx import metrics
from designs import compiler
from designs.models import CodeArtifact
from library import services as library_services
from sandbox import runner as sandbox_runner
from sandbox.engine import buildx_runtime as rt
from sandbox.engine import datasets
from sandbox.files import ReadableFile
from training import limits
from training.models import Run, RunArtifact

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("PNG", "JPEG")
# Which stored weights a prediction uses, in order of preference (see the module docstring).
WEIGHT_KINDS = (RunArtifact.Kind.MODEL, RunArtifact.Kind.CHECKPOINT_LAST, RunArtifact.Kind.CHECKPOINT_BEST)


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
        self.index = 0  # which of the images sent; predict() sets it


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


def compiled_script(run: Run) -> str:
    """The platform compiler's script for the run's design version (never the stored artifact's text)."""
    return compiler.compile_version(run.design_version)


def weights_artifact(run: Run) -> RunArtifact | None:
    artifacts = {a.kind: a for a in run.artifacts.filter(kind__in=WEIGHT_KINDS)}
    for kind in WEIGHT_KINDS:
        if kind in artifacts:
            return artifacts[kind]
    return None


def saved_weights(run: Run) -> RunArtifact:
    """``weights_artifact``, or PredictRefused for a run that saved none."""
    artifact = weights_artifact(run)
    if artifact is None:
        raise PredictRefused("no_weights", _("This run saved no weights, so there is no model to use."))
    return artifact


@contextlib.contextmanager
def local_copy(artifact: RunArtifact) -> Iterator[Path]:
    """A path to the artifact's file on this machine: its own where the storage is a local disk, else a
    temporary copy streamed from the storage (S3 and its kin)."""
    try:
        yield Path(artifact.file.path)
        return
    except NotImplementedError:
        pass  # a remote storage has no path
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as tmp, artifact.file.open("rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            tmp.write(chunk)
        tmp.flush()
        yield Path(tmp.name)


def checkpoint_name(artifact: RunArtifact) -> str:
    names: dict[str, str] = {
        RunArtifact.Kind.CHECKPOINT_LAST: "last",
        RunArtifact.Kind.CHECKPOINT_BEST: "best",
    }
    return names.get(artifact.kind, "model")


def read_weights(artifact: RunArtifact) -> dict[str, torch.Tensor]:
    """The model's state dict from a weights or checkpoint file: safetensors only, ``model.`` prefix
    removed, an optimizer's state never loaded."""
    from safetensors import safe_open

    try:
        with local_copy(artifact) as path, safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            prefixed = any(k.startswith("model.") for k in keys)
            return {
                (k[len("model.") :] if prefixed else k): f.get_tensor(k)
                for k in keys
                if not prefixed or k.startswith("model.")
            }
    except Exception as e:  # a file missing from storage or damaged: an answer, not a 500
        logger.exception("Run %s: could not read %s", artifact.run_id, artifact.kind)
        raise PredictRefused("no_weights", _("This run's saved weights could not be read.")) from e


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
    """The design's compiled model describes this run (module docstring): rebuilt in this process."""
    if run.metrics_source:
        return run.metrics_source == Run.MetricsSource.PLATFORM
    return run.code_artifact.source == CodeArtifact.Source.COMPILED


def check_trusted(run: Run) -> None:
    """For what only an in-process model can do (ONNX): refuse code written by the assistant."""
    check_predictable(run)
    if not is_trusted(run):
        raise PredictRefused(
            "untrusted_code",
            _(
                "This run trained code written by the assistant that BuildX cannot rebuild as the design's "
                "model, so it runs only inside the sandbox and cannot be exported to ONNX. Train the "
                "compiled code of the same design, or generate the code again, to get one."
            ),
        )


def _source_shape(run: Run, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        return datasets.get_info(run.dataset).input_shape
    except (KeyError, ValueError):
        return input_shape  # an uploaded dataset: its images already have the model's input size


def build(run: Run) -> LoadedModel:
    """Rebuild the run's model from its spec and load its weights (no cache: see ``get_model``)."""
    check_trusted(run)
    artifact = saved_weights(run)
    try:
        code = compiled_script(run)
        namespace = compiler.load_compiled(code)
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
    c, h, w = (int(x) for x in namespace["INPUT_SHAPE"])
    input_shape = (c, h, w)
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    name = checkpoint_name(artifact)
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
        use_torch_threads(settings.PREDICT_TORCH_THREADS)
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
_thread_state = threading.local()


def use_torch_threads(count: int) -> None:
    """Torch's intra-op threads for the work of the calling thread (0 = torch's default), set once per
    thread: with OpenMP the count belongs to the thread that sets it, so a request thread or a pool thread
    sets its own (the settings' reasons are in settings.py: PREDICT_ and GENERATE_TORCH_THREADS)."""
    if count > 0 and getattr(_thread_state, "torch_threads", None) != count:
        torch.set_num_threads(count)
        _thread_state.torch_threads = count


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
            im: Image.Image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
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


def model_facts(run: Run, loaded: LoadedModel | None = None) -> ModelFacts:
    if loaded is not None:
        return ModelFacts(loaded.class_names, loaded.source_shape, loaded.checkpoint, loaded.epoch)
    artifact = saved_weights(run)
    report = run.design_version.report or {}
    dataset = report.get("dataset") or {}
    names = (run.metrics or {}).get("class_names") or dataset.get("class_names") or []
    shape = tuple(dataset.get("input_shape") or report.get("input_shape") or ())
    name = checkpoint_name(artifact)
    return ModelFacts([str(c) for c in names], _source_shape(run, shape), name, artifact.epoch)


def sandboxed(run: Run, *, images: torch.Tensor | None) -> dict:
    """The run's own script predicts in a box of its own (the harness's "predict" mode).

    ``images`` uint8 (N, C, H, W), or None for the run's test split. Returns the child's ``result``
    event. Costs a sandbox start (seconds): nothing of this code is kept in the web process.
    """
    artifact = saved_weights(run)
    events: list[dict] = []
    config: dict[str, Any] = {"mode": "predict", "weights": "weights.safetensors", "epochs": 1}
    dataset = None
    with contextlib.ExitStack() as stack:
        box = stack.enter_context(sandbox_runner.open_box())
        inputs: dict[str, ReadableFile] = {
            "weights.safetensors": stack.enter_context(artifact.file.open("rb"))
        }
        if images is not None:
            buffer = stack.enter_context(tempfile.TemporaryFile())
            rt.write_safetensors_file(buffer, {"images": images.contiguous()}, metadata={})
            buffer.seek(0)
            inputs["images.safetensors"] = buffer
            config["images"] = "images.safetensors"
        else:
            dataset = library_services.dataset_cache(run.dataset)
        limits.db_connections_release()  # seconds in the child: no pooled connection held meanwhile
        result = sandbox_runner.run_script(
            code=run.code_artifact.code,
            run_dir=box.run_dir,
            config=config,
            dataset=dataset,
            inputs=inputs,
            on_event=events.append,
            should_stop=lambda: False,
            wall_limit_s=settings.PREDICT_SANDBOX_SECONDS,
            trusted_code=False,
            box=box,
        )
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
    started = time.perf_counter()
    outcome = "error"
    try:
        answer = _predict(run=run, images=images, top_k=top_k)
        outcome = "sandboxed" if answer["sandboxed"] else "ok"
        return answer
    except (PredictRefused, ImageRejected) as refused:
        outcome = refused.code
        raise
    finally:
        metrics.PREDICTIONS.labels(outcome=outcome).inc()
        metrics.PREDICTION_LATENCY.observe(time.perf_counter() - started)


def _predict(*, run: Run, images: list[bytes], top_k: int) -> dict:
    check_predictable(run)
    loaded = get_model(run) if is_trusted(run) else None
    facts = model_facts(run, loaded)
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
    try:
        path = library_services.dataset_cache(run.dataset)
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
    facts = model_facts(run, get_model(run) if is_trusted(run) else None)
    artifact = saved_weights(run)
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
