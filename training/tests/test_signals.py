"""training announces a finished run with a signal; feedback listens from its AppConfig.ready()."""

from __future__ import annotations

import logging

from feedback import services as feedback_services
from training import signals
from training.models import Run


def test_feedback_listens_to_run_finished_from_its_app_config(monkeypatch):
    asked = []
    monkeypatch.setattr(feedback_services, "feedback_request", lambda *, run: asked.append(run))
    run = Run(pk=12345, status=Run.Status.SUCCEEDED)
    signals.announce_run_finished(run)
    assert asked == [run]


def test_a_receiver_that_raises_is_logged_and_does_not_fail_the_run(caplog):
    def broken(**kwargs):
        raise RuntimeError("listener bug")

    seen = []
    signals.run_finished.connect(broken, dispatch_uid="test.broken")
    signals.run_finished.connect(lambda **kw: seen.append(kw["run"]), dispatch_uid="test.seen", weak=False)
    try:
        run = Run(pk=12345)
        with caplog.at_level(logging.ERROR, logger="training.signals"):
            signals.announce_run_finished(run)  # does not raise
        assert seen == [run]
        assert "listener bug" in caplog.text or "failed on run_finished" in caplog.text
    finally:
        signals.run_finished.disconnect(dispatch_uid="test.broken")
        signals.run_finished.disconnect(dispatch_uid="test.seen")
