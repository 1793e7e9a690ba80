"""Progress in piped output: a line with count, rate and time left at most every 30 s."""

import cat_bench.progress as progress


def test_piped_progress_prints_a_timed_line_every_30_seconds(monkeypatch, capsys):
    clock = {"t": 1000.0}
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    monkeypatch.setitem(progress._last_line, "t", None)
    with progress.progress_bar(600, "epoch 1/40") as advance:
        for _ in range(100):  # 100 batches in 20 s: no line yet
            clock["t"] += 0.2
            advance()
        assert capsys.readouterr().err == ""
        for _ in range(50):  # 150 batches in 30 s
            clock["t"] += 0.2
            advance()
    err = capsys.readouterr().err
    assert err == "epoch 1/40: 150/600 (5/s, about 0:01:30 left)\n"


def test_disabled_progress_prints_nothing(monkeypatch, capsys):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    with progress.progress_bar(3, "x", enabled=False) as advance:
        for _ in range(3):
            advance()
    assert capsys.readouterr().err == ""
