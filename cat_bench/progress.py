"""Progress bars for long loops (rich), silent when disabled.

Bars nest: while one is shown (e.g. the suite's runs), an inner loop (a run's epochs, an epoch's
batches) adds its own line to the same display instead of opening a second one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_shown: Progress | None = None


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A transient bar of `total` steps; yields the function that advances it by one."""
    global _shown
    if not enabled:
        yield lambda: None
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
