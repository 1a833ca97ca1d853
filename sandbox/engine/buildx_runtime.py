"""BuildX runtime: the one module a BuildX training script imports.

It gives a script its data already on the device, batch-wise transforms, mixed precision on CUDA,
epoch reporting, the stop signal, checkpoints and resume. It needs only torch (Pillow only to read a
folder of images, numpy only where present), so a downloaded script runs anywhere with
`python script.py` (digits, shapes) or `python script.py --data DIR`.

Two modes:
- inside BuildX, the harness configures the module and events go, one JSON object a line, to the
  file descriptor named by BUILDX_EVENTS_FD;
- standalone (`main()`), the same events are printed as readable lines.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CachedModel",
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Data",
    "Grayscale",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRotation",
    "RandomVerticalFlip",
    "Resize",
    "Split",
    "StopTraining",
    "TextData",
    "TokenSplit",
    "Tokenizer",
    "autocast",
    "clip_gradients",
    "evaluate",
    "evaluate_lm",
    "generate_text",
    "generate_tokens",
    "lm_loss",
    "log",
    "main",
    "next_token_accuracy",
    "report_epoch",
    "report_sample",
    "resume",
    "save_checkpoint",
    "seed_everything",
    "steps",
    "stop_requested",
]

CHECKPOINT_FORMAT = 1
PROGRESS_EVERY_S = 1.0  # at most one progress event a second: a chatty loop must not flood the pipe


class StopTraining(BaseException):
    """Raised at a batch boundary once a stop was requested.

    A BaseException, like KeyboardInterrupt, so that a script's `except Exception:` does not swallow it.
    """


# --- Module state ---------------------------------------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.events: io.TextIOBase | None = None  # the events pipe; None means standalone (print)
        self.device: torch.device | None = None
        self.checkpoint_dir = Path("checkpoints")
        self.resume = False
        self.stop = False
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.completed_epochs = 0  # epochs finished and reported; what a stop checkpoint records
        self.epochs: int | None = None  # the script's EPOCHS, for progress events
        self.last_metric: float | None = None
        self.best_metric: float | None = None
        self.epoch_started = time.monotonic()
        self.last_progress = 0.0


state = _State()


def emit(kind: str, **fields: Any) -> None:
    """Send one event: a JSON line on the events pipe, or a readable line when standalone."""
    if state.events is not None:
        state.events.write(json.dumps({"kind": kind, **fields}, default=_json_default) + "\n")
        return
    if kind == "log":
        print(fields["line"], flush=True)
    elif kind == "checkpoint":
        print(f"  saved checkpoint '{fields['name']}' (epoch {fields['epoch']})", flush=True)
    elif kind == "stopped":
        print(f"Stopped after {fields['epoch']} completed epoch(s).", flush=True)
    elif kind == "error":
        print(f"Error: {fields['message']}", file=sys.stderr, flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def configure(
    *,
    events_fd: int | None = None,
    device: torch.device | str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    epochs: int | None = None,
) -> None:
    """Set the runtime up for one run (the harness and main() call this; scripts do not)."""
    global state
    state = _State()
    if events_fd is not None:
        state.events = os.fdopen(events_fd, "w", buffering=1, encoding="utf-8", closefd=False)
    state.device = pick_device(device)
    if checkpoint_dir is not None:
        state.checkpoint_dir = Path(checkpoint_dir)
    state.resume = resume
    state.epochs = epochs
    _install_stop_handler()


def pick_device(device: torch.device | str | None = None) -> torch.device:
    """'auto' (or None) means CUDA where there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def current_device() -> torch.device:
    if state.device is None:
        state.device = pick_device()
    return state.device


def request_stop(signum: int, frame: Any) -> None:
    # Only a flag: the loop notices it at the next batch boundary, where model and optimizer agree.
    state.stop = True


def _install_stop_handler() -> None:
    with contextlib.suppress(ValueError):  # not the main thread: nobody can signal us anyway
        signal.signal(signal.SIGUSR1, request_stop)


def stop_requested() -> bool:
    return state.stop


def log(*parts: Any) -> None:
    """A log line from the script, e.g. rt.log("learning rate", lr)."""
    emit("log", line=" ".join(str(p) for p in parts), stream="runtime")


def seed_everything(seed: int) -> None:
    """Seed python, torch (CPU and every CUDA device) and numpy where present."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed % 2**32)


def autocast() -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on the CPU (where bf16 is slower for small CNNs)."""
    if current_device().type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- Data -----------------------------------------------------------------------------------------


class Split:
    """One part of a dataset, held on the device as uint8 images (N, C, H, W) and int64 labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str = "train") -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor (N, C, H, W)")
        if labels.shape != (images.shape[0],):
            raise ValueError("labels must be a tensor (N,) matching the images")
        self.images = images
        self.labels = labels.long()
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def batches(
        self, batch_size: int, *, shuffle: bool = False, transform: Callable | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) on the device: x float32 (B, C, H, W) in [0, 1], transformed; y int64 (B,).

        Raises StopTraining at a batch boundary once a stop was requested.
        """
        return self._batches(batch_size, shuffle=shuffle, transform=transform, watch=True)

    def _batches(
        self, batch_size: int, *, shuffle: bool, transform: Callable | None, watch: bool
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        batches = math.ceil(n / batch_size)
        order = torch.randperm(n, device=self.device) if shuffle else None
        channels_last = self.device.type == "cuda"
        for b in range(batches):
            if watch:
                if state.stop:
                    raise StopTraining()
                _progress(b, batches)
            if order is None:
                x = self.images[b * batch_size : (b + 1) * batch_size]
                y = self.labels[b * batch_size : (b + 1) * batch_size]
            else:
                # index_select on the device: one gather per batch, no per-sample Python.
                idx = order[b * batch_size : (b + 1) * batch_size]
                x = self.images.index_select(0, idx)
                y = self.labels.index_select(0, idx)
            x = x.float().div_(255.0)
            if transform is not None:
                x = transform(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def _progress(batch: int, batches: int) -> None:
    now = time.monotonic()
    if now - state.last_progress < PROGRESS_EVERY_S:
        return
    state.last_progress = now
    if state.events is not None:
        emit(
            "progress",
            epoch=state.completed_epochs + 1,
            epochs=state.epochs,
            batch=batch,
            batches=batches,
        )


class Data:
    """What train(model, data) gets: the train and validation splits, on the device."""

    def __init__(
        self,
        *,
        train: Split,
        val: Split,
        class_names: Sequence[str],
        device: torch.device | None = None,
    ) -> None:
        self.train = train
        self.val = val
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.device = device or train.device
        self.input_shape = tuple(train.images.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Data(train={len(self.train)}, val={len(self.val)}, classes={self.num_classes}, "
            f"input_shape={self.input_shape}, device={self.device})"
        )


def split_indices(labels: torch.Tensor, *, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministically hold out `share` of each class: returns (kept, held_out) index tensors, sorted."""
    labels = labels.cpu().long()
    n = labels.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    # A random order, then a stable sort by class: each class's block is in random order. Three whole-
    # tensor operations whatever the number of classes.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    order = order[torch.sort(labels[order], stable=True).indices]
    counts = torch.bincount(labels).tolist()
    held_mask = torch.zeros(n, dtype=torch.bool)
    start = 0
    for count in counts:
        k = int(round(count * share))
        if share > 0 and k == 0 and count > 1:
            k = 1  # every class shows up in the held-out part
        held_mask[start : start + k] = True
        start += count
    return order[~held_mask].sort().values, order[held_mask].sort().values


def make_data(
    dataset: dict,
    *,
    val_split: float,
    seed: int,
    device: torch.device | str | None = None,
) -> tuple[Data, Split]:
    """Turn a decoded dataset (see load_cache) into the script's Data and the harness's test Split."""
    device = pick_device(device) if device is None or isinstance(device, str) else device
    images, labels = dataset["images"], dataset["labels"]
    train_idx, test_idx = dataset["train_idx"], dataset["test_idx"]
    keep, hold = split_indices(labels[train_idx], share=val_split, seed=seed)
    val_idx, train_idx = train_idx[hold], train_idx[keep]

    def part(idx: torch.Tensor, name: str) -> Split:
        return Split(
            images.index_select(0, idx).to(device), labels.index_select(0, idx).to(device), name=name
        )

    data = Data(
        train=part(train_idx, "train"),
        val=part(val_idx, "val"),
        class_names=dataset["class_names"],
        device=device,
    )
    return data, part(test_idx, "test")


# --- Transforms: callables on a whole float batch (B, C, H, W) on its device --------------------------


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize to (size, size) or (h, w), bilinear with antialiasing when shrinking."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        shrink = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrink)


class CenterCrop:
    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.size
        top = (x.shape[-2] - h) // 2
        left = (x.shape[-1] - w) // 2
        if top < 0 or left < 0:
            x = F.pad(x, (max(-left, 0), max(-left, 0), max(-top, 0), max(-top, 0)))
            top, left = max(top, 0), max(left, 0)
        return x[..., top : top + h, left : left + w]


class RandomCrop:
    """A random (h, w) window per image, after zero padding on every side."""

    def __init__(self, size: int | Sequence[int], padding: int = 0) -> None:
        self.size = _pair(size)
        self.padding = int(padding)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding,) * 4)
        b, _, H, W = x.shape
        h, w = self.size
        top = torch.randint(0, H - h + 1, (b, 1), device=x.device)
        left = torch.randint(0, W - w + 1, (b, 1), device=x.device)
        rows = top + torch.arange(h, device=x.device)  # (B, h)
        cols = left + torch.arange(w, device=x.device)  # (B, w)
        # Two gathers instead of a loop over images: rows first, then columns.
        x = x.gather(2, rows[:, None, :, None].expand(-1, x.shape[1], -1, W))
        return x.gather(3, cols[:, None, None, :].expand(-1, x.shape[1], h, -1))


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(-1), x)


class RandomVerticalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(-2), x)


class RandomRotation:
    """Rotate each image by a random angle in [-degrees, degrees] (or [lo, hi]); corners fill with 0."""

    def __init__(self, degrees: float | Sequence[float]) -> None:
        if isinstance(degrees, (int, float)):
            degrees = (-abs(degrees), abs(degrees))
        self.degrees = (float(degrees[0]), float(degrees[1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.degrees
        angle = torch.empty(x.shape[0], device=x.device).uniform_(lo, hi) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        zero = torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_LUMA = (0.299, 0.587, 0.114)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance of an RGB batch (or the batch itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x[:, :3] * w).sum(1, keepdim=True)


class Grayscale:
    def __init__(self, num_output_channels: int = 1) -> None:
        self.num_output_channels = num_output_channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _gray(x).expand(-1, self.num_output_channels, -1, -1).contiguous()


def _factor(value: float | Sequence[float], centre: float) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return max(centre - value, 0.0), centre + value
    return float(value[0]), float(value[1])


class ColorJitter:
    """Random brightness, contrast, saturation and hue per image, batch-wise.

    Hue turns the colour around the luminance axis (a YIQ rotation): close to torchvision's HSV shift
    and far cheaper on a batch.
    """

    def __init__(
        self,
        brightness: float | Sequence[float] = 0,
        contrast: float | Sequence[float] = 0,
        saturation: float | Sequence[float] = 0,
        hue: float | Sequence[float] = 0,
    ) -> None:
        self.brightness = _factor(brightness, 1.0) if brightness else None
        self.contrast = _factor(contrast, 1.0) if contrast else None
        self.saturation = _factor(saturation, 1.0) if saturation else None
        # hue: a share of a full turn, drawn from [-hue, hue] (torchvision's meaning; at most 0.5).
        self.hue = (
            ((-abs(hue), abs(hue)) if isinstance(hue, (int, float)) else (float(hue[0]), float(hue[1])))
            if hue
            else None
        )

    def _rand(self, x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
        return torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(*bounds)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.brightness:
            x = x * self._rand(x, self.brightness)
        if self.contrast:
            mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
            x = mean + (x - mean) * self._rand(x, self.contrast)
        if x.shape[1] == 3 and self.saturation:
            g = _gray(x)
            x = g + (x - g) * self._rand(x, self.saturation)
        if x.shape[1] == 3 and self.hue:
            x = self.rotate_hue(x, self._rand(x, self.hue) * (2 * math.pi))
        return x.clamp(0.0, 1.0)

    @staticmethod
    def rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        to_yiq = torch.tensor(
            [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device
        )
        yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
        cos, sin = angle.cos(), angle.sin()
        i = yiq[:, 1:2] * cos - yiq[:, 2:3] * sin
        q = yiq[:, 1:2] * sin + yiq[:, 2:3] * cos
        yiq = torch.cat([yiq[:, :1], i, q], 1)
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._cache:
            mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            self._cache[key] = (mean, std)
        mean, std = self._cache[key]
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize({self.mean}, {self.std})"


# --- Evaluation -----------------------------------------------------------------------------------


def evaluate(
    model: nn.Module,
    split: Split,
    *,
    loss_fn: Callable,
    batch_size: int,
    transform: Callable | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy on a split, in eval mode, without gradients. One sync at the end."""
    if len(split) == 0:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=split.device)
    correct = torch.zeros((), device=split.device)
    with torch.no_grad():
        for x, y in split._batches(batch_size, shuffle=False, transform=transform, watch=False):
            with autocast():
                logits = model(x)
                loss = loss_fn(logits, y)
            total_loss += loss.float() * len(y)
            correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = len(split)
    return total_loss.item() / n, correct.item() / n


def predict(model: nn.Module, split: Split, *, batch_size: int, transform: Callable | None) -> torch.Tensor:
    """Predicted class per sample, (N,) int64 on the CPU."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for x, _ in split._batches(batch_size, shuffle=False, transform=transform, watch=False):
            with autocast():
                out.append(model(x).argmax(1))
    model.train(was_training)
    if not out:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(out).cpu()


def classification_report(
    predicted: torch.Tensor, actual: torch.Tensor, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class accuracy and the confusion matrix (rows: actual)."""
    k = len(class_names)
    actual = actual.cpu().long()
    predicted = predicted.cpu().long()
    cm = torch.bincount(actual * k + predicted, minlength=k * k).view(k, k)
    tp = cm.diag().double()
    support = cm.sum(1).double()  # samples of each actual class
    claimed = cm.sum(0).double()  # predictions of each class
    precision = torch.where(claimed > 0, tp / claimed.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp)
    )
    present = support > 0  # macro averages over the classes that appear in the split
    n = int(actual.numel())
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "precision": float(precision[present].mean()) if present.any() else 0.0,
        "recall": float(recall[present].mean()) if present.any() else 0.0,
        "f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": [float(r) for r in recall],
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
        "samples": n,
    }


def evaluate_test(
    model: nn.Module,
    split: Split,
    *,
    class_names: Sequence[str],
    transform: Callable | None,
    batch_size: int = 256,
) -> dict[str, Any]:
    return classification_report(
        predict(model, split, batch_size=batch_size, transform=transform), split.labels, class_names
    )


# --- Epochs, checkpoints and resume -----------------------------------------------------------------


def report_epoch(
    *,
    epoch: int,
    epochs: int,
    train_loss: float,
    train_acc: float,
    val_loss: float,
    val_acc: float,
    lr: float,
) -> None:
    """One `epoch` event and a printed line."""
    now = time.monotonic()
    seconds = now - state.epoch_started
    state.epoch_started = now
    state.completed_epochs = epoch
    state.epochs = epochs
    fields = {
        "epoch": epoch,
        "epochs": epochs,
        "train_loss": float(train_loss),
        "train_acc": float(train_acc),
        "val_loss": float(val_loss),
        "val_acc": float(val_acc),
        "lr": float(lr),
        "seconds": round(seconds, 3),
    }
    if state.events is not None:
        emit("epoch", **fields)
    print(
        f"Epoch {epoch}/{epochs}  train loss {train_loss:.4f} acc {train_acc:.1%}  "
        f"val loss {val_loss:.4f} acc {val_acc:.1%}  lr {lr:.3g}  {seconds:.1f}s",
        flush=True,
    )


def _register(model: nn.Module, optimizer: torch.optim.Optimizer | None, scheduler: Any) -> None:
    state.model = model
    if optimizer is not None:
        state.optimizer = optimizer
    if scheduler is not None:
        state.scheduler = scheduler


def save_checkpoint(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any = None,
    epoch: int,
    metric: float | None,
) -> None:
    """Write `last` (and `best` when `metric` improves) as safetensors + JSON, each atomically."""
    _register(model, optimizer, scheduler)
    state.completed_epochs = max(state.completed_epochs, epoch)
    metric = None if metric is None else float(metric)
    state.last_metric = metric
    improved = metric is not None and (state.best_metric is None or metric > state.best_metric)
    if improved:
        state.best_metric = metric
    _write_checkpoint(
        "last", model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, metric=metric
    )
    if improved and metric is not None:  # (improved implies a metric; said again for the type checker)
        _link_best(epoch=epoch, metric=metric)


def _link_best(*, epoch: int, metric: float) -> None:
    """`best` is this epoch's `last`: a second name for the same files, not a second serialisation.

    Safe because `last` is only ever replaced by a rename, which leaves the linked files untouched.
    """
    directory = state.checkpoint_dir
    for suffix in (".safetensors", ".json"):
        tmp = directory / f".best{suffix}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(directory / f"last{suffix}", tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(directory / f"last{suffix}", tmp)
        os.replace(tmp, directory / f"best{suffix}")
    emit("checkpoint", epoch=epoch, name="best", metric=metric)


def _write_checkpoint(
    name: str, *, model: nn.Module, optimizer: Any, scheduler: Any, epoch: int, metric: float | None
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model.{key}"] = value
    meta: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "metric": metric,
        "best_metric": state.best_metric,
        "optimizer": _flatten(optimizer.state_dict(), "optimizer", tensors)
        if optimizer is not None
        else None,
        "scheduler": _flatten(scheduler.state_dict(), "scheduler", tensors)
        if scheduler is not None
        else None,
    }
    directory = state.checkpoint_dir
    directory.mkdir(parents=True, exist_ok=True)
    # The safetensors file carries the metadata too, so that it is complete on its own; its rename is the
    # commit point. The JSON beside it is the platform's quick read.
    write_safetensors(directory / f"{name}.safetensors", tensors, metadata={"buildx": json.dumps(meta)})
    _atomic_write(directory / f"{name}.json", json.dumps(meta, indent=1).encode())
    emit("checkpoint", epoch=epoch, name=name, metric=metric)


def _flatten(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested state dict into `tensors`, leaving {"__tensor__": key} behind."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
        return {"__tensor__": prefix}
    if isinstance(value, dict):
        items = {k: _flatten(v, f"{prefix}.{k}", tensors) for k, v in value.items()}
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return items
        # JSON keys are strings, but optimizer state is keyed by int: keep the keys as pairs.
        return {"__pairs__": [[k, v] for k, v in items.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint ({prefix})")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__pairs__" in value:
            return {k: _unflatten(v, tensors) for k, v in value["__pairs__"]}
        return {k: _unflatten(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def resume(*, model: nn.Module, optimizer: torch.optim.Optimizer | None, scheduler: Any = None) -> int:
    """Load `last` when this run resumes; return the number of completed epochs (0 on a fresh run).

    Also registers model, optimizer and scheduler, so that a stop mid-epoch can save them.
    """
    _register(model, optimizer, scheduler)
    path = state.checkpoint_dir / "last.safetensors"
    if not state.resume or not path.exists():
        state.epoch_started = time.monotonic()
        return 0
    tensors, metadata = read_safetensors(path)
    meta = json.loads(metadata["buildx"])
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state)
    if optimizer is not None and meta.get("optimizer") is not None:
        optimizer.load_state_dict(_unflatten(meta["optimizer"], tensors))
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(_unflatten(meta["scheduler"], tensors))
    state.completed_epochs = int(meta["epoch"])
    state.last_metric = meta.get("metric")
    state.best_metric = meta.get("best_metric")
    state.epoch_started = time.monotonic()
    if state.events is None:
        # Standalone (`--resume`): say so. Under BuildX the platform's own line, in the viewer's language,
        # already says where the run resumes from; a second, near-identical one would only repeat it.
        print(f"Resumed from the checkpoint after epoch {state.completed_epochs}.", flush=True)
    return state.completed_epochs


def finish_stop() -> int:
    """After StopTraining: save `last` with the completed-epoch count, emit `stopped`; returns that count."""
    epoch = state.completed_epochs
    if state.model is not None:
        _write_checkpoint(
            "last",
            model=state.model,
            optimizer=state.optimizer,
            scheduler=state.scheduler,
            epoch=epoch,
            metric=state.last_metric,
        )
    emit("stopped", epoch=epoch)
    return epoch


# --- safetensors, written and read with torch alone -----------------------------------------------------

_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def _tensor_buffer(t: torch.Tensor) -> Any:
    """The tensor's bytes, lent by numpy without a copy where it can."""
    flat = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    try:
        return flat.numpy()
    except (ImportError, RuntimeError):  # torch without numpy: slower, still correct
        return bytes(flat.tolist())


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], *, metadata: dict[str, str]) -> None:
    """The safetensors format in a file at `path`, replaced atomically (see write_safetensors_file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:  # streamed: no second copy of the checkpoint in memory
        write_safetensors_file(f, tensors, metadata=metadata)
    os.replace(tmp, path)  # the commit point


def write_safetensors_file(f: Any, tensors: dict[str, torch.Tensor], *, metadata: dict[str, str]) -> None:
    """The safetensors format: u64 header length, JSON header, then the raw little-endian bytes."""
    header: dict[str, Any] = {"__metadata__": metadata}
    buffers, offset = [], 0
    for key in sorted(tensors):
        t = tensors[key]
        if t.dtype not in _ST_DTYPES:
            raise TypeError(f"cannot store a {t.dtype} tensor ({key})")
        size = t.numel() * t.element_size()
        header[key] = {
            "dtype": _ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        buffers.append(_tensor_buffer(t))
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format aligns the data to 8 bytes
    f.write(struct.pack("<Q", len(head)))
    f.write(head)
    for data in buffers:
        f.write(data)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file as plain data: nothing in it can run code."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", {}) or {}
    body = memoryview(raw)[8 + n :]
    tensors = {}
    for key, info in header.items():
        dtype = _ST_NAMES[info["dtype"]]
        start, end = info["data_offsets"]
        shape = info["shape"]
        if end == start:
            tensors[key] = torch.empty(shape, dtype=dtype)
        else:
            tensors[key] = torch.frombuffer(bytearray(body[start:end]), dtype=dtype).reshape(shape)
    return tensors, metadata


def _atomic_write(path: Path, data: bytes) -> None:
    # Write, then rename: a child killed mid-write leaves the previous file whole. No fsync: that guards
    # against the machine losing power, which ends the run anyway, and it costs tens of ms per epoch.
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# --- Reading datasets: the cache file, MNIST IDX, CIFAR batches, image folders ---------------------------


def load_cache(path: str | os.PathLike) -> dict[str, Any]:
    """A decoded dataset cache (written by BuildX): uint8 images, labels, class names, split indices.

    torch.load with weights_only=True reads tensors and plain containers and refuses anything else;
    mmap avoids copying the file, so loading takes milliseconds.
    """
    data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    keys = ("tokens", "splits", "tokenizer") if data.get("kind") == "text" else ()
    for key in keys or ("images", "labels", "class_names", "train_idx", "test_idx"):
        if key not in data:
            raise ValueError(f"{path} is not a BuildX dataset cache (no {key!r})")
    return data


IDX_TYPES = {0x08: torch.uint8, 0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32, 0x0D: torch.float32}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """An IDX file (MNIST's format), plain or gzipped: magic 0 0 type ndim, big-endian u32 sizes, data."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"{Path(path).name} is not an IDX file")
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    count = math.prod(dims)
    itemsize = torch.empty((), dtype=dtype).element_size()
    body = raw[4 + 4 * ndim :]
    if len(body) != count * itemsize:
        raise ValueError(f"{Path(path).name}: expected {count * itemsize} bytes of data, found {len(body)}")
    t = torch.frombuffer(bytearray(body), dtype=dtype) if count else torch.empty(0, dtype=dtype)
    if itemsize > 1:
        t = t.view(torch.uint8).view(-1, itemsize).flip(1).reshape(-1).view(dtype)  # big-endian to native
    return t.reshape(dims)


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles: allow only the numpy pieces an array needs, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # Protocol 2 written by Python 3 stores bytes as _codecs.encode(str, "latin1"): data, not code.
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a CIFAR batch may not contain {module}.{name}")


def read_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """One CIFAR python batch as a dict with str keys (the files use bytes keys, latin1 strings)."""
    with open(path, "rb") as f:
        obj = _CifarUnpickler(f, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{Path(path).name} is not a CIFAR batch")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_images(batch: dict[str, Any], *, labels_key: str = "labels") -> tuple[torch.Tensor, torch.Tensor]:
    if "data" not in batch or labels_key not in batch:
        raise ValueError(f"a CIFAR batch without {labels_key!r}")
    data = torch.as_tensor(batch["data"]).to(torch.uint8)
    labels = torch.as_tensor(batch[labels_key]).long()
    if data.dim() != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != data.shape[0]:
        raise ValueError("a CIFAR batch holds one 3072-byte row per label")
    return data.reshape(-1, 3, 32, 32), labels


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FILES = ["train", "test", "meta"]  # in cifar-100-python/; meta names the classes
SVHN_FILES = ["train_32x32.mat", "test_32x32.mat"]  # the cropped digits (the "extra" set is not used)
EMNIST_LETTERS_CLASSES = list("abcdefghijklmnopqrstuvwxyz")  # labels 1..26 in the files, 0..25 here
EMNIST_LETTERS_FILES = {
    "train_images": "emnist-letters-train-images-idx3-ubyte",
    "train_labels": "emnist-letters-train-labels-idx1-ubyte",
    "test_images": "emnist-letters-test-images-idx3-ubyte",
    "test_labels": "emnist-letters-test-labels-idx1-ubyte",
}


def find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_mnist_folder(
    folder: Path, class_names: Sequence[str] | None = None, *, files: dict[str, str] = MNIST_FILES
) -> dict[str, Any]:
    """MNIST's four IDX files (or another set's in the same layout, `files` naming them), official split."""
    paths = {key: find_file(folder, name) for key, name in files.items()}
    missing = [files[k] for k, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(f"missing in {folder}: {', '.join(missing)}")
    found = {key: path for key, path in paths.items() if path is not None}  # all of them, now
    xs = [read_idx(found["train_images"]), read_idx(found["test_images"])]
    ys = [read_idx(found["train_labels"]), read_idx(found["test_labels"])]
    for x, y in zip(xs, ys, strict=True):
        if x.dim() != 3 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"{folder}: image and label files do not match")
    images = torch.cat(xs).unsqueeze(1).contiguous()  # (N, 1, 28, 28)
    labels = torch.cat(ys).long()
    n_train = xs[0].shape[0]
    return {
        "images": images,
        "labels": labels,
        "class_names": list(class_names or [str(i) for i in range(10)]),
        "train_idx": torch.arange(n_train),
        "test_idx": torch.arange(n_train, len(labels)),
    }


def read_cifar10_folder(folder: Path) -> dict[str, Any]:
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"missing in {folder}: {', '.join(missing)}")
    parts = [_cifar_images(read_cifar_batch(folder / name)) for name in CIFAR10_FILES]
    class_names = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        meta = read_cifar_batch(folder / "batches.meta")
        class_names = [
            n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", class_names)
        ]
    images = torch.cat([p[0] for p in parts]).contiguous()
    labels = torch.cat([p[1] for p in parts])
    n_train = sum(len(p[1]) for p in parts[:-1])
    return {
        "images": images,
        "labels": labels,
        "class_names": class_names,
        "train_idx": torch.arange(n_train),
        "test_idx": torch.arange(n_train, len(labels)),
    }


def read_cifar100_folder(folder: Path) -> dict[str, Any]:
    """CIFAR-100's python version: `train` and `test` batches with fine (100) and coarse (20) labels; the
    fine ones are the classes, named in `meta`'s fine_label_names."""
    missing = [name for name in CIFAR100_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"missing in {folder}: {', '.join(missing)}")
    parts = [
        _cifar_images(read_cifar_batch(folder / name), labels_key="fine_labels") for name in ("train", "test")
    ]
    names = read_cifar_batch(folder / "meta").get("fine_label_names")
    if not isinstance(names, list) or not names:
        raise ValueError(f"{folder / 'meta'} names no classes (fine_label_names)")
    n_train = len(parts[0][1])
    return {
        "images": torch.cat([p[0] for p in parts]).contiguous(),
        "labels": torch.cat([p[1] for p in parts]),
        "class_names": [n.decode() if isinstance(n, bytes) else str(n) for n in names],
        "train_idx": torch.arange(n_train),
        "test_idx": torch.arange(n_train, n_train + len(parts[1][1])),
    }


def read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One SVHN cropped-digits file: MATLAB v5, X is (32, 32, 3, N) uint8 and y is (N, 1) with 1..10,
    where 10 is the digit 0. Returns images (N, 3, 32, 32) and labels 0..9."""
    try:
        from scipy.io import loadmat  # SVHN ships as MATLAB files; scipy reads them (its requirement)
    except ImportError:
        raise SystemExit("SVHN's files are MATLAB .mat files: `pip install scipy` to read them.") from None
    with open(path, "rb") as f:
        header = f.read(128)  # text, then a version (0x0100 is v5; v7.3 is HDF5) and the byte order
    if (
        len(header) < 128
        or header[124:126] not in (b"\x00\x01", b"\x01\x00")
        or header[126:] not in (b"IM", b"MI")
    ):
        raise ValueError(f"{Path(path).name} is not an SVHN MATLAB v5 file")
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as e:  # whatever scipy raises on a truncated or damaged body
        raise ValueError(f"{Path(path).name} is not an SVHN MATLAB v5 file ({type(e).__name__}: {e})") from e
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.dtype.name != "uint8" or x.ndim != 4 or tuple(x.shape[:3]) != (32, 32, 3):
        raise ValueError(f"{Path(path).name}: expected X as 32x32x3xN uint8 and y as Nx1")
    labels = torch.as_tensor(y.reshape(-1).astype("int64"))
    if len(labels) != x.shape[3]:
        raise ValueError(f"{Path(path).name}: {x.shape[3]} images but {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 1 or int(labels.max()) > 10):
        raise ValueError(f"{Path(path).name}: labels must lie in 1..10 (10 is the digit 0)")
    images = torch.as_tensor(x).permute(3, 2, 0, 1).contiguous()  # (32, 32, 3, N) -> (N, 3, 32, 32)
    return images, labels % 10  # 10 -> 0


def read_svhn_folder(folder: Path) -> dict[str, Any]:
    missing = [name for name in SVHN_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"missing in {folder}: {', '.join(missing)}")
    (x_train, y_train), (x_test, y_test) = (read_svhn_mat(folder / name) for name in SVHN_FILES)
    return {
        "images": torch.cat([x_train, x_test]),
        "labels": torch.cat([y_train, y_test]),
        "class_names": [str(i) for i in range(10)],
        "train_idx": torch.arange(len(y_train)),
        "test_idx": torch.arange(len(y_train), len(y_train) + len(y_test)),
    }


def read_emnist_letters_folder(folder: Path) -> dict[str, Any]:
    """EMNIST letters: MNIST's IDX layout, labels 1..26 for a..z, and every image stored transposed (as
    a column-major 28x28): it is turned back here so that letters read upright, as MNIST's digits do."""
    decoded = read_mnist_folder(folder, EMNIST_LETTERS_CLASSES, files=EMNIST_LETTERS_FILES)
    labels = decoded["labels"]
    if len(labels) and (int(labels.min()) < 1 or int(labels.max()) > 26):
        raise ValueError(f"{folder}: EMNIST letters' labels must lie in 1..26")
    decoded["labels"] = labels - 1  # 1..26 -> 0..25
    decoded["images"] = decoded["images"].transpose(2, 3).contiguous()  # (N, 1, 28, 28), upright
    return decoded


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def read_image_folder(folder: Path, *, test_share: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """One sub-folder per class (or train/ and test/ each holding those), PNG or JPEG; needs Pillow.

    Every image is resized to the first image's size; its channels follow the majority (gray or RGB).
    """
    try:
        from PIL import Image
    except ImportError as e:
        raise SystemExit("Reading a folder of images needs Pillow: pip install pillow") from e

    def classes_in(root: Path) -> list[str]:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    roots = (
        [folder / "train", folder / "test"]
        if (folder / "train").is_dir() and (folder / "test").is_dir()
        else [folder]
    )
    class_names = classes_in(roots[0])
    if len(class_names) < 2:
        raise ValueError(f"{folder} needs at least two class folders")
    files: list[tuple[Path, int, int]] = []
    for r, root in enumerate(roots):
        for c, name in enumerate(class_names):
            for p in sorted((root / name).rglob("*")):
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                    files.append((p, c, r))
    if not files:
        raise ValueError(f"no PNG or JPEG images under {folder}")
    pics = [Image.open(p) for p, _, _ in files]
    rgb = sum(im.mode not in ("L", "1", "I", "I;16", "LA") for im in pics) * 2 > len(pics)
    size = pics[0].size
    arrays = []
    for pic in pics:
        im = pic.convert("RGB" if rgb else "L")
        if im.size != size:
            im = im.resize(size)
        t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(size[1], size[0], -1)
        arrays.append(t.permute(2, 0, 1))
    images = torch.stack(arrays).contiguous()
    labels = torch.tensor([c for _, c, _ in files])
    if len(roots) == 2:
        where = torch.tensor([r for _, _, r in files])
        train_idx, test_idx = (where == 0).nonzero().flatten(), (where == 1).nonzero().flatten()
    else:
        train_idx, test_idx = split_indices(labels, share=test_share, seed=seed)
    return {
        "images": images,
        "labels": labels,
        "class_names": class_names,
        "train_idx": train_idx,
        "test_idx": test_idx,
    }


def read_dataset_folder(path: str | os.PathLike) -> dict[str, Any]:
    """Whatever --data names: a BuildX cache file, MNIST IDX files, CIFAR-10 batches or class folders."""
    path = Path(path)
    if path.is_file():
        return load_cache(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    if find_file(path, MNIST_FILES["train_images"]):
        return read_mnist_folder(path)
    if find_file(path, EMNIST_LETTERS_FILES["train_images"]):
        return read_emnist_letters_folder(path)
    if (path / SVHN_FILES[0]).is_file():
        return read_svhn_folder(path)
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file():
            return read_cifar10_folder(folder)
    for folder in (path, path / "cifar-100-python"):
        if (folder / "train").is_file() and (folder / "meta").is_file():
            return read_cifar100_folder(folder)
    return read_image_folder(path)


# --- Built-in datasets that need no folder: the same images and test split as inside BuildX ---------------

TEST_SHARE = 0.2  # of digits and shapes, which ship without a test split
SPLIT_SEED = 0  # the test split never changes between runs
# The runtime ships alone in the download bundle, so it keeps its own copy of the shapes' class names
# (pinned to sandbox/engine/dataset_facts.py by a test), as it does CIFAR-10's.
SHAPES_CLASSES = ["circle", "square", "triangle", "cross"]


def load_digits() -> dict[str, Any]:
    """scikit-learn's shipped 8x8 digits (values 0..16), scaled to uint8 0..255."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise SystemExit("The digits dataset ships with scikit-learn: pip install scikit-learn") from e

    bunch = sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).mul(255.0 / 16.0).round().clamp(0, 255)
    images = images.to(torch.uint8).unsqueeze(1).contiguous()  # (1797, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = split_indices(labels, share=TEST_SHARE, seed=SPLIT_SEED)
    return {
        "images": images,
        "labels": labels,
        "class_names": [str(i) for i in range(10)],
        "train_idx": train_idx,
        "test_idx": test_idx,
    }


def generate_shapes(
    *,
    per_class: int = 600,
    size: int = 32,
    seed: int = 0,
    noise: float = 0.08,
    class_names: Sequence[str] = SHAPES_CLASSES,
) -> dict[str, Any]:
    """Coloured shapes on coloured backgrounds, random in place, size and turn, plus Gaussian noise.

    All tensors, no per-image loop: each class's mask is a test on a coordinate grid. The same seed
    gives the same bytes.
    """
    g = torch.Generator().manual_seed(seed)
    n = per_class * len(class_names)
    labels = torch.arange(len(class_names)).repeat_interleave(per_class)
    labels = labels[torch.randperm(n, generator=g)]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, 1, 1, generator=g) * (hi - lo) + lo

    r = uniform(0.22, 0.40) * size  # circumradius, pixels
    cx = uniform(0.0, 1.0) * (size - 2 * r) + r
    cy = uniform(0.0, 1.0) * (size - 2 * r) + r
    turn = uniform(0.0, 2 * math.pi)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = coords.view(1, 1, size) - cx  # (N, 1, W)
    dy = coords.view(1, size, 1) - cy  # (N, H, 1)
    u = dx * turn.cos() + dy * turn.sin()  # (N, H, W) in the shape's own turned frame
    v = -dx * turn.sin() + dy * turn.cos()

    circle = u**2 + v**2 <= r**2
    half = r / math.sqrt(2)  # a square inscribed in the circle
    square = (u.abs() <= half) & (v.abs() <= half)
    # An equilateral triangle: inside all three edges, whose normals are 120 degrees apart.
    triangle = torch.ones_like(circle)
    for k in range(3):
        a = 2 * math.pi * k / 3
        triangle &= u * math.cos(a) + v * math.sin(a) <= r / 2
    arm = r * 0.3
    cross = ((u.abs() <= arm) & (v.abs() <= r)) | ((v.abs() <= arm) & (u.abs() <= r))
    masks = torch.stack([circle, square, triangle, cross])  # (4, N, H, W)
    mask = masks[labels, torch.arange(n)].unsqueeze(1)  # (N, 1, H, W)

    # Foreground and background colours far enough apart to see: one light, one dark, either way round.
    light = torch.rand(n, 3, 1, 1, generator=g) * 0.4 + 0.6
    dark = torch.rand(n, 3, 1, 1, generator=g) * 0.4
    swap = torch.rand(n, 1, 1, 1, generator=g) < 0.5
    fg, bg = torch.where(swap, dark, light), torch.where(swap, light, dark)
    images = torch.where(mask, fg, bg) + torch.randn(n, 3, size, size, generator=g) * noise
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8).contiguous()
    train_idx, test_idx = split_indices(labels, share=TEST_SHARE, seed=SPLIT_SEED)
    return {
        "images": images,
        "labels": labels,
        "class_names": list(class_names),
        "train_idx": train_idx,
        "test_idx": test_idx,
    }


# Where the others come from (BuildX's `fetch_dataset` reads the same addresses), and the files they are.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"  # unpacks to cifar-10-batches-py/
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"  # at CIFAR10_URL too; unpacks to cifar-100-python/
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/"
EMNIST_ARCHIVE = "gzip.zip"  # every EMNIST split, gzipped IDX files under gzip/
# Where an archive unpacks, by dataset: the folder a script looks in when --data is not given.
UNPACKED = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
NO_FOLDER: dict[str, Callable[[], dict[str, Any]]] = {"digits": load_digits, "shapes": generate_shapes}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def how_to_get(dataset: str, folder: Path) -> str:
    """What to do when a dataset's folder is not there: the files, where from, and the command again."""
    key = _key(dataset)
    script = Path(sys.argv[0]).name or "script.py"
    if key in ("mnist", "fashionmnist"):
        url = MNIST_URL if key == "mnist" else FASHION_URL
        fetch = "\n".join(f"    curl -fLo {folder}/{name}.gz {url}{name}.gz" for name in MNIST_FILES.values())
        return (
            f"{dataset} is not in {folder}/. This script trains on the standard {dataset} files; get them with:\n\n"
            f"    mkdir -p {folder}\n{fetch}\n\n"
            f"(or download those four files from {url} in a browser), then run again:\n\n"
            f"    python {script} --data {folder}"
        )
    if key in ("cifar10", "cifar100"):
        archive, title = (
            (CIFAR10_ARCHIVE, "CIFAR-10") if key == "cifar10" else (CIFAR100_ARCHIVE, "CIFAR-100")
        )
        return (
            f"{title} is not in {folder}/. Get the standard python version with:\n\n"
            f"    curl -fLO {CIFAR10_URL}{archive}\n"
            f"    tar xzf {archive}\n\n"
            f"(or download {CIFAR10_URL}{archive} in a browser and unpack it), then run again:\n\n"
            f"    python {script} --data ./{UNPACKED[key]}"
        )
    if key == "svhn":
        fetch = "\n".join(f"    curl -fLo {folder}/{name} {SVHN_URL}{name}" for name in SVHN_FILES)
        return (
            f"SVHN is not in {folder}/. Get the cropped digits (MATLAB files; reading them needs scipy) with:\n\n"
            f"    mkdir -p {folder}\n{fetch}\n\n"
            f"then run again:\n\n    python {script} --data {folder}"
        )
    if key == "emnistletters":
        members = " ".join(f"gzip/{name}.gz" for name in EMNIST_LETTERS_FILES.values())
        return (
            f"EMNIST letters are not in {folder}/. Get them from NIST's archive of every EMNIST split "
            f"(about 560 MB) with:\n\n"
            f"    curl -fLO {EMNIST_URL}{EMNIST_ARCHIVE}\n"
            f"    unzip -j -d {folder} {EMNIST_ARCHIVE} {members}\n\n"
            f"then run again:\n\n    python {script} --data {folder}"
        )
    return (
        f"{folder} does not exist. --data names a dataset folder: one sub-folder of PNG or JPEG images per class, "
        f"the standard MNIST, EMNIST letters, CIFAR-10, CIFAR-100 or SVHN files, or a BuildX cache file."
    )


def load_dataset(data: str | None, *, dataset: str) -> dict[str, Any]:
    """What `--data` names (a folder, a BuildX cache file, or digits/shapes, which need no folder), or the
    script's own DATASET when it is not given. A dataset that is not there ends the program with what to
    do (SystemExit), not a traceback."""
    if data is None:
        if _key(dataset) in NO_FOLDER:
            return NO_FOLDER[_key(dataset)]()
        unpacked = Path(UNPACKED.get(_key(dataset), dataset))  # where CIFAR's archives unpack
        data = str(unpacked) if unpacked.is_dir() else f"./{dataset}"
    path = Path(data)
    if path.exists():
        return read_dataset_folder(path)
    if _key(path.name) in NO_FOLDER:  # `--data ./digits`, as scripts' docstrings used to say
        return NO_FOLDER[_key(path.name)]()
    raise SystemExit(how_to_get(dataset, path))


# --- Language models: token streams, random windows, samples, generation --------------------------------
#
# A text dataset is one stream of token ids (uint16 or int32) split by position: train, then validation,
# then test. Batches are random windows gathered on the device in one indexing operation (nanoGPT's
# get_batch), never a per-sample loader.

TEXT_CACHE_VERSION = 1
# The runtime ships alone in the download bundle, so it keeps its own copy of the built-in corpora's
# alphabets (pinned to sandbox/engine/corpus_facts.py by a test).
CORPUS_ALPHABETS = {
    "addition": "0123456789+=\n",
    "brackets": "()[]{}\n",
    "grammar": " .abcdefghijklmnopqrstuvwxyz\n",
    "python": "\t\n" + "".join(chr(c) for c in range(32, 127)),
}
CORPUS_PROMPTS = {"addition": "12+35=", "brackets": "([", "grammar": "the ", "python": "def "}
TRAIN_SHARE, VAL_SHARE = 0.9, 0.05
PYTHON_CORPUS_CHARS = 2_000_000  # enough Python to learn its look; built in a second or two
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""


class Tokenizer:
    """Text <-> token ids.

    kind "char": one id per character of `alphabet` (other characters are dropped). kind "bpe": byte-level
    BPE (GPT-2's scheme, trained by BuildX with the tokenizers library): every token is a byte string
    (`pieces`, hex), so decoding needs nothing but this class; encoding applies `merges` in rank order.
    """

    def __init__(
        self, *, kind: str, alphabet: str = "", pieces: Sequence[str] = (), merges: Sequence[str] = ()
    ):
        self.kind = kind
        self.alphabet = alphabet
        self.index: dict[str, int] = {c: i for i, c in enumerate(alphabet)}  # char: character -> id
        self.pieces = [c.encode() for c in alphabet] if kind == "char" else [bytes.fromhex(p) for p in pieces]
        self.piece_index: dict[bytes, int] = {p: i for i, p in enumerate(self.pieces)}  # bpe: bytes -> id
        self.ranks = {tuple(bytes.fromhex(h) for h in m.split(" ")): r for r, m in enumerate(merges)}
        self.merges = list(merges)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tokenizer:
        return cls(
            kind=data["kind"],
            alphabet=data.get("alphabet", ""),
            pieces=data.get("pieces", ()),
            merges=data.get("merges", ()),
        )

    def as_json(self) -> dict[str, Any]:
        if self.kind == "char":
            return {"kind": "char", "alphabet": self.alphabet}
        return {"kind": "bpe", "pieces": [p.hex() for p in self.pieces], "merges": self.merges}

    def encode(self, text: str) -> list[int]:
        if self.kind == "char":
            return [self.index[c] for c in text if c in self.index]
        import re

        ids: list[int] = []
        for chunk in re.findall(GPT2_SPLIT, text):
            parts = [bytes([b]) for b in chunk.encode("utf-8")]
            while len(parts) > 1:
                pairs = [
                    (self.ranks.get((a, b), 1 << 30), i)
                    for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))
                ]
                rank, i = min(pairs)
                if rank == 1 << 30:
                    break
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
            ids += [self.piece_index[p] for p in parts if p in self.piece_index]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        n = len(self.pieces)
        return b"".join(self.pieces[i] for i in ids if 0 <= i < n).decode("utf-8", errors="replace")


class TokenSplit:
    """One part of a token stream, held on the device as int64 ids (N,)."""

    def __init__(self, tokens: torch.Tensor, *, name: str = "train") -> None:
        if tokens.dim() != 1:
            raise ValueError("tokens must be a 1-D tensor of ids")
        self.tokens = tokens.long()
        self.name = name

    def __len__(self) -> int:
        return self.tokens.numel()

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def batch(
        self, batch_size: int, context_length: int, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: x (B, T) token ids and y (B, T), the same windows one token later."""
        T = context_length
        if len(self) < T + 1:
            raise ValueError(f"the {self.name} split has {len(self)} tokens, fewer than a window of {T + 1}")
        starts = torch.randint(
            len(self) - T, (batch_size,), device=self.device if generator is None else generator.device,
            generator=generator,
        ).to(self.device)  # fmt: skip
        windows = self.tokens[starts[:, None] + torch.arange(T + 1, device=self.device)]  # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]


class TextData:
    """What a language model's train(model, data) gets: the train and validation token streams."""

    def __init__(
        self, *, train: TokenSplit, val: TokenSplit, tokenizer: Tokenizer, device: torch.device | None = None
    ) -> None:
        self.train = train
        self.val = val
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.device = device or train.device

    def __repr__(self) -> str:
        return (
            f"TextData(train={len(self.train)} tokens, val={len(self.val)} tokens, "
            f"vocab_size={self.vocab_size}, device={self.device})"
        )


def steps(epoch: int, steps_per_epoch: int) -> Iterator[int]:
    """The global step numbers of one epoch ((epoch - 1) * steps_per_epoch, ...). Raises StopTraining at a
    step boundary once a stop was requested, and sends throttled progress events, as Split.batches does."""
    for i in range(steps_per_epoch):
        if state.stop:
            raise StopTraining()
        _progress(i, steps_per_epoch)
        yield (epoch - 1) * steps_per_epoch + i


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Scale the gradients down when their total norm is over max_norm (0: leave them); returns the norm."""
    if max_norm <= 0:
        return 0.0
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of next-token scores (B, T, V) against the next tokens (B, T)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))


def next_token_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The share of positions whose next token got the top score: scores (B, T, V), next tokens (B, T); a 0-d
    tensor on their device (no sync). It is (logits.argmax(-1) == targets).float().mean(), except where
    several tokens tie for the top score, which counts for the target here; the top score and a compare
    because argmax over the last dimension is about 15 times slower on the CPU (1.5% of a tiny GPT's step)."""
    scores = logits.detach()
    target_scores = scores.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (target_scores >= scores.amax(-1)).float().mean()


def evaluate_lm(
    model: nn.Module, split: TokenSplit, *, batch_size: int, context_length: int, batches: int = 20
) -> tuple[float, float]:
    """Mean loss and next-token accuracy on `batches` random windows of a split (the same windows every
    time: a fixed seed), in eval mode, without gradients."""
    if len(split) < context_length + 1:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=split.device).manual_seed(1234)
    total_loss = torch.zeros((), device=split.device)
    correct = torch.zeros((), device=split.device)
    with torch.no_grad():
        for _ in range(batches):
            x, y = split.batch(batch_size, context_length, generator=generator)
            with autocast():
                logits = model(x)
            total_loss += lm_loss(logits, y)
            correct += next_token_accuracy(logits, y)
    model.train(was_training)
    return total_loss.item() / batches, correct.item() / batches


# Torch's layers that act on each position alone: a cached read passes the new positions through them.
_POSITIONWISE = (
    nn.Dropout, nn.Embedding, nn.GELU, nn.Identity, nn.LayerNorm, nn.Linear, nn.ReLU, nn.RMSNorm, nn.Sigmoid,
    nn.SiLU, nn.Tanh,
)  # fmt: skip
# The script classes (designs/sequence.py writes them) a cached read knows how to step, and those that mix
# positions.
_STEPPED = frozenset(
    {"TokenAndPosition", "PositionalEmbedding", "CausalSelfAttention", "MLP", "TransformerBlock"}
)
_MIXING = frozenset({"CausalSelfAttention", "TransformerBlock"})


class CachedModel:
    """A compiled language model read one new token at a time, for generation in eval mode.

    Without a cache every new token runs the whole window through the model again, although the keys and
    values of the earlier positions do not change. This reader keeps each attention layer's keys and values
    (a key-value cache) and runs only the new positions: the scores are those of the full forward pass,
    for a fraction of the work. It steps the model's layers itself, in their order, so it is only for a
    model whose forward applies its layers one after another and whose layers are the script classes and
    torch's position-wise layers: `supports(model)` checks the layers; the caller vouches for the order
    (the platform compiles such a model from a chain of layers). Positions stop at the model's context:
    past it, generation goes back to reading the last window whole (see generate_tokens).

    One reader per generation: the model itself is never changed, so threads may share it.
    """

    def __init__(self, model: nn.Module) -> None:
        if not self.supports(model):
            raise ValueError("CachedModel needs a chain of script classes and position-wise layers.")
        self.model = model
        self.layers = list(model.children())
        mixing = [i for i, layer in enumerate(self.layers) if type(layer).__name__ in _MIXING]
        self.last_mixing = mixing[-1] if mixing else None  # after it, each position is on its own
        self.length = 0  # positions read so far
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(attention) -> keys, values

    @staticmethod
    def supports(model: nn.Module) -> bool:
        children = list(model.children())
        return bool(children) and all(
            type(child).__name__ in _STEPPED or type(child) in _POSITIONWISE for child in children
        )

    def scores(self, ids: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        """Read the new token ids (1, T) after those read before: their scores (1, T, V).

        last_only: only the last position's scores (1, 1, V), all generation needs. After the last layer
        that mixes positions, the other positions are dropped, and that layer asks only for the last
        position's query: the same scores for less work (a whole block less, with the window read again)."""
        x = ids
        last = self.last_mixing if last_only else None
        for i, layer in enumerate(self.layers):
            x = self._layer(layer, x, last=i == last)
        self.length += ids.shape[1]
        return x[:, -1:] if last_only else x

    def _positions(self, T: int, device: torch.device) -> torch.Tensor:
        return torch.arange(self.length, self.length + T, device=device)  # where the new tokens stand

    def _layer(self, layer: Any, x: torch.Tensor, *, last: bool) -> torch.Tensor:  # a script class, by parts
        kind = type(layer).__name__
        if kind == "TokenAndPosition":
            return layer.token(x) + layer.position(self._positions(x.shape[1], x.device))
        if kind == "PositionalEmbedding":
            return x + layer.position(self._positions(x.shape[1], x.device))
        if kind == "TransformerBlock":
            mixed = self._attend(layer.attn, layer.ln_1(x), last=last)
            x = (x[:, -1:] if last else x) + mixed
            return x + layer.mlp(layer.ln_2(x))
        if kind == "CausalSelfAttention":
            return self._attend(layer, x, last=last)
        return layer(x)  # MLP and torch's layers: each position alone

    def _attend(self, attention: Any, x: torch.Tensor, *, last: bool) -> torch.Tensor:
        B, T, C = x.shape
        heads = int(attention.n_head)
        q, k, v = attention.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))  # (B, heads, T, hs)
        earlier = self._cache.get(id(attention))
        if earlier is not None:  # the keys and values of the positions read before, then the new ones
            k = torch.cat([earlier[0], k], dim=2)
            v = torch.cat([earlier[1], v], dim=2)
        self._cache[id(attention)] = (k, v)
        if last:  # only the last position's query: it sees every key, so nothing is masked
            q, T = q[:, :, -1:], 1
        # Every new position may see every cached one; among several new ones (the prompt, read while the
        # cache is still empty) the future is masked, as in the full pass.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1 and earlier is None)
        return attention.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


@torch.inference_mode()
def generate_tokens(
    model: nn.Module,
    ids: Sequence[int],
    *,
    max_new_tokens: int,
    context_length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    stop_at: int | None = None,
    kv_cache: bool = False,
) -> Iterator[int]:
    """Yield new token ids one at a time: the model reads the last context_length tokens and the next one
    is drawn from its scores (temperature 0: the most likely one; top_k: only among the k best).

    kv_cache: read only the new token at each step while the text fits the context, and past it the window
    with the last position's query only (CachedModel), for a model the caller knows to be a compiled chain;
    the tokens are the same."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    idx = torch.tensor([list(ids)], dtype=torch.long, device=device).reshape(1, -1)
    if idx.shape[1] == 0:
        idx = torch.zeros((1, 1), dtype=torch.long, device=device)
    reader = CachedModel(model) if kv_cache and CachedModel.supports(model) else None
    try:
        for _ in range(max_new_tokens):
            if reader is not None and idx.shape[1] <= context_length:
                logits = reader.scores(idx[:, reader.length :], last_only=True)[:, -1, :].float()  # (1, V)
            elif reader is not None:  # the whole window again (its positions shift, so no cache holds)
                window = CachedModel(model).scores(idx[:, -context_length:], last_only=True)
                logits = window[:, -1, :].float()
            else:
                logits = model(idx[:, -context_length:])[:, -1, :].float()  # (1, V): scores of the next token
            if temperature <= 0:
                next_id = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k > 0:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat([idx, next_id], dim=1)
            token = int(next_id)
            yield token
            if stop_at is not None and token == stop_at:
                return
    finally:
        model.train(was_training)


def generate_text(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    *,
    max_new_tokens: int,
    context_length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """The prompt and what the model writes after it (a fixed seed: the same model writes the same)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    new = list(
        generate_tokens(
            model,
            tokenizer.encode(prompt),
            max_new_tokens=max_new_tokens,
            context_length=context_length,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
        )
    )
    return prompt + tokenizer.decode(new)


def report_sample(*, epoch: int, prompt: str, text: str) -> None:
    """A `sample` event (the run page shows the text improve epoch by epoch) and a printed sample."""
    text = text[:1000]
    if state.events is not None:
        emit("sample", epoch=epoch, prompt=prompt[:200], text=text)
    print(f"Sample after epoch {epoch}:\n{text}\n", flush=True)


def lm_test_metrics(
    model: nn.Module,
    tokens: torch.Tensor,
    *,
    context_length: int,
    tokenizer: Tokenizer,
    batch_size: int = 64,
    exact_match: bool = False,
) -> dict[str, Any]:
    """The trusted evaluation of a language model on a token stream: every token predicted once, from the
    window it falls in. Loss (nats per token), perplexity, bits per token and per character, next-token
    accuracy; with exact_match (the addition corpus) also the share of "a+b=" lines answered exactly."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = tokens.long().to(device)
    T = context_length
    n = (tokens.numel() - 1) // T
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            rows = torch.arange(start, min(n, start + batch_size), device=device)
            offsets = rows[:, None] * T + torch.arange(T + 1, device=device)
            windows = tokens[offsets]
            x, y = windows[:, :-1], windows[:, 1:]
            with autocast():
                logits = model(x)
            total += F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"
            ).double()
            correct += (logits.argmax(-1) == y).sum().double()
    count = n * T
    loss = float(total / max(1, count))
    chars = len(tokenizer.decode(tokens[1 : count + 1].tolist())) or 1
    result: dict[str, Any] = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "bits_per_token": loss / math.log(2),
        "bits_per_char": float(total) / math.log(2) / chars,
        "accuracy": float(correct / max(1, count)),
        "tokens": count,
        "samples": count,
    }
    if exact_match:
        result.update(addition_exact_match(model, tokens, tokenizer=tokenizer, context_length=T))
    model.train(was_training)
    return result


def addition_exact_match(
    model: nn.Module, tokens: torch.Tensor, *, tokenizer: Tokenizer, context_length: int, limit: int = 500
) -> dict[str, Any]:
    """Greedy answers to the held-out "a+b=" lines of a token stream: the share exactly right."""
    lines = [line for line in tokenizer.decode(tokens.tolist()).split("\n")[1:-1] if "=" in line][:limit]
    newline = tokenizer.encode("\n")
    right = 0
    examples: list[dict[str, str]] = []
    for line in lines:
        question, answer = line.split("=", 1)
        got = tokenizer.decode(
            list(
                generate_tokens(
                    model,
                    newline + tokenizer.encode(question + "="),
                    max_new_tokens=len(answer) + 2,
                    context_length=context_length,
                    temperature=0,
                    stop_at=newline[0] if newline else None,
                )
            )
        ).strip("\n")
        right += got == answer
        if len(examples) < 10:
            examples.append({"prompt": question + "=", "expected": answer, "got": got})
    return {
        "exact_match": right / len(lines) if lines else 0.0,
        "exact_match_lines": len(lines),
        "examples": examples,
    }


# --- Built-in corpora (generated here, so that a downloaded script trains with nothing else) ------------


def addition_text() -> str:
    """Every a+b for a, b in 0..99, one a line ("07+56=063"), in a fixed random order: the test lines are sums
    the training lines never show. Numbers have a fixed width, so that each digit of the answer sits at the
    same position after the "=": a tiny GPT then learns to add held-out sums in ~1,500 steps (written
    "7+56=63", it was still at 16% after as many)."""
    problems = [(a, b) for a in range(100) for b in range(100)]
    random.Random(SPLIT_SEED).shuffle(problems)
    return "".join(f"{a:02d}+{b:02d}={a + b:03d}\n" for a, b in problems)


def brackets_text(lines: int = 20_000) -> str:
    rng = random.Random(SPLIT_SEED)
    pairs = ("()", "[]", "{}")
    out = []
    for _ in range(lines):
        size = rng.randint(1, 10)
        stack: list[str] = []
        text = []
        opened = 0
        while opened < size or stack:
            if opened < size and (not stack or rng.random() < 0.5):
                pair = rng.choice(pairs)
                text.append(pair[0])
                stack.append(pair[1])
                opened += 1
            else:
                text.append(stack.pop())
        out.append("".join(text))
    return "\n".join(out) + "\n"


def grammar_text(lines: int = 20_000) -> str:
    """Sentences of a small grammar with agreement: "the small cat sees a dog ." / "the cats see ."."""
    rng = random.Random(SPLIT_SEED)
    nouns = ("cat", "dog", "bird", "fox", "child", "teacher")
    plural = {"child": "children", "fox": "foxes"}
    verbs = ("see", "like", "chase", "follow", "hear")
    adjectives = ("small", "big", "red", "quick", "lazy", "happy")

    def noun_phrase() -> tuple[str, bool]:
        many = rng.random() < 0.4
        det = rng.choice(("the", "some") if many else ("the", "a"))
        adj = [rng.choice(adjectives)] if rng.random() < 0.5 else []
        noun = rng.choice(nouns)
        noun = plural.get(noun, noun + "s") if many else noun
        return " ".join([det, *adj, noun]), many

    out = []
    for _ in range(lines):
        subject, many = noun_phrase()
        verb = rng.choice(verbs)
        verb = verb if many else (verb + "es" if verb.endswith(("ch", "sh")) else verb + "s")
        words = [subject, verb]
        if rng.random() < 0.7:
            words.append(noun_phrase()[0])
        out.append(" ".join(words) + " .")
    return "\n".join(out) + "\n"


def python_text(limit: int = PYTHON_CORPUS_CHARS) -> str:
    """Source files of the standard library of the Python running this (no tests), in name order."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    keep = set(CORPUS_ALPHABETS["python"])
    parts: list[str] = []
    size = 0
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or path.name.startswith("test"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = "".join(c for c in text if c in keep)
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


CORPUS_TEXT: dict[str, Callable[[], str]] = {
    "addition": addition_text,
    "brackets": brackets_text,
    "grammar": grammar_text,
    "python": python_text,
}


def split_points(text: str) -> tuple[int, int]:
    """Character positions where validation and test start: 90% / 5% / 5%, moved on to a line start."""

    def at_line(position: int) -> int:
        newline = text.find("\n", position)
        return len(text) if newline < 0 else newline + 1

    return at_line(int(len(text) * TRAIN_SHARE)), at_line(int(len(text) * (TRAIN_SHARE + VAL_SHARE)))


def text_cache(
    name: str, text: str, tokenizer: Tokenizer, *, encode: Callable[[str], list[int]] | None = None
) -> dict[str, Any]:
    """A text dataset cache (the same torch.save of plain data as the image sets): the token stream as
    uint16 (int32 over 65,536 tokens), the split positions in tokens, and the tokenizer. `encode`: a
    faster encoder giving the same ids (the tokenizers library's, for BPE)."""
    encode = encode or tokenizer.encode
    val_at, test_at = split_points(text)
    pieces = [encode(text[:val_at]), encode(text[val_at:test_at]), encode(text[test_at:])]
    dtype = torch.uint16 if tokenizer.vocab_size <= 65536 else torch.int32
    tokens = torch.tensor([t for piece in pieces for t in piece], dtype=torch.int64).to(dtype)
    a, b = len(pieces[0]), len(pieces[0]) + len(pieces[1])
    return {
        "kind": "text",
        "name": name,
        "version": TEXT_CACHE_VERSION,
        "tokens": tokens,
        "splits": {"train": [0, a], "val": [a, b], "test": [b, tokens.numel()]},
        "tokenizer": tokenizer.as_json(),
        "vocab_size": tokenizer.vocab_size,
        "chars": len(text),
    }


def builtin_text_cache(name: str) -> dict[str, Any]:
    """A built-in corpus with the character tokenizer, made here (the Python corpus from this Python)."""
    return text_cache(name, CORPUS_TEXT[name](), Tokenizer(kind="char", alphabet=CORPUS_ALPHABETS[name]))


def make_text_data(
    cache: dict[str, Any], *, device: torch.device | str | None = None
) -> tuple[TextData, TokenSplit | None]:
    """A text cache's TextData and its test split (None in a training child's cache, which has none)."""
    device = pick_device(device) if device is None or isinstance(device, str) else device
    tokens = cache["tokens"].to(torch.int64)
    splits = cache["splits"]

    def part(name: str) -> TokenSplit:
        start, end = splits[name]
        return TokenSplit(tokens[start:end].to(device), name=name)

    data = TextData(
        train=part("train"), val=part("val"), tokenizer=Tokenizer.from_json(cache["tokenizer"]), device=device
    )
    return data, part("test") if "test" in splits else None


# --- Standalone -------------------------------------------------------------------------------------


def _print_result(result: dict[str, Any]) -> None:
    print(
        f"Test: accuracy {result['accuracy']:.1%}  precision {result['precision']:.3f}  "
        f"recall {result['recall']:.3f}  F1 {result['f1']:.3f}  ({result['samples']} samples)",
        flush=True,
    )
    for name, acc in zip(result["class_names"], result["per_class_accuracy"], strict=True):
        print(f"  {name:>12}: {acc:.1%}")


def _first_ctrl_c(signum: int, frame: Any) -> None:
    """Ctrl-C asks for a clean stop (a checkpoint is saved); a second one interrupts at once."""
    request_stop(signum, frame)
    print("\nStopping at the next batch (Ctrl-C again to quit at once)...", flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(
    build_model: Callable[[], nn.Module],
    train: Callable[[nn.Module, Data], None],
    *,
    dataset: str,
    eval_transform: Callable | None = None,
    val_split: float = 0.1,
    seed: int = 42,
    task: str = "image_classification",
    context_length: int | None = None,
) -> None:
    """`python script.py [--data DIR] [--epochs N]`: train on the dataset and test, printing progress.

    A language model (task "language_model") trains on a built-in corpus, generated here, or on the
    BuildX text cache file that --data names.

    digits (scikit-learn's) and shapes (generated) need no folder; the others are read from --data (by
    default ./<DATASET>), and a missing one says how to get it.
    """
    parser = argparse.ArgumentParser(description=f"Train this BuildX model ({dataset}).")
    parser.add_argument(
        "--data",
        help=(
            "dataset folder: class sub-folders of images, or the standard files of a built-in set "
            f"(default: {dataset} itself when it needs no folder, else ./{dataset})"
        ),
    )
    parser.add_argument("--epochs", type=int, help="override EPOCHS")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--checkpoints", default="checkpoints", help="where checkpoints go")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoints/last")
    args = parser.parse_args()

    script = sys.modules.get(getattr(train, "__module__", ""), None)
    if args.epochs is not None and script is not None:
        # train() reads the constant when it runs. (typeshed's ModuleType takes no new attributes.)
        script.EPOCHS = args.epochs  # type: ignore[attr-defined]
    configure(
        device=args.device,
        checkpoint_dir=args.checkpoints,
        resume=args.resume,
        epochs=getattr(script, "EPOCHS", None),
    )
    signal.signal(signal.SIGINT, _first_ctrl_c)

    seed_everything(seed)
    if task == "language_model":
        cache = load_cache(args.data) if args.data else builtin_text_cache(dataset)
        text_data, text_test = make_text_data(cache, device=current_device())
        print(f"{dataset}: {text_data}", flush=True)
        model = build_model().to(current_device())
        state.model = model
        try:
            train(model, text_data)  # type: ignore[arg-type]
        except StopTraining:
            finish_stop()
            return
        if text_test is not None and context_length:
            result = lm_test_metrics(
                model,
                text_test.tokens,
                context_length=context_length,
                tokenizer=text_data.tokenizer,
                exact_match=dataset == "addition",
            )
            print(
                f"Test: loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
                f"bits/char {result['bits_per_char']:.3f}"
                + (f"  exact answers {result['exact_match']:.1%}" if "exact_match" in result else ""),
                flush=True,
            )
        return
    decoded = load_dataset(args.data, dataset=dataset)
    data, test = make_data(decoded, val_split=val_split, seed=seed, device=current_device())
    print(f"{dataset}: {data}", flush=True)
    model = build_model().to(current_device())
    state.model = model
    try:
        train(model, data)
    except StopTraining:
        finish_stop()
        return
    _print_result(evaluate_test(model, test, class_names=data.class_names, transform=eval_transform))
