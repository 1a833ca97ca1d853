"""The hostile corpus (hostile/, README.md there): every script four ways, each with its verdict.

Each script runs with the static check on and off, in a box started for it (`run_script`, "cold") and
in a box started ahead of time (`sandbox.checks.run_check`, the code-check path, where the harness
imports the script). With the check on, a script with a line marked `# HOSTILE` must be rejected
naming that line before anything runs. Every other run must be contained: it fails, times out or
succeeds, and no secret of the worker's environment reaches an event or a file, nothing is written
outside the box's folder, nothing connects to the canary listener, no process or symlink is left,
no `result` event gets through, and what a worker copies on a checkpoint event is an ordinary file
of a believable size. How the scripts are run is in hostile_runs.py (bench/hostile_corpus.py uses it).

Limits are small and scripts without torch run as `python script.py` when cold. Most of the file's
time (about two minutes on two quiet cores, three to four when other work shares them) is the torch
import of each box started ahead of time: run_check uses a box once, and every script that runs
there needs a new one (about 2.5 s of CPU each).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from sandbox import checks, runner
from sandbox.engine import datasets as ds
from sandbox.events import KINDS
from sandbox.static_check import check_script
from sandbox.tests.hostile_runs import (
    BREACH_WORDS,
    CHECKPOINT_BOUND,
    CHECKPOINT_META_BOUND,
    DB_PASSWORD,
    ESCAPE_PATHS,
    EXPECT,
    HOSTILE_DIR,
    NEIGHBOUR_SECRET,
    SCRIPTS,
    SECRET,
    SECRETS,
    SMALL_LIMITS,
    Canary,
    Expect,
    Outcome,
    check_config,
    hostile_inputs,
    hostile_line,
    run_cold,
    run_config,
    run_through_check_path,
)


@pytest.fixture(scope="module")
def box_work_dir(tmp_path_factory) -> Path:
    """Where this module's boxes keep their folders: nothing but box folders may appear there."""
    return tmp_path_factory.mktemp("boxes")


@pytest.fixture(autouse=True)
def small_limits(settings, box_work_dir):
    for name, value in SMALL_LIMITS.items():
        setattr(settings, name, value)
    settings.BUILDX_SANDBOX_WORK_DIR = box_work_dir


@pytest.fixture(scope="module", autouse=True)
def no_box_left_waiting():
    yield
    checks.shutdown()


@pytest.fixture(autouse=True)
def worker_secrets(monkeypatch):
    """What a real worker's environment holds and a child must never see."""
    set_worker_secrets(monkeypatch)


def set_worker_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDX_TEST_SECRET", SECRET)
    monkeypatch.setenv("DATABASE_URL", f"postgres://buildx:{DB_PASSWORD}@127.0.0.1:5432/buildx")
    monkeypatch.setenv("REDIS_URL", f"redis://:{DB_PASSWORD}@127.0.0.1:6379/4")


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    return ds.ensure_cache("digits", data_dir=folder, cache_dir=folder)


@pytest.fixture(scope="module")
def canary_listener() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture
def canary(canary_listener) -> Canary:
    canary_listener.connections.clear()  # a straggler of an earlier test fails that test, not this one
    return canary_listener


@pytest.fixture
def run_dir(tmp_path) -> Iterator[Path]:
    """A cold run's folder, deleted after the test: a disk filler leaves hundreds of megabytes in it."""
    yield tmp_path / "run"
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.fixture
def neighbour(tmp_path) -> Path:
    """Another run's checkpoint beside this run's folder, which no script may read."""
    path = tmp_path / "neighbour" / "checkpoints" / "best.safetensors"
    path.parent.mkdir(parents=True)
    path.write_text(NEIGHBOUR_SECRET)
    return path


# --- Assertions --------------------------------------------------------------------------------------


def assert_rejected(outcome: Outcome, line: int) -> None:
    assert outcome.result.status == "rejected", outcome.result.cause
    assert f"Line {line}: " in outcome.result.cause
    assert outcome.events == [
        {"kind": "error", "cause": "rejected", "message": outcome.result.cause, "traceback": ""}
    ]
    if outcome.cold:
        assert not outcome.run_dir.exists()  # never made
    else:
        assert not any(outcome.run_dir.iterdir())  # the waiting box was left for the next check, untouched


def assert_contained(outcome: Outcome, *, tmp_path: Path, canary: Canary, box_work_dir: Path) -> None:
    assert outcome.result.status in {"failed", "timeout", "succeeded"}, outcome.result.cause
    text = json.dumps(outcome.events)
    for secret in SECRETS:
        assert secret not in text
    for copy in outcome.copies:
        assert len(copy.data) <= CHECKPOINT_BOUND + CHECKPOINT_META_BOUND
        assert not any(secret.encode() in copy.data for secret in SECRETS)
    assert canary.connections == []
    assert [p for p in ESCAPE_PATHS if p.exists()] == []
    for word in BREACH_WORDS:
        assert word not in text
    platform = [e["line"] for e in outcome.events if e["kind"] == "log" and e["stream"] == "platform"]
    assert not any("FORGED" in line for line in platform)
    # A training child's own results never count: the trusted evaluation measures the model.
    assert {e["kind"] for e in outcome.events} <= set(KINDS) - {"result"}
    assert processes_in(tmp_path) == []
    assert processes_in(box_work_dir, besides=checks.waiting_pids()) == []
    # Nothing beside the run folder but the neighbour the test planted; no box folder but the waiting one.
    neighbour = tmp_path / "neighbour"
    assert files_outside(tmp_path, outcome.run_dir) == sorted(map(str, [neighbour, *neighbour.rglob("*")]))
    assert len(list(box_work_dir.iterdir())) <= SMALL_LIMITS["BUILDX_SANDBOX_PRESPAWN"]
    if outcome.cold:  # the folder stays, as a run's does
        for path in outcome.run_dir.rglob("*"):
            info = path.lstat()
            assert not stat.S_ISLNK(info.st_mode), f"{path} is a link left in the run folder"
            if stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
                assert not any(secret.encode() in content for secret in SECRETS), path
    else:
        assert not outcome.run_dir.exists()


def assert_expected(outcome: Outcome, expect: Expect) -> None:
    if expect.status:
        assert outcome.result.status == expect.status, outcome.result.cause
    if expect.killed_for:
        assert outcome.result.killed_for == expect.killed_for, outcome.result.cause
    refused = {copy.name: copy.refused for copy in outcome.copies}
    for name, code in expect.copies.items():
        assert refused.get(name) == code, refused
    if expect.threads_below is not None:
        [line] = [e["line"] for e in outcome.events if e["kind"] == "log" and e["line"].startswith("threads")]
        assert int(line.split(":")[1]) < expect.threads_below
    if expect.note:
        assert any(
            e["kind"] == "log" and e["stream"] == "platform" and e["line"].startswith(expect.note)
            for e in outcome.events
        )


def processes_in(directory: Path, *, besides: Iterable[int] = ()) -> list[int]:
    """Pids whose working directory is inside `directory` (a straggler), except `besides` and the processes
    descended from them. Ancestry is read for each process found, when it is found: a box started ahead
    of time still forks its harness after the test lists what it spares, and a list of descendants taken
    first missed that child (a straggler reported that was the waiting box's own harness)."""
    spared = set(besides)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:  # gone meanwhile: nothing left behind
                continue
            if cwd.startswith(str(directory)) and not spared.intersection(ancestry(int(entry))):
                found.append(int(entry))
    return found


def ancestry(pid: int) -> list[int]:
    """`pid` and its parents up to init (/proc/<pid>/stat: the parent's pid follows the command's ")")."""
    chain = [pid]
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:  # an ancestor gone meanwhile: the chain ends there
            break
        chain.append(pid)
    return chain


def files_outside(root: Path, run_dir: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if not p.is_relative_to(run_dir) and p != run_dir)


# --- The corpus -------------------------------------------------------------------------------------

WAYS = [("check-path", False), ("check-path", True), ("cold", False), ("cold", True)]
UNMARKED = [path for path in SCRIPTS if hostile_line(path.read_text()) is None]


def cases() -> list:
    # Script by script, the check path first: its box was started ahead during the previous script's
    # cold runs, and the rejection right after takes the box that replaced it before it costs much.
    # A script without a marked line passes the check (the test below), so with the check on it runs
    # exactly as with the check off: it runs once each way, with the check on as in production.
    return [
        pytest.param(path, way, check, id=f"{path.stem}-{way}-check-{'on' if check else 'off'}")
        for path in SCRIPTS
        for way, check in WAYS
        if check or path not in UNMARKED
    ]


def test_the_corpus_has_at_least_fifty_scripts():
    assert len(SCRIPTS) >= 50


@pytest.mark.parametrize("path", UNMARKED, ids=lambda p: p.stem)
def test_a_script_without_a_marked_line_passes_the_check_so_the_sandbox_alone_must_hold_it(path):
    assert check_script(path.read_text()) == []


@pytest.mark.parametrize("path, way, check", cases())
def test_a_hostile_script_is_rejected_naming_its_line_or_contained(
    path, way, check, tmp_path, run_dir, canary, neighbour, digits_cache, box_work_dir
):
    code = path.read_text()
    line = hostile_line(code)
    expect = EXPECT.get(path.stem, Expect())
    inputs = hostile_inputs(canary, neighbour)
    if way == "cold":
        outcome = run_cold(code, check=check, run_dir=run_dir, config=run_config(digits_cache),
                           cache=digits_cache, inputs=inputs, wall=expect.wall)  # fmt: skip
    else:
        outcome = run_through_check_path(
            code, check=check, config=check_config(digits_cache), cache=digits_cache, inputs=inputs,
            wall=expect.wall, box_work_dir=box_work_dir,
        )  # fmt: skip

    if check and line is not None:
        assert_rejected(outcome, line)
    else:
        # Nothing in the code for the check to see, or the check is off: the sandbox holds it.
        assert_contained(outcome, tmp_path=tmp_path, canary=canary, box_work_dir=box_work_dir)
        assert_expected(outcome, expect)


def test_a_burst_of_files_leaves_no_more_than_the_disk_limit_and_one_file(canary, neighbour, digits_cache):
    # A run's box has its own run folder, a tmpfs of the disk limit: the kernel stops the burst, not
    # the supervisor a second later.
    code = (HOSTILE_DIR / "h57_disk_burst.py").read_text()
    with runner.open_box() as box:
        outcome = run_cold(code, check=False, run_dir=None, config=run_config(digits_cache), cache=digits_cache,
                           inputs=hostile_inputs(canary, neighbour), wall=10, box=box)  # fmt: skip
        on_disk = sum(path.lstat().st_blocks * 512 for path in box.run_dir.rglob("*"))

    assert outcome.result.killed_for == "disk"
    assert on_disk <= SMALL_LIMITS["BUILDX_SANDBOX_DISK_BYTES"]


# --- A code check and a run look the same from inside -----------------------------------------------

# What differs between any two boxes, not between a check and a run: the uid leased from the pool (and
# the passwd line naming it), the process's age (a box started ahead waited), the host paths behind
# the mounts (their own test below).
DIFFERS_PER_BOX = {"uid", "passwd", "process age", "mount root", "box beside its data"}


@pytest.fixture(scope="module")
def observations(tmp_path_factory, digits_cache, box_work_dir, canary_listener) -> dict[str, dict]:
    """h55 through the check path and cold, both through the harness with the same config and dataset:
    what each printed, by what it looked at."""
    folder = tmp_path_factory.mktemp("observe")
    neighbour = folder / "neighbour.safetensors"
    neighbour.write_text(NEIGHBOUR_SECRET)
    code = (HOSTILE_DIR / "h55_check_or_run.py").read_text()
    config = check_config(digits_cache)
    with (
        override_settings(**SMALL_LIMITS, BUILDX_SANDBOX_WORK_DIR=box_work_dir),
        pytest.MonkeyPatch.context() as patch,
    ):
        set_worker_secrets(patch)
        checked = run_through_check_path(
            code, check=False, config=config, cache=digits_cache, inputs=hostile_inputs(canary_listener, neighbour),
            wall=10, box_work_dir=box_work_dir,
        )  # fmt: skip
        with runner.open_box() as box:  # as the runs app does: the box's own run folder
            ran = run_cold(code, check=False, run_dir=None, config=config, cache=digits_cache,
                           inputs=hostile_inputs(canary_listener, neighbour), wall=10, harness=True,
                           box=box)  # fmt: skip
    return {"check": printed(checked), "run": printed(ran)}


def printed(outcome: Outcome) -> dict[str, list[str]]:
    """The script's `OBSERVED <what>: <value>` lines, by what; pipes' inode numbers left out."""
    assert outcome.result.status == "failed", outcome.result.cause  # no build_model(): the contract
    assert not any(secret in json.dumps(outcome.events) for secret in SECRETS)
    found: dict[str, list[str]] = {}
    for event in outcome.events:
        if event["kind"] == "log" and event["line"].startswith("OBSERVED "):
            what, _, value = event["line"].removeprefix("OBSERVED ").partition(": ")
            found.setdefault(what, []).append(re.sub(r"pipe:\[\d+\]", "pipe", value))
    return found


def test_a_script_sees_the_same_box_in_a_code_check_as_in_a_run(observations, settings):
    check, run = observations["check"], observations["run"]

    assert set(check) == set(run) and "env" in check and "mount" in check
    for what in set(check) - DIFFERS_PER_BOX:
        assert check[what] == run[what], what
    pool = range(
        settings.BUILDX_SANDBOX_UID_BASE, settings.BUILDX_SANDBOX_UID_BASE + settings.BUILDX_SANDBOX_UID_COUNT
    )
    for seen in (check, run):
        uid, euid, gid, egid, groups = ast.literal_eval(seen["uid"][0])
        assert uid == euid == gid == egid and uid in pool and groups == []


def test_the_host_paths_behind_a_boxs_mounts_do_not_tell_a_check_from_a_run(observations):
    assert observations["check"]["box beside its data"] == observations["run"]["box beside its data"]
