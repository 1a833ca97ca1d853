"""The sandboxed runner: events, output caps, stop and time limits, causes.

The hostile corpus (hostile/) has its own file, test_hostile_corpus.py. Limits are small so that the
whole file stays near a minute on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.engine import datasets as ds
from sandbox.launcher import python_executable
from sandbox.runner import SandboxResult, run_script

SECRET = "buildx-test-secret-7f3a9c"
DB_PASSWORD = "db-password-51e0b2"
PYTHON = [python_executable(), "-s", "script.py"]  # the script alone, without the harness
DIGITS_SCRIPT = Path(__file__).parent / "scripts" / "digits_cnn.py"
DIGITS_PARAMS = 9930


@pytest.fixture(autouse=True)
def small_limits(settings):
    settings.BUILDX_SANDBOX_CPU_SECONDS = 20
    settings.BUILDX_SANDBOX_MEMORY_BYTES = 1536 * 2**20  # torch imports in ~650 MB of address space
    settings.BUILDX_SANDBOX_PROCESSES = 64
    settings.BUILDX_SANDBOX_OPEN_FILES = 256
    settings.BUILDX_SANDBOX_FILE_BYTES = 8 * 2**20
    settings.BUILDX_SANDBOX_DISK_BYTES = 24 * 2**20
    settings.BUILDX_SANDBOX_TMP_BYTES = 8 * 2**20
    settings.BUILDX_SANDBOX_OUTPUT_BYTES = 64 * 2**10
    settings.BUILDX_SANDBOX_LINE_CHARS = 500
    settings.BUILDX_SANDBOX_GRACE_SECONDS = 0.5
    settings.BUILDX_SANDBOX_THREADS = 1
    settings.BUILDX_SANDBOX = "bwrap"
    settings.BUILDX_ALLOW_UNSANDBOXED_LLM_CODE = False


@pytest.fixture(autouse=True)
def worker_secrets(monkeypatch):
    """What a real worker's environment holds and the child must never see."""
    monkeypatch.setenv("BUILDX_TEST_SECRET", SECRET)
    monkeypatch.setenv("DATABASE_URL", f"postgres://buildx:{DB_PASSWORD}@127.0.0.1:5432/buildx")
    monkeypatch.setenv("REDIS_URL", f"redis://:{DB_PASSWORD}@127.0.0.1:6379/4")


def run(
    code: str, run_dir: Path, *, wall: float = 10, stop_after: float | None = None, **kwargs
) -> tuple[SandboxResult, list[dict]]:
    events: list[dict] = []
    started = time.monotonic()

    def should_stop() -> bool:
        return stop_after is not None and time.monotonic() - started > stop_after

    kwargs.setdefault("entry", PYTHON)
    kwargs.setdefault("check_code", False)
    kwargs.setdefault("config", {})
    result = run_script(
        code=code,
        run_dir=run_dir,
        on_event=events.append,
        should_stop=should_stop,
        wall_limit_s=wall,
        **kwargs,
    )
    return result, events


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    return ds.ensure_cache("digits", data_dir=folder, cache_dir=folder)


def harness_config(cache: Path, **changes) -> dict:
    config = {
        "dataset_cache": str(cache),
        "resume": False,
        "checkpoint_dir": "checkpoints",
        "expect": {"params": DIGITS_PARAMS, "output_shape": [10]},
        "val_split": 0.1,
        "seed": 42,
        "max_epochs": 50,
        "device": "cpu",
    }
    return config | changes


def lines(events: list[dict], stream: str | None = None) -> list[str]:
    return [e["line"] for e in events if e["kind"] == "log" and (stream is None or e["stream"] == stream)]


def box_uid(result: SandboxResult) -> int:
    return int(next(i for i in result.isolation if i.startswith("uid "))[4:])


def processes_of(uid: int) -> list[int]:
    """Live pids running as the box's uid (what a straggler would look like: each box has a uid of its own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if (
                    os.stat(f"/proc/{entry}").st_uid == uid
                    and "\nState:\tZ" not in open(f"/proc/{entry}/status").read()
                ):
                    found.append(int(entry))
            except OSError:
                continue
    return found


# --- Ordinary runs ------------------------------------------------------------------------------


def test_a_script_runs_and_its_output_becomes_log_events_line_by_line(tmp_path):
    code = (
        "import json, os, sys\n"
        "print('first line')\n"
        "print('second line')\n"
        "print('to stderr', file=sys.stderr)\n"
        "events = os.fdopen(int(os.environ['BUILDX_EVENTS_FD']), 'w')\n"
        "events.write(json.dumps({'kind': 'status', 'status': 'running', 'device': 'cpu'}) + '\\n')\n"
    )
    result, events = run(code, tmp_path / "run")

    assert result.status == "succeeded"
    assert result.exit_code == 0
    assert lines(events, "stdout") == ["first line", "second line"]
    assert lines(events, "stderr") == ["to stderr"]
    status = next(e for e in events if e["kind"] == "status")
    assert status["device"] == "cpu"
    assert "bubblewrap" in status["isolation"] and "no network" in status["isolation"]
    assert any(i.startswith("uid 2") for i in result.isolation) and "seccomp" in result.isolation
    assert "cgroup v1" in result.isolation and "memory limit (whole sandbox)" in result.isolation
    assert (tmp_path / "run" / "script.py").read_text() == code
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {}


def test_the_child_gets_only_the_environment_it_needs(tmp_path):
    result, events = run("import os, json\nprint(json.dumps(dict(os.environ)))", tmp_path / "run")

    env = json.loads(lines(events, "stdout")[0])
    assert set(env) <= {
        "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "PYTHONPATH", "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "BUILDX_EVENTS_FD", "OMP_NUM_THREADS",
        "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PWD", "LC_CTYPE",
    }  # fmt: skip
    # The same in every box, wherever its folder is on the worker: nothing tells a check from a run.
    assert (env["HOME"], env["PWD"], env["BUILDX_EVENTS_FD"]) == ("/box", "/box", "3")
    assert env["PYTHONPATH"].endswith("sandbox/engine")
    assert SECRET not in json.dumps(events) and DB_PASSWORD not in json.dumps(events)


def test_an_exception_fails_the_run_with_its_traceback_and_cause(tmp_path):
    code = "def train():\n    return 1 / 0\n\ntrain()\n"
    result, events = run(code, tmp_path / "run")

    assert result.status == "failed"
    assert result.exit_code == 1
    assert result.cause == "The script stopped with an error: ZeroDivisionError: division by zero"
    assert result.traceback.startswith("Traceback (most recent call last):")
    assert "line 2, in train" in result.traceback
    error = [e for e in events if e["kind"] == "error"]
    assert error == [
        {"kind": "error", "cause": "exception", "message": result.cause, "traceback": result.traceback}
    ]


def test_the_childs_own_error_event_gives_the_cause_and_no_second_error(tmp_path):
    code = (
        "import json, os, sys\n"
        "fd = int(os.environ['BUILDX_EVENTS_FD'])\n"
        "os.write(fd, json.dumps({'kind': 'error', 'cause': 'contract', 'message': 'The model has 10 "
        "parameters, the design 12.', 'traceback': ''}).encode() + b'\\n')\n"
        "sys.exit(3)\n"
    )
    result, events = run(code, tmp_path / "run")

    assert result.status == "failed"
    assert result.exit_code == 3
    assert result.cause == "The model does not match the design: The model has 10 parameters, the design 12."
    assert [e["cause"] for e in events if e["kind"] == "error"] == ["contract"]


def test_an_exit_code_without_a_traceback_is_named(tmp_path):
    result, _events = run("import sys\nsys.exit(7)", tmp_path / "run")

    assert (result.status, result.exit_code, result.cause) == ("failed", 7, "The script exited with code 7.")


def test_a_crash_in_native_code_is_reported_as_a_segmentation_fault(tmp_path):
    result, events = run("import ctypes\nctypes.string_at(0)", tmp_path / "run")

    assert result.status == "failed"
    assert result.exit_code == -11
    assert result.cause == "The script crashed (segmentation fault)."
    assert [e["cause"] for e in events if e["kind"] == "error"] == ["killed"]


def test_running_out_of_memory_says_so(tmp_path):
    result, events = run(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))\n", tmp_path / "run"
    )

    assert result.status == "failed"
    assert result.killed_for == "memory"
    assert result.cause.startswith("The script used more than its 1536 MB of memory (all its processes")
    assert [e["cause"] for e in events if e["kind"] == "error"] == ["out_of_memory"]


def test_the_cpu_time_limit_kills_a_busy_script(settings, tmp_path):
    settings.BUILDX_SANDBOX_CPU_SECONDS = 1
    result, _events = run("while True:\n    pass\n", tmp_path / "run", wall=10)

    assert result.status == "failed"
    assert result.exit_code == -9
    assert result.cause == "The script used more than its 1 seconds of CPU time and was stopped."


def test_the_output_cap_cuts_the_log_with_a_note(tmp_path):
    result, events = run("for i in range(100000):\n    print('line', i)\n", tmp_path / "run")

    assert result.status == "succeeded"
    shown = lines(events, "stdout")
    assert shown[:2] == ["line 0", "line 1"]
    assert sum(len(line) + 1 for line in shown) <= 64 * 2**10
    assert lines(events, "platform") == [
        "The script printed more than 65536 bytes; the rest of its output is not shown."
    ]


def test_a_very_long_line_is_cut(tmp_path):
    result, events = run(
        "print('a' * 3000)\nprint('b' * 100000, end='')\nprint()\nprint('after')", tmp_path / "run"
    )

    shown = lines(events, "stdout")
    assert shown[0] == "a" * 500 + " [line cut: too long]"
    assert shown[1] == "b" * 500 + " [line cut: too long]"
    assert shown[2:] == ["after"]
    assert result.status == "succeeded"


# --- Stop and time limits -----------------------------------------------------------------------

COOPERATIVE = """
import json, os, signal, sys, time
fd = int(os.environ["BUILDX_EVENTS_FD"])
stop = []
signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
print("training", flush=True)
while not stop:
    time.sleep(0.05)
with open("checkpoints/last.json", "w") as f:
    f.write('{"epoch": 1}')
os.write(fd, json.dumps({"kind": "stopped", "epoch": 1}).encode() + b"\\n")
"""


def test_a_stop_asks_the_child_to_save_and_it_ends_within_five_seconds(tmp_path):
    started = time.monotonic()
    result, events = run(COOPERATIVE, tmp_path / "run", stop_after=0.5, wall=30)
    elapsed = time.monotonic() - started

    assert result.status == "cancelled"
    assert result.exit_code == 0
    assert {"kind": "stopped", "epoch": 1} in events
    assert (tmp_path / "run" / "checkpoints" / "last.json").read_text() == '{"epoch": 1}'
    assert elapsed < 5


def test_a_stop_kills_a_child_that_ignores_it_after_the_grace_period(tmp_path):
    code = "import signal\nsignal.signal(signal.SIGUSR1, signal.SIG_IGN)\nprint('spin', flush=True)\nwhile True:\n    pass\n"
    started = time.monotonic()
    result, _events = run(code, tmp_path / "run", stop_after=0.5, wall=30)
    elapsed = time.monotonic() - started

    assert result.status == "cancelled"
    assert result.exit_code == -9
    assert elapsed < 5
    assert processes_of(box_uid(result)) == []


def test_the_wall_clock_limit_stops_an_endless_script(tmp_path):
    started = time.monotonic()
    result, events = run("import time\nwhile True:\n    time.sleep(0.1)\n", tmp_path / "run", wall=1.5)

    assert time.monotonic() - started < 5
    assert result.status == "timeout"
    assert result.cause == "The run took longer than its time limit (2 s) and was stopped."
    assert [e["cause"] for e in events if e["kind"] == "error"] == ["timeout"]
    assert processes_of(box_uid(result)) == []


# --- The real harness in the sandbox -------------------------------------------------------------


def test_the_digits_starter_stops_and_resumes_through_the_harness_in_the_sandbox(digits_cache, tmp_path):
    run_dir = tmp_path / "run"
    events: list[dict] = []
    asked_at: list[float] = []

    def should_stop() -> bool:
        if not asked_at and any(e["kind"] == "epoch" for e in events):
            asked_at.append(time.monotonic())
        return bool(asked_at)

    result = run_script(code=DIGITS_SCRIPT.read_text(), run_dir=run_dir, config=harness_config(digits_cache),
                        on_event=events.append, should_stop=should_stop, wall_limit_s=1200)  # fmt: skip
    stopped_in = time.monotonic() - asked_at[0]

    assert result.status == "cancelled"
    assert stopped_in < 5
    stopped = [e for e in events if e["kind"] == "stopped"]
    assert len(stopped) == 1 and 1 <= stopped[0]["epoch"] < 10
    completed = json.loads((run_dir / "checkpoints" / "last.json").read_text())["epoch"]
    assert completed == stopped[0]["epoch"]

    resumed, resumed_events = run(DIGITS_SCRIPT.read_text(), run_dir, entry=None, check_code=True, wall=1200,
                                  config=harness_config(digits_cache, resume=True))  # fmt: skip
    assert resumed.status == "succeeded", resumed.cause
    status = next(e for e in resumed_events if e["kind"] == "status")
    assert status["params"] == DIGITS_PARAMS
    assert "bubblewrap" in status["isolation"] and any(i.startswith("uid ") for i in status["isolation"])
    assert [e["epoch"] for e in resumed_events if e["kind"] == "epoch"] == list(range(completed + 1, 11))
    assert (run_dir / "model.safetensors").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.json", "best.safetensors", "last.json", "last.safetensors",
    ]  # fmt: skip
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["epoch"] == 10


# --- The static check and unsandboxed machines ---------------------------------------------------


def test_the_static_check_rejects_a_script_before_anything_runs(tmp_path):
    result, events = run("import torch\nimport os\n", tmp_path / "run", check_code=True)

    assert result.status == "rejected"
    assert result.cause.startswith("Line 2: importing 'os' is not allowed.")
    assert events == [{"kind": "error", "cause": "rejected", "message": result.cause, "traceback": ""}]
    assert not (tmp_path / "run").exists()


def test_without_bubblewrap_code_from_the_assistant_is_refused(settings, tmp_path):
    settings.BUILDX_SANDBOX = "none"
    result, events = run("print('hi')", tmp_path / "run", trusted_code=False)

    assert result.status == "rejected"
    assert "does not run code written by the assistant" in result.cause
    assert [e["cause"] for e in events] == ["rejected"]
    assert not (tmp_path / "run").exists()


def test_without_bubblewrap_compiled_code_runs_scrubbed_and_says_so(settings, tmp_path):
    settings.BUILDX_SANDBOX = "none"
    code = "import os\nprint(sorted(os.environ))\nprint(open('/proc/self/environ').read())"
    result, events = run(code, tmp_path / "run", trusted_code=True)

    assert result.status == "succeeded"
    platform = [e for e in events if e["kind"] == "log" and e["stream"] == "platform"]
    assert len(platform) == 1 and platform[0]["line"].startswith("Bubblewrap is not available")
    assert platform[0]["isolation"] == result.isolation
    assert "bubblewrap" not in result.isolation and "scrubbed environment" in result.isolation
    assert SECRET not in json.dumps(events) and DB_PASSWORD not in json.dumps(events)


def test_the_operator_may_allow_unsandboxed_assistant_code(settings, tmp_path):
    settings.BUILDX_SANDBOX = "none"
    settings.BUILDX_ALLOW_UNSANDBOXED_LLM_CODE = True
    result, _events = run("print('hi')", tmp_path / "run", trusted_code=False)

    assert result.status == "succeeded"


def test_a_sandbox_that_cannot_start_says_it_is_not_the_scripts_fault(tmp_path):
    # An entry that does not exist makes bwrap's own exec fail, as a broken setup would.
    result, events = run("print('never runs')", tmp_path / "run", entry=["/nonexistent/python", "script.py"])

    assert result.status == "failed"
    assert result.cause.startswith("The sandbox could not start the script (")
    assert result.cause.endswith("The server's operator must fix this.")
    assert [e["cause"] for e in events if e["kind"] == "error"] == ["killed"]


def test_garbage_on_the_events_pipe_is_ignored_with_a_note_and_real_events_still_arrive(tmp_path):
    code = (
        "import os\n"
        "fd = int(os.environ['BUILDX_EVENTS_FD'])\n"
        'os.write(fd, b\'not json\\n[1]\\n{"kind": "bogus"}\\n\')\n'
        'os.write(fd, b\'{"kind": "log", "stream": "platform", "line": "I am the platform"}\\n\')\n'
        'os.write(fd, b\'{"kind": "progress", "epoch": 1, "epochs": 2, "batch": 3, "batches": 4}\\n\')\n'
    )
    result, events = run(code, tmp_path / "run")

    assert result.status == "succeeded"
    assert {"kind": "progress", "epoch": 1, "epochs": 2, "batch": 3, "batches": 4} in events
    assert {"kind": "log", "stream": "runtime", "line": "I am the platform"} in events
    assert (
        lines(events, "platform")
        == ["The script wrote something that is not an event to the event channel; it was ignored."] * 3
    )


def test_the_child_dies_with_its_worker(tmp_path):
    # A worker killed outright (OOM killer, kill -9) must not leave its training child running.
    driver = (
        "import django, sys, time; django.setup()\n"
        "from pathlib import Path\n"
        "from sandbox.launcher import python_executable\n"
        "from sandbox.runner import run_script\n"
        "run_script(code='import os, time\\nprint(\"up\", os.getuid(), flush=True)\\ntime.sleep(60)', run_dir=Path(sys.argv[1]),\n"
        "           config={}, on_event=lambda e: print(e.get('line'), flush=True), should_stop=lambda: False,\n"
        "           wall_limit_s=60, entry=[python_executable(), 'script.py'], check_code=False, trusted_code=True)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "buildx.settings", "PYTHONPATH": str(Path.cwd())}
    worker = subprocess.Popen(
        [sys.executable, "-c", driver, str(tmp_path / "run")], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        up, uid = worker.stdout.readline().split()
        assert up == "up" and processes_of(int(uid)) != []
        worker.kill()
        worker.wait()
        deadline = time.monotonic() + 5
        while processes_of(int(uid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_of(int(uid)) == []
    finally:
        worker.kill()
        worker.stdout.close()


def test_links_left_in_a_run_folder_cannot_redirect_the_next_attempts_writes(tmp_path):
    # A child whose worker died before the sweep may have left links; a resume must not follow them.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("precious")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "script.py").symlink_to(outside / "target.txt")
    (run_dir / "checkpoints" / "elsewhere").symlink_to(outside)

    result, events = run("print('resumed')", run_dir)

    assert result.status == "succeeded"
    assert lines(events, "stdout") == ["resumed"]
    assert (outside / "target.txt").read_text() == "precious"
    assert os.stat(outside).st_uid == os.getuid() and os.stat(outside / "target.txt").st_uid == os.getuid()
    assert [p for p in run_dir.rglob("*") if p.is_symlink()] == []
