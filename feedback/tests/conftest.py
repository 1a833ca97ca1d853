"""Fixtures borrowed from the runs tests (real runs: storage in a temporary folder, one math thread)
and from the courses tests (carol teaches alice; dave teaches bob)."""

from __future__ import annotations

from accounts.tests.conftest import alice_run, bob_run, carol_client, course_a, course_b, courses  # noqa: F401
from training.tests.conftest import fast_liveness, run_storage  # noqa: F401
