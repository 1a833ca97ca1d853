"""The warm sandbox for code checks: the verdicts of a new sandbox, its isolation, and no way from one
check to the next.

Checks here go through run_script(warm=True) in a warm.check_dir(), as designs.codegen does; the
`forked_only` fixture makes any fall-back to a new sandbox fail the test, so what passes really ran
in a forked child. After a hostile check, a probe check reports what it can see of the one before
(processes, files in /tmp, System V IPC objects): nothing. Timings are for bench/codegen.py; here the
warm process's pid says that one process served both checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
from django.conf import settings

import sandbox.runner as sandbox
from designs import codegen, services
from sandbox import warm
from sandbox.engine import datasets as ds
from training.tests.test_sandbox import (  # noqa: F401 - small_limits and worker_secrets: autouse fixtures
    DB_PASSWORD,
    DIGITS_PARAMS,
    DIGITS_SCRIPT,
    ESCAPE_PATHS,
    HOSTILE,
    SECRET,
    Canary,
    harness_config,
    lines,
    processes_in,
    small_limits,
    worker_secrets,
)

# Reports, from inside the sandbox, what an earlier check could have left for this one; then the
# digits script, so that the check passes when nothing is found.
PROBE = """
import json, os
others = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid()))
ipc = {kind: open(f"/proc/sysvipc/{kind}").read().splitlines()[1:] for kind in ("shm", "msg", "sem")}
tmp = []
# The sandbox's own mount points and the folders leading to them are its scaffolding, not leftovers
# (with the project under /tmp, as in a CI clone, its bind mounts sit under this tmpfs).
mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
for root, dirs, files in os.walk("/tmp"):
    # Not into the folder of the checks, bound from the worker's disk (a mount of its own).
    dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == os.lstat("/tmp").st_dev]
    for name in dirs + files:
        path = os.path.join(root, name)
        if not any(m == path or m.startswith(path + "/") for m in mounts):
            tmp.append(path)
print("LEFTOVERS", json.dumps({"processes": others, "ipc": ipc, "tmp": tmp}))
"""


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    return ds.ensure_cache("digits", data_dir=folder, cache_dir=folder)


@pytest.fixture
def canary():
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture(autouse=True, scope="module")
def stop_the_warm_sandbox_afterwards():
    yield
    warm.shutdown()


@pytest.fixture(autouse=True)
def checks_on(settings):
    settings.BUILDX_SANDBOX_WARM = True
    settings.BUILDX_CODEGEN_SMOKE_WALL_S = 20


@pytest.fixture
def forked_only(monkeypatch):
    """Fail the test if a check starts a new sandbox instead of a child of the warm one."""

    def refuse(self, **kwargs):
        raise AssertionError("the check did not run in the warm sandbox")

    monkeypatch.setattr(sandbox._Supervisor, "run", refuse)


@contextlib.contextmanager
def check(code: str, cache: Path, *, wall: float = 5, on_event=None, **config_changes):
    """Run `code` through the harness (smoke mode) as code generation does; yields (result, events, work)
    before the check's folder is deleted."""
    events: list[dict] = []

    def record(event: dict) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    with warm.check_dir() as work:
        (work / "data").mkdir()
        shutil.copy(cache, work / "data" / "digits.pt")
        config = harness_config(work / "data" / "digits.pt", smoke=True, **config_changes)
        result = sandbox.run_script(
            code=code,
            run_dir=work / "run",
            config=config,
            on_event=record,
            should_stop=lambda: False,
            wall_limit_s=wall,
            check_code=False,
            warm=True,
            threads=settings.BUILDX_CODEGEN_THREADS,
        )
        yield result, events, work


def probe(cache: Path) -> dict:
    """What a check sees of the checks before it, after it passed."""
    future = "from __future__ import annotations\n"
    with check(DIGITS_SCRIPT.read_text().replace(future, future + PROBE, 1), cache) as (
        result,
        events,
        _work,
    ):
        assert result.status == "succeeded", result.cause
    [line] = [line for line in lines(events, "stdout") if line.startswith("LEFTOVERS ")]
    return json.loads(line.removeprefix("LEFTOVERS "))


NOTHING_LEFT = {"processes": [], "ipc": {"shm": [], "msg": [], "sem": []}, "tmp": []}


# --- The same verdicts ---------------------------------------------------------------------------------


@pytest.fixture
def version(alice):
    design = services.design_create_from_starter(owner=alice, slug="tiny_cnn_digits")
    return design.versions.get()


def checks_of(code: str, version) -> list[tuple[str, bool, str]]:
    reference = services.artifact_compile(version=version).code
    outcome = codegen.run_checks(code, reference=reference, spec=version.spec, report=version.report)
    return [(c.name, c.ok, c.message) for c in outcome.checks]


VARIANTS = {
    "good": lambda code: code,
    "wrong_model": lambda code: code.replace("nn.Linear(128, 10)", "nn.Linear(128, 10, bias=False)"),
    "crash_on_first_batch": lambda code: code.replace(
        "loss = loss_fn(logits, y)", "loss = loss_fn(logits, y.float())"
    ),
    "imports_os_and_opens_files": lambda code: code.replace(
        "import torch\n", 'import os\nimport torch\n\nSECRETS = open("/etc/passwd").read()\n', 1
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_check_gives_the_same_checks_and_messages_in_the_warm_sandbox_as_in_a_new_one(
    variant, version, settings, monkeypatch
):
    code = VARIANTS[variant](services.artifact_compile(version=version).code)
    forked = []
    run_forked = sandbox._Supervisor.run_forked

    def counted(self, **kwargs):
        forked.append(kwargs["run_dir"])
        return run_forked(self, **kwargs)

    monkeypatch.setattr(sandbox._Supervisor, "run_forked", counted)

    settings.BUILDX_SANDBOX_WARM = False
    cold = checks_of(code, version)
    assert forked == []
    settings.BUILDX_SANDBOX_WARM = True
    hot = checks_of(code, version)

    assert hot == cold
    assert len(forked) == (0 if variant == "imports_os_and_opens_files" else 1)
    verdicts = {name: ok for name, ok, _message in hot}
    if variant == "good":
        assert verdicts == {"static": True, "contract": True, "model": True, "smoke": True}
    elif variant == "wrong_model":
        assert verdicts["model"] is False and "parameters but the design has" in hot[2][2]
    elif variant == "crash_on_first_batch":
        assert verdicts["model"] is True and verdicts["smoke"] is False
    else:
        assert verdicts == {"static": False}  # the sandbox never sees it


def test_an_endless_training_loop_fails_the_smoke_check_at_the_time_limit(version, settings, forked_only):
    settings.BUILDX_CODEGEN_SMOKE_WALL_S = 3
    code = services.artifact_compile(version=version).code.replace(
        "            loss.backward()\n",
        "            loss.backward()\n            while True:\n                pass\n",
    )

    checks = checks_of(code, version)

    assert checks[:3] == [("static", True, ""), ("contract", True, ""), ("model", True, "")]
    assert checks[3][:2] == ("smoke", False)
    assert checks[3][2].startswith("The run took longer than its time limit (3 s) and was stopped.")


def test_one_warm_process_serves_check_after_check(digits_cache, forked_only):
    with check(DIGITS_SCRIPT.read_text(), digits_cache) as (first, events, _work):
        assert first.status == "succeeded", first.cause
        pid = warm.current_pid()
    with check(DIGITS_SCRIPT.read_text(), digits_cache) as (second, _events, _work):
        assert second.status == "succeeded", second.cause

    assert pid is not None and warm.current_pid() == pid
    assert next(e for e in events if e["kind"] == "status")["params"] == DIGITS_PARAMS
    assert lines(events, "runtime")[-1] == "Smoke run finished: one batch trained and evaluated."
    assert "bubblewrap" in first.isolation and "seccomp" in first.isolation and "rlimits" in first.isolation


# --- The same isolation, and nothing from one check reaches the next ------------------------------------


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.stem)
def test_a_hostile_script_in_the_warm_sandbox_is_contained_and_the_next_check_finds_nothing_of_it(
    path, digits_cache, canary, forked_only
):
    config = {"canary_port": canary.port, "canary_hosts": canary.hosts()}
    with check(path.read_text(), digits_cache, wall=3, **config) as (result, events, work):
        assert result.status in {"failed", "timeout", "succeeded"}
        run_dir = work / "run"
        text = json.dumps(events)
        assert SECRET not in text and DB_PASSWORD not in text
        for file in run_dir.rglob("*"):
            if file.is_file():
                assert (
                    SECRET.encode() not in file.read_bytes() and DB_PASSWORD.encode() not in file.read_bytes()
                )
        assert sorted(p.name for p in work.iterdir()) == ["data", "run"]
        assert [p.name for p in (work / "data").iterdir()] == ["digits.pt"]
        assert [p for p in work.parent.iterdir() if p != work] == []
        assert [p for p in run_dir.rglob("*") if p.is_symlink()] == []
        assert processes_in(work) == []
    pid = warm.current_pid()

    assert [p for p in ESCAPE_PATHS if p.exists()] == []
    assert canary.connections == []
    for word in ("CONNECTED", "ROOT", "UNSHARED", "HARDLINKED", "DOWNLOADED", "RAISED"):
        assert word not in text
    forged = [e for e in events if e["kind"] == "log" and e["stream"] == "platform" and "FORGED" in e["line"]]
    assert forged == []
    assert probe(digits_cache) == NOTHING_LEFT
    assert pid is not None and warm.current_pid() == pid  # no check can stop the fork server


def test_a_check_cannot_leave_a_daemon_files_or_shared_memory_for_the_next(digits_cache, forked_only):
    hostile = """
import ctypes, os, time
libc = ctypes.CDLL(None)
libc.shmget(0x1234, 4096, 0o1666)  # IPC_CREAT | 0666
libc.msgget(0x1235, 0o1666)
os.makedirs("/tmp/left/locked")
open("/tmp/left/locked/note.txt", "w").write("for the next check")
os.chmod("/tmp/left/locked", 0)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            time.sleep(0.1)
    os._exit(0)
print("left things behind", flush=True)
"""
    with check(hostile, digits_cache) as (result, events, _work):
        assert "left things behind" in lines(events, "stdout")
        assert result.status == "failed"  # no model: the contract check fails after the top level ran

    assert probe(digits_cache) == NOTHING_LEFT


def test_a_check_that_tries_to_kill_the_process_that_forked_it_fails_and_the_next_check_runs(
    digits_cache, forked_only
):
    hostile = """
import os, signal
for pid in (os.getppid(), 1, -1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as error:
        print("refused", pid, error)
print("still here", flush=True)
"""
    with check(DIGITS_SCRIPT.read_text(), digits_cache) as (before, _events, _work):
        assert before.status == "succeeded"
        pid = warm.current_pid()
    with check(hostile, digits_cache) as (result, events, _work):
        pass

    # pid 1 of the namespace does not get signals it does not handle; kill(-1) finds nobody else.
    assert "still here" in lines(events, "stdout")
    assert result.status == "failed"
    assert (
        result.cause
        == "The model does not match the design: The script must define a function named build_model()."
    )
    assert probe(digits_cache) == NOTHING_LEFT
    assert warm.current_pid() == pid


def test_a_warm_sandbox_that_dies_during_a_check_fails_that_check_and_the_next_check_starts_a_new_one(
    digits_cache, forked_only
):
    with check(DIGITS_SCRIPT.read_text(), digits_cache) as (before, _events, _work):
        assert before.status == "succeeded"
        pid = warm.current_pid()

    def kill_the_fork_server(event: dict) -> None:
        if event.get("line") == "up":
            os.kill(pid, signal.SIGKILL)  # from outside: nothing inside the sandbox can

    sleeper = 'import time\nprint("up", flush=True)\ntime.sleep(30)\n'
    with check(sleeper, digits_cache, wall=20, on_event=kill_the_fork_server) as (result, events, _work):
        pass

    assert result.status == "failed"
    assert result.cause.startswith("The sandbox that ran the script stopped while the script ran")
    assert [e["cause"] for e in events if e["kind"] == "error"] == ["killed"]
    with check(DIGITS_SCRIPT.read_text(), digits_cache) as (after, _events, _work):
        assert after.status == "succeeded", after.cause
    assert warm.current_pid() not in (None, pid)


def test_code_generation_starts_the_warm_sandbox_before_it_asks_the_llm_and_the_check_uses_it(
    digits_cache, forked_only, monkeypatch
):
    warm.shutdown()
    starts = []
    start = warm._WarmSandbox.start

    def counted(self):
        starts.append(self)
        start(self)

    monkeypatch.setattr(warm._WarmSandbox, "start", counted)

    codegen.prepare_checks()
    assert len(starts) == 1  # started, not waited for
    with check(DIGITS_SCRIPT.read_text(), digits_cache) as (result, _events, _work):
        assert result.status == "succeeded", result.cause

    assert len(starts) == 1 and warm.current_pid() == starts[0].pid


def test_new_sandbox_settings_start_a_new_warm_process(digits_cache, settings, forked_only):
    with check(DIGITS_SCRIPT.read_text(), digits_cache) as (first, _events, _work):
        assert first.status == "succeeded"
        pid = warm.current_pid()
    settings.BUILDX_SANDBOX_FILE_BYTES = 4 * 2**20
    writer = "data = b'x' * (6 * 2**20)\nopen('big.bin', 'wb').write(data)\n"

    with check(writer, digits_cache) as (result, _events, _work):
        pass

    assert warm.current_pid() not in (None, pid)
    assert result.status == "failed" and "File too large" in result.cause  # the new limit applies


# --- When the warm sandbox is not there --------------------------------------------------------------------


def test_a_second_check_at_the_same_time_starts_a_sandbox_of_its_own(digits_cache):
    held = threading.Event()
    release = threading.Event()

    def hold_the_warm_sandbox() -> None:
        with warm.check_dir() as work:
            assert work.parent.name.startswith("buildx-checks-")
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold_the_warm_sandbox)
    holder.start()
    try:
        assert held.wait(60)
        with check(DIGITS_SCRIPT.read_text(), digits_cache, wall=60) as (result, _events, work):
            assert not work.parent.name.startswith("buildx-checks-")
    finally:
        release.set()
        holder.join()

    assert result.status == "succeeded", result.cause
    assert "bubblewrap" in result.isolation


def test_without_bubblewrap_a_check_is_refused_as_before(digits_cache, settings):
    settings.BUILDX_SANDBOX = "none"

    with check(DIGITS_SCRIPT.read_text(), digits_cache) as (result, events, work):
        assert not work.parent.name.startswith("buildx-checks-")

    assert result.status == "rejected"
    assert "does not run code written by the assistant" in result.cause
    assert [e["cause"] for e in events] == ["rejected"]
