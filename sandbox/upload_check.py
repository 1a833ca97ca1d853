"""The check of an uploaded zip in a box of its own: the worker's side (the child is engine/check_upload.py).

The worker never inflates a stranger's zip or decodes their images itself. A box (its own uid, a memory
limit of `memory_bytes` for the whole tree, a wall limit, no network, only its folder writable) gets the
zip read-only at /box-data/dataset.pt and answers with a report and, for a good zip, a safetensors file
of the decoded tensors. Both are hostile input, as everything a child says (docs/contracts.md, section 3):

- the report: only its refusal counts. Problem and warning codes outside the known ones are not shown as
  sent, names are cut, parameters keep known keys of plain types; the messages are the worker's own
  (library.services writes them from the codes). A child that reports no problem proves nothing by it;
- the file: read as a regular file within a bound fixed by the limits (sandbox.files.open_regular),
  parsed by safetensors (plain data, never unpickled), and every fact checked again: the tensors' names,
  types and shapes, labels within the classes, every class present, the split a partition of the
  images, the class names plain and unique. Counts, warnings about small or unbalanced classes, the
  mean and std and the content hash come from these checked tensors, not from the child.

A child that breaks any of this, runs out of memory or time, or dies, rejects the upload.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch  # the worker's side only: the check's tensors are checked here

from sandbox import files
from sandbox.engine import custom
from sandbox.launcher import ENGINE_DIR, Box, Limits, python_executable
from sandbox.runner import open_box, run_script
from sandbox.supervisor import SandboxResult

CHILD = ENGINE_DIR / "check_upload.py"
OUTPUT = "upload.safetensors"
STAGES = {1: "checking", 2: "decoding"}
TENSORS = {"images": "U8", "labels": "I64", "train_idx": "I64", "test_idx": "I64"}
PROBLEM_CODES = frozenset(
    {
        "zip_too_big", "not_a_zip", "too_many_entries", "link", "absolute_path", "path_escape", "encrypted",
        "duplicate", "not_in_class_folder", "bomb", "corrupt", "not_an_image", "too_many_pixels",
        "corrupt_image", "too_many_classes", "too_few_classes", "overlap", "split_classes_differ",
    }
)  # fmt: skip
# What the worker answers when the child did not give an answer it can use.
CHECK_CODES = ("check_out_of_memory", "check_timeout", "check_failed", "check_forged")
PARAM_KEYS = frozenset({"limit", "limit_mb", "found", "read_bytes", "offset", "classes", "count"})
ENTRY_CHARS = 300
CLASS_NAME_CHARS = 255  # a folder's name
HEADER_BYTES = 1 << 20  # the safetensors header and the class names: far more than 100 names need


class Forged(Exception):
    """What the child wrote is not what a check of this zip can produce; `str()` says what (for the log)."""


@dataclass
class UploadCheck:
    """The answer: `decoded` (checked tensors, as a dataset cache holds them) when the zip is good, else
    `problems` (each `entry`, `code`, `params`). `sandbox` says how the box ended."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    more_problems: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)
    decoded: dict[str, Any] | None = None
    own_split: bool = False
    moved_duplicates: int = 0
    sandbox: SandboxResult | None = None

    @property
    def ok(self) -> bool:
        return self.decoded is not None and not self.problems and not self.more_problems


def check_limits(*, memory_bytes: int) -> Limits:
    """A run's box, with the check's own memory limit (the cache it writes counts in it)."""
    return dataclasses.replace(Limits.from_settings(), memory_bytes=memory_bytes)


def check_upload(
    *,
    zip_path: Path,
    work_path: Path,
    zip_limits: custom.ZipLimits,
    side: int | None,
    max_side: int,
    on_progress: Callable[[str, int, int], None],
    wall_limit_s: float,
    memory_bytes: int,
    entry: Sequence[str] | None = None,
    code: str = "",
) -> UploadCheck:
    """Check the zip at `zip_path` in a new box; `work_path` is where the worker copies the child's file
    while it reads it (deleted before this returns). `on_progress(stage, done, total)`: "checking",
    "decoding". `entry` and `code` (tests, benches): another program in the box, as an attacker who took
    over the check would run."""
    box = open_box(limits=check_limits(memory_bytes=memory_bytes))
    answer: dict[str, Any] = {}

    def on_event(event: dict) -> None:
        if event["kind"] == "progress":
            on_progress(STAGES.get(event["epoch"], "checking"), event["batch"], event["batches"])
        elif event["kind"] == "result":
            answer.update(event)

    try:
        config = {"limits": dataclasses.asdict(zip_limits), "side": side, "max_side": max_side}
        result = run_child(
            box=box,
            child=CHILD,
            config=config,
            upload=Path(zip_path),
            on_event=on_event,
            wall_limit_s=wall_limit_s,
            entry=entry,
            code=code,
        )
        check = UploadCheck(sandbox=result)
        if result.status != "succeeded" or not answer:
            check.problems = [failure_answer(result)]
            return check
        check.problems = clean_answers(answer.get("problems"), PROBLEM_CODES, zip_limits.max_problems)
        raw_more = answer.get("more_problems")
        more = raw_more if isinstance(raw_more, int) and not isinstance(raw_more, bool) else 0
        check.more_problems = min(max(more, 0), 10**6)
        if isinstance(answer.get("problems"), list):
            check.more_problems += max(len(answer["problems"]) - len(check.problems), 0)
        if check.problems or check.more_problems:
            return check  # the child's refusal is the one thing of its answer taken as it is
        if answer.get("cache") != OUTPUT:
            check.problems = [{"entry": "", "code": "check_forged", "params": {}}]
            return check
        try:
            decoded = read_decoded(
                box.run_dir,
                work_path=work_path,
                max_images=zip_limits.max_entries,
                max_classes=zip_limits.max_classes,
                max_side=side or max_side,
                side=side,
            )
        except (Forged, files.Refused, FileNotFoundError) as e:
            check.problems = [{"entry": "", "code": "check_forged", "params": {}}]
            check.sandbox = dataclasses.replace(result, cause=str(e))
            return check
        counts = torch.bincount(decoded["labels"], minlength=len(decoded["class_names"])).tolist()
        classes = dict(zip(decoded["class_names"], counts, strict=True))
        check.warnings = [
            {"entry": "", "code": w.code, "params": w.params} for w in custom.class_warnings(classes)
        ]
        for w in clean_answers(answer.get("warnings"), {"duplicates_across_splits"}, 1):
            count = w["params"].get("count")
            if isinstance(count, int) and 0 < count <= len(decoded["test_idx"]):
                check.warnings.append({"entry": w["entry"], "code": w["code"], "params": {"count": count}})
        check.own_split = answer.get("own_split") is True
        moved = answer.get("moved_duplicates")
        n_train = len(decoded["train_idx"])
        check.moved_duplicates = moved if isinstance(moved, int) and 0 <= moved <= n_train else 0
        check.decoded = decoded
        return check
    finally:
        box.close()
        Path(work_path).unlink(missing_ok=True)


def run_child(
    *,
    box: Box,
    child: Path,
    config: dict[str, Any],
    upload: Path,
    on_event: Callable[[dict], None],
    wall_limit_s: float,
    entry: Sequence[str] | None,
    code: str,
) -> SandboxResult:
    """A check's child (engine/check_upload.py, engine/check_text.py) in `box`, the upload read-only at
    /box-data/dataset.pt; `entry` and `code`: another program in its place (tests: an attacker's)."""
    return run_script(
        code=code,
        run_dir=box.run_dir,
        config={"mode": "dataset_check", **config},
        on_event=on_event,
        should_stop=lambda: False,
        wall_limit_s=wall_limit_s,
        trusted_code=True,  # the program is the platform's; the upload is what is hostile
        check_code=False,
        entry=list(entry or [python_executable(), "-s", str(child), "--config", "config.json"]),
        dataset=upload,
        box=box,
    )


def failure_answer(result: SandboxResult) -> dict[str, Any]:
    """The refusal when a box gave no answer to use: out of memory, out of time, or failed."""
    if result.killed_for == "memory" or "ran out of memory" in result.cause:
        return {"entry": "", "code": "check_out_of_memory", "params": {}}
    if result.status == "timeout":
        return {"entry": "", "code": "check_timeout", "params": {}}
    return {"entry": "", "code": "check_failed", "params": {}}


def clean_answers(
    raw: object, codes: frozenset[str] | set[str], limit: int, *, keys: frozenset[str] = PARAM_KEYS
) -> list[dict[str, Any]]:
    """The child's problems or warnings, at most `limit`: known codes (others become check_failed),
    entry names cut to ENTRY_CHARS printable characters, parameters of known `keys` and plain types."""
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw[:limit]:
        if not isinstance(item, dict):
            continue
        code = item.get("code")
        raw_entry, raw_params = item.get("entry"), item.get("params")
        entry = raw_entry if isinstance(raw_entry, str) else ""
        params = raw_params if isinstance(raw_params, dict) else {}
        out.append(
            {
                "entry": "".join(ch for ch in entry[:ENTRY_CHARS] if ch.isprintable()),
                "code": code if code in codes else "check_failed",
                "params": {k: _plain(v) for k, v in params.items() if k in keys and _plain(v) is not None},
            }
        )
    return out


def _plain(value: object) -> int | str | list[str] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**53 else None
    if isinstance(value, str):
        return value[:CLASS_NAME_CHARS]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v[:CLASS_NAME_CHARS] for v in value[:20]]
    return None


def output_bound(*, max_images: int, max_side: int) -> int:
    """The largest file a check may write: colour images at the largest side, labels and the split."""
    return max_images * (3 * max_side * max_side + 8 * 2) + HEADER_BYTES


def read_decoded(
    run_dir: Path, *, work_path: Path, max_images: int, max_classes: int, max_side: int, side: int | None
) -> dict[str, Any]:
    """The child's tensors, copied out of its folder and checked as hostile input (module docstring);
    the same dict a dataset cache holds. Raises Forged, files.Refused or FileNotFoundError."""
    from safetensors import SafetensorError, safe_open

    with files.open_regular(
        run_dir, OUTPUT, max_bytes=output_bound(max_images=max_images, max_side=max_side)
    ) as src:
        with open(work_path, "wb") as out:
            shutil.copyfileobj(src, out, files.CHUNK)
    try:
        with open(work_path, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or int.from_bytes(head, "little") > HEADER_BYTES:
            raise Forged("the file's header is missing or too large")
        with safe_open(str(work_path), framework="pt") as f:
            if set(f.keys()) != set(TENSORS):
                raise Forged(f"tensors {sorted(f.keys())[:10]}")
            for name, dtype in TENSORS.items():
                if f.get_slice(name).get_dtype() != dtype:
                    raise Forged(f"{name} is not {dtype}")
            tensors = {name: f.get_tensor(name) for name in TENSORS}
            metadata = f.metadata() or {}
    except SafetensorError as e:
        raise Forged(f"not a safetensors file ({e})") from e
    class_names = _class_names(metadata.get("class_names"), max_classes=max_classes)
    images, labels = tensors["images"], tensors["labels"]
    train_idx, test_idx = tensors["train_idx"], tensors["test_idx"]
    if images.dim() != 4 or labels.dim() != 1 or train_idx.dim() != 1 or test_idx.dim() != 1:
        raise Forged("a tensor of the wrong rank")
    n, c, h, w = images.shape
    if not 2 <= n <= max_images or c not in (1, 3) or not (1 <= h <= max_side and 1 <= w <= max_side):
        raise Forged(f"images of shape {tuple(images.shape)}")
    if side is not None and (h, w) != (side, side):
        raise Forged(f"images of {h}x{w}, not the {side}x{side} asked for")
    if len(labels) != n or int(labels.min()) < 0 or int(labels.max()) >= len(class_names):
        raise Forged("labels outside the classes")
    if int(torch.bincount(labels, minlength=len(class_names)).min()) == 0:
        raise Forged("a class without images")
    if len(train_idx) == 0 or len(train_idx) + len(test_idx) != n:
        raise Forged("a split that is not a partition of the images")
    together = torch.cat([train_idx, test_idx]).sort().values
    if not torch.equal(together, torch.arange(n, dtype=torch.int64)):
        raise Forged("a split that is not a partition of the images")
    return {
        "images": images,
        "labels": labels,
        "class_names": class_names,
        "train_idx": train_idx,
        "test_idx": test_idx,
    }


def _class_names(raw: object, *, max_classes: int) -> list[str]:
    try:
        names = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        names = None
    if not isinstance(names, list) or not 2 <= len(names) <= max_classes:
        raise Forged("class names missing, or too few or too many")
    for name in names:
        if (
            not isinstance(name, str)
            or not 0 < len(name) <= CLASS_NAME_CHARS
            or not name.isprintable()
            or name in (".", "..")
            or "/" in name
            or "\\" in name
        ):
            raise Forged("a class name that no folder has")
    if len(set(names)) != len(names):
        raise Forged("a class name twice")
    return [str(n) for n in names]
