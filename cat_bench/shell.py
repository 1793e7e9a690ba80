"""Commands cat-bench prints for the reader to run: shell-quoted, so any path or value pastes safely."""

from __future__ import annotations

import shlex


def command(*args) -> str:
    """`cat-bench ARGS...` as one shell line, every argument quoted where the shell would split or expand it."""
    return shlex.join(["cat-bench", *map(str, args)])
