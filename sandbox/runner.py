"""Running code nobody reviewed: the static check, a box, the child, its supervision.

`run_script` is what the apps call for a run, a trusted evaluation or a sandboxed prediction;
sandbox.checks runs code checks through the same function with a box started ahead of time. The
interface and the events are in docs/contracts.md, section 3.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from django.conf import settings
from django.utils.translation import gettext as _

from sandbox import files
from sandbox.events import EventRules
from sandbox.launcher import HARNESS, Box, Limits, host, python_executable
from sandbox.static_check import check_script, format_findings
from sandbox.supervisor import SandboxResult, Supervisor


def open_box(*, limits: Limits | None = None, gpu: bool = False) -> Box:
    """A box with its own run folder (`box.run_dir`), for a caller that puts files in before the run
    and reads what the child left after it (the runs app); the caller closes it."""
    return Box.open(limits=limits or Limits.from_settings(), gpu=gpu)


def harness_command() -> list[str]:
    """The command every box runs unless a test or bench names another (relative to /box)."""
    return [python_executable(), "-s", str(HARNESS), "--script", "script.py", "--config", "config.json"]


def run_script(
    *,
    code: str,
    run_dir: Path,
    config: dict,
    on_event: Callable[[dict], None],
    should_stop: Callable[[], bool],
    wall_limit_s: float,
    gpu: bool = False,
    trusted_code: bool = False,
    entry: Sequence[str] | None = None,
    check_code: bool = True,
    dataset: Path | None = None,
    limits: Limits | None = None,
    box: Box | None = None,
    inputs: Mapping[str, files.ReadableFile] | None = None,
) -> SandboxResult:
    """Run `code` through the harness in a new box and report its events to `on_event`.

    `run_dir` is bound at /box: the script's folder, its only writable place. `dataset` (a cache file)
    is what the child reads at /box-data/dataset.pt; config["dataset_cache"] is set to that path.
    `entry` (tests, benches) replaces the harness command line. `check_code=False` skips the static
    check, which tests use to prove that the sandbox, not the check, contains a hostile script.
    `box`: a box from `open_box` or sandbox.checks (then `run_dir` must be its own); the caller closes
    it. Without one, a box is opened for `run_dir` and closed here.
    `inputs`: files (name -> an open file) the worker puts in the run folder, read-only to the child.
    config["mode"] decides what the child may report (sandbox.events): a `result` only in "evaluate"
    and "predict", or with config["report_test"] (code that cannot be evaluated by the platform).
    """
    limits = box.limits if box is not None else (limits or Limits.from_settings())
    if check_code:
        findings = check_script(code)
        if findings:
            message = format_findings(findings)
            on_event({"kind": "error", "cause": "rejected", "message": message, "traceback": ""})
            return SandboxResult("rejected", None, message, "", [])
    if host().mode != "bwrap" and not trusted_code and not settings.BUILDX_ALLOW_UNSANDBOXED_LLM_CODE:
        message = str(
            _(
                "This server cannot sandbox code it did not write itself (bubblewrap is missing), so "
                "it does not run code written by the assistant. Train the compiled code instead."
            )
        )
        on_event({"kind": "error", "cause": "rejected", "message": message, "traceback": ""})
        return SandboxResult("rejected", None, message, "", [])

    config = dict(config)
    owned = box is None
    if dataset is None and config.get("dataset_cache") and Path(config["dataset_cache"]).is_file():
        dataset = Path(config["dataset_cache"])
    try:
        if box is None:
            box = Box.open(limits=limits, run_dir=Path(run_dir), gpu=gpu)
        if dataset is not None:
            box.put_dataset(Path(dataset))
            config["dataset_cache"] = box.inside(box.data_file)
        _prepare_run_dir(box, code=code, config=config, inputs=inputs or {})
        if box.process is None:
            box.spawn(list(entry) if entry else harness_command())
        mode = str(config.get("mode") or ("smoke" if config.get("smoke") else "train"))
        epochs = config.get("epochs") or config.get("max_epochs") or 1000
        rules = EventRules(
            epochs=1 if mode == "smoke" else int(epochs),
            mode=mode,
            accept_result=bool(config.get("report_test")),
        )
        supervisor = Supervisor(box=box, on_event=on_event, rules=rules)
        try:
            result = supervisor.run(should_stop=should_stop, wall_limit_s=wall_limit_s)
        finally:
            box.kill()
        removed = files.remove_links(box.run_dir)
        if removed:
            on_event(
                {
                    "kind": "log",
                    "stream": "platform",
                    "line": str(
                        _(
                            "Removed %(count)d links the script made in its folder (they could point outside it)."
                        )
                        % {"count": removed}
                    ),
                }
            )
        return result
    except OSError as error:
        message = _("The training process could not start: %(error)s") % {"error": error}
        on_event({"kind": "error", "cause": "killed", "message": str(message), "traceback": ""})
        return SandboxResult("failed", None, str(message), "", box.isolation if box else [])
    finally:
        if owned and box is not None:
            box.close()


def _prepare_run_dir(box: Box, *, code: str, config: dict, inputs: Mapping[str, files.ReadableFile]) -> None:
    run_dir = box.run_dir
    if run_dir.is_dir():
        # A resumed run: links from an earlier child (if its worker died before the sweep) must not
        # make the writes and chowns below land outside the directory.
        files.remove_links(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name, text in (("script.py", code), ("config.json", json.dumps(config))):
        path = run_dir / name
        path.unlink(missing_ok=True)  # the child may have left something else under the name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
    for name, source in inputs.items():
        path = run_dir / name
        path.unlink(missing_ok=True)
        with open(path, "xb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        path.chmod(0o644)
    # The inputs stay the worker's: the child may read them (and delete them), not change them.
    box.give_run_dir(keep={"script.py", "config.json", *inputs})
