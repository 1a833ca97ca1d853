"""The harness in a plain child process: the contract check, errors, the stop signal, standalone runs.

These tests start harness.py as the sandbox does (a child process, events on a pipe of their own,
SIGUSR1 to stop) but without its isolation; test_engine_starter.py trains through the real runner.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.engine import datasets as ds

ENGINE = Path(__file__).resolve().parents[2] / "sandbox" / "engine"
HARNESS = ENGINE / "harness.py"
DIGITS_SCRIPT = Path(__file__).resolve().parent / "scripts" / "digits_cnn.py"
DIGITS_PARAMS = 9930


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    return ds.ensure_cache("digits", data_dir=folder, cache_dir=folder)


def make_run_dir(tmp_path: Path, cache: Path, *, script: str | None = None, **config) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "script.py").write_text(script if script is not None else DIGITS_SCRIPT.read_text())
    settings = {
        "dataset_cache": str(cache),
        "resume": False,
        "checkpoint_dir": "checkpoints",
        "expect": {"params": DIGITS_PARAMS, "output_shape": [10]},
        "val_split": 0.1,
        "seed": 42,
        "max_epochs": 50,
        "device": "cpu",
    }
    settings.update(config)
    # The harness deletes config.json once read: the test keeps its own copy beside the run folder.
    (tmp_path / "config.json").write_text(json.dumps(settings))
    (run_dir / "config.json").write_text(json.dumps(settings))
    return run_dir


def set_config(run_dir: Path, **changes) -> None:
    config = json.loads((run_dir.parent / "config.json").read_text())
    config.update(changes)
    (run_dir.parent / "config.json").write_text(json.dumps(config))
    (run_dir / "config.json").write_text(json.dumps(config))


class Child:
    """harness.py in a child process; events are read from their own pipe as they come."""

    def __init__(self, run_dir: Path, on_event: Callable[[Child, dict], None] | None = None) -> None:
        read_fd, write_fd = os.pipe()
        env = {"PATH": os.environ.get("PATH", ""), "BUILDX_EVENTS_FD": str(write_fd), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS), "--no-wait", "--script", "script.py", "--config", "config.json"],
            cwd=run_dir,
            env=env,
            pass_fds=(write_fd,),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        os.close(write_fd)
        self.events: list[dict] = []
        self.on_event = on_event
        self.signalled_at: float | None = None
        self.reader = threading.Thread(target=self._read, args=(read_fd,), daemon=True)
        self.reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, encoding="utf-8") as pipe:
            for line in pipe:
                event = json.loads(line)
                self.events.append(event)
                if self.on_event is not None:
                    self.on_event(self, event)

    def stop(self) -> None:
        self.signalled_at = time.monotonic()
        self.proc.send_signal(signal.SIGUSR1)

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        output, _ = self.proc.communicate(timeout=timeout)
        self.ended_at = time.monotonic()
        self.reader.join(timeout=5)
        return self.proc.returncode, output

    def of_kind(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind]


def run_in_process(run_dir: Path) -> tuple[int, list[dict]]:
    """harness.run() in this process: the same code path, without a second torch import (seconds each)."""
    sys.path.insert(0, str(ENGINE))
    try:
        import harness
    finally:
        sys.path.remove(str(ENGINE))
    read_fd, write_fd = os.pipe()
    cwd = os.getcwd()
    os.environ["BUILDX_EVENTS_FD"] = str(write_fd)
    try:
        os.chdir(run_dir)
        code = harness.run(Path("script.py"), json.loads(Path("config.json").read_text()))
        harness.rt.state.events.flush()
    finally:
        os.chdir(cwd)
        del os.environ["BUILDX_EVENTS_FD"]
        os.close(write_fd)
        harness.rt.configure()  # leave no handle on the closed pipe behind
    with os.fdopen(read_fd, encoding="utf-8") as pipe:  # a few small events: they fit in the pipe's buffer
        return code, [json.loads(line) for line in pipe]


def test_sigusr1_mid_epoch_saves_the_completed_epochs_and_resume_continues_from_them(tmp_path, digits_cache):
    # Small batches make an epoch long enough that the signal lands inside one.
    script = (
        DIGITS_SCRIPT.read_text()
        .replace("EPOCHS = 10", "EPOCHS = 3")
        .replace("BATCH_SIZE = 64", "BATCH_SIZE = 16")
    )
    run_dir = make_run_dir(tmp_path, digits_cache, script=script)

    def stop_after_first_epoch(child: Child, event: dict) -> None:
        if event["kind"] == "epoch" and event["epoch"] == 1:
            child.stop()

    child = Child(run_dir, on_event=stop_after_first_epoch)
    code, output = child.wait()
    assert code == 0, output
    assert child.ended_at - child.signalled_at < 5
    completed = child.of_kind("stopped")[0]["epoch"]
    assert child.events[-1] == {"kind": "stopped", "epoch": completed}
    assert completed == child.of_kind("epoch")[-1]["epoch"] < 3  # it stopped inside a later epoch
    assert not child.of_kind("result")
    saved = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    assert saved["epoch"] == completed
    assert child.of_kind("checkpoint")[-1] == {
        "kind": "checkpoint", "epoch": completed, "name": "last", "metric": saved["metric"]
    }  # fmt: skip

    set_config(run_dir, resume=True)
    resumed = Child(run_dir)
    code, output = resumed.wait()
    assert code == 0, output
    # The platform says where a run resumes from (one line, training.services.execution): the child
    # does not repeat it.
    assert not [e for e in resumed.of_kind("log") if "Resumed from the checkpoint" in e.get("line", "")]
    assert [e["epoch"] for e in resumed.of_kind("epoch")] == list(range(completed + 1, 4))
    # A training child measures nothing on the test split: it leaves its final weights for that.
    assert not resumed.of_kind("result")
    assert (run_dir / "model.safetensors").is_file()


def test_a_script_whose_model_differs_from_the_design_never_trains(tmp_path, digits_cache):
    run_dir = make_run_dir(tmp_path, digits_cache, expect={"params": 1234, "output_shape": [10]})
    code, events = run_in_process(run_dir)
    assert code == 2
    assert [e["kind"] for e in events] == ["error"]
    assert events[0]["cause"] == "contract"
    assert "9,930 parameters but the design has 1,234" in events[0]["message"]
    assert not (run_dir / "checkpoints").exists()


def test_a_script_whose_input_shape_does_not_fit_the_dataset_is_a_contract_error(tmp_path, digits_cache):
    script = DIGITS_SCRIPT.read_text().replace(
        "EVAL_TRANSFORM = rt.Compose([rt.Normalize((0.5,), (0.5,))])",
        "EVAL_TRANSFORM = rt.Compose([rt.Resize(16), rt.Normalize((0.5,), (0.5,))])",
    )
    code, events = run_in_process(make_run_dir(tmp_path, digits_cache, script=script))
    assert code == 2
    assert events[-1]["cause"] == "contract"
    assert "(1, 16, 16) after EVAL_TRANSFORM but INPUT_SHAPE is (1, 8, 8)" in events[-1]["message"]


def test_more_epochs_than_the_platform_allows_is_a_contract_error(tmp_path, digits_cache):
    code, events = run_in_process(make_run_dir(tmp_path, digits_cache, max_epochs=5))
    assert code == 2
    assert events[-1]["message"] == "EPOCHS is 10; this platform allows at most 5."


def test_an_exception_in_train_becomes_an_error_event_with_the_traceback(tmp_path, digits_cache):
    script = DIGITS_SCRIPT.read_text().replace(
        "            loss.backward()\n",
        "            loss.backward()\n            raise ValueError('boom')\n",
        1,
    )
    code, events = run_in_process(make_run_dir(tmp_path, digits_cache, script=script))
    assert code == 1
    error = events[-1]
    assert (error["kind"], error["cause"], error["message"]) == ("error", "exception", "ValueError: boom")
    assert 'script.py", line' in error["traceback"] and "in train" in error["traceback"]


def test_the_script_runs_standalone_with_python_on_a_dataset_cache_or_folder(tmp_path, digits_cache):
    folder = tmp_path / "standalone"
    folder.mkdir()
    shutil.copy(ENGINE / "buildx_runtime.py", folder)
    shutil.copy(DIGITS_SCRIPT, folder / "digits_cnn.py")
    proc = subprocess.run(
        [sys.executable, "digits_cnn.py", "--data", str(digits_cache), "--epochs", "2"],
        cwd=folder,
        env={"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Epoch 1/2" in proc.stdout and "Epoch 2/2" in proc.stdout and "Epoch 3/" not in proc.stdout
    assert "Test: accuracy" in proc.stdout
    assert (folder / "checkpoints" / "last.safetensors").exists()


def script_module(source: str):
    """A script's module from its source, as harness.load_script makes it (without a file)."""
    import types

    sys.path.insert(0, str(ENGINE))
    try:
        import harness
    finally:
        sys.path.remove(str(ENGINE))
    module = types.ModuleType("buildx_script")
    exec(compile(source, "script.py", "exec"), module.__dict__)
    return harness, module


def test_a_model_that_reads_values_in_forward_is_checked_on_the_cpu_instead_of_the_meta_device():
    source = DIGITS_SCRIPT.read_text().replace(
        "        x = self.fc1(x)  # (B, 10)\n",
        "        x = self.fc1(x)  # (B, 10)\n        if x.abs().sum().item() < 0:  # no meta kernel for .item()\n"
        "            x = -x\n",
    )
    harness, module = script_module(source)
    assert harness.check_contract(module, {"expect": {"params": DIGITS_PARAMS, "output_shape": [10]}}) == (
        DIGITS_PARAMS,
        [10],
    )


def test_a_model_that_cannot_take_its_input_shape_is_a_contract_error_naming_the_shape():
    harness, module = script_module(
        DIGITS_SCRIPT.read_text().replace("INPUT_SHAPE = (1, 8, 8)", "INPUT_SHAPE = (3, 8, 8)")
    )
    with pytest.raises(harness.ContractError, match=r"cannot take a batch of shape \(3, 8, 8\)"):
        harness.check_contract(module, {})


def catches_sigusr1(pid: int) -> bool:
    """Whether the process has a handler for SIGUSR1 yet (bit 9 of SigCgt in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGUSR1 - 1)))
    return False


def test_a_stop_while_torch_is_still_importing_ends_cleanly_with_a_stopped_event(tmp_path, digits_cache):
    run_dir = make_run_dir(tmp_path, digits_cache)
    child = Child(run_dir)
    deadline = time.monotonic() + 30
    while not catches_sigusr1(child.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    # Caught before torch is even loaded: the harness's first lines take the signal over.
    assert "libtorch" not in Path(f"/proc/{child.proc.pid}/maps").read_text()
    child.stop()
    code, output = child.wait()
    assert code == 0, output
    assert [e["kind"] for e in child.events if e["kind"] != "progress"][-2:] == ["checkpoint", "stopped"]
    assert child.events[-1] == {"kind": "stopped", "epoch": 0}
    assert not child.of_kind("epoch")
