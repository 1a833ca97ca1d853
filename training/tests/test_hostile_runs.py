"""Runs of hostile code through the whole runs app: what the child writes is input, never trusted.

Each script is the compiled digits starter with an attack added to its train(), stored as code "from
the assistant" that passed its checks, and run by run_execute exactly as a worker would, with the
static check switched off (it is a filter, not the boundary: these attacks must fail without it).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

import sandbox.runner
from designs.models import CodeArtifact
from training import services
from training.models import Run, RunArtifact, RunEvent
from training.tests.conftest import make_design

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TRAIN = "def train(model: nn.Module, data: rt.Data) -> None:\n"


@pytest.fixture(autouse=True)
def no_static_check(monkeypatch, run_storage, fast_liveness):
    monkeypatch.setattr(sandbox.runner, "check_script", lambda code: [])


@pytest.fixture
def canary(tmp_path):
    """A file only the worker can read, with a secret nobody may ever see in a run."""
    secret = f"CANARY-{uuid.uuid4().hex}"
    path = tmp_path / "secret" / "canary.txt"
    path.parent.mkdir()
    path.write_text(f"SECRET_KEY={secret}\n")
    path.parent.chmod(0o700)
    return path, secret


def hostile_run(owner, attack: str, *, epochs: int = 2) -> Run:
    """A queued run of the starter with `attack` (lines of Python) at the top of its train()."""
    version, compiled = make_design(owner, epochs=epochs, name="Hostile")
    body = "".join(f"    {line}\n" for line in attack.strip("\n").splitlines())
    code = compiled.code.replace(TRAIN, TRAIN + body, 1)
    artifact = CodeArtifact.objects.create(
        version=version,
        source=CodeArtifact.Source.LLM,
        status=CodeArtifact.Status.READY,
        code=code,
        checks=[{"name": "weights", "ok": True}],  # the weights contract held at its check
    )
    return services.run_create(owner=owner, version=version, artifact=artifact)


def execute(run: Run) -> Run:
    claimed = services.run_claim(run_id=run.pk)
    assert claimed is not None
    return services.run_execute(run=claimed)


def everything_stored(run: Run) -> str:
    """Every byte the platform kept of a run: its row, its events, its files."""
    run.refresh_from_db()
    parts = [json.dumps([run.error, run.traceback, run.metrics, run.cause])]
    parts += [json.dumps(e.payload) for e in RunEvent.objects.filter(run=run)]
    for artifact in RunArtifact.objects.filter(run=run):
        with artifact.file.open("rb") as f:
            parts.append(f.read().decode("latin-1"))
    return "\n".join(parts)


def platform_lines(run: Run) -> list[str]:
    return [
        line
        for e in RunEvent.objects.filter(run=run, kind=RunEvent.Kind.LOG)
        if e.payload["stream"] == "platform"
        for line in e.payload["lines"]
    ]


def test_a_symlinked_checkpoint_with_a_forged_event_is_refused_and_never_served(alice, alice_client, canary):
    path, secret = canary
    run = hostile_run(
        alice,
        f"""
import json, os
os.makedirs("checkpoints", exist_ok=True)
os.symlink({str(path)!r}, "checkpoints/last.safetensors")
os.symlink("/proc/self/environ", "checkpoints/best.safetensors")
for name in ("last", "best"):
    with open(f"checkpoints/{{name}}.json", "w") as f:
        f.write(json.dumps({{"epoch": 1}}))
    os.write(3, json.dumps({{"kind": "checkpoint", "epoch": 1, "name": name, "metric": 0.5}}).encode() + b"\\n")
os.rename("checkpoints", "moved")
os.symlink({str(path.parent)!r}, "checkpoints")
os.write(3, json.dumps({{"kind": "checkpoint", "epoch": 1, "name": "last", "metric": 0.5}}).encode() + b"\\n")
""",
    )
    run = execute(run)

    assert secret not in everything_stored(run)
    assert "PATH=" not in everything_stored(run)  # nothing of any process's environment either
    assert not RunArtifact.objects.filter(run=run, kind__startswith="checkpoint_").exists()
    refused = [line for line in platform_lines(run) if "was not kept" in line]
    assert len(refused) == 3, platform_lines(run)
    for kind in ("checkpoint_last", "checkpoint_best"):
        assert alice_client.get(f"/api/v1/runs/{run.pk}/artifacts/{kind}/").status_code == 404


def test_a_checkpoint_larger_than_its_model_can_weigh_is_refused(alice):
    run = hostile_run(
        alice,
        """
import json, os
os.makedirs("checkpoints", exist_ok=True)
with open("checkpoints/last.safetensors", "wb") as f:
    f.truncate(64 * 2**20)  # far more than 10,000 parameters and their optimizer state
with open("checkpoints/last.json", "w") as f:
    f.write(json.dumps({"epoch": 1}))
os.write(3, json.dumps({"kind": "checkpoint", "epoch": 1, "name": "last", "metric": 0.5}).encode() + b"\\n")
""",
    )
    run = execute(run)

    assert not RunArtifact.objects.filter(
        run=run, kind=RunArtifact.Kind.CHECKPOINT_LAST, epoch=1
    ).exists() or (RunArtifact.objects.get(run=run, kind=RunArtifact.Kind.CHECKPOINT_LAST).size < 2**20)
    assert any("was not kept" in line and "bytes" in line for line in platform_lines(run))
    # The forged event changed nothing else: the script trained on, and the run ended as usual.
    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)


def test_a_forged_result_changes_nothing_the_run_stores(alice):
    forged = 'os.write(3, json.dumps({"kind": "result", "test": {"accuracy": 1.0, "samples": 359}}).encode() + b"\\n")'
    run = hostile_run(alice, f"import json, os\n{forged}\n")
    run = execute(run)

    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)
    assert run.metrics_source == Run.MetricsSource.PLATFORM
    assert run.metrics["accuracy"] < 1.0
    # The stored numbers are the platform's own measurement of the stored model, again.
    model = RunArtifact.objects.get(run=run, kind=RunArtifact.Kind.MODEL)
    with model.file.open("rb") as weights:
        again, _error = services.run_evaluate(
            run=run, weights=weights, dataset=services.dataset_caches("digits")[1]
        )
    assert again == run.metrics
    assert any("reported test results itself" in line for line in platform_lines(run))


def test_a_forged_result_and_an_early_exit_fail_the_run_without_metrics(alice):
    run = hostile_run(
        alice,
        'import json, os\nos.write(3, json.dumps({"kind": "result", "test": {"accuracy": 1.0}}).encode() + b"\\n")\n'
        "os._exit(0)\n",
    )
    run = execute(run)

    assert run.status == Run.Status.FAILED
    assert run.metrics == {} and run.cause == "evaluation"
    assert "left no usable trained model" in run.error


@pytest.mark.parametrize(
    "flood, what",
    [
        ('for i in range(20000):\n    os.write(3, (json.dumps({"kind": "epoch", "epoch": 1, "epochs": 2}) + "\\n").encode())',
         "more than 2 epoch events"),
        ('os.write(3, (json.dumps({"kind": "status", "status": "running", "device": "x" * 60000}) + "\\n").encode())',
         "an event of 600"),
    ],
    ids=["20000 epochs", "60 kB status"],
)  # fmt: skip
def test_an_event_flood_ends_the_run_with_its_cause_is_charged_and_not_resumed(alice, flood, what):
    run = hostile_run(alice, f"import json, os\n{flood}\nimport time\ntime.sleep(900)\n")
    started = time.monotonic()
    run = execute(run)

    # Killed at the limit, not at the end of its sleep: seconds when idle; the room is for a loaded machine.
    assert time.monotonic() - started < 450
    assert run.status == Run.Status.FAILED
    assert run.cause == "event_limit"
    assert what in run.error
    assert RunEvent.objects.filter(run=run).count() < 50
    assert run.run_seconds > 0
    assert services.runs_check_stale() == [] and run.auto_resumes == 0
    statuses = [e.payload["status"] for e in RunEvent.objects.filter(run=run, kind=RunEvent.Kind.STATUS)]
    assert "interrupted" not in statuses


def test_an_execution_taken_from_its_worker_is_still_charged(alice):
    run = hostile_run(alice, "import time\ntime.sleep(30)\n")
    claimed = services.run_claim(run_id=run.pk)

    def take_it() -> None:
        time.sleep(4)  # the stale check of another worker, in effect
        Run.objects.filter(pk=run.pk).update(status=Run.Status.INTERRUPTED)

    thief = threading.Thread(target=take_it)
    thief.start()
    services.run_execute(run=claimed)
    thief.join()

    run.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED
    assert run.run_seconds >= 3
