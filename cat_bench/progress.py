"""Progress for long loops: rich bars on a terminal, plain timed lines when output is piped.

Bars nest: while one is shown (e.g. the suite's runs), an inner loop (a run's epochs, an epoch's
batches) adds its own line to the same display instead of opening a second one. When stderr is not
a terminal (CI, Slurm logs, `| tee`), rich would print nothing until the end; instead a line with
the count, the rate and the time left goes to stderr at most every `PIPED_EVERY` seconds.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PIPED_EVERY = 30.0  # seconds between two progress lines in piped output
_shown: Progress | None = None
_last_line = {"t": None}  # when the last piped line was printed (shared by nested loops)


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@contextlib.contextmanager
def _piped(total: int, description: str) -> Iterator[Callable[[], None]]:
    start, done = time.monotonic(), 0
    if _last_line["t"] is None:
        _last_line["t"] = start

    def advance() -> None:
        nonlocal done
        done += 1
        now = time.monotonic()
        if now - _last_line["t"] >= PIPED_EVERY:
            _last_line["t"] = now
            rate = done / max(now - start, 1e-9)
            print(f"{description}: {done}/{total} ({rate:.3g}/s, about {_eta((total - done) / rate)} left)",
                  file=sys.stderr, flush=True)

    yield advance


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A transient bar of `total` steps; yields the function that advances it by one."""
    global _shown
    if not enabled:
        yield lambda: None
        return
    if not sys.stderr.isatty():
        with _piped(total, description) as advance:
            yield advance
        return
    if _shown is not None:
        bar = _shown
        task = bar.add_task(description, total=total)
        try:
            yield lambda: bar.advance(task)
        finally:
            bar.remove_task(task)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        _shown = bar
        try:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
        finally:
            _shown = None
