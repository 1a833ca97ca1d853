"""Runs, split by concern; the names other modules use are re-exported here.

- ``lifecycle``: create (with the quotas), claim, stop, resume, the stale check, archive, delete;
- ``execution``: execute a claimed run in a box, the heartbeat, the trusted evaluation, finish;
- ``events``: append, publish, the log limiter, coalescing;
- ``sink``: the event sink between a sandboxed child and the database, checkpoints it leaves;
- ``notes``: the owner's tags and note on a run;
- ``artifacts``: run files in storage and their limits, the dataset caches.
"""

from training.services.artifacts import artifact_store, dataset_caches, storage_used
from training.services.events import LogLimiter, coalesce, emit_status, events_append, events_publish
from training.services.execution import run_evaluate, run_execute
from training.services.lifecycle import (
    RunRefused,
    design_expectation,
    design_runs_delete,
    run_archive,
    run_claim,
    run_code,
    run_create,
    run_delete,
    run_resume,
    run_stop,
    run_unarchive,
    runs_check_stale,
    runs_delete,
)
from training.services.notes import run_label, tags_parse
from training.services.sink import EventSink

__all__ = [
    "EventSink",
    "LogLimiter",
    "RunRefused",
    "artifact_store",
    "coalesce",
    "dataset_caches",
    "design_expectation",
    "design_runs_delete",
    "emit_status",
    "events_append",
    "events_publish",
    "run_archive",
    "run_claim",
    "run_code",
    "run_create",
    "run_delete",
    "run_label",
    "run_evaluate",
    "run_execute",
    "run_resume",
    "run_stop",
    "run_unarchive",
    "runs_check_stale",
    "runs_delete",
    "storage_used",
    "tags_parse",
]
