"""The log limiter: a script printing in a tight loop keeps a bounded log that says where it cut."""

from __future__ import annotations

from training.services import LogLimiter, coalesce


def test_it_keeps_at_most_n_lines_a_second_and_says_how_many_it_left_out():
    limiter = LogLimiter(stored=0, max_lines=1000, per_second=10)
    kept = []
    for i in range(100):
        kept += limiter.accept("stdout", f"line {i}", now=i * 0.001)  # 100 lines in 0.1 s
    kept += limiter.accept("stdout", "later", now=2.0)
    assert [line for _s, line in kept[:10]] == [f"line {i}" for i in range(10)]
    assert kept[10][0] == "platform" and "90 lines left out" in kept[10][1]
    assert kept[11] == ("stdout", "later")


def test_it_stops_at_the_run_limit_and_says_so_at_the_end():
    limiter = LogLimiter(stored=0, max_lines=5, per_second=1000)
    kept = []
    for i in range(20):
        kept += limiter.accept("stdout", f"line {i}", now=0)
    kept += limiter.finish()
    assert len(kept) == 6
    assert "15 more lines not kept" in kept[-1][1] and "first 5 lines" in kept[-1][1]


def test_a_batch_becomes_one_log_event_per_stream_and_only_its_last_progress():
    batch = [
        ("run.log", {"stream": "stdout", "line": "a"}),
        ("run.progress", {"batch": 1}),
        ("run.log", {"stream": "stdout", "line": "b"}),
        ("run.log", {"stream": "stderr", "line": "c"}),
        ("run.progress", {"batch": 2}),
    ]
    assert coalesce(batch) == [
        ("run.log", {"stream": "stdout", "lines": ["a", "b"]}),
        ("run.log", {"stream": "stderr", "lines": ["c"]}),
        ("run.progress", {"batch": 2}),
    ]
